//! The lab itself: topologies are data (standbys stream for real), hosts are independent, and
//! everything the lab starts is stopped by PID, also after a crashed earlier lab.

use opsh_lab::{Lab, Topology, procs};

use crate::support::World;

const WITH_STANDBY: &str = r#"
description = "a primary and its streaming standby on two hosts"
[[hosts]]
name = "one"
[[hosts]]
name = "two"
[[clusters]]
name = "main"
host = "one"
databases = ["app"]
[[clusters]]
name = "replica"
host = "two"
standby_of = "main"
[inventory.grants.pg]
sql = ["*"]
"#;

#[test]
fn a_topology_file_with_a_standby_builds_real_streaming_replication() {
    let dir = std::path::PathBuf::from("/tmp/opsh-e2e/lab-standby");
    let topology = Topology::parse("with-standby", WITH_STANDBY).expect("topology");
    let lab = Lab::up(&topology, &dir, 90).expect("lab up");
    let main = lab.cluster("main").expect("main").clone();
    let replica = lab.cluster("replica").expect("replica").clone();
    lab.psql_as_admin(&main, "app", "CREATE TABLE t(x int); INSERT INTO t VALUES (7);").expect("write on primary");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = lab.psql_as_admin(&replica, "app", "SELECT coalesce(sum(x), 0) FROM t").unwrap_or_default();
        if seen == "7" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, "7", "the row reached the standby");
    assert!(lab.psql_as_admin(&replica, "app", "INSERT INTO t VALUES (1)").is_err(), "the standby refuses writes");
    assert_eq!(lab.psql_as_admin(&replica, "app", "SELECT pg_is_in_recovery()").expect("query"), "t");
}

#[test]
fn lab_down_stops_every_process_it_started_and_a_crashed_lab_is_cleaned_up_by_pid() {
    let world = World::new();
    let dir = world.lab.state.dir.clone();
    let block = world.lab.state.block;
    // Processes are identified by PID and start time: namespace numbers are reused by the kernel.
    let old = world.lab.processes();
    assert!(old.len() >= 3 * world.lab.state.hosts.len(), "sshd, postgres and the service run in each host: {old:?}");
    // Simulate a crashed `scripts/lab`: the lab is left running, then a new lab takes its place.
    let World { lab, home: _home, .. } = world;
    let _ = lab.keep();
    let topology = Topology::find("basic").expect("basic");
    let replacement = Lab::up(&topology, &dir, block).expect("lab up over a crashed lab");
    assert!(old.iter().all(|(pid, s)| !procs::alive(*pid, *s)), "the old lab's processes are gone");
    let new = replacement.processes();
    Lab::down(&dir).expect("down");
    assert!(new.iter().all(|(pid, s)| !procs::alive(*pid, *s)), "down stopped everything");
    assert!(!dir.exists(), "down removed the lab directory");
    drop(replacement);
}

#[test]
fn each_lab_host_has_its_own_processes_so_killall_on_one_leaves_the_others() {
    let world = World::new();
    let pid1 = world.opsh(&["--output", "json", "probe", "exec", "alpha", "cat /proc/1/comm"]);
    assert_eq!(crate::support::json_cell(&pid1, "stdout"), "sshd", "alpha's PID 1 is its own sshd: {pid1:?}");
    // As the seed's `killall slon` does on one appliance: by name, on that host only.
    let killed = world.opsh(&["--yes", "probe", "run", "alpha", "killall -q sleep; true"]);
    assert_eq!(killed.code, 0, "{killed:?}");
    let status = |host: &str| world.lab.host_exec(host, &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code();
    assert_eq!(status("alpha"), Some(3), "alpha's service was killed");
    assert_eq!(status("beta"), Some(0), "beta's identical process was not");
}

/// A second lab on an address block a running lab in another directory holds is refused at
/// once, naming that directory (it used to fail half-way with `nsenter: cannot open
/// /proc/PID/ns/pid`); `lab status --all` lists the running one; once it is down the block is free.
#[test]
fn a_lab_refuses_the_address_block_of_a_lab_in_another_directory() {
    let world = World::new();
    let block = world.lab.state.block;
    let topology = Topology::find("basic").expect("basic");
    let other = tempfile::Builder::new().prefix("opsh-e2e-other-lab").tempdir().expect("dir");
    let refused = match Lab::up(&topology, other.path(), block) {
        Ok(_) => panic!("a second lab started on block {block}"),
        Err(e) => format!("{e:#}"),
    };
    let dir = world.lab.state.dir.display().to_string();
    assert!(refused.contains(&format!("address block 127.42.{block}.0/24 is in use by the lab in {dir}")), "{refused}");
    assert!(world.lab.running(), "the first lab was left alone");
    let all = std::process::Command::new(env!("CARGO_BIN_EXE_opsh-lab")).args(["status", "--all"]).output().expect("lab status --all");
    let all = String::from_utf8_lossy(&all.stdout).to_string();
    assert!(all.contains(&format!("in {dir} (block 127.42.{block}.0/24)")), "{all}");

    let dir = world.lab.state.dir.clone();
    drop(world);
    assert!(!dir.exists());
    let lab = Lab::up(&topology, other.path(), block).expect("the block is free once the first lab is down");
    assert!(lab.running());
}
