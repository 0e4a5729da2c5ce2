//! `opsh inventory import FORMAT FILE`: a first inventory from a description the cluster already
//! has — OpenTenBase's `pgxc_ctl.conf`, an Ansible INI inventory, `~/.ssh/config` — printed as
//! TOML for the operator to review. Never a secret: every database's password is a placeholder
//! `{ env = … }` source. What could not be carried over is said as a warning (and as a comment
//! in the TOML), never guessed.

use std::collections::BTreeMap;

use toml::{Table, Value};

/// An imported inventory: the TOML, and what the operator must look at.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

pub const FORMATS: &[&str] = &["pgxc_ctl", "ansible", "ssh-config"];

pub fn import(format: &str, text: &str, source: &str) -> Result<Imported, String> {
    let (inventory, warnings) = match format {
        "pgxc_ctl" => pgxc_ctl(text)?,
        "ansible" => ansible_ini(text)?,
        "ssh-config" => ssh_config(text)?,
        other => return Err(format!("inventory import: no format {other:?}; the formats are {}", FORMATS.join(", "))),
    };
    let mut toml = format!("# opsh inventory imported from {source} ({format}): review it before use.\n");
    for warning in &warnings {
        toml.push_str(&format!("# CHECK: {warning}\n"));
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
            let end = braced.find('}').unwrap_or(braced.len());
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

// ----- Ansible INI ------------------------------------------------------------------------------

/// Hosts of an Ansible INI inventory (`[group]` lines `NAME key=value…`; `:vars` give the
/// group's defaults; `:children` and ranges are not expanded). Groups become the hosts'
/// `ansible-groups` attribute.
fn ansible_ini(text: &str) -> Result<(Table, Vec<String>), String> {
    let mut warnings = Vec::new();
    let mut section = String::from("ungrouped");
    let mut hosts: BTreeMap<String, (BTreeMap<String, String>, Vec<String>)> = BTreeMap::new();
    let mut group_vars: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let words = shell_words::split(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(group) = section.strip_suffix(":vars") {
            if let Some((k, v)) = line.split_once('=') {
                group_vars.entry(group.to_string()).or_default().insert(k.trim().to_string(), v.trim().to_string());
            }
            continue;
        }
        if section.ends_with(":children") {
            continue;
        }
        let Some((name, rest)) = words.split_first() else { continue };
        if name.contains('[') {
            warnings.push(format!("line {}: the host range {name} is not expanded; list its hosts one by one", n + 1));
            continue;
        }
        let entry = hosts.entry(name.clone()).or_default();
        for word in rest {
            if let Some((k, v)) = word.split_once('=') {
                entry.0.insert(k.to_string(), v.to_string());
            }
        }
        if !entry.1.contains(&section) {
            entry.1.push(section.clone());
        }
    }
    if hosts.is_empty() {
        return Err("the Ansible inventory lists no host".into());
    }
    let mut table = Table::new();
    for (name, (vars, groups)) in hosts {
        let get = |key: &str| vars.get(key).cloned().or_else(|| groups.iter().find_map(|g| group_vars.get(g).and_then(|v| v.get(key)).cloned()));
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
        if get("ansible_password").is_some() || get("ansible_become_password").is_some() {
            warnings.push(format!("host {name}: its ssh/become password is not imported (opsh uses keys and sudo -n)"));
        }
        entry.insert("attributes".into(), Value::Table(Table::from_iter([("ansible-groups".to_string(), Value::from(groups.join(",")))])));
        table.insert(name, entry.into());
    }
    Ok((Table::from_iter([("hosts".to_string(), Value::Table(table))]), warnings))
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
}
