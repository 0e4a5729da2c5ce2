//! The cluster as the inventory describes it and as it is right now. Every member's attributes
//! (port, data dir, bin dir, the GTM's port and directory) are its own, from the inventory; every
//! role — master, standby (and whom it streams from), stopped, fenced — is read from the servers,
//! for any number of members per node, never from the inventory's order or names. A member whose
//! state cannot be read is `Unknown`, never taken for a harmless one.

use opsh_plugin_sdk::pg::{Conninfo, Lsn, major};
use opsh_plugin_sdk::{CapabilityError, CommandError, RowsExt, host, inventory, names, sql};

pub const DOCS: &str = "plugins/opentenbase/README.md";

/// What this plugin runs on a member's host while nothing may change (declared in
/// `describe()`): is the server running, which marker files and PostgreSQL major its data
/// directory has, the GTM's role and configuration, and whether the host answers.
pub const PROBES: &[&str] = &[
    "true",
    "pg_ctl status -D *",
    "*/pg_ctl status -D *",
    "test -e *",
    "cat */PG_VERSION",
    "gtm_ctl -Z gtm -D * -P * status",
    "*/gtm_ctl -Z gtm -D * -P * status",
    "cat */gtm.conf",
    "pg_controldata -D *",
    "*/pg_controldata -D *",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Coordinator,
    Datanode,
}

impl Kind {
    pub fn pg_ctl_type(self) -> &'static str {
        match self {
            Self::Coordinator => "coordinator",
            Self::Datanode => "datanode",
        }
    }
}

/// One PostgreSQL instance of a node (master or standby): an inventory database.
#[derive(Debug, Clone)]
pub struct Member {
    pub db: String,
    pub node: String,
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub data_dir: String,
    /// Where its tools (`pg_ctl`, `pg_rewind`, …) are; `None`: the remote PATH has them.
    pub bin_dir: Option<String>,
    pub user: String,
    pub live: Live,
}

/// Whom a standby streams from: an inventory host (by any of its names) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Takes writes.
    Master {
        version: u32,
        lsn: Lsn,
    },
    Standby(Standby),
    /// Its server answers and says PostgreSQL is not running; `fenced` when its data directory
    /// would make it start read-only (`standby.signal` / `recovery.conf`).
    Stopped {
        fenced: bool,
        major: Option<u32>,
    },
    /// Cannot tell: it may be anything, a master included.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    pub version: u32,
    pub upstream: Option<Upstream>,
    /// Its WAL receiver streams now.
    pub streaming: bool,
    pub received: Option<Lsn>,
    pub replayed: Option<Lsn>,
    /// Its connection string to its upstream (secrets obfuscated by the server), and slot.
    pub conninfo: Option<String>,
    pub slot: Option<String>,
}

impl Standby {
    /// How far its data goes once promoted: everything received, or replayed (from an archive).
    pub fn position(&self) -> Option<Lsn> {
        self.received.max(self.replayed)
    }
}

impl Member {
    /// A tool of this member's installation.
    pub fn tool(&self, name: &str) -> String {
        tool(self.bin_dir.as_deref(), name)
    }

    pub fn is_master(&self) -> bool {
        matches!(self.live, Live::Master { .. })
    }

    pub fn standby(&self) -> Option<&Standby> {
        match &self.live {
            Live::Standby(s) => Some(s),
            _ => None,
        }
    }

    /// The server major, where it is known.
    pub fn major(&self) -> Option<u32> {
        match &self.live {
            Live::Master { version, .. } => Some(major(*version)),
            Live::Standby(s) => Some(major(s.version)),
            Live::Stopped { major, .. } => *major,
            Live::Unknown(_) => None,
        }
    }

    /// Does this standby stream from `other`?
    pub fn follows(&self, other: &Member) -> bool {
        self.standby().and_then(|s| s.upstream.as_ref()).is_some_and(|u| u.host == other.host && u.port == other.port)
    }
}

pub fn tool(bin_dir: Option<&str>, name: &str) -> String {
    match bin_dir {
        Some(dir) => format!("{}/{name}", dir.trim_end_matches('/')),
        None => name.to_string(),
    }
}

/// One GTM server (master or standby), with its own port, directory and tools.
#[derive(Debug, Clone)]
pub struct GtmMember {
    pub host: String,
    pub port: u16,
    pub data_dir: String,
    pub bin_dir: Option<String>,
    pub role: GtmRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtmRole {
    /// `current node [primary]`, with its xlog position.
    Primary(Option<Lsn>),
    Standby(Option<Lsn>),
    Stopped,
    Unknown(String),
}

impl GtmMember {
    pub fn tool(&self, name: &str) -> String {
        tool(self.bin_dir.as_deref(), name)
    }

    pub fn describe(&self) -> String {
        match &self.role {
            GtmRole::Primary(_) => "primary".into(),
            GtmRole::Standby(_) => "standby".into(),
            GtmRole::Stopped => "stopped".into(),
            GtmRole::Unknown(why) => format!("cannot tell ({why})"),
        }
    }
}

pub struct Cluster {
    pub topology: String,
    pub members: Vec<Member>,
    pub gtm_name: String,
    pub gtms: Vec<GtmMember>,
}

/// A route a node holds (a pgxc_node row): the host as the catalog names it, and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub node: String,
    /// `G` for the GTM, `C` / `D` for coordinators and datanodes.
    pub node_type: String,
    /// What `node_host` says (a token when it is a name of an inventory host).
    pub host_text: String,
    pub port: i64,
}

impl Route {
    /// The inventory host it names, by any of that host's names.
    pub fn host(&self) -> Option<names::Mention> {
        names::host_of(&self.host_text)
    }

    /// Does it point at `host`:`port`?
    pub fn points_at(&self, host: &str, port: u16) -> bool {
        self.host().is_some_and(|m| m.host == host) && self.port == i64::from(port)
    }
}

fn need<'a>(info: &'a host::TargetInfo, key: &str) -> Result<&'a str, CommandError> {
    inventory::need(info, key, DOCS)
}

impl Cluster {
    /// The topology the inventory gives to this plugin (`plugin = "otb"`), with live state.
    pub fn load() -> Result<Self, CommandError> {
        let mut cluster = Self::described()?;
        // Hosts that did not answer ssh in this load: asked once, not once per member.
        let mut silent = std::collections::BTreeMap::new();
        for member in &mut cluster.members {
            member.live = probe_member(member, &mut silent)?;
        }
        for gtm in &mut cluster.gtms {
            gtm.role = probe_gtm(gtm)?;
        }
        Ok(cluster)
    }

    /// The topology as the inventory describes it, nothing asked of a server (every member's
    /// state unknown).
    pub fn described() -> Result<Self, CommandError> {
        let topology = &inventory::managed_topology("otb")?;
        let mut members = Vec::new();
        for role in ["coordinator", "datanode"] {
            for db in inventory::members(topology, role) {
                let info = host::lookup(&db)?;
                let kind = match need(&info, "otb-type")? {
                    "coordinator" => Kind::Coordinator,
                    "datanode" => Kind::Datanode,
                    other => return Err(CommandError::Failed(format!("database {db}: otb-type must be coordinator or datanode, not {other:?} (see {DOCS})"))),
                };
                members.push(Member {
                    db: db.clone(),
                    node: need(&info, "otb-node")?.to_string(),
                    kind,
                    host: need(&info, "host")?.to_string(),
                    port: need(&info, "port")?.parse().map_err(|_| CommandError::Failed(format!("database {db}: its port is not a number")))?,
                    data_dir: need(&info, "data-dir")?.to_string(),
                    bin_dir: inventory::attr(&info, "bin-dir").map(str::to_string),
                    user: need(&info, "user")?.to_string(),
                    live: Live::Unknown("not asked".into()),
                });
            }
        }
        let gtm_name = need(topology, "gtm.name")?.to_string();
        let mut gtms = Vec::new();
        for host_name in need(topology, "gtm.hosts")?.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            // Every attribute of a GTM server may be its own (`gtm.HOST.port`), else the
            // topology's (`gtm.port`): an operator's statement, never a value taken from the
            // other server.
            let attr = |key: &str| inventory::attr(topology, &format!("gtm.{host_name}.{key}")).or_else(|| inventory::attr(topology, &format!("gtm.{key}")));
            let port = attr("port")
                .ok_or_else(|| CommandError::Failed(format!("topology {}: no gtm.{host_name}.port or gtm.port (see {DOCS})", topology.name)))?
                .parse()
                .map_err(|_| CommandError::Failed(format!("topology {}: the GTM port of {host_name} is not a number", topology.name)))?;
            let data_dir = attr("data-dir")
                .ok_or_else(|| CommandError::Failed(format!("topology {}: no gtm.{host_name}.data-dir or gtm.data-dir (see {DOCS})", topology.name)))?;
            gtms.push(GtmMember {
                host: host_name.to_string(),
                port,
                data_dir: data_dir.to_string(),
                bin_dir: attr("bin-dir").map(str::to_string),
                role: GtmRole::Unknown("not asked".into()),
            });
        }
        Ok(Self { topology: topology.name.clone(), members, gtm_name, gtms })
    }

    /// Node names, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.members.iter().map(|m| m.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    pub fn of_node(&self, node: &str) -> Vec<&Member> {
        self.members.iter().filter(|m| m.node == node).collect()
    }

    /// Every member of a node that takes writes now (more than one is a split brain).
    pub fn masters_of(&self, node: &str) -> Vec<&Member> {
        self.of_node(node).into_iter().filter(|m| m.is_master()).collect()
    }

    /// The one member of a node that takes writes, if exactly one does.
    pub fn master(&self, node: &str) -> Option<&Member> {
        match self.masters_of(node).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Every live master of every node: the nodes whose routes must be right.
    pub fn masters(&self) -> Vec<&Member> {
        self.members.iter().filter(|m| m.is_master()).collect()
    }

    pub fn gtm_primaries(&self) -> Vec<&GtmMember> {
        self.gtms.iter().filter(|g| matches!(g.role, GtmRole::Primary(_))).collect()
    }
}

/// A capability error that means "you did not grant this" must reach the operator as such,
/// never become "down" or "no standby".
fn not_granted(e: &CapabilityError) -> Option<CommandError> {
    matches!(e, CapabilityError::Denied(_)).then(|| CommandError::Capability(e.clone()))
}

const STATE: &str = "SELECT pg_is_in_recovery() AS standby, current_setting('server_version_num')::bigint AS version, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current, \
     pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed, \
     (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver, \
     (SELECT conninfo FROM pg_stat_wal_receiver LIMIT 1) AS conninfo, \
     (SELECT slot_name FROM pg_stat_wal_receiver LIMIT 1) AS slot, \
     current_setting('primary_conninfo', true) AS configured, current_setting('primary_slot_name', true) AS configured_slot";

fn probe_member(member: &Member, silent: &mut std::collections::BTreeMap<String, String>) -> Result<Live, CommandError> {
    match sql::query(&member.db, STATE, &[]) {
        Ok(rows) => Ok(live_from(&rows)),
        Err(e) => {
            if let Some(denied) = not_granted(&e) {
                return Err(denied);
            }
            Ok(down_member(member, &e, silent))
        }
    }
}

fn live_from(rows: &sql::Rows) -> Live {
    let text = |c: &str| rows.first_text(c).filter(|v| !v.is_empty() && v != "NULL");
    let lsn = |c: &str| text(c).and_then(|v| Lsn::parse(&v));
    let Some(version) = rows.first_int("version").and_then(|v| u32::try_from(v).ok()) else {
        return Live::Unknown("server_version_num could not be read".into());
    };
    match rows.first_bool("standby") {
        Some(false) => match lsn("current") {
            Some(lsn) => Live::Master { version, lsn },
            None => Live::Unknown("takes writes, but its WAL position could not be read".into()),
        },
        Some(true) => {
            let conninfo = text("conninfo").or_else(|| text("configured"));
            let upstream = conninfo.as_deref().and_then(upstream_of);
            Live::Standby(Standby {
                version,
                upstream,
                streaming: text("receiver").as_deref() == Some("streaming"),
                received: lsn("received"),
                replayed: lsn("replayed"),
                conninfo,
                slot: text("slot").or_else(|| text("configured_slot")),
            })
        }
        None => Live::Unknown("pg_is_in_recovery() could not be read".into()),
    }
}

/// The host and port a standby's connection string names (hosts arrive as tokens).
pub fn upstream_of(conninfo: &str) -> Option<Upstream> {
    let info = Conninfo::parse(conninfo).ok()?;
    let host = names::host_of(info.get("host").or(info.get("hostaddr"))?)?.host;
    let port = info.get("port").unwrap_or("5432").parse().ok()?;
    Some(Upstream { host, port })
}

/// The member does not answer SQL: ask its server what runs there. Only a server that answers and
/// says "no server running" makes it `Stopped`; anything else leaves it `Unknown`.
fn down_member(member: &Member, error: &CapabilityError, silent: &mut std::collections::BTreeMap<String, String>) -> Live {
    let why = error.brief();
    if matches!(error, CapabilityError::Auth(_)) {
        return Live::Unknown(format!("it runs but refuses opsh's login ({why}): it may take writes"));
    }
    if let Some(earlier) = silent.get(&member.host) {
        return Live::Unknown(format!("{why}; its host {} does not answer either ({earlier})", member.host));
    }
    let status = opsh_plugin_sdk::probe(&member.host, &[&member.tool("pg_ctl"), "status", "-D", &member.data_dir], Some(15_000));
    match status {
        Ok(out) if out.status == Some(3) => {
            let fenced = ["standby.signal", "recovery.conf"].iter().any(|f| {
                opsh_plugin_sdk::probe(&member.host, &["test", "-e", &format!("{}/{f}", member.data_dir)], Some(15_000)).is_ok_and(|o| o.status == Some(0))
            });
            let major = opsh_plugin_sdk::probe(&member.host, &["cat", &format!("{}/PG_VERSION", member.data_dir)], Some(15_000))
                .ok()
                .filter(|o| o.status == Some(0))
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().split('.').next().and_then(|m| m.parse().ok()));
            Live::Stopped { fenced, major }
        }
        Ok(out) if out.status == Some(0) => Live::Unknown(format!("pg_ctl says it runs, but it does not answer SQL ({why})")),
        Ok(out) => Live::Unknown(format!("pg_ctl status exited {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => {
            silent.insert(member.host.clone(), e.brief());
            Live::Unknown(format!("{why}; its host {} does not answer either ({})", member.host, e.brief()))
        }
    }
}

/// `gtm_ctl -Z gtm -D DIR -P PORT status`, read as OpenTenBase's gtm_ctl prints it: exit 0 and
/// `current node [primary|standby] … xlog [X/X]` when it runs; exit 1 with "could not open PID
/// file" or "no server running" when it does not.
fn probe_gtm(gtm: &GtmMember) -> Result<GtmRole, CommandError> {
    let port = gtm.port.to_string();
    let out = match opsh_plugin_sdk::probe(&gtm.host, &[&gtm.tool("gtm_ctl"), "-Z", "gtm", "-D", &gtm.data_dir, "-P", &port, "status"], Some(15_000)) {
        Ok(out) => out,
        Err(e) => return not_granted(&e).map_or_else(|| Ok(GtmRole::Unknown(format!("host {} does not answer ({})", gtm.host, e.brief()))), Err),
    };
    Ok(gtm_role(out.status, &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr)))
}

pub fn gtm_role(status: Option<i32>, stdout: &str, stderr: &str) -> GtmRole {
    match status {
        Some(0) => {
            let Some(line) = stdout.lines().find(|l| l.starts_with("current node [")) else {
                return GtmRole::Unknown(format!("running but not answering on its port: {}", stdout.lines().next().unwrap_or("").trim()));
            };
            let xlog = line.split("xlog [").nth(1).and_then(|r| r.split(']').next()).and_then(Lsn::parse);
            match line.trim_start_matches("current node [").split(']').next() {
                Some("primary") => GtmRole::Primary(xlog),
                Some("standby") => GtmRole::Standby(xlog),
                other => GtmRole::Unknown(format!("gtm_ctl status says {other:?}")),
            }
        }
        Some(1) if stderr.contains("could not open PID file") || stderr.contains("no server running") => GtmRole::Stopped,
        _ => GtmRole::Unknown(format!("gtm_ctl status exited {status:?}: {}", stderr.trim())),
    }
}

/// The routes a node holds (pgxc_node).
pub fn routes(db: &str) -> Result<Vec<Route>, CapabilityError> {
    let rows = sql::query(
        db,
        "SELECT node_name::text AS name, node_type::text AS type, node_host::text AS host, node_port::bigint AS port FROM pgxc_node ORDER BY 1",
        &[],
    )?;
    Ok(rows
        .rows
        .iter()
        .map(|row| {
            let text = |i: usize| row.get(i).map(opsh_plugin_sdk::display).unwrap_or_default();
            let port = match row.get(3) {
                Some(sql::Value::Int(p)) => *p,
                _ => -1,
            };
            Route { node: text(0), node_type: text(1), host_text: text(2), port }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtm_status_is_read_as_opentenbase_prints_it() {
        let running = "gtm_ctl: server is running (PID: 42)\ncurrent node [standby] gts[1] xlog [0/3000060]\n\"-D\" \"/d\" \"/d\"\n";
        assert_eq!(gtm_role(Some(0), running, ""), GtmRole::Standby(Lsn::parse("0/3000060")));
        assert_eq!(gtm_role(Some(0), &running.replace("standby", "primary"), ""), GtmRole::Primary(Lsn::parse("0/3000060")));
        assert_eq!(gtm_role(Some(1), "", "gtm_ctl: could not open PID file \"/d/gtm.pid\": No such file or directory\n"), GtmRole::Stopped);
        assert_eq!(gtm_role(Some(1), "", "gtm_ctl: no server running\n"), GtmRole::Stopped);
        assert!(matches!(
            gtm_role(Some(0), "gtm_ctl: server is running (PID: 42) but can not get timestamp, please check gtm status!\n", ""),
            GtmRole::Unknown(_)
        ));
        assert!(matches!(gtm_role(Some(1), "", "gtm_ctl: option -P GTM_port is not specified\n"), GtmRole::Unknown(_)));
    }

    #[test]
    fn a_standby_names_its_upstream_by_any_of_its_names() {
        assert_eq!(upstream_of("user=opsh host={{addr:otb1:dns}} port=23001"), Some(Upstream { host: "otb1".into(), port: 23001 }));
        assert_eq!(upstream_of("user=opsh host=localhost port=23001"), None);
    }
}
