//! The multi-site deployment as the inventory describes it — dataservices and their hosts, where
//! each host's two installations live — and how the Tungsten tools report their state.

use opsh_plugin_sdk::{CapabilityError, CommandError, host, inventory, ssh};

const DOCS: &str = "plugins/tungsten/README.md";

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
    /// The replicator that applies the other dataservice here (`/opt/replicator/tungsten`).
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
        if services.len() != 2 {
            return Err(CommandError::Failed(format!(
                "topology {}: a multi-site active/active deployment has two dataservices as member roles, not {} (see {DOCS})",
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

    pub fn other<'a>(&'a self, service: &'a str) -> &'a str {
        self.services.iter().map(|(s, _)| s.as_str()).find(|s| *s != service).unwrap_or(service)
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

/// `trepctl status` as fields (`state`, `appliedLastSeqno`, `role`, …); `Err` with the tool's own
/// words when it cannot answer (e.g. "Connection failed" for a stopped replicator).
pub fn trepctl_status(host_name: &str, trepctl: &str, service: &str) -> Result<Vec<(String, String)>, String> {
    let out = opsh_plugin_sdk::probe(host_name, &[trepctl, "-service", service, "status"], Some(30_000)).map_err(|e| e.brief())?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status != Some(0) {
        return Err(first_line(&stdout, &out.stderr));
    }
    Ok(stdout
        .lines()
        .filter_map(|l| l.split_once(" : ").or_else(|| l.split_once(": ")))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty() && !k.contains(' '))
        .collect())
}

pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The replicator's state as one word (`ONLINE`, `OFFLINE:NORMAL`, `STOPPED` …) and its seqno.
pub fn replicator_state(host_name: &str, trepctl: &str, service: &str) -> Result<(String, i64), String> {
    match trepctl_status(host_name, trepctl, service) {
        Ok(fields) => Ok((field(&fields, "state").to_string(), field(&fields, "appliedLastSeqno").parse().unwrap_or(-1))),
        Err(e) if e.contains("Connection failed") => Ok(("STOPPED".into(), -1)),
        Err(e) => Err(e),
    }
}

/// What `cctrl` `ls` shows of a dataservice.
#[derive(Debug, Default)]
pub struct Overview {
    pub coordinator: String,
    pub policy: String,
    /// Connector host → state.
    pub routers: Vec<(String, String)>,
    /// Datasource host → (role, state).
    pub datasources: Vec<(String, String, String)>,
}

/// Run cctrl on a host with commands on its standard input, as an operator types them.
pub fn cctrl(host_name: &str, cctrl: &str, commands: &str, read_only: bool) -> Result<ssh::ExecOutput, CapabilityError> {
    let mut request = opsh_plugin_sdk::exec_request(&[cctrl], Some(120_000), read_only);
    request.stdin = Some(commands.as_bytes().to_vec());
    ssh::exec(host_name, &request)
}

pub fn overview(host_name: &str, cctrl_path: &str) -> Result<Overview, String> {
    let out = cctrl(host_name, cctrl_path, "ls\n", true).map_err(|e| e.brief())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut view = Overview::default();
    for line in text.lines() {
        let line = line.trim().trim_matches('|').trim();
        if let Some(inner) = line.strip_prefix("COORDINATOR[").and_then(|l| l.strip_suffix(']')) {
            let parts: Vec<&str> = inner.split(':').collect();
            view.coordinator = parts.first().unwrap_or(&"").to_string();
            view.policy = parts.get(1).unwrap_or(&"").to_string();
        } else if let Some(rest) = line.strip_prefix("connector@") {
            let host = rest.split('[').next().unwrap_or("").to_string();
            let state = rest.split('(').nth(1).and_then(|s| s.split(',').next()).unwrap_or("").to_string();
            view.routers.push((host, state));
        } else if let Some((host, rest)) = line.split_once('(') {
            if host.contains(' ') || host.contains('=') || !rest.contains("progress=") {
                continue;
            }
            let mut role_state = rest.split(',').next().unwrap_or("").split(':');
            let role = role_state.next().unwrap_or("").to_string();
            let state = role_state.next().unwrap_or("").to_string();
            view.datasources.push((host.to_string(), role, state));
        }
    }
    if view.policy.is_empty() {
        return Err(format!("cctrl ls on {host_name} showed no COORDINATOR line: {}", first_line(&text, &out.stderr)));
    }
    Ok(view)
}

/// The line that says what went wrong.
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
