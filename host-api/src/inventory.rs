//! The operator's inventory: hosts, databases, topologies and grants, read from TOML.
//!
//! Everything a plugin addresses is a name in here. Passwords are never stored in the inventory
//! itself: a database names where its password comes from (an environment variable, a file, or
//! `~/.pgpass`), and [`Inventory::database_password`] is the only way to read it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The built-in host that means "the machine opsh runs on".
pub const LOCAL_HOST: &str = "local";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub ssh: SshDefaults,
    #[serde(default)]
    pub hosts: BTreeMap<String, Host>,
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    #[serde(default)]
    pub topologies: BTreeMap<String, Topology>,
    /// Plugin name → what it may touch. Nothing is granted by default.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Team mode: the database that holds every operator's locks and journal.
    pub state: Option<State>,
    /// Where the inventory was read from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[state]`: where a team's opsh keep their shared locks and journal (see `state.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// A database of this inventory; `opsh state init` creates opsh's schema there.
    pub database: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Defaults {
    /// Connecting (TCP + TLS + authentication) to a database or host.
    pub connect_timeout_ms: u64,
    /// One SQL statement.
    pub statement_timeout_ms: u64,
    /// The longest one remote command may run (a base backup, a restore): the plugin may ask
    /// for less, never for more.
    pub command_timeout_ms: u64,
    /// One call of a plugin outside apply (read, plan, check, verify), wall clock, its waits
    /// (`host.sleep`, capability calls) included.
    pub call_timeout_ms: u64,
    /// One `apply` call of a step, wall clock.
    pub apply_timeout_ms: u64,
    /// At most this many targets asked at once: the reads a plugin gathers, the targets reached
    /// before a read, the steps of one group. (One host runs at most `exec::PER_HOST` commands at
    /// once over its connection, whatever this says.)
    pub parallel: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            statement_timeout_ms: 60_000,
            command_timeout_ms: 3_600_000,
            call_timeout_ms: 600_000,
            apply_timeout_ms: 3_600_000,
            parallel: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SshDefaults {
    /// An ssh_config file passed to ssh with `-F` (otherwise `~/.ssh/config` applies).
    pub config: Option<PathBuf>,
    /// Where the multiplexing control sockets live (short path: sockets have a length limit).
    pub control_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Host {
    /// The host's network address (IP or DNS name). Plugins see it only as `{{addr:NAME}}`.
    pub address: String,
    /// Other names of the same host, by kind (`dns = "db1"`, `fqdn = "db1.example.com"`,
    /// `repl = "192.168.5.11"`): files and catalogs often name a host by one of these. Plugins
    /// see each only as `{{addr:NAME:KIND}}`, so "does this file name host X" knows every name,
    /// and a value written back keeps the form the file uses.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// The ssh destination (`user@host` or an ssh_config alias); defaults to `address`.
    pub ssh: Option<String>,
    pub ssh_port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// Privilege escalation for service control, file edits and privileged commands.
    #[serde(default, rename = "become")]
    pub escalation: Become,
    #[serde(default)]
    pub service_manager: ServiceManager,
    /// Free-form non-secret attributes a plugin may read.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Become {
    #[default]
    None,
    /// `sudo -n` (never prompts: a password prompt would hang a runbook).
    Sudo,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", untagged)]
pub enum ServiceManager {
    #[default]
    #[serde(skip)]
    Unset,
    Named(ServiceManagerName),
    /// A command template with `{action}` and `{service}`; it follows the LSB exit codes for
    /// `status` (0 running, 3 stopped, 4 unknown service).
    Command {
        command: String,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceManagerName {
    Systemd,
    /// SysV `service NAME ACTION`.
    Sysv,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Database {
    /// The inventory host the server runs on.
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<PasswordSource>,
    /// The role every reading session (read, plan, check, verify) logs in as: one that cannot
    /// change things (no superuser) is the only complete defence against a plugin's side effects
    /// while planning. Its password comes from `plan-password`, else `~/.pgpass`.
    pub plan_user: Option<String>,
    pub plan_password: Option<PasswordSource>,
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA certificate (PEM) for `verify-ca` / `verify-full`; the system's web roots otherwise.
    pub sslrootcert: Option<PathBuf>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_pg_port() -> u16 {
    5432
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum PasswordSource {
    Env { env: String },
    File { file: PathBuf },
    Pgpass { pgpass: bool },
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Topology {
    /// The plugin that manages this topology: it is granted every member.
    pub plugin: Option<String>,
    /// Role → inventory names (hosts or databases), e.g. `master = ["dn01-a"]`.
    #[serde(default)]
    pub members: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// What one plugin may touch, as name patterns (`*` matches anything).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grant {
    /// Databases.
    #[serde(default)]
    pub sql: Vec<String>,
    /// Hosts on which commands may run.
    #[serde(default)]
    pub ssh: Vec<String>,
    /// `HOST:PATH` patterns.
    #[serde(default)]
    pub file_edit: Vec<String>,
    /// `HOST:SERVICE` patterns.
    #[serde(default)]
    pub service: Vec<String>,
    /// Commands the plugin may run while reading, planning or verifying, on the hosts `ssh`
    /// grants it (argv patterns, see `probe`): the operator's approval of its probes.
    #[serde(default)]
    pub probes: Vec<String>,
    /// `sha256:HEX` of the one component these grants are for (`opsh plugins` shows each
    /// plugin's): a plugin file with another hash that claims the name is refused.
    pub component: Option<String>,
}

/// A secret read from its source. It cannot be printed, serialised or logged by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the inventory {}: give one with --inventory PATH (see README: Inventory)", path.display()))?;
        let mut inventory = Self::parse(&text).with_context(|| format!("inventory {} is malformed", path.display()))?;
        inventory.source = path.to_path_buf();
        Ok(inventory)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let inventory: Inventory = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        inventory.validate()?;
        Ok(inventory)
    }

    /// An inventory with nothing in it (opsh still starts; every target is unknown).
    pub fn empty() -> Self {
        Self::default()
    }

    fn validate(&self) -> Result<()> {
        for name in self.hosts.keys().chain(self.databases.keys()).chain(self.topologies.keys()) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bail!("name {name:?}: names may only use letters, digits, '-', '_' and '.'");
            }
        }
        if self.hosts.contains_key(LOCAL_HOST) {
            bail!("host name {LOCAL_HOST:?} is built in (this machine); pick another name");
        }
        let mut names_of_hosts: BTreeMap<&str, String> = BTreeMap::new();
        for (name, host) in &self.hosts {
            if host.address.trim().is_empty() {
                bail!("host {name}: address is empty");
            }
            for (kind, value) in &host.aliases {
                if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                    bail!("host {name}: alias kind {kind:?}: use lower-case letters, digits and '-' (e.g. dns, fqdn, repl)");
                }
                if value.trim().is_empty() || value.trim() != value || value.contains(char::is_whitespace) {
                    bail!("host {name}: alias {kind} = {value:?} is empty or has spaces");
                }
            }
            for (label, value) in std::iter::once(("address".to_string(), &host.address)).chain(host.aliases.iter().map(|(k, v)| (format!("alias {k}"), v))) {
                let owner = format!("host {name} ({label})");
                if let Some(earlier) = names_of_hosts.insert(value.as_str(), owner.clone()) {
                    bail!("{value:?} is given twice, as {earlier} and as {owner}: each address or alias must name exactly one host");
                }
            }
        }
        let mut seen = BTreeMap::new();
        for name in self.hosts.keys().chain(self.databases.keys()).chain(self.topologies.keys()) {
            if seen.insert(name.as_str(), ()).is_some() {
                bail!("name {name:?} is used twice; hosts, databases and topologies share one namespace");
            }
        }
        for (plugin, grant) in &self.grants {
            for pattern in &grant.probes {
                crate::probe::ProbePattern::parse(pattern).map_err(|e| anyhow::anyhow!("[grants.{plugin}] probes: {e}"))?;
            }
        }
        for (name, db) in &self.databases {
            if !self.hosts.contains_key(&db.host) {
                bail!("database {name}: host {:?} is not a host in the inventory", db.host);
            }
            if matches!(db.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && db.sslrootcert.is_none() {
                // Allowed: the web roots are used. Nothing to check.
            }
        }
        if let Some(state) = &self.state
            && !self.databases.contains_key(&state.database)
        {
            bail!("[state] database = {:?} is not a database in the inventory: name one of [databases.NAME]", state.database);
        }
        for (name, topology) in &self.topologies {
            for (role, members) in &topology.members {
                for member in members {
                    if !self.hosts.contains_key(member) && !self.databases.contains_key(member) {
                        bail!("topology {name}: member {member:?} (role {role}) is not a host or database in the inventory");
                    }
                }
            }
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    /// What a plugin's completion word stands for in this inventory (`completion::choices`):
    /// `@members` the member roles of the topologies `plugin` manages (Tungsten's dataservices),
    /// `@ATTR` the values of attribute ATTR on those topologies' members, hosts and databases
    /// (`@otb-node`: OpenTenBase's node names); any other word is itself. Sorted, each once.
    pub fn completion_words(&self, plugin: &str, word: &str) -> Vec<String> {
        let Some(token) = word.strip_prefix('@') else { return vec![word.to_string()] };
        let topologies: Vec<&Topology> = self.topologies.values().filter(|t| t.plugin.as_deref() == Some(plugin)).collect();
        let mut out = std::collections::BTreeSet::new();
        for topology in &topologies {
            if token == "members" {
                out.extend(topology.members.keys().cloned());
                continue;
            }
            for name in topology.members.values().flatten() {
                let attributes = self.hosts.get(name).map(|h| &h.attributes).or_else(|| self.databases.get(name).map(|d| &d.attributes));
                out.extend(attributes.and_then(|a| a.get(token)).cloned());
            }
        }
        out.into_iter().collect()
    }

    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name)
    }

    /// A database's password, from the source it names, else `~/.pgpass` (or `$PGPASSFILE`).
    pub fn database_password(&self, name: &str) -> Result<Option<Secret>> {
        let db = self.databases.get(name).with_context(|| format!("database {name} is not in the inventory"))?;
        self.password_of(name, &db.user, db.password.as_ref())
    }

    /// The password of a database's `plan-user` (none when it has no plan user).
    pub fn plan_password(&self, name: &str) -> Result<Option<Secret>> {
        let db = self.databases.get(name).with_context(|| format!("database {name} is not in the inventory"))?;
        match &db.plan_user {
            Some(user) => self.password_of(name, user, db.plan_password.as_ref()),
            None => Ok(None),
        }
    }

    fn password_of(&self, name: &str, user: &str, source: Option<&PasswordSource>) -> Result<Option<Secret>> {
        let db = self.databases.get(name).with_context(|| format!("database {name} is not in the inventory"))?;
        let host = self.hosts.get(&db.host).with_context(|| format!("database {name}: unknown host {}", db.host))?;
        match source {
            Some(PasswordSource::Env { env }) => match std::env::var(env) {
                Ok(value) => Ok(Some(Secret(value))),
                Err(_) => bail!("database {name}: its password comes from ${env}, which is not set; export it and try again"),
            },
            Some(PasswordSource::File { file }) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("database {name}: cannot read its password file {}", file.display()))?;
                Ok(Some(Secret(text.trim_end_matches(['\n', '\r']).to_string())))
            }
            Some(PasswordSource::Pgpass { pgpass: false }) => Ok(None),
            Some(PasswordSource::Pgpass { pgpass: true }) | None => {
                let found = pgpass_lookup(&host.address, db.port, &db.dbname, user)?;
                if found.is_none() && source.is_some() {
                    bail!("database {name}: no matching line in the .pgpass file for {}:{}:{}:{user}", db.host, db.port, db.dbname);
                }
                Ok(found)
            }
        }
    }

    /// Every value that must never appear in output: the passwords the inventory can resolve.
    pub fn known_secrets(&self) -> Vec<Secret> {
        self.databases
            .keys()
            .flat_map(|name| [self.database_password(name).ok().flatten(), self.plan_password(name).ok().flatten()])
            .flatten()
            .filter(|secret| !secret.expose().is_empty())
            .collect()
    }
}

/// The `.pgpass` format: `hostname:port:database:username:password`, `*` wildcards, `\:` and `\\`
/// escapes, `#` comments (as libpq reads it).
fn pgpass_lookup(host: &str, port: u16, dbname: &str, user: &str) -> Result<Option<Secret>> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => match directories::BaseDirs::new() {
            Some(base) => base.home_dir().join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host) && matches(&fields[1], &port) && matches(&fields[2], dbname) && matches(&fields[3], user) {
            return Ok(Some(Secret(fields[4].clone())));
        }
    }
    Ok(None)
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if let Some(f) = fields.last_mut() {
                        f.push(next)
                    }
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin's `@…` completion words read the inventory: member roles, members' attributes,
    /// only of the plugin's own topologies; a plain word is itself.
    #[test]
    fn completion_words_come_from_the_plugins_topologies() {
        let text = "[hosts.a]\naddress='127.0.0.2'\n[hosts.b]\naddress='127.0.0.3'\n\
                    [databases.d1]\nhost='a'\ndbname='x'\nuser='u'\nattributes={ otb-node = 'dn7' }\n\
                    [databases.d2]\nhost='b'\ndbname='x'\nuser='u'\nattributes={ otb-node = 'cn3' }\n\
                    [databases.d3]\nhost='b'\ndbname='y'\nuser='u'\nattributes={ otb-node = 'other' }\n\
                    [topologies.t]\nplugin='otb'\nmembers={ datanode = ['d1'], coordinator = ['d2', 'd1'] }\n\
                    [topologies.w]\nplugin='tungsten'\nmembers={ west = ['a'], north = ['b'] }\n";
        let inventory = Inventory::parse(text).expect("inventory");
        assert_eq!(inventory.completion_words("otb", "@otb-node"), ["cn3", "dn7"], "d3 is in no otb topology");
        assert_eq!(inventory.completion_words("otb", "@members"), ["coordinator", "datanode"]);
        assert_eq!(inventory.completion_words("tungsten", "@members"), ["north", "west"]);
        assert_eq!(inventory.completion_words("tungsten", "@otb-node"), Vec::<String>::new());
        assert_eq!(inventory.completion_words("otb", "gtm"), ["gtm"]);
    }

    #[test]
    fn pgpass_escapes_and_wildcards() {
        assert_eq!(split_pgpass_line(r"h:5432:*:u:pa\:ss\\w"), vec!["h", "5432", "*", "u", r"pa:ss\w"]);
    }

    #[test]
    fn unknown_database_host_is_refused_with_its_name() {
        let err = Inventory::parse("[hosts.a]\naddress='127.0.0.2'\n[databases.d]\nhost='b'\ndbname='x'\nuser='u'\n").unwrap_err();
        assert!(err.to_string().contains("database d: host \"b\""), "{err}");
    }

    #[test]
    fn passwords_come_from_env_file_or_pgpass_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, "# comment\n127.0.0.9:5432:*:u:wrong-host\n127.0.0.2:5432:*:u:from-pgpass\n").expect("write");
        let text = format!(
            "[hosts.a]\naddress='127.0.0.2'\n\
             [databases.e]\nhost='a'\ndbname='x'\nuser='u'\npassword={{ env = 'OPSH_TEST_PW_E' }}\n\
             [databases.f]\nhost='a'\ndbname='x'\nuser='u'\npassword={{ file = '{}' }}\n\
             [databases.p]\nhost='a'\ndbname='x'\nuser='u'\npassword={{ pgpass = true }}\n\
             [databases.m]\nhost='a'\ndbname='x'\nuser='u'\npassword={{ env = 'OPSH_TEST_PW_MISSING' }}\n",
            file.display()
        );
        let inventory = Inventory::parse(&text).expect("inventory");
        // SAFETY of the test: these variable names are used by no other test.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("OPSH_TEST_PW_E", "from-env");
            std::env::set_var("PGPASSFILE", &pgpass);
        }
        let get = |db: &str| inventory.database_password(db).expect(db).expect(db).expose().to_string();
        assert_eq!(get("e"), "from-env");
        assert_eq!(get("f"), "from-file");
        assert_eq!(get("p"), "from-pgpass");
        let missing = inventory.database_password("m").unwrap_err().to_string();
        assert!(missing.contains("$OPSH_TEST_PW_MISSING, which is not set"), "{missing}");
        assert_eq!(format!("{:?}", inventory.database_password("e").expect("e")), "Some(<redacted>)");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Inventory::parse("[hosts.a]\naddress='127.0.0.2'\nadress='x'\n").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub fn secret(value: &str) -> super::Secret {
        super::Secret(value.to_string())
    }
}
