//! The host side of `wit/`: opsh:plugin@0.1.0 (the capability interfaces every plugin imports,
//! and the runbook a 0.1 plugin exports) at this module's root, and opsh:plugin@0.2.1 (a new
//! runbook export over the same capability interfaces, and the `gather` import) in `v2`. A 0.2.0
//! plugin is a 0.2.1 plugin that does not import `gather`: its runbook export is found at the
//! semver-compatible name.

mod v1 {
    wasmtime::component::bindgen!({
        world: "opsh:plugin/plugin@0.1.0",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

pub use v1::exports::opsh::plugin0_1_0::runbook;
pub use v1::opsh::plugin0_1_0::{file_edit, host, service, sql, ssh, types};
pub use v1::{Plugin, PluginPre};

/// A 0.2 plugin imports the 0.1 capability interfaces (one implementation, one linker) and,
/// from 0.2.1, `gather`.
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "opsh:plugin/plugin@0.2.1",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "opsh:plugin/types@0.1.0": super::types,
            "opsh:plugin/sql@0.1.0": super::sql,
            "opsh:plugin/ssh@0.1.0": super::ssh,
            "opsh:plugin/file-edit@0.1.0": super::file_edit,
            "opsh:plugin/service@0.1.0": super::service,
            "opsh:plugin/host@0.1.0": super::host,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });

    pub use self::exports::opsh::plugin0_2_1::runbook;
    pub use self::opsh::plugin0_2_1::gather;
}
