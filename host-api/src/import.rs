//! `opsh inventory import FORMAT FILE`: a first inventory from a description the cluster already
//! has — OpenTenBase's `pgxc_ctl.conf`, an Ansible inventory (INI or YAML), `~/.ssh/config` — printed as
//! TOML for the operator to review. Never a secret: every database's password is a placeholder
//! `{ env = … }` source. What could not be carried over is said as a warning (and as a comment
//! in the TOML), never guessed.

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

/// An imported inventory: the TOML, and what the operator must look at.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

pub const FORMATS: &[&str] = &["pgxc_ctl", "ansible", "ssh-config"];

/// Larger than any cluster's description: a bigger file is refused before it is parsed.
const LARGEST: usize = 4 << 20;

pub fn import(format: &str, text: &str, source: &str) -> Result<Imported, String> {
    if text.len() > LARGEST {
        return Err(format!("the file is {} bytes; opsh imports descriptions of up to {} MiB", text.len(), LARGEST >> 20));
    }
    let (inventory, warnings) = match format {
        "pgxc_ctl" => pgxc_ctl(text)?,
        "ansible" => ansible(text)?,
        "ssh-config" => ssh_config(text)?,
        other => return Err(format!("inventory import: no format {other:?}; the formats are {}", FORMATS.join(", "))),
    };
    let mut toml = format!("# opsh inventory imported from {source} ({format}): review it before use.\n");
    for warning in &warnings {
        // A warning quotes the file, which may hold any character: a TOML comment holds no
        // control character (a newline would end it), so those are shown escaped.
        let shown: String = warning.chars().map(|c| if c.is_control() && c != '\t' { c.escape_default().collect() } else { c.to_string() }).collect();
        toml.push_str(&format!("# CHECK: {shown}\n"));
    }
    toml.push('\n');
    toml.push_str(&toml::to_string_pretty(&inventory).map_err(|e| format!("inventory import: {e}"))?);
    Ok(Imported { toml, warnings })
}

// ----- pgxc_ctl.conf ------------------------------------------------------------------------------

/// The variables of a pgxc_ctl.conf (a bash script of assignments: `name=value`, `name=(a b c)`,
/// `$name` references to earlier ones; heredocs that write extra config files are skipped).
fn bash_variables(text: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut vars: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unresolved = Vec::new();
    let mut heredoc: Option<String> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        if let Some(at) = line.find("<<") {
            let word = line[at + 2..].trim_start_matches('-').trim().trim_matches(|c| c == '\'' || c == '"');
            if !word.is_empty() {
                heredoc = Some(word.to_string());
                continue;
            }
        }
        let statement = strip_comment(line).trim();
        let Some((name, value)) = statement.split_once('=') else { continue };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut value = value.trim().to_string();
        if value.starts_with('(') {
            while !value.contains(')') {
                let Some(more) = lines.next() else { break };
                value.push(' ');
                value.push_str(strip_comment(more).trim());
            }
            let inside = value.trim_start_matches('(').split(')').next().unwrap_or_default().to_string();
            let items = inside.split_whitespace().map(|item| expand(item.trim_matches(|c| c == '"' || c == '\''), &vars, &mut unresolved)).collect();
            vars.insert(name.to_string(), items);
        } else {
            let plain = value.trim_matches(|c| c == '"' || c == '\'');
            let expanded = expand(plain, &vars, &mut unresolved);
            vars.insert(name.to_string(), vec![expanded]);
        }
    }
    unresolved.sort();
    unresolved.dedup();
    (vars, unresolved)
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `$name` and `${name}` replaced by an earlier scalar; unknown ones (`$HOME`, `$USER`: the
/// servers' environment, not this file's) are kept and reported.
fn expand(value: &str, vars: &BTreeMap<String, Vec<String>>, unresolved: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            // An unclosed `${name` (bash: "bad substitution") is kept as written.
            let Some(end) = braced.find('}') else {
                rest = &rest[at..];
                break;
            };
            (&braced[..end], end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name).and_then(|v| v.first()) {
            Some(known) if !name.is_empty() => out.push_str(known),
            _ => {
                out.push_str(&rest[at..at + 1 + len]);
                if !name.is_empty() {
                    unresolved.push(name.to_string());
                }
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn pgxc_ctl(text: &str) -> Result<(Table, Vec<String>), String> {
    let (vars, unresolved) = bash_variables(text);
    let mut warnings = Vec::new();
    let scalar = |name: &str| vars.get(name).and_then(|v| v.first()).cloned().filter(|v| !v.is_empty() && v != "none");
    let list = |name: &str| vars.get(name).cloned().unwrap_or_default();
    let yes = |name: &str| scalar(name).is_some_and(|v| v == "y");
    let owner = scalar("pgxcOwner").filter(|o| !o.contains('$'));
    if owner.is_none() {
        warnings.push("pgxcOwner is not a plain user name here: set each host's ssh login and each database's user by hand".into());
    }
    let user = owner.clone().unwrap_or_else(|| "opentenbase".into());
    let bin_dir = scalar("pgxcInstallDir").map(|d| format!("{}/bin", d.trim_end_matches('/')));
    if !unresolved.is_empty() {
        warnings.push(format!("the file uses ${} from the servers' environment; replace it in every path below with what it is there", unresolved.join(", $")));
    }
    let mut hosts = Table::new();
    let mut databases = Table::new();
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let add_host = |server: &str, hosts: &mut Table| {
        if !hosts.contains_key(server) {
            let mut entry = Table::new();
            entry.insert("address".into(), server.into());
            if let Some(owner) = &owner {
                entry.insert("ssh".into(), format!("{owner}@{server}").into());
            }
            hosts.insert(server.to_string(), entry.into());
        }
    };
    for (kind, prefix) in [("coordinator", "coord"), ("datanode", "datanode")] {
        let names = list(&format!("{prefix}Names"));
        if names.is_empty() {
            return Err(format!("pgxc_ctl.conf: no {prefix}Names: is it an OpenTenBase / Postgres-XL pgxc_ctl.conf?"));
        }
        let master_ports = list(&format!("{prefix}Ports"));
        let mut sets = vec![("Master", list(&format!("{prefix}MasterServers")), master_ports.clone(), list(&format!("{prefix}MasterDirs")))];
        if yes(&format!("{prefix}Slave")) {
            let ports = list(&format!("{prefix}SlavePorts"));
            sets.push((
                "Slave",
                list(&format!("{prefix}SlaveServers")),
                if ports.is_empty() { master_ports.clone() } else { ports },
                list(&format!("{prefix}SlaveDirs")),
            ));
        }
        for (i, node) in names.iter().enumerate() {
            for (role, servers, ports, dirs) in &sets {
                let Some(server) = servers.get(i).filter(|s| s.as_str() != "none") else { continue };
                let (Some(port), Some(dir)) = (ports.get(i), dirs.get(i)) else {
                    return Err(format!("pgxc_ctl.conf: {prefix}{role}: {node} (number {}) has a server but no port or directory", i + 1));
                };
                let port: i64 = port.parse().map_err(|_| format!("pgxc_ctl.conf: the port of {node} on {server} is {port:?}, not a number"))?;
                add_host(server, &mut hosts);
                let mut name = format!("{node}-{server}");
                let mut n = 2;
                while databases.contains_key(&name) {
                    name = format!("{node}-{server}-{n}");
                    n += 1;
                }
                let mut entry = Table::new();
                entry.insert("host".into(), server.clone().into());
                entry.insert("port".into(), port.into());
                entry.insert("dbname".into(), "postgres".into());
                entry.insert("user".into(), user.clone().into());
                entry.insert("password".into(), Value::Table(Table::from_iter([("env".to_string(), Value::from("OPSH_OTB_PASSWORD"))])));
                let mut attributes = Table::new();
                attributes.insert("otb-node".into(), node.clone().into());
                attributes.insert("otb-type".into(), kind.into());
                attributes.insert("data-dir".into(), dir.clone().into());
                if let Some(bin) = &bin_dir {
                    attributes.insert("bin-dir".into(), bin.clone().into());
                }
                entry.insert("attributes".into(), attributes.into());
                databases.insert(name.clone(), entry.into());
                members.entry(kind).or_default().push(name);
            }
        }
    }
    let mut attributes = Table::new();
    let gtm_name = scalar("gtmName").ok_or("pgxc_ctl.conf: no gtmName")?;
    attributes.insert("gtm.name".into(), gtm_name.into());
    let mut gtm_hosts = Vec::new();
    let mut gtms = vec![("Master", scalar("gtmMasterServer"), scalar("gtmMasterPort"), scalar("gtmMasterDir"))];
    if yes("gtmSlave") {
        gtms.push(("Slave", scalar("gtmSlaveServer"), scalar("gtmSlavePort"), scalar("gtmSlaveDir")));
    }
    for (role, server, port, dir) in gtms {
        let Some(server) = server else { continue };
        let (Some(port), Some(dir)) = (port, dir) else { return Err(format!("pgxc_ctl.conf: gtm{role}Server {server} has no gtm{role}Port or gtm{role}Dir")) };
        add_host(&server, &mut hosts);
        attributes.insert(format!("gtm.{server}.port"), port.into());
        attributes.insert(format!("gtm.{server}.data-dir"), dir.into());
        if let Some(bin) = &bin_dir {
            attributes.insert(format!("gtm.{server}.bin-dir"), bin.clone().into());
        }
        gtm_hosts.push(server);
    }
    if gtm_hosts.is_empty() {
        return Err("pgxc_ctl.conf: no gtmMasterServer".into());
    }
    attributes.insert("gtm.hosts".into(), gtm_hosts.join(",").into());
    if yes("gtmProxy") {
        warnings.push("GTM proxies (gtmProxy=y) are not imported: otb routes nodes to the GTM itself".into());
    }
    warnings.push(
        "every database's password comes from the environment variable OPSH_OTB_PASSWORD: change the source as you keep it (env, file or .pgpass)".into(),
    );
    warnings.push("sslmode is the default (prefer): set require or verify-full where the servers offer TLS".into());
    let mut topology = Table::new();
    topology.insert("plugin".into(), "otb".into());
    let mut member_table = Table::new();
    for (kind, names) in members {
        member_table.insert(kind.into(), names.into());
    }
    member_table.insert("server".into(), hosts.keys().cloned().collect::<Vec<_>>().into());
    topology.insert("members".into(), member_table.into());
    topology.insert("attributes".into(), attributes.into());
    let name = scalar("pgxcMainClusterName").filter(|n| !n.contains('$')).unwrap_or_else(|| "opentenbase".into());
    let mut inventory = Table::new();
    inventory.insert("hosts".into(), hosts.into());
    inventory.insert("databases".into(), databases.into());
    inventory.insert("topologies".into(), Value::Table(Table::from_iter([(name, Value::Table(topology))])));
    Ok((inventory, warnings))
}

// ----- Ansible (INI or YAML) ----------------------------------------------------------------------

/// An Ansible inventory read from either of its formats: hosts with their own variables, and
/// groups with their variables, member hosts and child groups.
#[derive(Default)]
struct Ansible {
    hosts: BTreeMap<String, BTreeMap<String, String>>,
    groups: BTreeMap<String, Group>,
    warnings: Vec<String>,
}

#[derive(Default)]
struct Group {
    vars: BTreeMap<String, String>,
    hosts: BTreeSet<String>,
    children: BTreeSet<String>,
}

impl Ansible {
    fn add_host(&mut self, group: &str, name: &str, vars: impl IntoIterator<Item = (String, String)>, place: &str) {
        if name.contains('[') {
            self.warnings.push(format!("{place}: the host range {name} is not expanded; list its hosts one by one"));
            return;
        }
        self.hosts.entry(name.to_string()).or_default().extend(vars);
        self.groups.entry(group.to_string()).or_default().hosts.insert(name.to_string());
    }

    fn add_child(&mut self, parent: &str, child: &str) {
        self.groups.entry(parent.to_string()).or_default().children.insert(child.to_string());
        self.groups.entry(child.to_string()).or_default();
    }

    /// Each group's depth as Ansible ranks group variables: `all` is 0, a group 1 more than its
    /// deepest parent (a group no other names is a child of `all`). A cycle is an error.
    fn depths(&self) -> Result<BTreeMap<&str, usize>, String> {
        let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, group) in &self.groups {
            for child in &group.children {
                parents.entry(child.as_str()).or_default().push(name.as_str());
            }
        }
        fn depth<'a>(
            group: &'a str,
            parents: &BTreeMap<&'a str, Vec<&'a str>>,
            known: &mut BTreeMap<&'a str, usize>,
            path: &mut Vec<&'a str>,
        ) -> Result<usize, String> {
            if group == "all" {
                return Ok(0);
            }
            if let Some(d) = known.get(group) {
                return Ok(*d);
            }
            if path.contains(&group) {
                return Err(format!("the groups {} are each other's children", path.join(", ")));
            }
            path.push(group);
            let mut deepest = 0;
            for parent in parents.get(group).into_iter().flatten() {
                deepest = deepest.max(depth(parent, parents, known, path)?);
            }
            path.pop();
            known.insert(group, deepest + 1);
            Ok(deepest + 1)
        }
        let mut known = BTreeMap::new();
        for name in self.groups.keys() {
            depth(name, &parents, &mut known, &mut Vec::new())?;
        }
        known.insert("all", 0);
        Ok(known)
    }

    fn into_inventory(self) -> Result<(Table, Vec<String>), String> {
        let mut warnings = self.warnings.clone();
        if self.hosts.is_empty() {
            return Err("the Ansible inventory lists no host".into());
        }
        let depths = self.depths()?;
        let mut direct: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut parents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (name, group) in &self.groups {
            for host in &group.hosts {
                direct.entry(host.as_str()).or_default().insert(name.as_str());
            }
            for child in &group.children {
                parents.entry(child.as_str()).or_default().insert(name.as_str());
            }
        }
        let mut table = Table::new();
        for (name, own) in &self.hosts {
            let listed = direct.get(name.as_str()).cloned().unwrap_or_default();
            // Every group the host is in: those that list it and their ancestors, `all` too.
            let mut member: BTreeSet<&str> = BTreeSet::from(["all"]);
            let mut todo: Vec<&str> = listed.iter().copied().collect();
            while let Some(group) = todo.pop() {
                if member.insert(group) {
                    todo.extend(parents.get(group).into_iter().flatten().copied());
                }
            }
            // Ansible applies group variables shallow to deep, by name within a depth, the
            // later overriding; the host's own variables last.
            let mut ranked: Vec<&str> = member.into_iter().collect();
            ranked.sort_by_key(|g| (depths.get(g).copied().unwrap_or(1), *g));
            let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
            for group in &ranked {
                for (k, v) in self.groups.get(*group).map(|g| &g.vars).into_iter().flatten() {
                    vars.insert(k, v);
                }
            }
            for (k, v) in own {
                vars.insert(k, v);
            }
            let get = |key: &str| vars.get(key).map(|v| v.to_string());
            let address = get("ansible_host").unwrap_or_else(|| name.clone());
            let mut entry = Table::new();
            entry.insert("address".into(), address.clone().into());
            if let Some(user) = get("ansible_user") {
                entry.insert("ssh".into(), format!("{user}@{address}").into());
            }
            if let Some(port) = get("ansible_port") {
                entry.insert("ssh-port".into(), port.parse::<i64>().map_err(|_| format!("host {name}: ansible_port {port:?} is not a number"))?.into());
            }
            if let Some(key) = get("ansible_ssh_private_key_file") {
                entry.insert("identity-file".into(), key.into());
            }
            if get("ansible_become").is_some_and(|b| matches!(b.as_str(), "true" | "yes" | "True" | "1")) {
                entry.insert("become".into(), "sudo".into());
            }
            if ["ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass"].iter().any(|k| vars.contains_key(k)) {
                warnings.push(format!("host {name}: its ssh/become password is not imported (opsh uses keys and sudo -n)"));
            }
            // The groups that list it (`ungrouped` only when no other does).
            let mut groups: Vec<&str> = listed.iter().copied().filter(|g| *g != "all").collect();
            if groups.len() > 1 {
                groups.retain(|g| *g != "ungrouped");
            }
            if !groups.is_empty() {
                entry.insert("attributes".into(), Value::Table(Table::from_iter([("ansible-groups".to_string(), Value::from(groups.join(",")))])));
            }
            table.insert(name.clone(), entry.into());
        }
        Ok((Table::from_iter([("hosts".to_string(), Value::Table(table))]), warnings))
    }
}

/// Ansible's two inventory formats, told apart as Ansible's own plugins do: an INI inventory
/// starts with a `[group]` header or a host line, a YAML one with a mapping (`all:`) or `---`.
fn ansible(text: &str) -> Result<(Table, Vec<String>), String> {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    // A JSON inventory (`ansible-inventory --list` prints one) is YAML too.
    let yaml =
        first.is_some_and(|l| l == "---" || l.starts_with("%YAML") || l.starts_with('{') || l.ends_with(':') || (l.contains(": ") && !l.starts_with('[')));
    let parsed = if yaml { ansible_yaml(text)? } else { ansible_ini(text)? };
    parsed.into_inventory()
}

/// An Ansible INI inventory: `[group]` lines `NAME key=value…`, `[group:vars]` the group's
/// variables, `[group:children]` its child groups. Hosts before any header are `ungrouped`.
fn ansible_ini(text: &str) -> Result<Ansible, String> {
    let mut inventory = Ansible::default();
    let mut section = String::from("ungrouped");
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let place = format!("line {}", n + 1);
        if let Some(group) = section.strip_suffix(":vars") {
            // Not the line itself in the message: a `:vars` line may hold a password.
            let (k, v) = line.split_once('=').ok_or_else(|| format!("{place}: [{section}] holds `name=value` lines only"))?;
            inventory.groups.entry(group.to_string()).or_default().vars.insert(k.trim().to_string(), unquote(v.trim()));
            continue;
        }
        if let Some(parent) = section.strip_suffix(":children") {
            inventory.add_child(parent, line);
            continue;
        }
        let words = shell_words::split(line).map_err(|e| format!("{place}: {e}"))?;
        let Some((name, rest)) = words.split_first() else { continue };
        let vars = rest.iter().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string()));
        inventory.add_host(&section, name, vars.collect::<Vec<_>>(), &place);
    }
    Ok(inventory)
}

/// Refuse, before anything is built from it, YAML that would cost more than its size: nesting
/// deeper than an inventory needs (the loader and the drop of its tree recurse), and aliases
/// (the loader copies an anchor at each alias: a few hundred bytes of aliases of aliases expand
/// to billions of nodes).
fn shallow_and_without_aliases(text: &str) -> Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    const DEEPEST: usize = 64;
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, at) = parser.next_token().map_err(|e| format!("the Ansible YAML inventory is not YAML: {e}"))?;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > DEEPEST {
                    return Err(format!("the Ansible YAML inventory nests deeper than {DEEPEST} levels (line {}): not read", at.line()));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) => {
                return Err(format!(
                    "the Ansible YAML inventory uses an alias (*name, line {}): opsh does not expand aliases; write the values out",
                    at.line()
                ));
            }
            _ => {}
        }
    }
}

fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2 && ((value.starts_with('"') && value.ends_with('"')) || (value.starts_with('\'') && value.ends_with('\'')));
    if quoted { value[1..value.len() - 1].to_string() } else { value.to_string() }
}

/// An Ansible YAML inventory: top-level groups (usually `all`), each a mapping of `hosts`
/// (name → variables), `vars` and `children` (name → group, nested to any depth).
fn ansible_yaml(text: &str) -> Result<Ansible, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    shallow_and_without_aliases(text)?;
    let documents = YamlLoader::load_from_str(text).map_err(|e| format!("the Ansible YAML inventory is not YAML: {e}"))?;
    let Some(Yaml::Hash(top)) = documents.into_iter().next() else {
        return Err("the Ansible YAML inventory is not a mapping of groups (such as `all:` with `hosts:` and `children:`)".into());
    };
    fn scalar(value: &Yaml) -> Option<String> {
        match value {
            Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn vars(value: &Yaml) -> BTreeMap<String, String> {
        match value {
            Yaml::Hash(map) => map.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v)?))).collect(),
            _ => BTreeMap::new(),
        }
    }
    fn group(inventory: &mut Ansible, name: &str, spec: &Yaml, path: &str, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err(format!("{path}: groups nested more than 64 deep"));
        }
        inventory.groups.entry(name.to_string()).or_default();
        let spec = match spec {
            Yaml::Hash(spec) => spec,
            Yaml::Null => return Ok(()),
            _ => return Err(format!("{path}: a group is a mapping of hosts, vars and children")),
        };
        for (key, value) in spec {
            match (key.as_str(), value) {
                (_, Yaml::Null) => {}
                (Some("hosts"), Yaml::Hash(hosts)) => {
                    for (host, host_vars) in hosts {
                        let host = scalar(host).ok_or_else(|| format!("{path}.hosts: a host name that is not text"))?;
                        inventory.add_host(name, &host, vars(host_vars), &format!("{path}.hosts"));
                    }
                }
                (Some("vars"), Yaml::Hash(_)) => inventory.groups.entry(name.to_string()).or_default().vars.extend(vars(value)),
                (Some("children"), Yaml::Hash(children)) => {
                    for (child, child_spec) in children {
                        let child = scalar(child).ok_or_else(|| format!("{path}.children: a group name that is not text"))?;
                        inventory.add_child(name, &child);
                        group(inventory, &child, child_spec, &format!("{path}.children.{child}"), depth + 1)?;
                    }
                }
                (Some(key @ ("hosts" | "vars" | "children")), _) => return Err(format!("{path}.{key}: a mapping, not a list or a value")),
                (Some(other), _) => inventory.warnings.push(format!("{path}: {other:?} is not hosts, vars or children: skipped")),
                (None, _) => return Err(format!("{path}: a key that is not text")),
            }
        }
        Ok(())
    }
    let mut inventory = Ansible::default();
    for (name, spec) in &top {
        let name = scalar(name).ok_or("the Ansible YAML inventory: a top-level group name that is not text")?;
        group(&mut inventory, &name, spec, &name, 0)?;
    }
    Ok(inventory)
}

// ----- ~/.ssh/config ----------------------------------------------------------------------------

/// The `Host` entries of an ssh_config that name one host (patterns with `*`, `?` or `!` are
/// skipped): each becomes an inventory host whose ssh destination is the alias, so that the
/// same ssh_config (the inventory's `[ssh] config`, or ~/.ssh/config) still applies.
fn ssh_config(text: &str) -> Result<(Table, Vec<String>), String> {
    let mut warnings = Vec::new();
    let mut table = Table::new();
    let mut current: Vec<String> = Vec::new();
    let mut settings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // `Host db2 db2-alt`: one host by two names — the first is the inventory host.
    let mut also: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(|c: char| c.is_whitespace() || c == '=').unwrap_or((line, ""));
        let value = value.trim().trim_start_matches('=').trim().trim_matches('"').to_string();
        match key.to_ascii_lowercase().as_str() {
            "host" => {
                current = value.split_whitespace().filter(|p| !p.contains(['*', '?', '!'])).map(str::to_string).collect();
                if let Some((first, others)) = current.split_first() {
                    settings.entry(first.clone()).or_default();
                    also.entry(first.clone()).or_default().extend(others.iter().cloned());
                    current.truncate(1);
                }
            }
            "match" => current.clear(),
            key => {
                for alias in &current {
                    // The first value given for a key wins, as ssh reads its config.
                    settings.entry(alias.clone()).or_default().entry(key.to_string()).or_insert_with(|| value.clone());
                }
            }
        }
    }
    if settings.is_empty() {
        return Err("the ssh config has no Host entry naming one host".into());
    }
    let mut addresses: BTreeMap<String, String> = BTreeMap::new();
    for (alias, keys) in settings {
        let address = keys.get("hostname").cloned().unwrap_or_else(|| alias.clone());
        if let Some(first) = addresses.get(&address) {
            warnings.push(format!("host {alias} has the same HostName ({address}) as {first}: listed once, as {first}"));
            continue;
        }
        addresses.insert(address.clone(), alias.clone());
        let mut entry = Table::new();
        entry.insert("address".into(), address.into());
        entry.insert("ssh".into(), alias.clone().into());
        let names = also.get(&alias).cloned().unwrap_or_default();
        if !names.is_empty() {
            let aliases: Table = names.into_iter().enumerate().map(|(i, n)| (format!("ssh-alias-{}", i + 1), Value::from(n))).collect();
            entry.insert("aliases".into(), aliases.into());
        }
        if keys.contains_key("proxyjump") || keys.contains_key("proxycommand") {
            warnings.push(format!("host {alias} is reached through a jump host: keep the ssh config in the inventory's [ssh] config so that opsh uses it"));
        }
        table.insert(alias, entry.into());
    }
    warnings.push("ports, users and keys stay in the ssh config (each host's ssh destination is its alias)".into());
    Ok((Table::from_iter([("hosts".to_string(), Value::Table(table))]), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_variables_expand_arrays_and_skip_heredocs() {
        let (vars, unresolved) =
            bash_variables("base=/srv/otb # the base\ndirs=($base/a \"$base/b\" ${base}/c)\ncat > x <<EOF\nnot=assigned\nEOF\nhome=$HOME/pgxc\n");
        assert_eq!(vars["dirs"], ["/srv/otb/a", "/srv/otb/b", "/srv/otb/c"]);
        assert!(!vars.contains_key("not"), "a heredoc's lines are not assignments");
        assert_eq!(vars["home"], ["$HOME/pgxc"]);
        assert_eq!(unresolved, ["HOME"]);
    }

    #[test]
    fn an_unclosed_brace_is_kept_as_written() {
        // Found by the import fuzz target: `${name` without its `}` ran past the end of the value.
        let (vars, _) = bash_variables("base=/srv\ndir=${base\nother=$base/x${\n");
        assert_eq!(vars["dir"], ["${base"]);
        assert_eq!(vars["other"], ["/srv/x${"]);
    }

    fn host<'a>(table: &'a Table, name: &str) -> &'a Table {
        table["hosts"][name].as_table().expect("the host")
    }

    #[test]
    fn ansible_ini_children_inherit_their_parents_vars_and_their_own_win() {
        let (table, _) = ansible("[primaries]\ndb1 ansible_host=10.0.0.1\n[replicas]\ndb2\n[replicas:vars]\nansible_user='replicator'\n[db:children]\nprimaries\nreplicas\n[db:vars]\nansible_user=postgres\nansible_port=2222\n").expect("imports");
        assert_eq!(host(&table, "db1")["ssh"].as_str(), Some("postgres@10.0.0.1"), "the parent group's user");
        assert_eq!(host(&table, "db2")["ssh"].as_str(), Some("replicator@db2"), "the child group's own user wins, unquoted");
        assert_eq!(host(&table, "db2")["ssh-port"].as_integer(), Some(2222));
        assert_eq!(host(&table, "db2")["attributes"]["ansible-groups"].as_str(), Some("replicas"));
    }

    #[test]
    fn ansible_group_vars_go_shallow_to_deep_then_by_name_and_the_hosts_own_last() {
        // Ansible's order: all < depth 1 < depth 2 …; within a depth by name, the later winning.
        let yaml = "all:\n  vars: {ansible_user: root, ansible_port: 22}\n  hosts:\n    db1: {ansible_port: 2200}\n  children:\n    b_side:\n      vars: {ansible_user: from_b}\n      hosts: {db1: }\n    a_side:\n      vars: {ansible_user: from_a}\n      hosts: {db1: }\n    parent:\n      vars: {ansible_user: from_parent}\n      hosts: {db2: }\n      children:\n        child:\n          vars: {ansible_user: from_child}\n          hosts: {db2: }\n";
        let (table, _) = ansible(yaml).expect("imports");
        assert_eq!(
            host(&table, "db1")["ssh"].as_str(),
            Some("from_b@db1"),
            "siblings: the later name wins, and all's vars lose although db1 is under all.hosts"
        );
        assert_eq!(host(&table, "db1")["ssh-port"].as_integer(), Some(2200), "the host's own var wins over all's");
        assert_eq!(host(&table, "db1")["attributes"]["ansible-groups"].as_str(), Some("a_side,b_side"));
        assert_eq!(host(&table, "db2")["ssh"].as_str(), Some("from_child@db2"), "listed in a parent and its child: the deeper group wins");
        assert_eq!(host(&table, "db2")["ssh-port"].as_integer(), Some(22));
        let (ini, _) = ansible("db9\n[web]\ndb9\n").expect("imports");
        assert_eq!(host(&ini, "db9")["attributes"]["ansible-groups"].as_str(), Some("web"), "ungrouped only when no other group lists it");
        let json = ansible("{\"all\": {\"hosts\": {\"db1\": {\"ansible_host\": \"10.0.0.9\"}}}}").expect("JSON is YAML");
        assert_eq!(host(&json.0, "db1")["address"].as_str(), Some("10.0.0.9"));
        assert!(ansible("[a:children]\nb\n[b:children]\na\n[a]\nh\n").expect_err("a cycle").contains("each other's children"));
    }

    #[test]
    fn a_warning_quoting_control_characters_keeps_the_output_toml() {
        // Found by the import fuzz target: a host range holding a newline broke out of its comment.
        let imported = import("ansible", "[g]\nweb[\u{0}\r1]\ndb1\n", "f").expect("imports");
        assert!(imported.toml.contains("# CHECK: line 2: the host range web[\\u{0}\\r1] is not expanded"), "{}", imported.toml);
        imported.toml.parse::<toml::Table>().expect("the output reads back as TOML");
    }

    #[test]
    fn ansible_yaml_that_is_not_an_inventory_is_an_error_naming_where() {
        assert!(ansible("all:\n  hosts: [db1, db2]\n").expect_err("a list of hosts").contains("all.hosts: a mapping"));
        assert!(ansible("all:\n  hosts:\n    db1:\n   bad: [\n").expect_err("not YAML").contains("is not YAML"));
        assert!(ansible("all:\n  children:\n    empty:\n").expect_err("no host").contains("lists no host"));
        let bare = ansible("[db:vars]\nansible_become_pass hunter2\n").expect_err("a bare word in vars");
        assert!(bare.contains("line 2: [db:vars] holds `name=value` lines only") && !bare.contains("hunter2"), "{bare}");
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nall:\n  hosts:\n    db1:\n";
        assert!(ansible(laughs).expect_err("aliases").contains("uses an alias (*name, line 2)"));
        let deep = format!("all:\n  vars:\n    x: {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert!(ansible(&deep).expect_err("deep").contains("nests deeper than 64 levels"));
        let block = format!("all:\n  vars:\n    x:\n{}", (0..200).map(|i| format!("{}- \n", " ".repeat(6 + 2 * i))).collect::<String>());
        assert!(ansible(&block).expect_err("deep block nesting").contains("nests deeper than 64 levels"));
    }
}
