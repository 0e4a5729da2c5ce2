//! Lab topologies are data: hosts, PostgreSQL clusters (optionally streaming standbys of another
//! cluster), lab services, and extra inventory (topologies, grants) merged into what the lab
//! writes. The built-in ones live in `tests/topologies/`; any file of the same shape works.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub description: String,
    pub hosts: Vec<HostSpec>,
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// OpenTenBase GTM stand-ins (`gtm_ctl -Z gtm`), master and standby.
    #[serde(default)]
    pub gtms: Vec<GtmSpec>,
    /// Files written on several hosts (e.g. a product's scripts and config on every appliance).
    #[serde(default)]
    pub files: Vec<FileSet>,
    /// Real Slony-I replication between clusters of the topology.
    #[serde(default)]
    pub slony: Vec<SlonySpec>,
    /// EDB xDB Replication Server single-master systems between clusters of the topology.
    #[serde(default)]
    pub xdb: Vec<crate::xdb::XdbSpec>,
    /// Tungsten Clustering stand-ins (multi-site active/active): which hosts form which
    /// dataservice.
    #[serde(default)]
    pub tungsten: Option<TungstenSpec>,
    /// How the lab writes hosts into OpenTenBase's pgxc_node: `address` (default) or `dns` (each
    /// host's DNS name; such hosts need `dns = true`).
    #[serde(default)]
    pub pgxc_host_form: Option<String>,
    /// Merged into the generated inventory (e.g. `[inventory.topologies.x]`, `[inventory.grants.y]`).
    #[serde(default)]
    pub inventory: Option<toml::Table>,
    #[serde(skip)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    /// Lab services (long-running processes managed by `labsvc` on that host).
    #[serde(default)]
    pub services: Vec<String>,
    /// Extra files on the host (path → content), e.g. config files a runbook edits.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// Reach the host by a DNS name (`NAME.bBLOCK.opsh-lab.test`, in the lab's own marked block of
    /// /etc/hosts): the inventory's `address` is that name and its IP an alias (`ip`).
    #[serde(default)]
    pub dns: bool,
}

/// The Tungsten lab: dataservice → its hosts (two or more dataservices); `drifted` is the service
/// whose data has drifted. The stand-in tools are installed under `cluster_home` (the host's own
/// cluster) and `cross_site_home` (the replicator of every other dataservice), per site if
/// `homes` says so.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TungstenSpec {
    pub services: std::collections::BTreeMap<String, Vec<String>>,
    pub drifted: String,
    #[serde(default = "default_cluster_home")]
    pub cluster_home: String,
    #[serde(default = "default_cross_site_home")]
    pub cross_site_home: String,
    /// Dataservice → its own installation paths.
    #[serde(default)]
    pub homes: std::collections::BTreeMap<String, TungstenHomes>,
    /// Lab host → its Tungsten name (tpm's member name, e.g. an FQDN); the lab adds it to the
    /// host's inventory aliases (kind `tungsten`). Default: the host's name.
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
    /// Dataservice → the host whose replicator is its master (default: its first host).
    #[serde(default)]
    pub masters: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TungstenHomes {
    pub cluster_home: String,
    pub cross_site_home: String,
}

impl TungstenSpec {
    /// (cluster home, cross-site home) of a dataservice's hosts.
    pub fn homes_of(&self, service: &str) -> (String, String) {
        match self.homes.get(service) {
            Some(h) => (h.cluster_home.clone(), h.cross_site_home.clone()),
            None => (self.cluster_home.clone(), self.cross_site_home.clone()),
        }
    }
}

fn default_cluster_home() -> String {
    "/opt/continuent/tungsten".into()
}

fn default_cross_site_home() -> String {
    "/opt/replicator/tungsten".into()
}

/// Files (path under /usr/local → content) on each of `hosts`. In the content `{{addr:NAME}}`
/// becomes lab host NAME's address and `{{self}}` the host's own name; a file starting with `#!`
/// is made executable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSet {
    pub hosts: Vec<String>,
    pub files: std::collections::BTreeMap<String, String>,
}

/// One Slony-I cluster (`slony`, schema `_slony`) per database in `schemas`: the schema SQL runs
/// on every node (Slony copies no DDL), `origin` is node 1, and every public table and sequence
/// goes into set 1 ("All tables and Sequences"), subscribed by `subscribers`. Each node's slon
/// is started by `start_script` (`{db}` is the database), as the product starts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlonySpec {
    pub origin: String,
    pub subscribers: Vec<String>,
    pub schemas: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_start_script")]
    pub start_script: String,
}

fn default_start_script() -> String {
    "/usr/local/desktone/scripts/start_slon_{db}.sh".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Databases created in the cluster (a primary's are replicated to its standbys).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Another cluster this one streams from (pg_basebackup -R, a replication slot).
    pub standby_of: Option<String>,
    /// `wal_level` (`replica` or `logical`).
    #[serde(default = "default_wal_level")]
    pub wal_level: String,
    /// The data directory as the host sees it (under /usr/local, so each lab host has its own);
    /// default: outside the host's view, in the lab directory.
    pub data_dir: Option<String>,
    /// SQL run in a database once every cluster is up (database → SQL, as the lab's
    /// superuser); `{{addr:HOST}}` is a lab host's address, `{{addr:self}}` this cluster's host's.
    #[serde(default)]
    pub sql: std::collections::BTreeMap<String, String>,
    /// An OpenTenBase coordinator or datanode: fronted by the lab's node proxy (ALTER NODE,
    /// pgxc_node, pgxc_pool_reload) on its address and port.
    pub pgxc: Option<PgxcSpec>,
    /// Where this member's OpenTenBase tools (pg_ctl, pg_rewind, …) are installed on its host
    /// (under /usr/local); they are then not on the host's PATH unless another member needs that.
    pub bin_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgxcSpec {
    /// The node's name in pgxc_node, e.g. `dn01` (master and standby share it).
    pub node: String,
    /// `coordinator` or `datanode`.
    #[serde(rename = "type")]
    pub node_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GtmSpec {
    pub host: String,
    /// The GTM's name in pgxc_node, e.g. `gtm_1`.
    pub node: String,
    pub port: u16,
    /// `master` or `standby`.
    pub role: String,
    /// As the host sees it, under /usr/local.
    pub data_dir: String,
    /// Where gtm_ctl is installed (under /usr/local); default: on the host's PATH.
    pub bin_dir: Option<String>,
}

fn default_port() -> u16 {
    5432
}

fn default_wal_level() -> String {
    "replica".into()
}

const BUILTIN: &[(&str, &str)] = &[
    ("basic", include_str!("../topologies/basic.toml")),
    ("otb", include_str!("../topologies/otb.toml")),
    ("otb-trio", include_str!("../topologies/otb-trio.toml")),
    ("horizon", include_str!("../topologies/horizon.toml")),
    ("horizon-trio", include_str!("../topologies/horizon-trio.toml")),
    ("tungsten", include_str!("../topologies/tungsten.toml")),
    ("tungsten-tri", include_str!("../topologies/tungsten-tri.toml")),
    ("xdb", include_str!("../topologies/xdb.toml")),
    ("xdb-wide", include_str!("../topologies/xdb-wide.toml")),
    ("team", include_str!("../topologies/team.toml")),
    ("pg32", include_str!("../topologies/pg32.toml")),
    ("tungsten32", include_str!("../topologies/tungsten32.toml")),
    ("otb-large", include_str!("../topologies/otb-large.toml")),
];

impl Topology {
    /// A built-in name (`basic`) or a path to a topology file.
    pub fn find(name_or_path: &str) -> Result<Self> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(name, text);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            bail!("no topology {name_or_path:?}: built-in ones are {}; or give the path of a topology file", names.join(", "));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading topology {}", path.display()))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "custom".into());
        Self::parse(&name, &text).with_context(|| format!("topology {} is malformed", path.display()))
    }

    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let mut topology: Topology = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        topology.name = name.to_string();
        topology.validate()?;
        Ok(topology)
    }

    fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() || self.hosts.len() > 200 {
            bail!("a topology needs 1 to 200 hosts");
        }
        let valid = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        for host in &self.hosts {
            if !valid(&host.name) {
                bail!("host name {:?}: use letters, digits, '-' and '_'", host.name);
            }
            for service in &host.services {
                if !valid(service) {
                    bail!("host {}: service name {service:?}: use letters, digits, '-' and '_'", host.name);
                }
            }
            for path in host.files.keys() {
                if !path.starts_with("/usr/local/") || path.contains("..") {
                    bail!("host {}: file {path}: lab host files live under /usr/local (the host's own copy)", host.name);
                }
            }
        }
        for cluster in &self.clusters {
            if !valid(&cluster.name) {
                bail!("cluster name {:?}: use letters, digits, '-' and '_'", cluster.name);
            }
            if !self.hosts.iter().any(|h| h.name == cluster.host) {
                bail!("cluster {}: host {} is not in the topology", cluster.name, cluster.host);
            }
            if let Some(primary) = &cluster.standby_of {
                let Some(p) = self.clusters.iter().find(|c| &c.name == primary) else {
                    bail!("cluster {}: standby_of {primary:?} is not a cluster", cluster.name);
                };
                if p.name == cluster.name || self.upstream_chain(p).iter().any(|c| *c == cluster.name) {
                    bail!("cluster {}: standby_of makes a cycle", cluster.name);
                }
                if !cluster.databases.is_empty() {
                    bail!("cluster {}: a standby gets its databases from its primary; remove `databases`", cluster.name);
                }
            }
            if let Some(pgxc) = &cluster.pgxc
                && !["coordinator", "datanode"].contains(&pgxc.node_type.as_str())
            {
                bail!("cluster {}: pgxc type must be coordinator or datanode", cluster.name);
            }
            for dir in [&cluster.data_dir, &cluster.bin_dir].into_iter().flatten() {
                if !dir.starts_with("/usr/local/") || dir.contains("..") {
                    bail!("cluster {}: data_dir and bin_dir must be under /usr/local (the host's own)", cluster.name);
                }
            }
            if self.clusters.iter().filter(|c| c.host == cluster.host && c.port == cluster.port).count() > 1 {
                bail!("host {}: two clusters on port {}", cluster.host, cluster.port);
            }
        }
        for set in &self.files {
            for host in &set.hosts {
                if !self.hosts.iter().any(|h| &h.name == host) {
                    bail!("files for host {host}: not a host of the topology");
                }
            }
            for path in set.files.keys() {
                if !path.starts_with("/usr/local/") || path.contains("..") {
                    bail!("file {path}: lab host files live under /usr/local (the host's own copy)");
                }
            }
        }
        for slony in &self.slony {
            for node in std::iter::once(&slony.origin).chain(&slony.subscribers) {
                for db in slony.schemas.keys() {
                    if !self.clusters.iter().any(|c| &c.host == node && c.standby_of.is_none() && c.databases.contains(db)) {
                        bail!("slony: host {node} has no cluster with database {db}");
                    }
                }
            }
            if slony.subscribers.is_empty() || slony.subscribers.contains(&slony.origin) {
                bail!("slony with origin {}: needs subscribers other than the origin", slony.origin);
            }
        }
        if let Some(tungsten) = &self.tungsten {
            if tungsten.services.len() < 2 || !tungsten.services.contains_key(&tungsten.drifted) {
                bail!("tungsten: two or more dataservices, one of them `drifted`");
            }
            for (service, master) in &tungsten.masters {
                if !tungsten.services.get(service).is_some_and(|hosts| hosts.contains(master)) {
                    bail!("tungsten: master {master} of {service} is not one of its hosts");
                }
            }
            for host in tungsten.names.keys() {
                if !tungsten.services.values().flatten().any(|h| h == host) {
                    bail!("tungsten: names: {host} is not a host of a dataservice");
                }
            }
            for host in tungsten.services.values().flatten() {
                if !self.hosts.iter().any(|h| &h.name == host) {
                    bail!("tungsten: host {host} is not in the topology");
                }
            }
            let homes = tungsten.homes.values().flat_map(|h| [&h.cluster_home, &h.cross_site_home]);
            for home in [&tungsten.cluster_home, &tungsten.cross_site_home].into_iter().chain(homes) {
                if !home.starts_with("/opt/") || home.contains("..") {
                    bail!("tungsten: {home}: installations live under /opt (each lab host has its own)");
                }
            }
        }
        for gtm in &self.gtms {
            let under_local = |d: &str| d.starts_with("/usr/local/") && !d.contains("..");
            if !self.hosts.iter().any(|h| h.name == gtm.host)
                || !["master", "standby"].contains(&gtm.role.as_str())
                || !under_local(&gtm.data_dir)
                || !gtm.bin_dir.as_deref().is_none_or(under_local)
            {
                bail!("gtm on {}: needs a topology host, role master or standby, and data_dir / bin_dir under /usr/local", gtm.host);
            }
        }
        if self.gtms.iter().filter(|g| g.role == "master").count() > 1 {
            bail!("gtms: at most one master");
        }
        match self.pgxc_host_form.as_deref() {
            None | Some("address") => {}
            Some("dns") => {
                if let Some(host) = self.hosts.iter().find(|h| !h.dns) {
                    bail!("pgxc_host_form = \"dns\" needs every host to have dns = true ({} has not)", host.name);
                }
            }
            Some(other) => bail!("pgxc_host_form: address or dns, not {other:?}"),
        }
        Ok(())
    }

    /// The clusters `cluster` streams from, nearest first.
    pub fn upstream_chain<'a>(&'a self, cluster: &'a ClusterSpec) -> Vec<&'a str> {
        let mut chain = Vec::new();
        let mut at = cluster;
        while let Some(up) = &at.standby_of {
            if chain.contains(&up.as_str()) || chain.len() > self.clusters.len() {
                break;
            }
            chain.push(up.as_str());
            match self.clusters.iter().find(|c| &c.name == up) {
                Some(next) => at = next,
                None => break,
            }
        }
        chain
    }
}
