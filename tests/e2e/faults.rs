//! The fault matrix: for each change command of the bundled runbooks, opsh is killed with
//! SIGKILL in a step (right after its intent is journaled: before or while its effect runs) and
//! right after a step's result, and a host the step targets is cut while the step runs; then the
//! host is healed and the run resumed. The end state — read with psql and on the hosts' disks,
//! never from opsh — must be the uninterrupted run's, and no step whose check found it done is
//! performed again.
//!
//! Every cell builds its own lab. CI runs a reduced sweep (for each command: a kill inside its
//! middle step and a cut of the host a step from the middle on targets — or, with no such step,
//! a kill after the step before the middle); `OPSH_FAULTS=full` runs every cell (about 400 for
//! the 12 commands: hours on a 2-core machine), `OPSH_FAULTS=full:N` from cell N on,
//! `OPSH_FAULTS=cell:N` cell N alone. Each command prints its cells as they run, and the
//! matrix's size and time.

use std::time::Instant;

use crate::support::{World, finish, new_run, signal, wait_for};

/// A change command of a bundled runbook and how to read its outcome.
struct Case {
    name: &'static str,
    topology: &'static str,
    /// What happens before the command (the incident it answers).
    before: fn(&World),
    command: &'static [&'static str],
    /// The state the command leaves, read directly.
    end_state: fn(&World) -> String,
}

#[derive(Debug, Clone)]
enum Fault {
    /// SIGKILL right after step N's intent is journaled.
    KillIn(usize),
    /// SIGKILL right after step N's result is journaled.
    KillAfter(usize),
    /// The host step N targets is cut while the step runs.
    Cut(usize, String),
}

/// The steps of the run: (id, the host it targets).
fn steps(world: &World, run: &str) -> Vec<(String, String)> {
    let records = world.records(run);
    let inventory: toml::Table = std::fs::read_to_string(&world.inventory).expect("inventory").parse().expect("inventory TOML");
    let plan = &records[0]["plan"]["steps"];
    plan.as_array()
        .expect("plan steps")
        .iter()
        .map(|s| {
            let target = s["target"].as_str().unwrap_or_default().to_string();
            // A database's host, as the inventory says; a host is itself.
            let host = inventory.get("databases").and_then(|d| d.get(&target)).and_then(|d| d.get("host")).and_then(|h| h.as_str()).map(str::to_string);
            (s["id"].as_str().unwrap_or_default().to_string(), host.unwrap_or(target))
        })
        .collect()
}

fn journaled(world: &World, run: &str, record: &str, index: usize) -> bool {
    world.records(run).iter().any(|r| r["record"] == record && r["index"] == index)
}

/// The uninterrupted run: its end state and its steps.
fn reference(case: &Case) -> (String, Vec<(String, String)>) {
    let world = World::with_topology(case.topology);
    (case.before)(&world);
    let mut args = vec!["--yes"];
    args.extend_from_slice(case.command);
    let run = world.opsh(&args);
    assert_eq!(run.code, 0, "{}: the uninterrupted run: {run:?}", case.name);
    let id = world.runs().pop().expect("a run");
    (by_name(&world, (case.end_state)(&world)), steps(&world, &id))
}

/// One cell: the fault, then heal and resume; the end state it reached.
fn cell(case: &Case, fault: &Fault) -> String {
    let mut world = World::with_topology(case.topology);
    (case.before)(&world);
    let before = world.runs();
    let mut args = vec!["--yes"];
    args.extend_from_slice(case.command);
    let child = world.spawn(&args);
    let id = new_run(&world, &before);
    let what = format!("{} with {fault:?}", case.name);
    let mut cut = None;
    match fault {
        Fault::KillIn(step) => {
            wait_for(180, &format!("{what}: the intent"), || journaled(&world, &id, "intent", *step).then_some(()));
            signal(&child, libc::SIGKILL);
        }
        Fault::KillAfter(step) => {
            wait_for(180, &format!("{what}: the result"), || journaled(&world, &id, "result", *step).then_some(()));
            signal(&child, libc::SIGKILL);
        }
        Fault::Cut(step, host) => {
            wait_for(180, &format!("{what}: the intent"), || journaled(&world, &id, "intent", *step).then_some(()));
            world.lab.cut(host).expect("cut");
            cut = Some(host.clone());
        }
    }
    let stopped = finish(child);
    if let Some(host) = &cut {
        world.lab.heal(host).expect("heal");
    }
    let records = world.records(&id);
    let finished = records.last().is_some_and(|r| r["record"] == "end" && r["status"] == "done");
    if !finished {
        assert_ne!(stopped.code, 0, "{what}: a run that did not finish does not exit 0: {stopped:?}");
        let resumed = world.opsh(&["--yes", "resume", &id]);
        // OPSH_FAULTS_DEBUG=1: a resume that fails shows every server's sessions and every
        // host's processes (what holds a lock, what a killed opsh left running).
        if resumed.code != 0 && std::env::var_os("OPSH_FAULTS_DEBUG").is_some() {
            for cluster in world.lab.state.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>() {
                let c = world.lab.cluster(&cluster).expect("cluster").clone();
                let q = "SELECT string_agg(pid || ' ' || coalesce(application_name,'') || ' ' || coalesce(state,'') || ' ' || coalesce(wait_event_type,'') || ' ' || left(coalesce(query,''), 60), E'\n') FROM pg_stat_activity WHERE backend_type = 'client backend'";
                eprintln!("DEBUG {cluster}: {:?}", world.lab.psql_as_admin(&c, "postgres", q));
            }
            for host in world.lab.state.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>() {
                eprintln!(
                    "DEBUG {host} ps: {:?}",
                    world.lab.host_exec(&host, &["ps", "-eo", "pid,pgid,user,args"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                );
            }
        }
        assert_eq!(resumed.code, 0, "{what}: resume: {resumed:?}\n--- the interrupted run\n{stopped:?}");
    }
    // A step its check found in effect is never performed again.
    let records = world.records(&id);
    for (i, record) in records.iter().enumerate() {
        if record["record"] == "check" && record["state"] == "done" {
            let index = &record["index"];
            assert!(
                !records[i..].iter().any(|r| r["record"] == "performed" && r["index"] == *index),
                "{what}: step {index} was performed again after its check said done"
            );
        }
    }
    by_name(&world, (case.end_state)(&world))
}

/// `state` with each lab host's address written as its name: cells run on labs of their own
/// address blocks.
fn by_name(world: &World, state: String) -> String {
    let mut hosts: Vec<(String, String)> = world.lab.state.hosts.iter().map(|h| (h.address.clone(), h.name.clone())).collect();
    hosts.sort_by_key(|(address, _)| std::cmp::Reverse(address.len()));
    hosts.into_iter().fold(state, |state, (address, name)| state.replace(&address, &format!("<{name}>")))
}

fn sweep(case: &Case) {
    let started = Instant::now();
    let (want, steps) = reference(case);
    // `full`, `full:N` to go on from cell N (after fixing what cell N found), `cell:N` for cell N
    // of the full sweep alone.
    let setting = std::env::var("OPSH_FAULTS").unwrap_or_default();
    let only: Option<usize> = setting.strip_prefix("cell:").and_then(|n| n.parse().ok());
    let full = setting == "full" || setting.starts_with("full:") || only.is_some();
    let skip: usize = setting.strip_prefix("full:").and_then(|n| n.parse().ok()).or(only).unwrap_or(0);
    let mut faults = Vec::new();
    let hosts: Vec<String> = opsh_lab::Topology::find(case.topology).expect("topology").hosts.iter().map(|h| h.name.clone()).collect();
    let remote = |host: &str| hosts.iter().any(|h| h == host);
    if full {
        for (step, (_, host)) in steps.iter().enumerate() {
            faults.push(Fault::KillIn(step));
            faults.push(Fault::KillAfter(step));
            if remote(host) {
                faults.push(Fault::Cut(step, host.clone()));
            }
        }
    } else {
        // Two cells: a kill inside the middle step, and a cut of the first host a step from the
        // middle on targets (a kill after the step before the middle when no step targets a host).
        let middle = steps.len() / 2;
        faults.push(Fault::KillIn(middle));
        match steps.iter().enumerate().skip(middle).find(|(_, (_, h))| remote(h)) {
            Some((step, (_, host))) => faults.push(Fault::Cut(step, host.clone())),
            None => faults.push(Fault::KillAfter(middle.saturating_sub(1))),
        }
    }
    let take = if only.is_some() { 1 } else { faults.len() };
    if full {
        let listed: Vec<String> = faults.iter().enumerate().map(|(n, f)| format!("{n}: {f:?}")).collect();
        eprintln!("fault matrix {}: cells {}", case.name, listed.join(", "));
    }
    for (n, fault) in faults.iter().enumerate().skip(skip).take(take) {
        eprintln!("fault matrix {}: cell {n} of {}: {fault:?} ({:.0} s)", case.name, faults.len(), started.elapsed().as_secs_f32());
        let got = cell(case, fault);
        assert_eq!(got, want, "{}: the end state after {fault:?} and resume is not the uninterrupted run's", case.name);
    }
    eprintln!(
        "fault matrix {}: {} step(s), {} cell(s){} in {:.0} s",
        case.name,
        steps.len(),
        faults.len().saturating_sub(skip).min(take),
        if full { "" } else { " (reduced; OPSH_FAULTS=full for all)" },
        started.elapsed().as_secs_f32()
    );
}

const OTB_MEMBERS: [&str; 7] = ["cn01-otb1", "cn01-otb2", "cn02-otb2", "dn01-otb1", "dn01-otb2", "dn02-otb1", "dn02-otb2"];
const GTM_DATA: &str = "/usr/local/opentenbase/data/gtm";

/// The `otb` cluster as its operator would check it: each member a master that takes writes
/// (and where it routes every node), a fenced master, a standby (and whom it streams from) or
/// down; each GTM's role.
fn otb_end_state(world: &World) -> String {
    let mut state = Vec::new();
    for member in OTB_MEMBERS {
        let cluster = world.lab.cluster(member).expect("member").clone();
        let sql = |query: &str| world.lab.psql_as_admin(&cluster, "postgres", query);
        let line = match sql("SELECT pg_is_in_recovery()").as_deref() {
            Err(_) => "down".to_string(),
            Ok("f") if crate::otb::takes_writes(world, member) => {
                let routes = sql("SELECT string_agg(node_name || '=' || node_host || ':' || node_port, ' ' ORDER BY node_name) FROM pgxc_node");
                format!("master, routes {}", routes.unwrap_or_else(|e| format!("unread: {e:#}")))
            }
            Ok("f") => "master refusing writes".to_string(),
            Ok(_) => {
                // A standby just rebuilt or re-pointed may take a moment to connect.
                let receiver = "SELECT coalesce((SELECT status || ' from ' || sender_host || ':' || sender_port FROM pg_stat_wal_receiver), 'no receiver')";
                let mut seen = String::new();
                let started = Instant::now();
                while started.elapsed().as_secs() < 30 {
                    seen = sql(receiver).unwrap_or_else(|e| format!("unread: {e:#}"));
                    if seen.starts_with("streaming") {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                format!("standby, {seen}")
            }
        };
        state.push(format!("{member}: {line}"));
    }
    for host in ["otb1", "otb2"] {
        let status = world.lab.host_exec(host, &["gtm_ctl", "-Z", "gtm", "-D", GTM_DATA, "-P", "21000", "status"]).expect("gtm_ctl status");
        let shown = String::from_utf8_lossy(&status.stdout).into_owned();
        let role = shown.split("current node [").nth(1).and_then(|r| r.split(']').next()).unwrap_or("not running");
        state.push(format!("gtm on {host}: {role}"));
    }
    state.join("\n")
}

#[test]
fn otb_promote_dn01_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "otb promote dn01",
        topology: "otb",
        before: |world| world.lab.crash("dn01-otb1").map(|_| ()).expect("crash dn01's master"),
        command: &["otb", "promote", "dn01"],
        end_state: otb_end_state,
    });
}

#[test]
fn otb_promote_gtm_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "otb promote gtm",
        topology: "otb",
        before: |world| {
            let stopped = world.lab.host_exec("otb1", &["gtm_ctl", "-Z", "gtm", "-D", GTM_DATA, "stop"]).expect("stop the GTM master");
            assert!(stopped.status.success(), "{stopped:?}");
        },
        command: &["otb", "promote", "gtm"],
        end_state: otb_end_state,
    });
}

#[test]
fn otb_rebuild_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "otb rebuild dn01",
        topology: "otb",
        before: |world| {
            world.lab.crash("dn01-otb1").expect("crash dn01's master");
            let promoted = world.opsh(&["--yes", "otb", "promote", "dn01"]);
            assert_eq!(promoted.code, 0, "{promoted:?}");
        },
        command: &["otb", "rebuild", "dn01"],
        end_state: otb_end_state,
    });
}

#[test]
fn otb_reconcile_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "otb reconcile",
        topology: "otb",
        before: |world| {
            // Two routes that name the wrong host, on masters on two hosts.
            for (member, node, wrong) in [("cn01-otb1", "dn02", "otb1"), ("cn02-otb2", "dn01", "otb2")] {
                let cluster = world.lab.cluster(member).expect("member").clone();
                let address = world.lab.host(wrong).expect("host").address.clone();
                let sql = format!("UPDATE pgxc_node SET node_host = '{address}' WHERE node_name = '{node}'");
                world.lab.psql_as_admin(&cluster, "postgres", &sql).expect("break a route");
            }
        },
        command: &["otb", "reconcile"],
        end_state: otb_end_state,
    });
}

fn xdb_end_state(world: &World) -> String {
    let sql = |node: &str, query: &str| world.sql(node, "edb", query);
    let schemas = "SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace WHERE nspname LIKE '\\_edb\\_%'";
    let triggers = "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname ~ '^rrp[iudt]_'";
    let conf = std::fs::read_to_string(world.lab.host_file("node1", "/usr/local/etc/edb-repl.conf")).unwrap_or_default();
    let hba = std::fs::read_to_string(world.lab.cluster("node1").expect("node1").data_dir.join("pg_hba.conf")).unwrap_or_default();
    format!(
        "node1 {} triggers {}\nnode2 {} triggers {}\n{conf}\n{hba}",
        sql("node1", schemas),
        sql("node1", triggers),
        sql("node2", schemas),
        sql("node2", triggers)
    )
}

#[test]
fn xdb_switchover_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "xdb switchover",
        topology: "xdb",
        before: |_| {},
        command: &["xdb", "switchover", "--topology", "xdb-trigger"],
        end_state: xdb_end_state,
    });
}

#[test]
fn xdb_swap_control_schema_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "xdb swap-control-schema",
        topology: "xdb",
        // Seed steps 1-3 done by hand: the servers stopped, both databases equal.
        before: |world| {
            for service in ["edb-xdbpubserver", "edb-xdbsubserver"] {
                let stopped = world.lab.host_exec("node1", &["/usr/local/bin/labsvc", "stop", service]).expect("labsvc");
                assert!(stopped.status.success(), "{stopped:?}");
            }
        },
        command: &["xdb", "swap-control-schema", "--topology", "xdb-trigger"],
        end_state: xdb_end_state,
    });
}

#[test]
fn pg_set_config_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "pg set-config",
        topology: "basic",
        before: |_| {},
        command: &["pg", "set-config", "alpha-app", "work_mem", "8MB"],
        end_state: |world| {
            world.sql("alpha", "app", "SELECT setting || ' ' || unit || ' pending_restart=' || pending_restart FROM pg_settings WHERE name = 'work_mem'")
        },
    });
}

fn horizon_end_state(world: &World) -> String {
    use crate::horizon::{DBS, file, service_running, write};
    let mut state = Vec::new();
    for (db, sql) in DBS {
        state.push(format!("ta2 {db} takes writes: {}", write(world, "ta2", db, sql).is_ok()));
        state.push(file(world, "ta2", &format!("/usr/local/desktone/release/active/conf/{db}.properties")));
    }
    state.push(file(world, "ta2", "/usr/local/xmpms/diagnose/config/application.properties"));
    for service in ["dtService", "av-manager", "diagnose"] {
        state.push(format!("{service} runs on ta2: {}", service_running(world, "ta2", service)));
    }
    // Every call av-setup got, one line each (without its time): a step run twice shows here.
    let calls = file(world, "ta2", "/usr/local/desktone/var/av-setup.log");
    state.extend(calls.lines().map(|l| l.split_once(' ').map_or(l, |(_, call)| call).to_string()));
    state.join("\n")
}

#[test]
fn horizon_enable_writes_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "horizon enable-writes",
        topology: "horizon",
        before: |world| world.lab.crash("ta1").map(|_| ()).expect("the primary's database crashes"),
        command: &["horizon", "enable-writes", "ta2"],
        end_state: horizon_end_state,
    });
}

/// Whether `query` on `cluster` gives `want` within a minute (Slony replicates in its time).
fn arrives(world: &World, cluster: &str, db: &str, query: &str, want: &str) -> bool {
    let cluster = world.lab.cluster(cluster).expect("cluster").clone();
    let started = Instant::now();
    while started.elapsed().as_secs() < 60 {
        if world.lab.psql_as_admin(&cluster, db, query).is_ok_and(|got| got == want) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// An appliance as its operator checks it: whom each database's Slony set names as origin, the
/// files that name its databases, its services, every call av-setup got.
fn appliance(world: &World, name: &str) -> Vec<String> {
    use crate::horizon::{SEED_QUERY, file, service_running};
    let tenant = name.starts_with("ta");
    let dbs: &[&str] = if tenant { &["fdb", "edb", "avdb"] } else { &["fdb"] };
    let cluster = world.lab.cluster(name).expect("appliance").clone();
    let mut state = Vec::new();
    for db in dbs {
        let slony = world.lab.psql_as_admin(&cluster, db, SEED_QUERY).unwrap_or_else(|_| "no answer".to_string());
        state.push(format!("{name} {db} slony: {slony}"));
        state.push(file(world, name, &format!("/usr/local/desktone/release/active/conf/{db}.properties")));
    }
    if tenant {
        state.push(file(world, name, "/usr/local/xmpms/diagnose/config/application.properties"));
    }
    for service in ["dtService", "av-manager", "diagnose"] {
        state.push(format!("{service} runs on {name}: {}", service_running(world, name, service)));
    }
    let calls = std::fs::read_to_string(world.lab.host_file(name, "/usr/local/desktone/var/av-setup.log")).unwrap_or_default();
    state.extend(calls.lines().map(|l| l.split_once(' ').map_or(l, |(_, call)| call).to_string()));
    state
}

/// A row written on `origin` reaches `subscriber`, which refuses writes of its own.
fn writes_flow(world: &World, origin: &str, subscriber: &str) -> Vec<String> {
    let tenant = origin.starts_with("ta");
    let rows: &[(&str, &str, &str, &str, &str)] = if tenant {
        &[
            (
                "fdb",
                "INSERT INTO tenant_setting VALUES ('failover', 'done')",
                "SELECT value FROM tenant_setting WHERE key = 'failover'",
                "done",
                "INSERT INTO tenant_setting VALUES ('split', 'brain')",
            ),
            (
                "edb",
                "INSERT INTO event (message) VALUES ('on the origin')",
                "SELECT count(*) FROM event WHERE message = 'on the origin'",
                "1",
                "INSERT INTO event (message) VALUES ('split')",
            ),
            (
                "avdb",
                "INSERT INTO app_volume (name, size_mb) VALUES ('hotfix', 10)",
                "SELECT size_mb FROM app_volume WHERE name = 'hotfix'",
                "10",
                "INSERT INTO app_volume (name, size_mb) VALUES ('split', 1)",
            ),
        ]
    } else {
        &[(
            "fdb",
            "INSERT INTO organization VALUES (1002, 'tenant two')",
            "SELECT name FROM organization WHERE id = 1002",
            "tenant two",
            "INSERT INTO organization VALUES (1003, 'split')",
        )]
    };
    let mut state = Vec::new();
    for (db, write, query, want, other) in rows {
        let written = crate::horizon::write(world, origin, db, write);
        let arrived = written.is_ok() && arrives(world, subscriber, db, query, want);
        let refused = crate::horizon::write(world, subscriber, db, other).is_err();
        state.push(format!("{db}: {origin} takes writes {}, they reach {subscriber} {arrived}, {subscriber} refuses its own {refused}", written.is_ok()));
    }
    state
}

/// The primary bits as the primary service-provider's fdb records them (and a replica of it).
fn bits(world: &World, on: &str, appliances: [&str; 2]) -> String {
    let query =
        format!("SELECT string_agg(name || '=' || capabilities, ',' ORDER BY name) FROM appliance WHERE name IN ('{}', '{}')", appliances[0], appliances[1]);
    let cluster = world.lab.cluster(on).expect("appliance").clone();
    format!("bits on {on}: {}", world.lab.psql_as_admin(&cluster, "fdb", &query).unwrap_or_else(|_| "no answer".to_string()))
}

#[test]
fn horizon_promote_service_provider_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "horizon promote service-provider",
        topology: "horizon",
        before: |_| {},
        command: &["horizon", "promote", "service-provider", "sp2", "--old", "sp1"],
        end_state: |world| {
            let mut state = vec![bits(world, "sp2", ["sp1", "sp2"])];
            state.extend(writes_flow(world, "sp2", "sp1"));
            state.extend(appliance(world, "sp1"));
            state.extend(appliance(world, "sp2"));
            state.join("\n")
        },
    });
}

#[test]
fn horizon_promote_tenant_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "horizon promote tenant",
        topology: "horizon",
        before: |_| {},
        command: &["horizon", "promote", "tenant", "ta2", "--old", "ta1", "--org", "1001"],
        end_state: |world| {
            let mut state = vec![bits(world, "sp1", ["ta1", "ta2"])];
            state.extend(writes_flow(world, "ta2", "ta1"));
            state.extend(appliance(world, "ta1"));
            state.extend(appliance(world, "ta2"));
            state.join("\n")
        },
    });
}

#[test]
fn horizon_reinit_slony_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "horizon reinit-slony",
        topology: "horizon",
        // The primary crashed, the secondary took over, the primary's appliance came back.
        before: |world| {
            world.lab.crash("ta1").expect("the primary's database crashes");
            let enabled = world.opsh(&["--yes", "horizon", "enable-writes", "ta2"]);
            assert_eq!(enabled.code, 0, "{enabled:?}");
            world.lab.start("ta1").expect("ta1 restarted");
        },
        command: &["horizon", "reinit-slony", "ta1"],
        end_state: |world| {
            let mut state = writes_flow(world, "ta2", "ta1");
            state.extend(appliance(world, "ta1"));
            state.extend(appliance(world, "ta2"));
            state.join("\n")
        },
    });
}

fn tungsten_end_state(world: &World) -> String {
    use crate::tungsten::{CLUSTER_TREPCTL, CROSS_TREPCTL, cctrl_ls, data, trepctl_state};
    let ls = cctrl_ls(world, "east1");
    let mut state = vec![
        format!("policy automatic: {}", ls.contains("COORDINATOR[east1:AUTOMATIC:ONLINE]")),
        format!("connectors online: {}", ls.matches("(ONLINE, created=0").count()),
    ];
    for host in ["east1", "east2", "east3"] {
        state.push(format!(
            "{host}: east {}, holds west1's data: {}",
            trepctl_state(world, host, CLUSTER_TREPCTL, "east"),
            data(world, host) == data(world, "west1")
        ));
    }
    for host in ["west1", "west2", "west3"] {
        state.push(format!("{host}: cross-site east {}", trepctl_state(world, host, CROSS_TREPCTL, "east")));
    }
    state.join("\n")
}

#[test]
fn tungsten_reprovision_survives_kill_9_and_cut_hosts_at_its_steps() {
    sweep(&Case {
        name: "tungsten reprovision",
        topology: "tungsten",
        before: |_| {},
        command: &["tungsten", "reprovision", "east", "--from", "west1"],
        end_state: tungsten_end_state,
    });
}
