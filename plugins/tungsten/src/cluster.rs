//! The multi-site deployment as the inventory describes it — any number of dataservices and of
//! hosts, where each host's two installations live (per dataservice if they differ) — and how the
//! Tungsten tools report their state: cctrl's `ls` as Continuent's CLUtils prints it, trepctl's
//! NAME/VALUE status. Hosts appear in that output under their Tungsten names (tpm's member
//! names, often FQDNs), which the inventory gives as one of each host's names; the host
//! then hands them to the plugin as that host's token, so a datasource is mapped to its
//! inventory host whatever it is called.

use opsh_plugin_sdk::{CapabilityError, CommandError, host, inventory, names, ssh};

const DOCS: &str = "plugins/tungsten/README.md";

/// What this plugin runs on a Tungsten host while nothing may change (declared in
/// `describe()`): whether it answers, cctrl's `ls`, and the replicators' status.
pub const PROBES: &[&str] =
    &["true", "*/tungsten-manager/bin/cctrl <<< ls", "*/tungsten-replicator/bin/trepctl -service * status", "*/tungsten-replicator/bin/replicator status"];

pub struct Deployment {
    pub topology: String,
    /// Dataservice name → its hosts, in inventory order.
    pub services: Vec<(String, Vec<String>)>,
    attributes: host::TargetInfo,
}

/// Which installation of a host a tool belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// The host's own cluster (`/opt/continuent/tungsten` in the seed): cctrl, replicator, tpm,
    /// tungsten_provision_slave, and trepctl for its own dataservice.
    Cluster,
    /// The replicator that applies every other dataservice here (`/opt/replicator/tungsten`).
    CrossSite,
}

impl Deployment {
    pub fn load() -> Result<Self, CommandError> {
        let topology = inventory::managed_topology("tungsten")?;
        let mut services = Vec::new();
        for (key, _) in &topology.attributes {
            if let Some(role) = key.strip_prefix("member.") {
                services.push((role.to_string(), inventory::members(&topology, role)));
            }
        }
        if services.len() < 2 {
            return Err(CommandError::Failed(format!(
                "topology {}: a multi-site active/active deployment has two or more dataservices as member roles, not {} (see {DOCS})",
                topology.name,
                services.len()
            )));
        }
        Ok(Self { topology: topology.name.clone(), services, attributes: topology })
    }

    pub fn hosts(&self, service: &str) -> Result<&[String], CommandError> {
        self.services.iter().find(|(s, _)| s == service).map(|(_, h)| h.as_slice()).ok_or_else(|| {
            CommandError::Usage(format!("{service} is not a dataservice of topology {}: its dataservices are {}", self.topology, self.names().join(", ")))
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.services.iter().map(|(s, _)| s.clone()).collect()
    }

    pub fn service_of(&self, host: &str) -> Option<&str> {
        self.services.iter().find(|(_, hosts)| hosts.iter().any(|h| h == host)).map(|(s, _)| s.as_str())
    }

    /// Every dataservice but `service`: each replicates `service` into itself.
    pub fn others(&self, service: &str) -> Vec<String> {
        self.services.iter().map(|(s, _)| s.clone()).filter(|s| s != service).collect()
    }

    /// The installation directory of `install` on the hosts of `service` (`SERVICE.cluster-home`
    /// overrides `cluster-home`, and so on).
    fn home(&self, service: &str, install: Install) -> Result<String, CommandError> {
        let key = match install {
            Install::Cluster => "cluster-home",
            Install::CrossSite => "cross-site-home",
        };
        inventory::attr(&self.attributes, &format!("{service}.{key}")).or_else(|| inventory::attr(&self.attributes, key)).map(str::to_string).ok_or_else(|| {
            CommandError::Failed(format!("topology {} has no attribute {key:?} (the Tungsten installation directory; see {DOCS})", self.topology))
        })
    }

    /// The path of a tool on a host of `service`.
    pub fn tool(&self, service: &str, install: Install, tool: &str) -> Result<String, CommandError> {
        let relative = match tool {
            "cctrl" => "tungsten-manager/bin/cctrl",
            "trepctl" => "tungsten-replicator/bin/trepctl",
            "replicator" => "tungsten-replicator/bin/replicator",
            "tpm" => "tools/tpm",
            "tungsten_provision_slave" => "tungsten-replicator/scripts/tungsten_provision_slave",
            other => return Err(CommandError::Failed(format!("unknown Tungsten tool {other}"))),
        };
        Ok(format!("{}/{relative}", self.home(service, install)?.trim_end_matches('/')))
    }
}

/// `trepctl -service S status` as fields (`state`, `appliedLastSeqno`, `host`, …); `Err` with the
/// tool's own words when it cannot answer. trepctl prints its errors on stdout.
pub fn trepctl_status(host_name: &str, trepctl: &str, service: &str) -> Result<Vec<(String, String)>, String> {
    let out = opsh_plugin_sdk::probe(host_name, &[trepctl, "-service", service, "status"], Some(30_000)).map_err(|e| e.brief())?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status != Some(0) {
        return Err(first_line(&stdout, &out.stderr));
    }
    Ok(parse_fields(&stdout))
}

/// trepctl's `NAME : VALUE` lines (keys padded to the longest, whatever its width).
pub fn parse_fields(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty() && !k.contains(' '))
        .collect()
}

pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The replicator's state as one word (`ONLINE`, `OFFLINE:NORMAL`, `STOPPED` …) and its seqno.
/// Only the `Connection failed` prefix is matched (the rest of the message varies by version).
pub fn replicator_state(host_name: &str, trepctl: &str, service: &str) -> Result<(String, i64), String> {
    match trepctl_status(host_name, trepctl, service) {
        Ok(fields) => {
            let state = field(&fields, "state");
            if state.is_empty() {
                return Err(format!("trepctl on {host_name} printed no state for {service}"));
            }
            Ok((state.to_string(), field(&fields, "appliedLastSeqno").parse().unwrap_or(-1)))
        }
        Err(e) if e.starts_with("Connection failed") => Ok(("STOPPED".into(), -1)),
        Err(e) => Err(e),
    }
}

/// The inventory host a Tungsten name is: one of the host's names (its token), or its inventory
/// name itself (Tungsten hosts are often named as the inventory names them).
pub fn inventory_host(name: &str, hosts: &[String]) -> Option<String> {
    names::host_of(name).map(|m| m.host).or_else(|| hosts.iter().find(|h| *h == name).cloned())
}

/// A host's Tungsten name as its own replicator reports it (`host`, the same as `sourceId`), in
/// the form `--source=` must be written in: the host's token, or its inventory name.
pub fn tungsten_name(host_name: &str, trepctl: &str, service: &str, hosts: &[String]) -> Result<String, String> {
    let fields = trepctl_status(host_name, trepctl, service)?;
    let reported = field(&fields, "host");
    match inventory_host(reported, hosts) {
        Some(h) if h == host_name => Ok(reported.to_string()),
        Some(h) => Err(format!("{host_name}'s replicator calls itself {reported}, a name of host {h} in the inventory")),
        None => Err(format!(
            "{host_name}'s replicator calls itself {reported:?}, which is no name of {host_name} in the inventory: add it to the host's `aliases` (e.g. tungsten = \"{reported}\")"
        )),
    }
}

/// One datasource of `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datasource {
    /// As printed (a host token when it is a name of an inventory host).
    pub name: String,
    pub role: String,
    /// The datasource's state (`ONLINE`, `OFFLINE`, `SHUNNED(…)`, `FAILED(…)`).
    pub state: String,
    /// Its REPLICATOR line's state (`ONLINE`, `OFFLINE:NORMAL`, `STOPPED` …); empty if none.
    pub replicator: String,
}

/// What `cctrl` `ls` shows of a dataservice.
#[derive(Debug, Default)]
pub struct Overview {
    pub coordinator: String,
    pub policy: String,
    /// Connector (as printed) → state.
    pub routers: Vec<(String, String)>,
    pub datasources: Vec<Datasource>,
}

/// Ask cctrl on a host (a probe: the commands on its standard input only read).
fn cctrl(host_name: &str, cctrl: &str, commands: &str) -> Result<ssh::ExecOutput, CapabilityError> {
    let mut request = opsh_plugin_sdk::exec_request(&[cctrl], Some(120_000), true);
    request.stdin = Some(commands.as_bytes().to_vec());
    ssh::exec(host_name, &request)
}

pub fn overview(host_name: &str, cctrl_path: &str) -> Result<Overview, String> {
    let out = cctrl(host_name, cctrl_path, "ls\n").map_err(|e| e.brief())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status != Some(0) {
        return Err(format!("cctrl ls on {host_name} exited {:?}: {}", out.status, first_line(&text, &out.stderr)));
    }
    let view = parse_ls(&text);
    if view.policy.is_empty() {
        // No documented message for a manager that cannot be reached: no COORDINATOR line is
        // "cannot tell".
        return Err(format!("cctrl ls on {host_name} showed no COORDINATOR line: {}", first_line(&text, &out.stderr)));
    }
    Ok(view)
}

/// `ls` as CLUtils formats it: rows in `|…|` boxes, a datasource header `NAME(ROLE:STATE[,
/// progress=N, [THL ]latency=L])` (no progress while its replicator is stopped), possibly wrapped
/// onto a continuation row, then its STATUS / MANAGER / REPLICATOR / DATASERVER rows.
pub fn parse_ls(text: &str) -> Overview {
    let mut view = Overview::default();
    // Rows with wrapped continuations joined.
    let mut rows: Vec<String> = Vec::new();
    for line in text.lines() {
        let boxed = line.strip_prefix('|').and_then(|l| l.strip_suffix('|'));
        match boxed {
            Some(inner) => {
                let continues = inner.starts_with(' ')
                    && !inner.trim_start().starts_with(char::is_uppercase)
                    && rows.last().is_some_and(|r| r.contains('(') && !r.ends_with(')'));
                if continues {
                    if let Some(last) = rows.last_mut() {
                        last.push(' ');
                        last.push_str(inner.trim());
                    }
                } else {
                    rows.push(inner.trim().to_string());
                }
            }
            None => rows.push(line.trim().to_string()),
        }
    }
    for row in rows {
        if let Some(inner) = row.strip_prefix("COORDINATOR[").and_then(|l| l.strip_suffix(']')) {
            let parts: Vec<&str> = inner.split(':').collect();
            // A host token has colons of its own: the policy and state are the last two.
            if parts.len() >= 3 {
                view.coordinator = parts[..parts.len() - 2].join(":");
                view.policy = parts[parts.len() - 2].to_string();
            }
        } else if let Some(rest) = row.strip_prefix("connector@") {
            let name = rest.split('[').next().unwrap_or("").to_string();
            let state = rest.split("](").nth(1).and_then(|s| s.split(',').next()).unwrap_or("").to_string();
            view.routers.push((name, state));
        } else if let Some(inner) = row.strip_prefix("REPLICATOR(").and_then(|r| r.strip_suffix(')')) {
            if let Some(last) = view.datasources.last_mut() {
                last.replicator = inner.split(", ").find_map(|kv| kv.strip_prefix("state=")).unwrap_or("").to_string();
            }
        } else if let Some(ds) = datasource_header(&row) {
            view.datasources.push(ds);
        }
    }
    view
}

const ROLES: &[&str] = &["master", "slave", "standby", "relay", "archive", "undefined", "witness", "composite master", "composite slave"];

fn datasource_header(row: &str) -> Option<Datasource> {
    let open = row.find('(')?;
    let name = row[..open].trim_end_matches('*');
    if name.is_empty() || name.contains(' ') || name.contains('=') {
        return None;
    }
    let inner = row[open + 1..].trim_end_matches(')');
    let (role, rest) = inner.split_once(':')?;
    if !ROLES.contains(&role) {
        return None;
    }
    let state = rest.split(", ").next().unwrap_or("").trim().to_string();
    Some(Datasource { name: name.to_string(), role: role.to_string(), state, replicator: String::new() })
}

/// The line that says what went wrong (Tungsten's tools print errors on stdout).
pub fn first_line(stdout: &str, stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr).to_string();
    stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.contains("ERROR") || l.contains("failed") || l.contains("Failed") || l.contains("refused"))
        .or_else(|| stderr.lines().next())
        .or_else(|| stdout.lines().next())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LS: &str = "COORDINATOR[{{addr:east1:tungsten}}:MAINTENANCE:ONLINE]\n\nROUTERS:\n+---+\n|connector@{{addr:east1:tungsten}}[8805](ONLINE, created=0, active=0)   |\n+---+\n\nDATASOURCES:\n+---+\n\
        |{{addr:east1:tungsten}}(slave:ONLINE, progress=1042,                                         |\n|                      latency=1.243)       |\n|STATUS [OK] [2026/11/23 09:11:10 PM UTC]   |\n+---+\n|  MANAGER(state=ONLINE)   |\n|  REPLICATOR(role=slave, master={{addr:east2}}, state=ONLINE)   |\n+---+\n\
        |{{addr:east2}}(master:ONLINE)     |\n|STATUS [DIMINISHED] [x]   |\n|REASON[REPLICATOR STOPPED]   |\n+---+\n|  MANAGER(state=ONLINE)   |\n|  REPLICATOR(state=STOPPED)   |\n+---+\n";

    #[test]
    fn ls_is_read_as_cctrl_prints_it_wrapped_rows_stopped_replicators_and_all() {
        let view = parse_ls(LS);
        assert_eq!(view.policy, "MAINTENANCE");
        assert_eq!(view.coordinator, "{{addr:east1:tungsten}}");
        assert_eq!(view.routers, vec![("{{addr:east1:tungsten}}".to_string(), "ONLINE".to_string())]);
        assert_eq!(
            view.datasources,
            vec![
                Datasource { name: "{{addr:east1:tungsten}}".into(), role: "slave".into(), state: "ONLINE".into(), replicator: "ONLINE".into() },
                Datasource { name: "{{addr:east2}}".into(), role: "master".into(), state: "ONLINE".into(), replicator: "STOPPED".into() },
            ]
        );
        assert_eq!(inventory_host(&view.datasources[0].name, &[]).as_deref(), Some("east1"));
        assert_eq!(inventory_host("east3", &["east3".to_string()]).as_deref(), Some("east3"));
    }

    #[test]
    fn trepctl_fields_are_read_whatever_their_padding() {
        let fields = parse_fields(
            "Processing status command...\nNAME              VALUE\n----              -----\nappliedLastSeqno  : 1042\nhost              : {{addr:west1:tungsten}}\nstate             : ONLINE\nFinished status command...\n",
        );
        assert_eq!(field(&fields, "state"), "ONLINE");
        assert_eq!(field(&fields, "host"), "{{addr:west1:tungsten}}");
    }
}
