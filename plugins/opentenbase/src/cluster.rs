//! The cluster as the inventory describes it and as it is right now: which member of each node
//! is master (not in recovery), which is standby, which is down, and the routes each master holds.

use std::collections::BTreeMap;

use opsh_plugin_sdk::{CapabilityError, CommandError, RowsExt, host, inventory, sql};

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

/// One PostgreSQL instance of a node (master or standby), an inventory database.
#[derive(Debug, Clone)]
pub struct Member {
    pub db: String,
    pub node: String,
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub data_dir: String,
    pub live: Live,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    Master { lsn: String },
    Standby { receiving: bool, received: Option<String>, replay_lag: i64 },
    Down(String),
}

pub struct Gtm {
    pub name: String,
    pub port: u16,
    pub data_dir: String,
    pub hosts: Vec<GtmHost>,
}

pub struct GtmHost {
    pub host: String,
    /// `master`, `standby`, `stopped` or why it could not be asked.
    pub role: String,
}

pub struct Cluster {
    pub topology: String,
    pub members: Vec<Member>,
    pub gtm: Gtm,
}

pub type Routes = BTreeMap<String, (String, i64)>;

fn need<'a>(info: &'a host::TargetInfo, key: &str) -> Result<&'a str, CommandError> {
    inventory::need(info, key, "plugins/opentenbase/README.md")
}

impl Cluster {
    /// The topology the inventory gives to this plugin (`plugin = "otb"`), with live state.
    pub fn load() -> Result<Self, CommandError> {
        let topology = &inventory::managed_topology("otb")?;
        let mut members = Vec::new();
        for role in ["coordinator", "datanode"] {
            for db in inventory::members(topology, role) {
                let info = host::lookup(&db)?;
                let kind = match need(&info, "otb-type")? {
                    "coordinator" => Kind::Coordinator,
                    "datanode" => Kind::Datanode,
                    other => return Err(CommandError::Failed(format!("database {db}: otb-type must be coordinator or datanode, not {other:?}"))),
                };
                members.push(Member {
                    db: db.clone(),
                    node: need(&info, "otb-node")?.to_string(),
                    kind,
                    host: need(&info, "host")?.to_string(),
                    port: need(&info, "port")?.parse().map_err(|_| CommandError::Failed(format!("database {db}: bad port")))?,
                    data_dir: need(&info, "data-dir")?.to_string(),
                    live: probe_member(&db),
                });
            }
        }
        let gtm_hosts: Vec<String> = need(topology, "gtm.hosts")?.split(',').map(str::to_string).collect();
        let gtm = Gtm {
            name: need(topology, "gtm.name")?.to_string(),
            port: need(topology, "gtm.port")?.parse().map_err(|_| CommandError::Failed("gtm.port is not a number".into()))?,
            data_dir: need(topology, "gtm.data-dir")?.to_string(),
            hosts: Vec::new(),
        };
        let hosts = gtm_hosts.into_iter().map(|host| GtmHost { role: gtm_role(&host, &gtm.data_dir), host }).collect();
        Ok(Self { topology: topology.name.clone(), members, gtm: Gtm { hosts, ..gtm } })
    }

    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.members.iter().map(|m| m.node.clone()).collect();
        nodes.dedup();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    pub fn of_node(&self, node: &str) -> Vec<&Member> {
        self.members.iter().filter(|m| m.node == node).collect()
    }

    /// The member of a node that takes writes now.
    pub fn master(&self, node: &str) -> Option<&Member> {
        self.of_node(node).into_iter().find(|m| matches!(m.live, Live::Master { .. }))
    }

    /// Every master: the nodes whose routes must be right.
    pub fn masters(&self) -> Vec<&Member> {
        self.nodes().iter().filter_map(|n| self.master(n)).collect()
    }

    pub fn gtm_master(&self) -> Option<&GtmHost> {
        self.gtm.hosts.iter().find(|h| h.role == "master")
    }
}

fn probe_member(db: &str) -> Live {
    let query = "SELECT pg_is_in_recovery() AS standby, \
                 CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text ELSE pg_current_wal_lsn()::text END AS lsn, \
                 CASE WHEN pg_is_in_recovery() THEN (SELECT status FROM pg_stat_wal_receiver LIMIT 1) END AS receiver, \
                 CASE WHEN pg_is_in_recovery() THEN coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint ELSE 0 END AS replay_lag";
    match sql::query(db, query, &[]) {
        Ok(rows) => {
            let lsn = rows.first_text("lsn").filter(|l| l != "NULL");
            if rows.first_bool("standby") == Some(true) {
                Live::Standby {
                    receiving: rows.first_text("receiver").as_deref() == Some("streaming"),
                    received: lsn,
                    replay_lag: rows.first_int("replay_lag").unwrap_or(0),
                }
            } else {
                Live::Master { lsn: lsn.unwrap_or_default() }
            }
        }
        Err(e) => Live::Down(e.brief()),
    }
}

/// `gtm_ctl -Z gtm -D DIR status`: `master`, `standby`, `stopped`, or why it could not be asked.
fn gtm_role(host_name: &str, data_dir: &str) -> String {
    match opsh_plugin_sdk::probe(host_name, &["gtm_ctl", "-Z", "gtm", "-D", data_dir, "status"], Some(10_000)) {
        Ok(out) if out.status == Some(0) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines().find_map(|l| l.strip_prefix("role: ")).unwrap_or("running").trim().to_string()
        }
        Ok(out) if out.status == Some(3) => "stopped".into(),
        Ok(out) => format!("unknown ({})", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("unreachable ({})", e.brief()),
    }
}

/// The routes a node holds: pgxc_node name → (host, port).
pub fn routes(db: &str) -> Result<Routes, CapabilityError> {
    let rows = sql::query(db, "SELECT node_name::text AS name, node_host::text AS host, node_port::bigint AS port FROM pgxc_node ORDER BY 1", &[])?;
    let mut routes = Routes::new();
    for row in &rows.rows {
        let text = |i: usize| row.get(i).map(opsh_plugin_sdk::display).unwrap_or_default();
        let port = match row.get(2) {
            Some(sql::Value::Int(p)) => *p,
            _ => 0,
        };
        routes.insert(text(0), (text(1), port));
    }
    Ok(routes)
}
