//! `xdb`: the controlled switchover of seed 002 against the `xdb` lab — real PostgreSQL with
//! xDB's control schemas, real capture triggers and shadow tables, a real logical slot, and an
//! edb-repcli stand-in that moves data the way the control schema says.

use crate::support::{Run, World, finish, new_run, run_of, signal, wait_for};

fn address(world: &World, host: &str) -> String {
    world.lab.host(host).expect("host").address.clone()
}

fn sync(world: &World, server: &str) -> Run {
    run_of(
        world
            .lab
            .host_exec(server, &["/usr/local/xdb/bin/edb-repcli", "-dosynchronize", "emp_sub", "-repsvrfile", "/usr/local/xdb/etc/xdb_subsvrfile.conf"])
            .expect("repcli"),
    )
}

fn schemas(world: &World, node: &str) -> String {
    world.sql(node, "edb", "SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace WHERE nspname LIKE '\\_edb\\_%'")
}

fn triggers(world: &World, node: &str) -> String {
    world.sql(node, "edb", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname ~ '^rrp[iudt]_'")
}

fn file(world: &World, host: &str, path: &str) -> String {
    std::fs::read_to_string(world.lab.host_file(host, path)).expect("file")
}

fn hba(world: &World, node: &str) -> String {
    std::fs::read_to_string(world.lab.cluster(node).expect("cluster").data_dir.join("pg_hba.conf")).expect("pg_hba.conf")
}

/// What the roles look like with `publication` publishing to `subscription` (servers on node1).
fn assert_roles(world: &World, publication: &str, subscription: &str) {
    assert_eq!(schemas(world, publication), "_edb_replicator_pub,_edb_replicator_sub,_edb_scheduler", "{publication} holds the publication control schema");
    assert_eq!(schemas(world, subscription), "_edb_replicator_sub", "{subscription} holds only the subscription schema");
    assert_eq!(triggers(world, publication), "6", "capture triggers on the publication tables");
    assert_eq!(triggers(world, subscription), "0", "no capture triggers on the subscription");
    let recorded = world.sql(
        publication,
        "edb",
        "SELECT (SELECT db_host FROM _edb_replicator_pub.xdb_pub_database) || ' ' || (SELECT db_host FROM _edb_replicator_sub.xdb_sub_database)",
    );
    assert_eq!(recorded, format!("{} {}", address(world, publication), address(world, subscription)), "connection info in the control schema");
    assert!(
        file(world, "node1", "/usr/local/etc/edb-repl.conf").contains(&format!("\nhost={}\n", address(world, publication))),
        "the controller is the publication database"
    );
}

/// A row written on the publication reaches the subscription through the servers.
fn assert_flows(world: &World, publication: &str, subscription: &str, deptno: i32) {
    world.sql(publication, "edb", &format!("INSERT INTO dept VALUES ({deptno}, 'WRITTEN ON {publication}', 'x')"));
    let synced = sync(world, "node1");
    assert_eq!(synced.code, 0, "{synced:?}");
    assert_eq!(
        world.sql(subscription, "edb", &format!("SELECT dname FROM dept WHERE deptno = {deptno}")),
        format!("WRITTEN ON {publication}"),
        "replication flows {publication} -> {subscription}"
    );
}

#[test]
fn switchover_moves_everything_and_running_it_again_switches_back() {
    let world = World::with_topology("xdb");
    let state = |world: &World| {
        (
            schemas(world, "node1"),
            schemas(world, "node2"),
            triggers(world, "node1"),
            file(world, "node1", "/usr/local/etc/edb-repl.conf"),
            hba(world, "node1"),
            hba(world, "node2"),
        )
    };
    let before = state(&world);
    let dry = world.opsh(&["--dry-run", "xdb", "switchover", "--topology", "xdb-trigger"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let (node1, node2) = (address(&world, "node1"), address(&world, "node2"));
    assert!(dry.stdout.contains(&format!("-host={node1}")) && dry.stdout.contains(&format!("+host={node2}")), "the configuration file diff: {dry:?}");
    assert!(dry.stdout.contains(&format!("+host edb opsh {node1}/32 scram-sha-256")), "the pg_hba.conf diff: {dry:?}");
    assert!(dry.stdout.contains("UPDATE _edb_replicator_pub.xdb_pub_database"), "the control-schema update: {dry:?}");
    assert!(dry.stdout.contains("CREATE TRIGGER rrpi_"), "the triggers restored are shown: {dry:?}");
    let json = world.opsh(&["--output", "json", "--dry-run", "xdb", "switchover", "--topology", "xdb-trigger"]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert!(planned["steps"].as_array().is_some_and(|s| s.iter().all(|s| s["runs"] == "host")), "the host performs every step: {planned}");
    assert_eq!(state(&world), before, "--dry-run changed nothing");

    let runs = world.runs();
    let run = world.opsh(&["--yes", "xdb", "switchover", "--topology", "xdb-trigger"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = new_run(&world, &runs);
    let compared = crate::support::performed_as_shown(&world, &planned, &id);
    assert!(compared >= 16, "the host performed {compared} effects");
    assert_roles(&world, "node2", "node1");
    assert!(hba(&world, "node2").contains(&format!("host edb opsh {node1}/32 scram-sha-256")), "pg_hba admits the servers to the new publication");
    assert!(hba(&world, "node1").contains(&format!("host edb opsh {node1}/32 scram-sha-256")), "and to the new subscription");
    assert_flows(&world, "node2", "node1", 60);

    let back = world.opsh(&["--yes", "xdb", "switchover", "--topology", "xdb-trigger"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert!(
        back.stdout.contains("node1-edb (trigger-based) becomes the publication and node2-edb the subscription"),
        "the plan says it switches back: {back:?}"
    );
    assert_roles(&world, "node1", "node2");
    assert_flows(&world, "node1", "node2", 70);
    assert_eq!(world.sql("node1", "edb", "SELECT datconnlimit FROM pg_database WHERE datname = 'edb'"), "-1", "applications may connect again");
}

#[test]
fn a_log_based_switchover_creates_the_slot_on_the_new_publication_host() {
    let world = World::with_topology("xdb");
    let old_slot = world.sql("node3", "edb", "SELECT slot_name || ' ' || plugin FROM pg_replication_slots");
    assert!(old_slot.starts_with("xdb_") && old_slot.ends_with("_1 test_decoding"), "xDB names its slot xdb_DBOID_PUBID: {old_slot}");
    let run = world.opsh(&["--yes", "xdb", "switchover", "--topology", "xdb-log", "--drop-old-slot"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        world.sql("node4", "edb", "SELECT slot_name || ' ' || plugin FROM pg_replication_slots"),
        old_slot,
        "the old slot's name on the new publication"
    );
    assert_eq!(world.sql("node3", "edb", "SELECT count(*) FROM pg_replication_slots"), "0", "--drop-old-slot");
    assert_eq!(
        world.sql("node4", "edb", "SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgname LIKE 'rrpt\\_%'"),
        "rrpt_public_dept,rrpt_public_emp"
    );
    assert_eq!(schemas(&world, "node3"), "_edb_replicator_sub");
}

#[test]
fn pending_shadow_rows_are_synchronized_first_or_the_switchover_is_refused() {
    let world = World::with_topology("xdb");
    world.sql("node1", "edb", "INSERT INTO dept VALUES (80, 'PENDING', 'x'); UPDATE emp SET ename = 'SMITH JR' WHERE empno = 7369");
    for service in ["edb-xdbpubserver", "edb-xdbsubserver"] {
        assert_eq!(world.lab.host_exec("node1", &["/usr/local/bin/labsvc", "stop", service]).expect("stop").status.code(), Some(0));
    }
    let refused = world.opsh(&["--yes", "xdb", "switchover", "--topology", "xdb-trigger"]);
    assert!(
        refused.code == 5 && refused.stderr.contains("public.dept, public.emp differ between node1-edb and node2-edb and the xDB servers on node1 do not run"),
        "{refused:?}"
    );
    assert_eq!(world.sql("node1", "edb", "SELECT count(*) FROM _edb_replicator_pub.rrst_public_dept"), "1", "nothing lost, nothing moved");
    for service in ["edb-xdbpubserver", "edb-xdbsubserver"] {
        world.lab.host_exec("node1", &["/usr/local/bin/labsvc", "start", service]).expect("start");
    }
    let run = world.opsh(&["--yes", "xdb", "switchover", "--topology", "xdb-trigger"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("public.dept, public.emp differ between node1-edb and node2-edb: step 2 synchronizes"), "{run:?}");
    assert_eq!(
        world.sql("node2", "edb", "SELECT (SELECT dname FROM dept WHERE deptno = 80) || ' ' || (SELECT ename FROM emp WHERE empno = 7369)"),
        "PENDING SMITH JR",
        "the pending rows reached node2 before the switch"
    );
    assert_eq!(
        world.sql("node1", "edb", "SELECT (SELECT dname FROM dept WHERE deptno = 80) || ' ' || (SELECT ename FROM emp WHERE empno = 7369)"),
        "PENDING SMITH JR",
        "and the snapshot kept them on node1"
    );
    // As in real xDB, the applied rows stay in the shadow tables as history: nothing waited for
    // them to disappear.
    assert_eq!(world.sql("node2", "edb", "SELECT count(*) FROM _edb_replicator_pub.rrst_public_dept WHERE deptno = 80"), "1", "shadow history kept");
}

#[test]
fn kill_9_after_step_7_then_resume_ends_as_an_uninterrupted_switchover() {
    let world = World::with_topology("xdb");
    let child = world.spawn(&["--yes", "xdb", "switchover", "--topology", "xdb-trigger"]);
    let id = new_run(&world, &[]);
    let result_of = |world: &World, step: &str| world.records(&id).iter().position(|r| r["record"] == "result" && r["step"] == step);
    wait_for(60, "step 7 (drop-subscription-schema)", || result_of(&world, "drop-subscription-schema"));
    signal(&child, libc::SIGKILL);
    assert_eq!(finish(child).code, -1);
    for (backup, drop) in [
        ("backup-publication-schemas", "drop-publication-schemas"),
        ("backup-subscription-schema", "drop-subscription-schema"),
        ("backup-triggers", "drop-triggers"),
    ] {
        assert!(result_of(&world, backup) < result_of(&world, drop), "{backup} finished before {drop}");
    }
    let listed =
        run_of(world.lab.host_exec("node1", &["pg_restore", "--list", "/usr/local/var/backups/xdb-edb-node1-control-schemas.dump"]).expect("pg_restore"));
    assert!(listed.code == 0 && listed.stdout.contains("SCHEMA - _edb_replicator_pub"), "the backup is readable: {listed:?}");

    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_roles(&world, "node2", "node1");
    assert_flows(&world, "node2", "node1", 90);
}
