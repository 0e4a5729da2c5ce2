//! Stand-ins for Tungsten Clustering's tools in the `tungsten` lab (multi-site active/active, seed
//! 004): `cctrl`, `trepctl`, `replicator`, `tpm`, `tungsten_provision_slave`. Tungsten cannot be
//! installed here, so these are faithful state machines of what the seed's procedure touches: the
//! same command lines, the same output formats (as Continuent documents them), and the real
//! tools' refusals — `trepctl reset` of a service that is not offline ("must be offline before
//! resetting"), any `trepctl` against a stopped replicator ("Connection failed"), a replicator put
//! offline while its cluster is in AUTOMATIC policy coming back online (the manager recovers it),
//! provisioning with the replicator stopped or from the node itself, and connectors put online
//! while the service's replicators are not.
//!
//! All hosts share one state file (the managers' group view) under the lab directory, locked for
//! every command; each host's "MySQL" data is a file beside it. The lab puts a wrapper at each of
//! the seed's paths that runs `opsh-lab tungsten …` with the host and installation baked in.
//! Lab fixture only: never part of opsh.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The cluster installation (a host's own dataservice) and the cross-site replicator
/// installation (the other dataservice, replicated into this one).
pub const CLUSTER: &str = "continuent";
pub const CROSS_SITE: &str = "replicator";

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// The dataservice this host belongs to.
    pub site: String,
    /// Installation → its replicator process runs.
    pub running: BTreeMap<String, bool>,
    /// Installation → the replication service it runs.
    pub services: BTreeMap<String, Replicator>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replicator {
    pub service: String,
    /// `ONLINE`, `OFFLINE:NORMAL`.
    pub state: String,
    pub role: String,
    pub seqno: i64,
    /// `tpm reset` cleared it: it waits for a provision before it can serve.
    pub needs_provision: bool,
}

/// The lab's Tungsten world: `dir` holds `state.json` and `data/HOST.tsv`.
pub struct World {
    dir: PathBuf,
}

impl World {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// A fresh world: each service's first host is its master; every replicator online; the
    /// `drifted` service's data differs from the others'.
    pub fn create(dir: &Path, services: &BTreeMap<String, Vec<String>>, drifted: &str) -> Result<()> {
        fs::create_dir_all(dir.join("data"))?;
        let mut state = State { services: BTreeMap::new(), hosts: BTreeMap::new() };
        for (name, hosts) in services {
            state.services.insert(
                name.clone(),
                DataService { hosts: hosts.clone(), policy: "AUTOMATIC".into(), routers: hosts.iter().map(|h| (h.clone(), true)).collect() },
            );
            let other = services.keys().find(|s| *s != name).cloned().unwrap_or_default();
            for (i, host) in hosts.iter().enumerate() {
                let replicator = |service: &str, role: &str| Replicator {
                    service: service.into(),
                    state: "ONLINE".into(),
                    role: role.into(),
                    seqno: 1042,
                    needs_provision: false,
                };
                let mut installs = BTreeMap::new();
                installs.insert(CLUSTER.to_string(), replicator(name, if i == 0 { "master" } else { "slave" }));
                installs.insert(CROSS_SITE.to_string(), replicator(&other, "slave"));
                state
                    .hosts
                    .insert(host.clone(), Host { site: name.clone(), running: [(CLUSTER.into(), true), (CROSS_SITE.into(), true)].into(), services: installs });
                let mut data = String::from("1\talice\n2\tbob\n3\tcarol\n");
                if name == drifted {
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

fn trepctl(state: &mut State, host: &str, install: &str, args: &[String], out: &mut Output) -> i32 {
    let mut service = None;
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-service" => {
                service = args.get(i + 1).cloned();
                i += 2;
            }
            "-host" | "-port" => i += 2,
            other => {
                rest.push(other);
                i += 1;
            }
        }
    }
    let Some(entry) = state.hosts.get_mut(host) else {
        out.line(&format!("Connection failed: Unknown host {host}"));
        return 1;
    };
    if !entry.running.get(install).copied().unwrap_or(false) {
        // The replicator's RMI port does not answer.
        out.line(&format!(
            "Connection failed: Connection refused to host: {host}; nested exception is: \n\tjava.net.ConnectException: Connection refused (Connection refused)"
        ));
        return 1;
    }
    let site = entry.site.clone();
    let Some(replicator) = entry.services.get_mut(install) else {
        out.line("Operation failed: no replication service is configured here");
        return 1;
    };
    let name = service.unwrap_or_else(|| replicator.service.clone());
    if name != replicator.service {
        out.line(&format!("Operation failed: Unknown replication service name: {name}"));
        return 1;
    }
    let command = rest.first().copied().unwrap_or("");
    match command {
        "status" | "services" => {
            let fields = [
                ("appliedLastSeqno", replicator.seqno.to_string()),
                ("appliedLatency", if replicator.state == "ONLINE" { "0.614".into() } else { "-1.0".into() }),
                ("pendingError", "NONE".into()),
                ("role", replicator.role.clone()),
                ("serviceName", replicator.service.clone()),
                ("serviceType", if install == CLUSTER { "local".into() } else { "remote".into() }),
                ("started", "true".into()),
                ("state", replicator.state.clone()),
            ];
            out.line(&format!("Processing {command} command..."));
            out.line("NAME                     VALUE");
            out.line("----                     -----");
            for (key, value) in fields {
                out.line(&format!("{key:<23}: {value}"));
            }
            out.line(&format!("Finished {command} command..."));
            0
        }
        "offline" => {
            let managed = install == CLUSTER && state_policy(state, &site) == "AUTOMATIC";
            let Some(replicator) = state.hosts.get_mut(host).and_then(|h| h.services.get_mut(install)) else { return 1 };
            // In AUTOMATIC policy the manager puts a cluster replicator straight back online.
            replicator.state = if managed { "ONLINE".into() } else { "OFFLINE:NORMAL".into() };
            0
        }
        "online" => {
            if replicator.needs_provision {
                out.line(&format!(
                    "Operation failed: Replication service {name} has no data to serve since `tpm reset`: provision it first (tungsten_provision_slave)"
                ));
                return 1;
            }
            replicator.state = "ONLINE".into();
            if replicator.seqno < 0 {
                replicator.seqno = 1042;
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
            replicator.seqno = -1;
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

fn state_policy(state: &State, service: &str) -> String {
    state.services.get(service).map(|s| s.policy.clone()).unwrap_or_default()
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
            if let Some(replicator) = entry.services.get_mut(install) {
                replicator.state = if replicator.needs_provision { "OFFLINE:NORMAL".into() } else { "ONLINE".into() };
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

fn tpm(state: &mut State, host: &str, args: &[String], out: &mut Output) -> i32 {
    let Some(entry) = state.hosts.get_mut(host) else { return 1 };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("reset"), Some(service)) => {
            if entry.site != *service {
                out.err(&format!("ERROR >> There is no dataservice named {service} on this host (it runs {})", entry.site));
                return 1;
            }
            if entry.running.get(CLUSTER).copied().unwrap_or(false) {
                out.err("ERROR >> The replicator is running: stop it (replicator stop) before `tpm reset`");
                return 1;
            }
            if let Some(replicator) = entry.services.get_mut(CLUSTER) {
                replicator.seqno = -1;
                replicator.state = "OFFLINE:NORMAL".into();
                replicator.needs_provision = true;
            }
            out.line(&format!("NOTE  >> The {service} replication service has been reset (THL, relay logs and tracking schema removed)"));
            0
        }
        _ => {
            out.err("ERROR >> Usage: tpm reset SERVICE");
            1
        }
    }
}

fn provision(world: &World, state: &mut State, host: &str, args: &[String], out: &mut Output) -> Result<i32> {
    let source = args.iter().find_map(|a| a.strip_prefix("--source=")).map(str::to_string);
    let Some(source) = source else {
        out.err("ERROR >> The --source argument is required");
        return Ok(1);
    };
    if source == host {
        out.err(&format!("ERROR >> The value provided for --source, {source}, resolves to the local node. You cannot provision a node from itself."));
        return Ok(1);
    }
    let Some(source_host) = state.hosts.get(&source).cloned() else {
        out.err(&format!("ERROR >> Unable to connect to {source}"));
        return Ok(1);
    };
    let source_ok = source_host.running.get(CLUSTER).copied().unwrap_or(false)
        && source_host.services.get(CLUSTER).is_some_and(|r| r.state == "ONLINE" && !r.needs_provision);
    if !source_ok {
        out.err(&format!("ERROR >> There were errors validating the provision script on {source}"));
        return Ok(1);
    }
    let Some(entry) = state.hosts.get_mut(host) else { return Ok(1) };
    let service = entry.site.clone();
    if !entry.running.get(CLUSTER).copied().unwrap_or(false) {
        out.err(&format!("ERROR >> Unable to put the {service} replication service offline: the replicator is not running (start it with `replicator start`)"));
        return Ok(1);
    }
    out.line(&format!("NOTE  >> Put the {service} replication service offline"));
    if fs::metadata(world.dir.join(format!("fail-provision-{host}"))).is_ok() {
        out.err(&format!("ERROR >> Unable to restore the backup of {source}: xtrabackup exited with 1 (injected by the lab)"));
        if let Some(replicator) = entry.services.get_mut(CLUSTER) {
            replicator.state = "OFFLINE:NORMAL".into();
        }
        return Ok(1);
    }
    out.line(&format!("NOTE  >> Create a backup of {source} in /opt/continuent/backups/provision_xtrabackup"));
    fs::copy(world.dir.join("data").join(format!("{source}.tsv")), world.dir.join("data").join(format!("{host}.tsv")))?;
    out.line("NOTE  >> Backup and restore complete");
    if let Some(replicator) = entry.services.get_mut(CLUSTER) {
        replicator.needs_provision = false;
        replicator.state = "ONLINE".into();
        replicator.seqno = source_host.services.get(CLUSTER).map_or(0, |r| r.seqno);
    }
    out.line(&format!("NOTE  >> Put the {service} replication service online"));
    out.line(&format!("NOTE  >> {host} has been provisioned from {source}"));
    Ok(0)
}

fn cctrl(state: &mut State, host: &str, input: &str, out: &mut Output) -> i32 {
    let Some(service) = state.hosts.get(host).map(|h| h.site.clone()) else { return 1 };
    out.line("Tungsten Clustering (for MySQL) 6.1.25 build 6");
    out.line(&format!("connect to '{service}@{host}'"));
    out.line(&format!("{service}: session established"));
    let mut failed = false;
    for command in input.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let policy = state_policy(state, &service);
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
                        if let Some(r) =
                            state.hosts.get_mut(&h).filter(|e| e.running.get(CLUSTER).copied().unwrap_or(false)).and_then(|e| e.services.get_mut(CLUSTER))
                            && !r.needs_provision
                        {
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
                            let entry = state.hosts.get(h)?;
                            let r = entry.services.get(CLUSTER)?;
                            let running = entry.running.get(CLUSTER).copied().unwrap_or(false);
                            (!running || r.state != "ONLINE").then(|| format!("{h} (replicator {})", if running { r.state.clone() } else { "STOPPED".into() }))
                        })
                        .collect();
                    if !down.is_empty() {
                        out.line(&format!("ERROR: cannot put the connectors of {service} online: datasources not ONLINE: {}", down.join(", ")));
                        failed = true;
                        continue;
                    }
                }
                if let Some(s) = state.services.get_mut(&service) {
                    for (h, state) in s.routers.iter_mut() {
                        *state = online;
                        out.line(&format!("connector@{h} is now {}", if online { "ONLINE" } else { "OFFLINE" }));
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

fn ls(state: &State, service: &str, out: &mut Output) {
    let Some(s) = state.services.get(service) else { return };
    let coordinator = s.hosts.first().cloned().unwrap_or_default();
    out.line(&format!("COORDINATOR[{coordinator}:{}:ONLINE]", s.policy));
    out.line("");
    out.line("ROUTERS:");
    let bar = format!("+{}+", "-".repeat(76));
    out.line(&bar);
    for (i, (h, online)) in s.routers.iter().enumerate() {
        out.line(&format!("|{:<76}|", format!("connector@{h}[{}]({}, created=0, active=0)", 8805 + i * 1617, if *online { "ONLINE" } else { "OFFLINE" })));
    }
    out.line(&bar);
    out.line("");
    out.line("DATASOURCES:");
    for h in &s.hosts {
        let Some(entry) = state.hosts.get(h) else { continue };
        let Some(r) = entry.services.get(CLUSTER) else { continue };
        let running = entry.running.get(CLUSTER).copied().unwrap_or(false);
        let rstate = if running { r.state.clone() } else { "STOPPED".into() };
        out.line(&bar);
        out.line(&format!(
            "|{:<76}|",
            format!("{h}({}:{}, progress={}, latency=0.614)", r.role, if rstate == "ONLINE" { "ONLINE" } else { "OFFLINE" }, r.seqno)
        ));
        out.line(&format!("|{:<76}|", "STATUS [OK] [2026/11/23 09:11:10 PM UTC]"));
        out.line(&bar);
        out.line(&format!("|{:<76}|", "  MANAGER(state=ONLINE)"));
        out.line(&format!("|{:<76}|", format!("  REPLICATOR(role={}, state={rstate})", r.role)));
        out.line(&format!("|{:<76}|", "  DATASERVER(state=ONLINE)"));
        out.line(&bar);
        out.line("");
    }
}

/// Entry point of `opsh-lab tungsten --dir D --host H --install I TOOL ARGS…`.
pub fn main(dir: &Path, host: &str, install: &str, tool: &str, args: &[String]) -> Result<i32> {
    let world = World::new(dir);
    let stdin = std::io::stdin();
    let (code, stdout, stderr) = world.run(host, install, tool, args, &mut stdin.lock())?;
    print!("{stdout}");
    eprint!("{stderr}");
    Ok(code)
}

/// Put the stand-ins at the seed's paths under a lab host's own /opt (`opt`), each a wrapper
/// that runs this binary (copied into the lab, readable by the lab user) for `host`.
pub fn install(opt: &Path, spec: &crate::topology::TungstenSpec, host: &str, lab_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let binary = lab_dir.join("bin/opsh-lab");
    if !binary.exists() {
        fs::create_dir_all(lab_dir.join("bin"))?;
        fs::copy(crate::lab::helper_binary()?, &binary).context("copying opsh-lab into the lab for the Tungsten stand-ins")?;
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    }
    let tools: [(&str, &str, &str); 7] = [
        (&spec.cluster_home, CLUSTER, "tungsten-manager/bin/cctrl"),
        (&spec.cluster_home, CLUSTER, "tungsten-replicator/bin/trepctl"),
        (&spec.cluster_home, CLUSTER, "tungsten-replicator/bin/replicator"),
        (&spec.cluster_home, CLUSTER, "tools/tpm"),
        (&spec.cluster_home, CLUSTER, "tungsten-replicator/scripts/tungsten_provision_slave"),
        (&spec.cross_site_home, CROSS_SITE, "tungsten-replicator/bin/trepctl"),
        (&spec.cross_site_home, CROSS_SITE, "tungsten-replicator/bin/replicator"),
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
