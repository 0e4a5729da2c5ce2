//! The host side of `wit/plugin.wit` (opsh:plugin@0.1.0).
wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use exports::opsh::plugin::runbook;
pub use opsh::plugin::{file_edit, host, service, sql, ssh, types};
