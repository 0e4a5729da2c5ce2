//! The guest-side SDK every opsh plugin uses: the `opsh:plugin` bindings (0.2.1 with the `wit-0-2`
//! feature, else 0.1.0), reads asked at once ([`ahead`]), builders for commands, steps and their effects, tables, argument access,
//! and conversions so a runbook reads like the procedure it automates. Natively (`cargo test`)
//! the capabilities answer from a scripted [`fake::World`], so plans are unit-tested:
//!
//! ```ignore
//! struct Pg;
//! impl opsh_plugin_sdk::Guest for Pg { /* describe, read, plan, apply, check, verify */ }
//! opsh_plugin_sdk::export!(Pg);
//! ```
//!
//! Helpers shared by several plugins (e.g. editing `.properties` or `pg_hba.conf` text) belong
//! here, never copied between plugins.

#[cfg(not(feature = "wit-0-2"))]
wit_bindgen::generate!({
    path: "../../wit/deps/plugin-0.1.0",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "opsh_plugin_sdk",
    additional_derives: [PartialEq],
});

#[cfg(feature = "wit-0-2")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "opsh:plugin/plugin@0.2.1",
    generate_all,
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "opsh_plugin_sdk",
    additional_derives: [PartialEq],
});

/// The minor version of opsh:plugin this build of the SDK is for. A plugin asserts the one it is
/// written for (`const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 1);`): cargo features unify,
/// so a workspace build that also builds a 0.2 plugin must fail, not quietly turn a 0.1 plugin's
/// previews into effects the host performs.
#[cfg(not(feature = "wit-0-2"))]
pub const WIT_MINOR: u32 = 1;
#[cfg(feature = "wit-0-2")]
pub const WIT_MINOR: u32 = 2;

/// The bindings of the WIT version this build is for, under one set of names.
mod wit {
    #[cfg(not(feature = "wit-0-2"))]
    pub use crate::{exports::opsh::plugin::runbook, opsh::plugin::*};
    #[cfg(feature = "wit-0-2")]
    pub use crate::{exports::opsh::plugin0_2_1::runbook, opsh::plugin0_1_0::*, opsh::plugin0_2_1::gather};
}

/// In wasm the capabilities are the host's imports, except that a read asked ahead
/// ([`ahead::settled`]) takes its answer from the gather.
#[cfg(target_arch = "wasm32")]
mod imports {
    pub mod sql {
        pub use crate::wit::sql::*;

        pub fn query(database: &str, sql: &str, params: &[Value]) -> Result<Rows, crate::CapabilityError> {
            crate::ahead::rows(database, sql, params).unwrap_or_else(|| crate::wit::sql::query(database, sql, params))
        }
    }

    pub mod ssh {
        pub use crate::wit::ssh::*;

        pub fn exec(host: &str, request: &ExecRequest) -> Result<ExecOutput, crate::CapabilityError> {
            crate::ahead::output(host, request).unwrap_or_else(|| crate::wit::ssh::exec(host, request))
        }
    }

    pub mod file_edit {
        pub use crate::wit::file_edit::*;

        pub fn read(host: &str, path: &str) -> Result<FileSnapshot, crate::CapabilityError> {
            crate::ahead::file(host, path).unwrap_or_else(|| crate::wit::file_edit::read(host, path))
        }
    }

    pub mod service {
        pub use crate::wit::service::*;

        pub fn status(host: &str, service: &str) -> Result<ServiceState, crate::CapabilityError> {
            crate::ahead::service_state(host, service).unwrap_or_else(|| crate::wit::service::status(host, service))
        }
    }

    /// While a plugin runs in rounds, a round's log lines wait to be known as the last one's,
    /// progress is not shown, and a sleep does not wait.
    pub mod host {
        pub use crate::wit::host::*;

        pub fn log(level: LogLevel, message: &str) {
            if crate::ahead::holding() { crate::ahead::hold(level, message) } else { crate::wit::host::log(level, message) }
        }

        pub fn progress(message: &str, fraction: Option<f32>) {
            if !crate::ahead::holding() {
                crate::wit::host::progress(message, fraction);
            }
        }

        pub fn sleep(ms: u32) {
            if !crate::ahead::waits() {
                crate::wit::host::sleep(ms);
            }
        }
    }
}

pub mod ahead;
pub mod args;
pub mod build;
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
pub mod files;
pub mod invariants;
pub mod inventory;
pub mod names;
pub mod pg;
pub mod pg_hba;
pub mod properties;
pub mod quote;
pub mod requirements;
pub mod rows;
pub mod wait;

/// The capabilities: the host's imports in wasm; natively (plugin unit tests) a scripted
/// [`fake::World`].
#[cfg(not(target_arch = "wasm32"))]
pub use fake::{file_edit, host, service, sql, ssh};
#[cfg(target_arch = "wasm32")]
pub use imports::{file_edit, host, service, sql, ssh};
#[cfg(feature = "wit-0-2")]
pub use wit::runbook::WaitEffect;
pub use wit::runbook::{
    self, ArgInfo, ArgKind, Cell, ChangePlan, CheckResult, CheckState, CommandError, CommandInfo, CommandKind, Completion, Effect, Example, ExecEffect,
    FileEffect, Guest, Invocation, PluginInfo, ServiceEffect, SqlEffect, Step, Table,
};
pub use wit::types::{CapabilityError, Text};

pub use args::Args;
pub use build::{bad, capabilities, command, good, plain, refused, step, table, text, titled, warn};
pub use data::StepData;
pub use rows::{RowsExt, display};

/// Results of plugin exports.
pub type CommandResult<T> = Result<T, CommandError>;

impl From<CapabilityError> for CommandError {
    fn from(e: CapabilityError) -> Self {
        CommandError::Capability(e)
    }
}

impl CapabilityError {
    /// The message without the host's closing advice ("; check that …"), for table cells.
    pub fn brief(&self) -> String {
        let message = self.message();
        message.split("; check").next().unwrap_or(message).to_string()
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Denied(m)
            | Self::NotFound(m)
            | Self::Unreachable(m)
            | Self::Auth(m)
            | Self::Timeout(m)
            | Self::ReadOnly(m)
            | Self::Conflict(m)
            | Self::Failed(m)
            | Self::Invalid(m) => m,
        }
    }
}

/// Pick the operator's language for a message built in the plugin (English in native unit
/// tests, where there is no host to ask).
pub fn localized(text: &Text) -> String {
    #[cfg(target_arch = "wasm32")]
    let ja = host::locale() == "ja";
    #[cfg(not(target_arch = "wasm32"))]
    let ja = false;
    if ja && !text.ja.is_empty() { text.ja.clone() } else { text.en.clone() }
}

/// Does the host answer over ssh (the probe `true`, at most 10 s)?
pub fn reachable(host_name: &str) -> Result<(), CapabilityError> {
    probe(host_name, &["true"], Some(10_000)).map(|_| ())
}

/// Are all of `services` on `host` in state `want`? (A service whose state cannot be read is
/// an error: the caller's check says "cannot tell", never "yes".)
pub fn services_are(host_name: &str, services: &[String], want: service::ServiceState) -> Result<bool, CapabilityError> {
    for name in services {
        if service::status(host_name, name)? != want {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Run a command on a host as a read-only probe (allowed while planning).
pub fn probe(host_name: &str, argv: &[&str], timeout_ms: Option<u32>) -> Result<ssh::ExecOutput, CapabilityError> {
    ssh::exec(host_name, &exec_request(argv, timeout_ms, true))
}

/// Run a command on a host that changes something (allowed only while applying).
pub fn run(host_name: &str, argv: &[&str], timeout_ms: Option<u32>) -> Result<ssh::ExecOutput, CapabilityError> {
    ssh::exec(host_name, &exec_request(argv, timeout_ms, false))
}

pub fn exec_request(argv: &[&str], timeout_ms: Option<u32>, read_only: bool) -> ssh::ExecRequest {
    ssh::ExecRequest { argv: argv.iter().map(|a| a.to_string()).collect(), env: Vec::new(), stdin: None, timeout_ms, privileged: false, read_only }
}

/// The address token of an inventory host (the host turns it into the real address).
pub fn address_of(host_name: &str) -> String {
    format!("{{{{addr:{host_name}}}}}")
}
