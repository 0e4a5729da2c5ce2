//! Saved plans, Terraform-style: `opsh plan COMMAND… --out FILE` writes what the operator would
//! confirm — the invocation, every effect, the previews and probes, the plugin's component hash,
//! the inventory's digest and the hash of every file the plan read — and `opsh apply FILE`
//! applies exactly that plan, or refuses with the reason when the plugin, the inventory or a
//! planned file changed since. A plan file holds no secret (it is scrubbed like the journal), so
//! a second person can review and approve it before it runs; the journal records who planned
//! and who applied.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ProbeRun, StepPreview};
use crate::plan::{Effect, Invocation, Plan};

pub const KIND: &str = "opsh-plan";
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    pub kind: String,
    pub schema: u32,
    pub created: String,
    /// `user@host` of whoever made it.
    pub planned_by: String,
    /// The command line, e.g. `otb promote dn01`.
    pub line: String,
    pub plugin: String,
    pub plugin_version: String,
    /// `sha256:HEX` of the plugin's component.
    pub component: String,
    pub inventory: String,
    /// `sha256:HEX` of the inventory file's bytes.
    pub inventory_sha256: String,
    pub lang: String,
    pub invocation: Invocation,
    pub plan: Plan,
    pub previews: Vec<StepPreview>,
    pub probes: Vec<ProbeRun>,
    /// Every file the plan edits, with the hash it read.
    pub files: Vec<PlannedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub host: String,
    pub path: String,
    pub sha256: String,
}

/// Who runs this opsh: `user@host`.
pub fn operator() -> String {
    crate::state::Who::current().operator()
}

/// `sha256:HEX` of a file's bytes (of nothing when there is no file: an empty inventory).
pub fn digest_of(path: &Path) -> Result<String> {
    let bytes = if path.as_os_str().is_empty() { Vec::new() } else { std::fs::read(path).with_context(|| format!("reading {}", path.display()))? };
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

/// The files a plan edits, with the hashes it read.
pub fn planned_files(plan: &Plan) -> Vec<PlannedFile> {
    plan.steps
        .iter()
        .flat_map(|s| &s.effects)
        .filter_map(|e| match e {
            Effect::File { host, path, expected_sha256, .. } => Some(PlannedFile { host: host.clone(), path: path.clone(), sha256: expected_sha256.clone() }),
            _ => None,
        })
        .collect()
}

impl SavedPlan {
    /// Write it (scrubbed by `redact`, owner-only, atomically: a half-written plan never exists).
    pub fn write(&self, path: &Path, redact: &dyn Fn(&str) -> String) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("encoding the plan")?;
        let json = redact(&json);
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(), std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write the plan file {}", tmp.display()))?;
            file.write_all(json.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write the plan file {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the plan file {}", path.display()))?;
        let kind: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not an opsh plan file (not JSON)", path.display()))?;
        if kind.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            bail!("{} is not an opsh plan file (make one with `opsh plan COMMAND… --out FILE`)", path.display());
        }
        if kind.get("schema").and_then(|s| s.as_u64()) != Some(u64::from(SCHEMA)) {
            bail!("{} is a plan file of another opsh (schema {:?}; this opsh reads {SCHEMA}): make the plan again", path.display(), kind.get("schema"));
        }
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid opsh plan file", path.display()))
    }
}
