//! Where opsh keeps its files: config (inventory), data (history, plugins, journal) and cache
//! (compiled plugins). The platform's directories by default; `OPSH_CONFIG_DIR`, `OPSH_DATA_DIR`
//! and `OPSH_CACHE_DIR` override them (tests, containers, several operators on one machine).

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
}

impl Paths {
    pub fn from_env() -> Result<Self> {
        let project = directories::ProjectDirs::from("", "", "opsh");
        let pick = |var: &str, fallback: Option<PathBuf>| -> Result<PathBuf> {
            match std::env::var_os(var) {
                Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
                _ => fallback.with_context(|| format!("cannot tell where opsh keeps its files (no home directory); set {var}")),
            }
        };
        Ok(Self {
            config_dir: pick("OPSH_CONFIG_DIR", project.as_ref().map(|p| p.config_dir().to_path_buf()))?,
            data_dir: pick("OPSH_DATA_DIR", project.as_ref().map(|p| p.data_dir().to_path_buf()))?,
            cache_dir: pick("OPSH_CACHE_DIR", project.as_ref().map(|p| p.cache_dir().to_path_buf()))?,
        })
    }

    /// The inventory used when `--inventory` is not given.
    pub fn default_inventory(&self) -> PathBuf {
        self.config_dir.join("inventory.toml")
    }

    /// Third-party plugins: every `*.wasm` component in this directory is loaded.
    pub fn plugin_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    pub fn history_file(&self) -> PathBuf {
        self.data_dir.join("history")
    }

    /// One JSON Lines file per run of a change.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// Locks that keep two opsh processes from changing one topology at once.
    pub fn lock_dir(&self) -> PathBuf {
        self.data_dir.join("locks")
    }

    pub fn component_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("components")
    }
}
