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

/// A plugin embedded in the binary, and the name its describe() gives it (checked when loaded).
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    pub name: &'static str,
    pub component: &'static [u8],
}

/// Which plugins a start needs: all of them (a shell, a script, `help`), or — for one command
/// given on the command line — only the bundled plugin of that name, so that a cold start
/// compiles one component, not every one. Third-party files are always loaded: their names are
/// known only from their describe() (cached by component hash), and two files claiming one
/// name must both be refused whichever command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    All,
    Only(&'a str),
}

#[derive(Default)]
pub struct Registry {
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Plugins that could not be loaded, with why.
    pub problems: Vec<String>,
}

impl Registry {
    /// `reserved`: the shell's own command words, which no plugin may take.
    pub async fn load(
        sandbox: &Sandbox,
        bundled: &[Bundled],
        wanted: Wanted<'_>,
        plugin_dir: &Path,
        reserved: &[&str],
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
    ) -> Self {
        let mut registry = Self::default();
        let only = match wanted {
            Wanted::Only(word) if bundled.iter().any(|b| b.name == word) => Some(word),
            _ => None,
        };
        for entry in bundled.iter().filter(|b| only.is_none_or(|word| b.name == word)) {
            match sandbox.load(entry.component, Origin::Bundled, caps, events).await {
                Ok(plugin) if plugin.name() != entry.name => registry.problems.push(format!(
                    "the bundled plugin packaged as {:?} describes itself as {:?}; it is not loaded (a packaging mistake: the build's list of bundled plugins names it wrongly)",
                    entry.name,
                    plugin.name()
                )),
                // Bundled twice (a packaging mistake): once is enough, and costs one compile.
                Ok(plugin) if registry.find(plugin.name()).is_some() => {
                    registry.problems.push(format!("the bundled plugin {} is bundled twice; loaded once", plugin.name()))
                }
                Ok(plugin) => registry.add(plugin),
                Err(e) => registry.problems.push(format!("{e:#}")),
            }
        }
        // A third-party file may not take a bundled plugin's name, loaded this time or not.
        let bundled_names: Vec<&str> = bundled.iter().map(|b| b.name).collect();
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
            } else if registry.find(&name).is_some() || bundled_names.contains(&name.as_str()) {
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
