//! Reading the inventory as plugins see it: attributes of a name, and the one topology a plugin
//! manages (`plugin = "NAME"`).

use crate::{CommandError, host};

/// An attribute of an inventory name.
pub fn attr<'a>(info: &'a host::TargetInfo, key: &str) -> Option<&'a str> {
    info.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// An attribute, or `default` when the inventory does not set it.
pub fn attr_or(info: &host::TargetInfo, key: &str, default: &str) -> String {
    attr(info, key).unwrap_or(default).to_string()
}

/// An attribute the plugin cannot work without; the error says where to add it.
pub fn need<'a>(info: &'a host::TargetInfo, key: &str, docs: &str) -> Result<&'a str, CommandError> {
    attr(info, key).ok_or_else(|| CommandError::Failed(format!("{} {} has no attribute {key:?} in the inventory (see {docs})", info.kind, info.name)))
}

/// The members of a topology in one role, in inventory order.
pub fn members(topology: &host::TargetInfo, role: &str) -> Vec<String> {
    attr(topology, &format!("member.{role}")).unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The single topology whose `plugin` is `plugin`.
pub fn managed_topology(plugin: &str) -> Result<host::TargetInfo, CommandError> {
    let mut topologies = managed_topologies(plugin);
    match topologies.len() {
        1 => Ok(topologies.remove(0)),
        0 => Err(CommandError::Failed(format!("no topology in the inventory has plugin = \"{plugin}\""))),
        _ => Err(CommandError::Failed(format!("several topologies have plugin = \"{plugin}\"; the {plugin} plugin drives one per inventory"))),
    }
}

/// Every topology whose `plugin` is `plugin`, in inventory order.
pub fn managed_topologies(plugin: &str) -> Vec<host::TargetInfo> {
    host::list_targets("topology").iter().filter_map(|t| host::lookup(t).ok()).filter(|t| attr(t, "plugin") == Some(plugin)).collect()
}

/// The topology the operator named (`--topology`), or the only one the plugin manages.
pub fn chosen_topology(plugin: &str, named: Option<&str>) -> Result<host::TargetInfo, CommandError> {
    let mut topologies = managed_topologies(plugin);
    let names: Vec<String> = topologies.iter().map(|t| t.name.clone()).collect();
    match named {
        Some(name) => match topologies.iter().position(|t| t.name == name) {
            Some(i) => Ok(topologies.remove(i)),
            None => Err(CommandError::Usage(format!("no topology {name} with plugin = \"{plugin}\"; there are: {}", names.join(", ")))),
        },
        None if topologies.len() == 1 => Ok(topologies.remove(0)),
        None if topologies.is_empty() => Err(CommandError::Failed(format!("no topology in the inventory has plugin = \"{plugin}\""))),
        None => Err(CommandError::Usage(format!("several topologies have plugin = \"{plugin}\": name one with --topology ({})", names.join(", ")))),
    }
}
