//! The plugins this opsh has: bundled ones (embedded in the binary) and third-party components
//! from the data directory. A plugin that fails to load is reported, never fatal; a third-party
//! plugin may not take the name of a bundled one.

use std::path::Path;
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
    pub async fn load(sandbox: &Sandbox, bundled: &[&[u8]], plugin_dir: &Path, caps: &Arc<Capabilities>, events: &Arc<dyn Events>) -> Self {
        let mut registry = Self::default();
        for bytes in bundled {
            match sandbox.load(bytes, Origin::Bundled, caps, events).await {
                Ok(plugin) => registry.add(plugin),
                Err(e) => registry.problems.push(format!("{e:#}")),
            }
        }
        let mut files: Vec<_> = match std::fs::read_dir(plugin_dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wasm")).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        for path in files {
            let loaded = match std::fs::read(&path) {
                Ok(bytes) => sandbox.load(&bytes, Origin::File(path.clone()), caps, events).await,
                Err(e) => Err(anyhow::anyhow!("cannot read plugin file {}: {e}", path.display())),
            };
            match loaded {
                Ok(plugin) if registry.find(plugin.name()).is_some() => registry.problems.push(format!(
                    "plugin file {} calls itself {:?}, which another plugin already is; rename or remove the file",
                    path.display(),
                    plugin.name()
                )),
                Ok(plugin) => registry.add(plugin),
                Err(e) => registry.problems.push(format!("{e:#}")),
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
