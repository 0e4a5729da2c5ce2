//! The plugins this opsh has: bundled ones (embedded in the binary) and third-party components
//! from the data directory. A plugin that fails to load is reported, never fatal.
//!
//! A plugin's identity is its name *and* its component hash, never its claim alone: a
//! third-party plugin may not take the name of a bundled one or of a built-in command; two files
//! that claim one name are both refused (neither gets the name's grants); and a grant pinned to
//! a component (`component = "sha256:…"`) is for that component only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::capability::Capabilities;
use crate::sandbox::{Events, LoadedPlugin, Origin, Sandbox};

#[derive(Default)]
pub struct Registry {
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Plugins that could not be loaded, with why.
    pub problems: Vec<String>,
}

impl Registry {
    /// `reserved`: the shell's own command words, which no plugin may take.
    pub async fn load(sandbox: &Sandbox, bundled: &[&[u8]], plugin_dir: &Path, reserved: &[&str], caps: &Arc<Capabilities>, events: &Arc<dyn Events>) -> Self {
        let mut registry = Self::default();
        for bytes in bundled {
            match sandbox.load(bytes, Origin::Bundled, caps, events).await {
                // Bundled twice (a packaging mistake): once is enough, and costs one compile.
                Ok(plugin) if registry.find(plugin.name()).is_some() => {
                    registry.problems.push(format!("the bundled plugin {} is bundled twice; loaded once", plugin.name()))
                }
                Ok(plugin) => registry.add(plugin),
                Err(e) => registry.problems.push(format!("{e:#}")),
            }
        }
        let mut files: Vec<_> = match std::fs::read_dir(plugin_dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wasm")).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        let mut claims: BTreeMap<String, Vec<(PathBuf, LoadedPlugin)>> = BTreeMap::new();
        for path in files {
            let loaded = match std::fs::read(&path) {
                Ok(bytes) => sandbox.load(&bytes, Origin::File(path.clone()), caps, events).await,
                Err(e) => Err(anyhow::anyhow!("cannot read plugin file {}: {e}", path.display())),
            };
            match loaded {
                Ok(plugin) => claims.entry(plugin.name().to_string()).or_default().push((path, plugin)),
                Err(e) => registry.problems.push(format!("{e:#}")),
            }
        }
        for (name, mut claimants) in claims {
            if claimants.len() > 1 {
                let paths: Vec<String> = claimants.iter().map(|(p, _)| p.display().to_string()).collect();
                registry.problems.push(format!(
                    "plugin files {} all call themselves {name:?}: none of them is loaded, since opsh cannot tell which one the grants for {name} are meant for; remove all but one",
                    paths.join(" and ")
                ));
                continue;
            }
            let Some((path, plugin)) = claimants.pop() else { continue };
            if reserved.contains(&name.as_str()) {
                registry.problems.push(format!("plugin file {} calls itself {name:?}, which is an opsh command; it is not loaded", path.display()));
            } else if registry.find(&name).is_some() {
                registry.problems.push(format!("plugin file {} calls itself {name:?}, which a bundled plugin is; it is not loaded", path.display()));
            } else if let Some(problem) = pin_mismatch(caps, &plugin) {
                registry.problems.push(format!("plugin file {}: {problem}", path.display()));
            } else {
                registry.add(plugin);
            }
        }
        registry
    }

    fn add(&mut self, plugin: LoadedPlugin) {
        self.plugins.push(Arc::new(plugin));
    }

    pub fn find(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }
}

/// A grant pinned to another component than this one: the plugin is not loaded.
fn pin_mismatch(caps: &Capabilities, plugin: &LoadedPlugin) -> Option<String> {
    let grant = caps.inventory.grants.get(plugin.name())?;
    let pinned = grant.component.as_deref()?;
    let wanted = pinned.strip_prefix("sha256:").unwrap_or(pinned).to_ascii_lowercase();
    (wanted != plugin.sha256).then(|| {
        format!(
            "it calls itself {:?}, whose grants in {} are for component sha256:{wanted}, and it is sha256:{}; it is not loaded (update `component` after reviewing the new plugin)",
            plugin.name(),
            caps.inventory.source.display(),
            plugin.sha256
        )
    })
}
