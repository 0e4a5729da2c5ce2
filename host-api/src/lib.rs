//! The opsh host: inventory and credentials, grants, the WIT capability API (`sql`, `ssh`,
//! `file-edit`, `service`, `host`) implemented over real drivers, the plugin sandbox, and the
//! runbook engine that runs a plugin's commands (plan → confirm → apply → verify).

pub mod address_book;
pub mod capability;
pub mod doctor;
pub mod grants;
pub mod import;
pub mod inventory;
pub mod journal;
pub mod lock;
pub mod paths;
pub mod plan;
pub mod plugins;
pub mod probe;
pub mod runbook;
pub mod sandbox;
pub mod script;
pub mod scrub;
pub mod state;
pub mod suggest;
pub mod timefmt;

/// Exit codes of `opsh` for scripts and cron (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    Success = 0,
    /// Failed; nothing was changed.
    Failed = 1,
    /// The command line or script was wrong; nothing was run.
    Usage = 2,
    /// Failed after changing something: resumable.
    FailedChanged = 3,
    /// A timeout left the outcome unknown.
    Unknown = 4,
    /// Refused: not confirmed, not granted, or locked.
    Refused = 5,
    /// `--check` of a read command: something is shown as a problem (an invariant is violated,
    /// a member does not answer).
    CheckFailed = 6,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}
