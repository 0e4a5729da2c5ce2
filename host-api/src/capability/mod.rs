//! The capabilities a plugin can use. Each module has the same shape: a request type, a grant
//! check first (in `sandbox::ctx`), then a driver that does the work (`Remote` for commands,
//! `SqlPool` for databases; file-edit and service are drivers over `Remote`).

pub mod exec;
pub mod file_edit;
pub mod reach;
pub mod service;
pub mod sql;
mod tls;

use std::fmt;
use std::sync::Arc;

use crate::address_book::AddressBook;
use crate::grants::Grants;
use crate::inventory::Inventory;
use crate::scrub::Scrubber;

/// Why a capability call failed. The message names the target and the operation and says what
/// to do; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    Denied(String),
    NotFound(String),
    Unreachable(String),
    Auth(String),
    /// The effect may or may not have happened ("outcome unknown").
    Timeout(String),
    ReadOnly(String),
    Conflict(String),
    Failed(String),
    Invalid(String),
}

impl CapabilityError {
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

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::NotFound(_) => "not-found",
            Self::Unreachable(_) => "unreachable",
            Self::Auth(_) => "auth",
            Self::Timeout(_) => "timeout",
            Self::ReadOnly(_) => "read-only",
            Self::Conflict(_) => "conflict",
            Self::Failed(_) => "failed",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CapabilityError {}

pub type CapResult<T> = Result<T, CapabilityError>;

/// Which phase of a command a plugin call belongs to. Only `Apply` may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Describe,
    Read,
    Plan,
    Apply,
    Verify,
}

impl Phase {
    pub fn may_change(self) -> bool {
        self == Self::Apply
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Describe => "describe",
            Self::Read => "read",
            Self::Plan => "plan",
            Self::Apply => "apply",
            Self::Verify => "verify",
        }
    }
}

/// Limits on what one capability call may return into the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_rows: usize,
    pub max_result_bytes: usize,
    pub max_output_bytes: usize,
    pub max_file_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { max_rows: 10_000, max_result_bytes: 16 << 20, max_output_bytes: 8 << 20, max_file_bytes: 16 << 20 }
    }
}

/// Everything the capabilities share for one opsh process: the inventory and what is derived
/// from it, and the drivers with their connection pools.
pub struct Capabilities {
    pub inventory: Arc<Inventory>,
    pub addresses: AddressBook,
    pub grants: Grants,
    pub remote: exec::Remote,
    pub sql: sql::SqlPool,
    pub bounds: Bounds,
    /// The inventory's passwords, kept out of everything a plugin gets back and the operator sees.
    pub scrubber: Scrubber,
}

impl Capabilities {
    pub fn new(inventory: Arc<Inventory>, control_dir: std::path::PathBuf) -> Self {
        Self {
            addresses: AddressBook::new(&inventory),
            grants: Grants::new(&inventory),
            remote: exec::Remote::new(inventory.clone(), control_dir),
            sql: sql::SqlPool::new(inventory.clone()),
            bounds: Bounds::default(),
            scrubber: Scrubber::new(&inventory.known_secrets()),
            inventory,
        }
    }

    /// Close ssh masters and database connections.
    pub async fn shutdown(&self) {
        self.remote.close_all().await;
        self.sql.close_all().await;
    }
}
