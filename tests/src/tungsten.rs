//! Stand-ins for Tungsten Clustering's tools in the Tungsten labs (multi-site active/active, seed
//! 004): `cctrl`, `trepctl`, `replicator`, `tpm`, `tungsten_provision_slave`. Tungsten cannot be
//! installed here, so these are state machines of what the seed's procedure touches, printing
//! and refusing as the real tools do. Where that is known, it is from Continuent's documentation
//! (docs.continuent.com: operations-status, trepctl-status, deployment-msaa-*,
//! cmdline-tools-tungsten_provision_slave) and from the Tungsten Replicator sources
//! (henricavalcante/tungsten-replicator @ f9027543, 4.1): `commons/.../utils/CLUtils.java` and
//! `ResultFormatter.java` (cctrl's `ls`), `OpenReplicatorManagerCtrl.java` and
//! `ReplicationServiceManager.java` (trepctl), `JmxManager.java` ("Connection failed"),
//! `replicator/lib/ruby/tungsten_provision_slave.rb` and `cluster-home/lib/ruby/tungsten/*.rb`,
//! `builder/.../configure/commands/reset_cluster.rb` (tpm reset).
//!
//! - Every host has a Tungsten name (the tpm member name, e.g. an FQDN) of its own, distinct from
//!   the lab's host name: it is what `ls`, trepctl's `host`/`sourceId`/`masterListenUri` and
//!   `--source=` use.
//! - Any number of dataservices: each host's cross-site installation replicates every other
//!   site (one service per site, named after it), so its trepctl needs `-service`.
//! - `ls` as CLUtils prints it: `THL latency=` for the master, `latency=` for others, `master=`
//!   in a slave's REPLICATOR line, no `progress=` while the replicator is stopped, headers of 73
//!   characters or more wrapped onto a second row.
//! - trepctl prints everything, errors included, on stdout: `Connection failed: A component of
//!   type 'replicator' … is not available` when the replicator is stopped; `reset` refuses a
//!   service that is not offline; a cluster replicator put offline in AUTOMATIC policy comes back
//!   online (the manager recovers it).
//! - `tpm reset` stops a running replicator, resets, and starts it offline; with the replicator
//!   stopped (the seed's order) it only clears the logs. `tungsten_provision_slave` refuses a
//!   source that is the node itself, skips offline/online when the replicator is stopped, prints
//!   its `NOTE >>` lines on stdout.
//!
//! Two behaviours are the lab's assumption, the stricter reading where the real one is not
//! published: `trepctl online` of a service that `tpm reset` cleared refuses until it is
//! provisioned, and `router * online` refuses while a datasource's replicator is not ONLINE.
//!
//! All hosts share one state file (the managers' group view) under the lab directory, locked for
//! every command; each host's "MySQL" data is a file beside it. The lab puts a wrapper at each
//! installation's paths that runs `opsh-lab tungsten …` with the host and installation baked in.
//! Lab fixture only: never part of opsh.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The cluster installation (a host's own dataservice) and the cross-site replicator
/// installation (every other dataservice, replicated into this one).
pub const CLUSTER: &str = "continuent";
pub const CROSS_SITE: &str = "replicator";
const BOX: usize = 76;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub services: BTreeMap<String, DataService>,
    pub hosts: BTreeMap<String, Host>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataService {
    pub hosts: Vec<String>,
    /// `AUTOMATIC` or `MAINTENANCE`.
    pub policy: String,
    /// Connector on each host → online.
    pub routers: BTreeMap<String, bool>,
    /// The lab host whose replicator is the master of this dataservice.
    pub master: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// The dataservice this host belongs to.
    pub site: String,
    /// Its Tungsten name (tpm's member name).
    pub name: String,
    /// Installation → its replicator process runs.
    pub running: BTreeMap<String, bool>,
    /// Installation → replication service name → its state.
    pub services: BTreeMap<String, BTreeMap<String, Replicator>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replicator {
    /// `ONLINE`, `OFFLINE:NORMAL`.
    pub state: String,
    pub role: String,
    pub seqno: i64,
    /// `tpm reset` cleared it: it waits for a provision before it can serve.
    pub needs_provision: bool,
}

/// How the lab describes a Tungsten deployment to the stand-ins.
pub struct Layout<'a> {
    pub services: &'a BTreeMap<String, Vec<String>>,
    pub drifted: &'a str,
    /// Lab host → Tungsten name (default: the lab host's name).
    pub names: &'a BTreeMap<String, String>,
    /// Dataservice → its master host (default: its first host).
    pub masters: &'a BTreeMap<String, String>,
}

/// The lab's Tungsten world: `dir` holds `state.json` and `data/HOST.tsv`.
pub struct World {
    dir: PathBuf,
}

impl World {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// A fresh world: every replicator online; the `drifted` service's data differs from the
    /// others'.
    pub fn create(dir: &Path, layout: &Layout) -> Result<()> {
        fs::create_dir_all(dir.join("data"))?;
        let mut state = State { services: BTreeMap::new(), hosts: BTreeMap::new() };
        for (name, hosts) in layout.services {
            let master = layout.masters.get(name).cloned().or_else(|| hosts.first().cloned()).unwrap_or_default();
            state.services.insert(
                name.clone(),
                DataService {
                    hosts: hosts.clone(),
                    policy: "AUTOMATIC".into(),
                    routers: hosts.iter().map(|h| (h.clone(), true)).collect(),
                    master: master.clone(),
                },
            );
            for host in hosts {
                let replicator = |role: &str| Replicator { state: "ONLINE".into(), role: role.into(), seqno: 1042, needs_provision: false };
                let mut installs = BTreeMap::new();
                installs.insert(CLUSTER.to_string(), [(name.clone(), replicator(if *host == master { "master" } else { "slave" }))].into());
                let cross: BTreeMap<String, Replicator> = layout.services.keys().filter(|s| *s != name).map(|s| (s.clone(), replicator("slave"))).collect();
                installs.insert(CROSS_SITE.to_string(), cross);
                let tungsten_name = layout.names.get(host).cloned().unwrap_or_else(|| host.clone());
                state.hosts.insert(
                    host.clone(),
                    Host { site: name.clone(), name: tungsten_name, running: [(CLUSTER.into(), true), (CROSS_SITE.into(), true)].into(), services: installs },
                );
                let mut data = String::from("1\talice\n2\tbob\n3\tcarol\n");
                if name == layout.drifted {
                    data = format!("1\talice\n2\tbob (edited on {host} while the sites were apart)\n4\tdave-{host}\n");
                }
                fs::write(dir.join("data").join(format!("{host}.tsv")), data)?;
            }
        }
        World::new(dir).save(&state)
    }

    fn load(&self) -> Result<State> {
        let text = fs::read_to_string(self.dir.join("state.json")).context("reading the Tungsten lab state")?;
        serde_json::from_str(&text).context("the Tungsten lab state is malformed")
    }

    fn save(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(state)?)?;
        fs::rename(tmp, self.dir.join("state.json"))?;
        Ok(())
    }

    pub fn data(&self, host: &str) -> Result<String> {
        Ok(fs::read_to_string(self.dir.join("data").join(format!("{host}.tsv")))?)
    }

    /// Run one tool invocation under the world's lock: (exit code, stdout, stderr).
    pub fn run(&self, host: &str, install: &str, tool: &str, args: &[String], stdin: &mut dyn BufRead) -> Result<(i32, String, String)> {
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join("state.lock"))?;
        lock.lock()?;
        let mut state = self.load()?;
        let mut out = Output::default();
        let code = match tool {
            "trepctl" => trepctl(&mut state, host, install, args, &mut out),
            "replicator" => replicator(&mut state, host, install, args, &mut out),
            "tpm" => tpm(&mut state, host, args, &mut out),
            "tungsten_provision_slave" => provision(self, &mut state, host, args, &mut out)?,
            "cctrl" => {
                let mut input = String::new();
                stdin.read_to_string(&mut input)?;
                cctrl(&mut state, host, &input, &mut out)
            }
            other => {
                out.err(&format!("{other}: not a Tungsten tool of this lab"));
                127
            }
        };
        self.save(&state)?;
        Ok((code, out.stdout, out.stderr))
    }
}

#[derive(Default)]
struct Output {
    stdout: String,
    stderr: String,
}

impl Output {
    fn line(&mut self, text: &str) {
        self.stdout.push_str(text);
        self.stdout.push('\n');
    }
    fn err(&mut self, text: &str) {
        self.stderr.push_str(text);
        self.stderr.push('\n');
    }
}

/// The lab host with Tungsten name `name`.
fn by_name(state: &State, name: &str) -> Option<String> {
    state.hosts.iter().find(|(_, h)| h.name == name).map(|(k, _)| k.clone())
}

fn thl(name: &str) -> String {
    format!("thl://{name}:2112/")
}

fn trepctl(state: &mut State, host: &str, install: &str, args: &[String], out: &mut Output) -> i32 {
    let mut service = None;
    let mut target = host.to_string();
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-service" => {
                service = args.get(i + 1).cloned();
                i += 2;
            }
            "-host" => {
                let Some(name) = args.get(i + 1) else {
                    out.line("Operation failed: -host needs a host name");
                    return 1;
                };
                match by_name(state, name) {
                    Some(h) => target = h,
                    None => {
                        out.line(&format!("Connection failed: A component of type 'replicator' at address {name}:10000 is not available."));
                        out.line(" Check to be sure that the service is running.");
                        return 1;
                    }
                }
                i += 2;
            }
            "-port" => i += 2,
            other => {
                rest.push(other);
                i += 1;
            }
        }
    }
    let Some(entry) = state.hosts.get(&target).cloned() else { return 1 };
    if !entry.running.get(install).copied().unwrap_or(false) {
        out.line(&format!("Connection failed: A component of type 'replicator' at address {}:10000 is not available.", entry.name));
        out.line(" Check to be sure that the service is running.");
        return 1;
    }
    let services = entry.services.get(install).cloned().unwrap_or_default();
    let command = rest.first().copied().unwrap_or("");
    if command == "services" {
        out.line("Processing services command...");
        for (name, r) in &services {
            let fields = [
                ("appliedLastSeqno", r.seqno.to_string()),
                ("appliedLatency", latency(r)),
                ("role", r.role.clone()),
                ("serviceName", name.clone()),
                ("serviceType", if install == CLUSTER { "local".into() } else { "remote".into() }),
                ("started", "true".into()),
                ("state", r.state.clone()),
            ];
            block(out, &fields);
        }
        out.line("Finished services command...");
        return 0;
    }
    let name = match (service, services.len()) {
        (Some(s), _) => s,
        (None, 1) => services.keys().next().cloned().unwrap_or_default(),
        (None, _) => {
            out.line("Operation failed: You must specify a service name with the -service flag");
            return 1;
        }
    };
    let Some(replicator) = services.get(&name).cloned() else {
        out.line(&format!("Operation failed: Unknown replication service name: {name}"));
        return 1;
    };
    match command {
        "status" => {
            let site_master = state.services.get(&name).map(|s| s.master.clone()).unwrap_or_default();
            let master_name = state.hosts.get(&site_master).map(|h| h.name.clone()).unwrap_or_default();
            let connect = if install == CLUSTER {
                if replicator.role == "master" { String::new() } else { thl(&master_name) }
            } else {
                // A cross-site service reads from every host of its source site.
                let members: Vec<String> = state
                    .services
                    .get(&name)
                    .map(|s| s.hosts.iter().filter_map(|h| state.hosts.get(h).map(|e| format!("{}:2112", e.name))).collect())
                    .unwrap_or_default();
                format!("thl://{}/", members.join(","))
            };
            let fields = [
                ("appliedLastSeqno", replicator.seqno.to_string()),
                ("appliedLatency", latency(&replicator)),
                ("clusterName", name.clone()),
                ("dataServerHost", entry.name.clone()),
                ("host", entry.name.clone()),
                ("masterConnectUri", connect),
                ("masterListenUri", thl(&entry.name)),
                ("pendingError", "NONE".into()),
                ("role", replicator.role.clone()),
                ("serviceName", name.clone()),
                ("serviceType", if install == CLUSTER { "local".into() } else { "remote".into() }),
                ("simpleServiceName", name.clone()),
                ("siteName", "default".into()),
                ("sourceId", entry.name.clone()),
                ("started", "true".into()),
                ("state", replicator.state.clone()),
            ];
            out.line("Processing status command...");
            block(out, &fields);
            out.line("Finished status command...");
            0
        }
        "offline" => {
            let managed = install == CLUSTER && state.services.get(&entry.site).is_some_and(|s| s.policy == "AUTOMATIC");
            let Some(r) = replicator_mut(state, &target, install, &name) else { return 1 };
            // In AUTOMATIC policy the manager puts a cluster replicator straight back online.
            r.state = if managed { "ONLINE".into() } else { "OFFLINE:NORMAL".into() };
            0
        }
        "online" => {
            if replicator.needs_provision {
                out.line(&format!(
                    "Operation failed: Replication service {name} has no data to serve since `tpm reset`: provision it first (tungsten_provision_slave)"
                ));
                return 1;
            }
            let Some(r) = replicator_mut(state, &target, install, &name) else { return 1 };
            r.state = "ONLINE".into();
            if r.seqno < 0 {
                r.seqno = 1042;
            }
            0
        }
        "reset" => {
            let options: Vec<&str> = rest[1..].to_vec();
            if let Some(bad) = options.iter().find(|o| !["-all", "-thl", "-relay", "-db", "-y"].contains(o)) {
                out.line(&format!("Unrecognized option for reset command : {bad}"));
                return 1;
            }
            if !options.contains(&"-y") {
                out.line(&format!("Do you really want to delete replication service {name} completely? [yes/NO] "));
                return 0; // no answer on stdin: nothing is deleted
            }
            if !replicator.state.starts_with("OFFLINE") {
                out.line(&format!(
                    "Operation failed: Replication service {name} must be offline before resetting.\n(Use 'trepctl -service {name} offline' first)"
                ));
                return 1;
            }
            let Some(r) = replicator_mut(state, &target, install, &name) else { return 1 };
            r.seqno = -1;
            0
        }
        "" => {
            out.line("Usage: trepctl [-host name] [-port number] [-service name] command");
            1
        }
        other => {
            out.line(&format!("Unknown command, try 'help' to get a list: '{other}"));
            1
        }
    }
}

fn latency(r: &Replicator) -> String {
    if r.state == "ONLINE" { "0.614".into() } else { "-1.0".into() }
}

/// trepctl's NAME/VALUE block: keys sorted, padded to the longest key.
fn block(out: &mut Output, fields: &[(&str, String)]) {
    let mut fields = fields.to_vec();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(4);
    out.line(&format!("{:<width$} VALUE", "NAME"));
    out.line(&format!("{:<width$} -----", "----"));
    for (key, value) in fields {
        out.line(&format!("{key:<width$}: {value}"));
    }
}

fn replicator_mut<'s>(state: &'s mut State, host: &str, install: &str, service: &str) -> Option<&'s mut Replicator> {
    state.hosts.get_mut(host)?.services.get_mut(install)?.get_mut(service)
}

fn replicator(state: &mut State, host: &str, install: &str, args: &[String], out: &mut Output) -> i32 {
    let Some(entry) = state.hosts.get_mut(host) else { return 1 };
    let running = entry.running.get(install).copied().unwrap_or(false);
    match args.first().map(String::as_str) {
        Some("start") => {
            if running {
                out.line("Tungsten Replicator Service is already running.");
                return 0;
            }
            out.line("Starting Tungsten Replicator Service...");
            out.line("Waiting for Tungsten Replicator Service......");
            out.line(&format!("running: PID:{}", 20_000 + host.len() * 7));
            entry.running.insert(install.into(), true);
            for r in entry.services.get_mut(install).into_iter().flat_map(|s| s.values_mut()) {
                r.state = if r.needs_provision { "OFFLINE:NORMAL".into() } else { "ONLINE".into() };
            }
            0
        }
        Some("stop") => {
            out.line("Stopping Tungsten Replicator Service...");
            if !running {
                out.line("Tungsten Replicator Service was not running.");
                return 0;
            }
            out.line("Waiting for Tungsten Replicator Service to exit...");
            out.line("Stopped Tungsten Replicator Service.");
            entry.running.insert(install.into(), false);
            0
        }
        Some("status") => {
            if running {
                out.line(&format!("Tungsten Replicator Service is running: PID:{}, Wrapper:STARTED, Java:STARTED", 20_000 + host.len() * 7));
                0
            } else {
                out.line("Tungsten Replicator Service is not running.");
                1
            }
        }
        _ => {
            out.line("Usage: replicator { console | start | stop | restart | condrestart | status | dump }");
            1
        }
    }
}

/// `tpm reset DS[,DS…]` (reset_cluster.rb): with the replicator running, stop it, clear the logs
/// and the service's state, and start it offline; with it stopped, only clear the logs.
fn tpm(state: &mut State, host: &str, args: &[String], out: &mut Output) -> i32 {
    let Some(entry) = state.hosts.get_mut(host) else { return 1 };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("reset"), Some(list)) => {
            let missing: Vec<&str> = list.split(',').filter(|s| *s != entry.site).collect();
            if !missing.is_empty() {
                out.line(&format!("ERROR >> These data services are not defined in the configuration file: {}", missing.join(",")));
                return 1;
            }
            let was_running = entry.running.get(CLUSTER).copied().unwrap_or(false);
            if was_running {
                out.line("NOTE  >> Stop the replication services");
            }
            for r in entry.services.get_mut(CLUSTER).into_iter().flat_map(|s| s.values_mut()) {
                r.seqno = -1;
                r.state = "OFFLINE:NORMAL".into();
                r.needs_provision = true;
            }
            out.line("NOTE  >> Clear THL and relay logs");
            if was_running {
                out.line("NOTE  >> Start the replication services in the OFFLINE state");
            }
            0
        }
        _ => {
            out.line("ERROR >> Usage: tpm reset DATASERVICE");
            1
        }
    }
}

fn provision(world: &World, state: &mut State, host: &str, args: &[String], out: &mut Output) -> Result<i32> {
    let source = args.iter().find_map(|a| a.strip_prefix("--source=")).map(str::to_string);
    let Some(source) = source else {
        out.line("ERROR >> The --source argument is required");
        return Ok(1);
    };
    let Some(entry) = state.hosts.get(host).cloned() else { return Ok(1) };
    if source == entry.name || source == host {
        out.line(&format!("ERROR >> The value provided for --source, {source}, resolves to the local node. You cannot provision a node from itself."));
        return Ok(1);
    }
    // --source is ssh'd to by its Tungsten name.
    let Some(source_host) = by_name(state, &source) else {
        out.line(&format!("ERROR >> Unable to reach {source} over ssh (it is no Tungsten host name of this deployment)"));
        return Ok(1);
    };
    let source_entry = state.hosts.get(&source_host).cloned().unwrap_or_else(|| entry.clone());
    let source_service = source_entry.services.get(CLUSTER).and_then(|s| s.values().next()).cloned();
    let source_ok =
        source_entry.running.get(CLUSTER).copied().unwrap_or(false) && source_service.as_ref().is_some_and(|r| r.state == "ONLINE" && !r.needs_provision);
    if !source_ok {
        out.line(&format!("ERROR >> There were errors validating the provision script on {source}"));
        return Ok(1);
    }
    let service = entry.site.clone();
    let running = entry.running.get(CLUSTER).copied().unwrap_or(false);
    if running {
        out.line(&format!("NOTE  >> Put {service} replication service offline"));
    }
    if fs::metadata(world.dir.join(format!("fail-provision-{host}"))).is_ok() {
        out.line(&format!("ERROR >> Unable to restore the backup of {source}: xtrabackup exited with 1 (injected by the lab)"));
        return Ok(1);
    }
    out.line("NOTE  >> Stop MySQL and empty all data directories");
    out.line(&format!("NOTE  >> Create a backup of {source} in /var/lib/mysql"));
    fs::copy(world.dir.join("data").join(format!("{source_host}.tsv")), world.dir.join("data").join(format!("{host}.tsv")))?;
    out.line("NOTE  >> Prepare the files for MySQL to run");
    out.line("NOTE  >> Backup and restore complete");
    if let Some(r) = replicator_mut(state, host, CLUSTER, &service) {
        r.needs_provision = false;
        r.seqno = source_service.map_or(0, |s| s.seqno);
        if running {
            r.state = "ONLINE".into();
        }
    }
    if running {
        out.line(&format!("NOTE  >> Put the {service} replication service online"));
    }
    out.line(&format!("NOTE  >> Clear THL and relay logs for the {service} replication service"));
    Ok(0)
}

fn cctrl(state: &mut State, host: &str, input: &str, out: &mut Output) -> i32 {
    let Some(entry) = state.hosts.get(host).cloned() else { return 1 };
    let service = entry.site.clone();
    out.line("Tungsten Clustering (for MySQL) 6.1.25 build 6");
    out.line(&format!("connect to '{service}@{}'", entry.name));
    out.line(&format!("{service}: session established"));
    let mut failed = false;
    for command in input.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let policy = state.services.get(&service).map(|s| s.policy.clone()).unwrap_or_default();
        out.line(&format!("[LOGICAL] /{service} > {command}"));
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["ls"] => ls(state, &service, out),
            ["set", "policy", mode] if ["maintenance", "automatic"].contains(&mode.to_lowercase().as_str()) => {
                let mode = mode.to_uppercase();
                if let Some(s) = state.services.get_mut(&service) {
                    s.policy = mode.clone();
                }
                out.line(&format!("policy mode is now {mode}"));
                if mode == "AUTOMATIC" && policy != "AUTOMATIC" {
                    // The manager recovers replicators it finds offline and able to go online.
                    let hosts = state.services.get(&service).map(|s| s.hosts.clone()).unwrap_or_default();
                    for h in hosts {
                        let running = state.hosts.get(&h).is_some_and(|e| e.running.get(CLUSTER).copied().unwrap_or(false));
                        if let Some(r) = replicator_mut(state, &h, CLUSTER, &service).filter(|r| running && !r.needs_provision) {
                            r.state = "ONLINE".into();
                        }
                    }
                }
            }
            ["router", "*", action @ ("online" | "offline")] => {
                let online = *action == "online";
                if online {
                    let hosts = state.services.get(&service).map(|s| s.hosts.clone()).unwrap_or_default();
                    let down: Vec<String> = hosts
                        .iter()
                        .filter_map(|h| {
                            let e = state.hosts.get(h)?;
                            let r = e.services.get(CLUSTER)?.get(&service)?;
                            let running = e.running.get(CLUSTER).copied().unwrap_or(false);
                            (!running || r.state != "ONLINE")
                                .then(|| format!("{} (replicator {})", e.name, if running { r.state.clone() } else { "STOPPED".into() }))
                        })
                        .collect();
                    if !down.is_empty() {
                        out.line(&format!("ERROR: cannot put the connectors of {service} online: datasources not ONLINE: {}", down.join(", ")));
                        failed = true;
                        continue;
                    }
                }
                let names: BTreeMap<String, String> = state.hosts.iter().map(|(k, h)| (k.clone(), h.name.clone())).collect();
                if let Some(s) = state.services.get_mut(&service) {
                    for (h, router) in s.routers.iter_mut() {
                        *router = online;
                        out.line(&format!("connector@{} is now {}", names.get(h).cloned().unwrap_or_default(), if online { "ONLINE" } else { "OFFLINE" }));
                    }
                }
            }
            _ => {
                out.line(&format!("ERROR: unknown or unsupported command: {command}"));
                failed = true;
            }
        }
    }
    out.line("Exiting...");
    if failed { 1 } else { 0 }
}

/// One row of a box; a header of 73 characters or more wraps onto a second row with a hanging
/// indent (ResultFormatter's wrap at width 75 - 2).
fn boxed(out: &mut Output, text: &str, indent: usize) {
    let limit = BOX - 3;
    if text.len() <= limit {
        out.line(&format!("|{text:<BOX$}|"));
        return;
    }
    let cut = text[..limit].rfind(", ").map(|i| i + 1).unwrap_or(limit);
    out.line(&format!("|{:<BOX$}|", &text[..cut]));
    let rest = format!("{}{}", " ".repeat(indent), text[cut..].trim_start());
    out.line(&format!("|{rest:<BOX$}|"));
}

fn ls(state: &State, service: &str, out: &mut Output) {
    let Some(s) = state.services.get(service) else { return };
    let name_of = |h: &str| state.hosts.get(h).map(|e| e.name.clone()).unwrap_or_else(|| h.to_string());
    let coordinator = name_of(s.hosts.first().map(String::as_str).unwrap_or(""));
    out.line(&format!("COORDINATOR[{coordinator}:{}:ONLINE]", s.policy));
    out.line("");
    out.line("ROUTERS:");
    let bar = format!("+{}+", "-".repeat(BOX));
    out.line(&bar);
    for (i, (h, online)) in s.routers.iter().enumerate() {
        boxed(out, &format!("connector@{}[{}]({}, created=0, active=0)", name_of(h), 8805 + i * 1617, if *online { "ONLINE" } else { "OFFLINE" }), 0);
    }
    out.line(&bar);
    out.line("");
    out.line("DATASOURCES:");
    let master_name = name_of(&s.master);
    for h in &s.hosts {
        let Some(entry) = state.hosts.get(h) else { continue };
        let Some(r) = entry.services.get(CLUSTER).and_then(|m| m.get(service)) else { continue };
        let running = entry.running.get(CLUSTER).copied().unwrap_or(false);
        out.line(&bar);
        let progress = if !running {
            String::new()
        } else if r.role == "master" {
            format!(", progress={}, THL latency=0.614", r.seqno)
        } else {
            format!(", progress={}, latency=1.243", r.seqno)
        };
        let ds_state = if running && r.state == "ONLINE" {
            "ONLINE"
        } else if running {
            "OFFLINE"
        } else {
            "ONLINE"
        };
        boxed(out, &format!("{}({}:{ds_state}{progress})", entry.name, r.role), entry.name.len() + 1);
        if running {
            boxed(out, "STATUS [OK] [2026/11/23 09:11:10 PM UTC]", 0);
        } else {
            boxed(out, "STATUS [DIMINISHED] [2026/11/23 09:11:10 PM UTC]", 0);
            boxed(out, "REASON[REPLICATOR STOPPED]", 0);
        }
        out.line(&bar);
        boxed(out, "  MANAGER(state=ONLINE)", 0);
        if !running {
            boxed(out, "  REPLICATOR(state=STOPPED)", 0);
        } else if r.role == "master" {
            boxed(out, &format!("  REPLICATOR(role=master, state={})", r.state), 0);
        } else {
            boxed(out, &format!("  REPLICATOR(role={}, master={master_name}, state={})", r.role, r.state), 0);
        }
        boxed(out, "  DATASERVER(state=ONLINE)", 0);
        out.line(&bar);
        out.line("");
    }
}

/// Entry point of `opsh-lab tungsten --state D --host H --install I TOOL ARGS…`.
pub fn main(dir: &Path, host: &str, install: &str, tool: &str, args: &[String]) -> Result<i32> {
    let world = World::new(dir);
    let stdin = std::io::stdin();
    let (code, stdout, stderr) = world.run(host, install, tool, args, &mut stdin.lock())?;
    print!("{stdout}");
    eprint!("{stderr}");
    Ok(code)
}

/// Put the stand-ins at the installations' paths under a lab host's own /opt (`opt`), each a
/// wrapper that runs this binary (copied into the lab, readable by the lab user) for `host`.
pub fn install(opt: &Path, cluster_home: &str, cross_site_home: &str, host: &str, lab_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let binary = lab_dir.join("bin/opsh-lab");
    if !binary.exists() {
        fs::create_dir_all(lab_dir.join("bin"))?;
        fs::copy(crate::lab::helper_binary()?, &binary).context("copying opsh-lab into the lab for the Tungsten stand-ins")?;
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    }
    let tools: [(&str, &str, &str); 7] = [
        (cluster_home, CLUSTER, "tungsten-manager/bin/cctrl"),
        (cluster_home, CLUSTER, "tungsten-replicator/bin/trepctl"),
        (cluster_home, CLUSTER, "tungsten-replicator/bin/replicator"),
        (cluster_home, CLUSTER, "tools/tpm"),
        (cluster_home, CLUSTER, "tungsten-replicator/scripts/tungsten_provision_slave"),
        (cross_site_home, CROSS_SITE, "tungsten-replicator/bin/trepctl"),
        (cross_site_home, CROSS_SITE, "tungsten-replicator/bin/replicator"),
    ];
    for (home, install, relative) in tools {
        let path = opt.join(home.trim_start_matches("/opt/")).join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tool = relative.rsplit('/').next().unwrap_or(relative);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\n# Lab stand-in for Tungsten's {tool} (see tests/src/tungsten.rs)\nexec {} tungsten --state {} --host {host} --install {install} {tool} \"$@\"\n",
                binary.display(),
                lab_dir.join("tungsten").display()
            ),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
