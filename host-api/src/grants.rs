//! Deny by default: a plugin may touch only what the inventory grants it, either explicitly in
//! `[grants.PLUGIN]` or by being a topology's `plugin` (then every member of that topology, and
//! the hosts of its member databases, are granted for every capability).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::inventory::{Inventory, LOCAL_HOST};
use crate::probe::{self, ProbePattern};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    Sql,
    Ssh,
    FileEdit,
    Service,
}

impl Capability {
    pub fn from_key(key: &str) -> Option<Self> {
        [Self::Sql, Self::Ssh, Self::FileEdit, Self::Service].into_iter().find(|c| c.key() == key)
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::Sql => "sql",
            Self::Ssh => "ssh",
            Self::FileEdit => "file-edit",
            Self::Service => "service",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Sql => "run SQL on database",
            Self::Ssh => "run commands on host",
            Self::FileEdit => "read or edit files on host",
            Self::Service => "query or control services on host",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[derive(Debug, Clone, Default)]
struct PluginGrants {
    patterns: BTreeMap<Capability, Vec<String>>,
    /// Names granted whole through a topology.
    topology_members: BTreeSet<String>,
    /// The operator's approved probes (on the hosts `ssh` grants).
    probes: Vec<ProbePattern>,
}

#[derive(Debug, Clone, Default)]
pub struct Grants {
    plugins: BTreeMap<String, PluginGrants>,
    inventory_source: String,
}

impl Grants {
    pub fn new(inventory: &Inventory) -> Self {
        let mut plugins: BTreeMap<String, PluginGrants> = BTreeMap::new();
        for (plugin, grant) in &inventory.grants {
            let entry = plugins.entry(plugin.clone()).or_default();
            entry.patterns.insert(Capability::Sql, grant.sql.clone());
            entry.patterns.insert(Capability::Ssh, grant.ssh.clone());
            entry.patterns.insert(Capability::FileEdit, grant.file_edit.clone());
            entry.patterns.insert(Capability::Service, grant.service.clone());
            // Validated when the inventory was read.
            entry.probes = grant.probes.iter().filter_map(|p| ProbePattern::parse(p).ok()).collect();
        }
        for topology in inventory.topologies.values() {
            let Some(plugin) = &topology.plugin else { continue };
            let entry = plugins.entry(plugin.clone()).or_default();
            for member in topology.members.values().flatten() {
                entry.topology_members.insert(member.clone());
                if let Some(db) = inventory.database(member) {
                    entry.topology_members.insert(db.host.clone());
                }
            }
        }
        Self { plugins, inventory_source: inventory.source.display().to_string() }
    }

    /// May `plugin` use `capability` on `target` (a database for SQL, else a host)? `detail` is
    /// the path or service name for file-edit and service grants (`HOST:DETAIL` patterns).
    pub fn check(&self, plugin: &str, capability: Capability, target: &str, detail: Option<&str>) -> Result<(), String> {
        if let Some(grants) = self.plugins.get(plugin) {
            if grants.topology_members.contains(target) {
                return Ok(());
            }
            let subject = match detail {
                Some(detail) => format!("{target}:{detail}"),
                None => target.to_string(),
            };
            if grants.patterns.get(&capability).is_some_and(|patterns| patterns.iter().any(|p| grant_matches(capability, p, target, &subject))) {
                return Ok(());
            }
        }
        let what = match detail {
            Some(detail) => format!("{target} ({detail})"),
            None => target.to_string(),
        };
        let example = match detail {
            Some(detail) => format!("\"{target}:{detail}\""),
            None => format!("\"{target}\""),
        };
        let source = if self.inventory_source.is_empty() { "the inventory".to_string() } else { self.inventory_source.clone() };
        Err(format!(
            "plugin {plugin} may not {} {what}: not granted. To allow it, add {example} to `{} = [...]` under [grants.{plugin}] in {source}, or set plugin = \"{plugin}\" on a topology that has it as a member",
            capability.verb(),
            capability.key(),
        ))
    }

    /// May `plugin` run this command on `host` while nothing may change? Only as a probe the
    /// operator approved: one the plugin declared, on a member host of a topology that names the
    /// plugin, or one of its `[grants.PLUGIN] probes` on a host its `ssh` patterns grant.
    pub fn check_probe(&self, plugin: &str, host: &str, argv: &[String], stdin: Option<&[u8]>, declared: &[ProbePattern]) -> Result<(), String> {
        let grants = self.plugins.get(plugin);
        let fits = |patterns: &[ProbePattern]| patterns.iter().any(|p| p.matches(argv, stdin));
        if let Some(grants) = grants {
            if grants.topology_members.contains(host) && fits(declared) {
                return Ok(());
            }
            let ssh = grants.patterns.get(&Capability::Ssh).is_some_and(|ps| ps.iter().any(|p| grant_matches(Capability::Ssh, p, host, host)));
            if ssh && fits(&grants.probes) {
                return Ok(());
            }
        }
        let source = if self.inventory_source.is_empty() { "the inventory".to_string() } else { self.inventory_source.clone() };
        let command = probe::shown(argv, stdin);
        Err(format!(
            "plugin {plugin} may not run `{command}` on host {host} while nothing may change: it is not a probe approved for it. \
             If it only reads, approve it: add {} to `probes = [...]` under [grants.{plugin}] in {source} (opsh plugins shows the probes each plugin declares)",
            toml::Value::String(command.clone()),
        ))
    }

    /// May the plugin see this name at all (inventory lookups)? Only names it was granted something on.
    pub fn may_see(&self, plugin: &str, name: &str) -> bool {
        let Some(grants) = self.plugins.get(plugin) else { return false };
        grants.topology_members.contains(name)
            || grants.patterns.iter().any(|(capability, patterns)| {
                patterns.iter().any(|p| {
                    let name_part = match capability {
                        Capability::FileEdit | Capability::Service => p.split(':').next().unwrap_or(p),
                        _ => p.as_str(),
                    };
                    if name == LOCAL_HOST { name_part == LOCAL_HOST } else { glob_match(name_part, name) }
                })
            })
    }

    /// The inventory's databases and (remote) hosts this plugin could reach with the
    /// capabilities it declared: what one of its reading calls may touch. Hosts count for ssh,
    /// file-edit and service alike (all three run over the host's ssh connection).
    pub fn reachable(&self, plugin: &str, inventory: &Inventory, declared: &BTreeSet<Capability>) -> (Vec<String>, Vec<String>) {
        let granted = |capability: Capability, name: &str| declared.contains(&capability) && self.grants_some(plugin, capability, name);
        let databases = inventory.databases.keys().filter(|name| granted(Capability::Sql, name)).cloned().collect();
        let hosts = inventory
            .hosts
            .keys()
            .filter(|name| name.as_str() != LOCAL_HOST)
            .filter(|name| [Capability::Ssh, Capability::FileEdit, Capability::Service].into_iter().any(|c| granted(c, name)))
            .cloned()
            .collect();
        (databases, hosts)
    }

    /// Is `capability` granted on `target` for anything (any path or service of it)?
    fn grants_some(&self, plugin: &str, capability: Capability, target: &str) -> bool {
        let Some(grants) = self.plugins.get(plugin) else { return false };
        grants.topology_members.contains(target)
            || grants.patterns.get(&capability).is_some_and(|patterns| {
                patterns.iter().any(|p| match capability {
                    Capability::FileEdit | Capability::Service => glob_match(p.split(':').next().unwrap_or(p), target),
                    Capability::Sql | Capability::Ssh => glob_match(p, target),
                })
            })
    }

    /// Topologies managed by this plugin are visible to it as a whole.
    pub fn manages_topology(&self, plugin: &str, inventory: &Inventory, topology: &str) -> bool {
        inventory.topologies.get(topology).and_then(|t| t.plugin.as_deref()) == Some(plugin) || self.may_see(plugin, topology)
    }
}

/// Does a grant pattern cover `subject` (`TARGET` or `TARGET:DETAIL`)? The built-in host
/// `local` — the operator's own machine — is matched only by a pattern that names it exactly
/// (`local`, `local:/etc/app/*`): `*` or `l*` never grant it.
fn grant_matches(capability: Capability, pattern: &str, target: &str, subject: &str) -> bool {
    if target != LOCAL_HOST {
        return glob_match(pattern, subject);
    }
    match capability {
        Capability::FileEdit | Capability::Service => {
            pattern.split_once(':').is_some_and(|(host, detail)| host == LOCAL_HOST && glob_match(&format!("{LOCAL_HOST}:{detail}"), subject))
        }
        Capability::Sql | Capability::Ssh => pattern == LOCAL_HOST,
    }
}

/// `*` matches any run of characters (including `/` and `:`); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_plugin_could_reach_is_what_it_declared_and_was_granted() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\n[hosts.b]\naddress='127.0.0.3'\n[hosts.c]\naddress='127.0.0.4'\n\
             [databases.a-db]\nhost='a'\ndbname='x'\nuser='u'\n[databases.c-db]\nhost='c'\ndbname='x'\nuser='u'\n\
             [topologies.t]\nplugin='p'\nmembers={node=['a-db']}\n[grants.p]\nservice=['b:app']\n[grants.q]\nssh=['local', '*']\n",
        )
        .expect("inventory");
        let grants = Grants::new(&inventory);
        let all: BTreeSet<Capability> = [Capability::Sql, Capability::Ssh, Capability::FileEdit, Capability::Service].into();
        assert_eq!(grants.reachable("p", &inventory, &all), (vec!["a-db".to_string()], vec!["a".to_string(), "b".to_string()]));
        let sql_only: BTreeSet<Capability> = [Capability::Sql].into();
        assert_eq!(grants.reachable("p", &inventory, &sql_only), (vec!["a-db".to_string()], vec![]));
        let (databases, hosts) = grants.reachable("q", &inventory, &all);
        assert!(databases.is_empty() && hosts == ["a", "b", "c"], "{databases:?} {hosts:?}");
        assert_eq!(grants.reachable("nobody", &inventory, &all), (vec![], vec![]));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("dn*-a", "dn01-a"));
        assert!(glob_match("a:/etc/*.conf", "a:/etc/pg/pg_hba.conf"));
        assert!(!glob_match("a:/etc/*.conf", "b:/etc/x.conf"));
        assert!(!glob_match("dn01", "dn012"));
    }

    #[test]
    fn deny_by_default_and_say_how_to_grant() {
        let inventory = Inventory::parse("[hosts.a]\naddress='127.0.0.2'\n[grants.p]\nssh=['a']\n").expect("inventory");
        let grants = Grants::new(&inventory);
        assert!(grants.check("p", Capability::Ssh, "a", None).is_ok());
        let denied = grants.check("p", Capability::Service, "a", Some("dtService")).unwrap_err();
        assert!(denied.contains("[grants.p]") && denied.contains("\"a:dtService\""), "{denied}");
        assert!(grants.check("other", Capability::Ssh, "a", None).is_err());
    }

    #[test]
    fn no_pattern_but_its_own_name_grants_the_operators_machine() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\n[grants.p]\nssh=['*']\nfile-edit=['*', 'l*:/etc/*']\nservice=['*:*']\n[grants.q]\nssh=['local']\nfile-edit=['local:/srv/app/*']\n",
        )
        .expect("inventory");
        let grants = Grants::new(&inventory);
        assert!(grants.check("p", Capability::Ssh, "a", None).is_ok());
        assert!(grants.check("p", Capability::Ssh, LOCAL_HOST, None).is_err());
        assert!(grants.check("p", Capability::FileEdit, LOCAL_HOST, Some("/etc/passwd")).is_err());
        assert!(grants.check("p", Capability::Service, LOCAL_HOST, Some("sshd")).is_err());
        assert!(!grants.may_see("p", LOCAL_HOST));
        assert!(grants.check("q", Capability::Ssh, LOCAL_HOST, None).is_ok());
        assert!(grants.check("q", Capability::FileEdit, LOCAL_HOST, Some("/srv/app/x.conf")).is_ok());
        assert!(grants.check("q", Capability::FileEdit, LOCAL_HOST, Some("/etc/passwd")).is_err());
    }

    #[test]
    fn a_probe_runs_where_it_was_approved_and_only_there() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\n[hosts.b]\naddress='127.0.0.3'\n[topologies.t]\nplugin='p'\nmembers={node=['a']}\n\
             [grants.q]\nssh=['b']\nprobes=['cat */PG_VERSION']\n",
        )
        .expect("inventory");
        let grants = Grants::new(&inventory);
        let declared = vec![ProbePattern::parse("pg_ctl status -D *").expect("pattern")];
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let status = argv(&["pg_ctl", "status", "-D", "/d"]);
        assert!(grants.check_probe("p", "a", &status, None, &declared).is_ok(), "declared, on a member of its topology");
        assert!(grants.check_probe("p", "b", &status, None, &declared).is_err(), "declared, but b is not its topology's");
        assert!(grants.check_probe("p", "a", &argv(&["pg_ctl", "stop", "-D", "/d"]), None, &declared).is_err());
        assert!(grants.check_probe("q", "b", &argv(&["cat", "/d/PG_VERSION"]), None, &[]).is_ok(), "approved in its grants");
        assert!(grants.check_probe("q", "b", &status, None, &declared).is_err(), "what it declares is not approved by a grant");
        let refused = grants.check_probe("q", "b", &argv(&["cat", "/etc/shadow"]), None, &[]).unwrap_err();
        assert!(refused.contains("`probes = [...]` under [grants.q]") && refused.contains("\"cat /etc/shadow\""), "{refused}");
    }
}
