//! The fault matrix: for each change command of the bundled runbooks, opsh is killed with
//! SIGKILL in a step (right after its intent is journaled: before or while its effect runs) and
//! right after a step's result, and a host the step targets is cut while the step runs; then the
//! host is healed and the run resumed. The end state — read with psql and on the hosts' disks,
//! never from opsh — must be the uninterrupted run's, and no step whose check found it done is
//! performed again.
//!
//! Every cell builds its own lab. CI runs a reduced sweep (for each command: a kill inside its
//! middle step, a kill after the step before it, a cut of the middle step's host);
//! `OPSH_FAULTS=full` runs every cell. Each command prints the matrix's size and time.

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
    let full = std::env::var("OPSH_FAULTS").is_ok_and(|v| v == "full");
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
        let middle = steps.len() / 2;
        faults.push(Fault::KillIn(middle));
        faults.push(Fault::KillAfter(middle.saturating_sub(1)));
        if let Some((step, (_, host))) = steps.iter().enumerate().skip(middle).find(|(_, (_, h))| remote(h)) {
            faults.push(Fault::Cut(step, host.clone()));
        }
    }
    for fault in &faults {
        let got = cell(case, fault);
        assert_eq!(got, want, "{}: the end state after {fault:?} and resume is not the uninterrupted run's", case.name);
    }
    eprintln!(
        "fault matrix {}: {} step(s), {} cell(s){} in {:.0} s",
        case.name,
        steps.len(),
        faults.len(),
        if full { "" } else { " (reduced; OPSH_FAULTS=full for all)" },
        started.elapsed().as_secs_f32()
    );
}

fn otb_end_state(world: &World) -> String {
    let members = ["cn01-otb1", "cn01-otb2", "cn02-otb2", "dn01-otb1", "dn01-otb2", "dn02-otb1", "dn02-otb2"];
    let writable: Vec<&str> = members.iter().copied().filter(|m| crate::otb::takes_writes(world, m)).collect();
    let routes: Vec<String> = writable.iter().map(|m| format!("{m}: dn01 -> {}", crate::otb::route(world, m, "dn01"))).collect();
    format!("writable: {}\n{}", writable.join(" "), routes.join("\n"))
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
