//! `otb`: OpenTenBase failover against the `otb` lab (real PostgreSQL streaming replication
//! behind OpenTenBase stand-ins), as seed 003 drills it: kill the master, promote, re-route.

use crate::support::World;

pub(crate) fn takes_writes(world: &World, cluster: &str) -> bool {
    let cluster = world.lab.cluster(cluster).expect("cluster").clone();
    world.lab.psql_as_admin(&cluster, "postgres", "CREATE TABLE IF NOT EXISTS drill(x int); INSERT INTO drill VALUES (1);").is_ok()
}

/// `node_host:node_port` of `node` in pgxc_node on a master.
pub(crate) fn route(world: &World, on: &str, node: &str) -> String {
    let cluster = world.lab.cluster(on).expect("cluster").clone();
    world.lab.psql_as_admin(&cluster, "postgres", &format!("SELECT node_host || ':' || node_port FROM pgxc_node WHERE node_name = '{node}'")).expect("route")
}

fn masters_after(failed: &str, new: &str) -> Vec<String> {
    let mut masters: Vec<String> =
        ["cn01-otb1", "cn02-otb2", "dn01-otb1", "dn02-otb2"].iter().filter(|c| !c.starts_with(failed)).map(|c| c.to_string()).collect();
    masters.push(new.to_string());
    masters
}

fn fail_over(node: &str, old: &str, new: &str, new_host: &str, port: u16) {
    let world = World::with_topology("otb");
    assert!(takes_writes(&world, old), "before: the master {old} takes writes");
    assert!(!takes_writes(&world, new), "before: the standby {new} does not");
    world.lab.crash(old).expect("kill the master");
    let json = world.opsh(&["--output", "json", "--dry-run", "otb", "promote", node]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert!(planned["steps"].as_array().is_some_and(|s| s.iter().all(|s| s["runs"] == "host")), "the host performs every step: {planned}");
    let runs = world.runs();
    let run = world.opsh(&["--yes", "otb", "promote", node]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = crate::support::new_run(&world, &runs);
    let compared = crate::support::performed_as_shown(&world, &planned, &id);
    assert!(compared >= 5, "the host performed {compared} effects: fence, promote and the routes");
    assert!(takes_writes(&world, new), "after: {new} takes writes");
    assert!(!takes_writes(&world, old), "after: the old master {old} is fenced");
    let address = world.lab.host(new_host).expect("host").address.clone();
    for master in masters_after(node, new) {
        assert_eq!(route(&world, &master, node), format!("{address}:{port}"), "{master} routes {node} to the new master");
    }
    let status = world.opsh(&["otb", "status"]);
    assert!(status.code == 0 && !status.stdout.contains("MISMATCH"), "{status:?}");
}

#[test]
fn promote_dn01_after_its_master_dies() {
    fail_over("dn01", "dn01-otb1", "dn01-otb2", "otb2", 23001);
}

#[test]
fn promote_dn02_after_its_master_dies() {
    fail_over("dn02", "dn02-otb2", "dn02-otb1", "otb1", 23002);
}

#[test]
fn promote_cn01_after_its_master_dies() {
    fail_over("cn01", "cn01-otb1", "cn01-otb2", "otb2", 15433);
}

#[test]
fn promote_gtm_after_its_master_stops() {
    let world = World::with_topology("otb");
    let gtm = "/usr/local/opentenbase/data/gtm";
    let stopped = world.lab.host_exec("otb1", &["gtm_ctl", "-Z", "gtm", "-D", gtm, "stop"]).expect("stop the GTM master");
    assert!(stopped.status.success());
    let run = world.opsh(&["--yes", "otb", "promote", "gtm"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status = world.lab.host_exec("otb2", &["gtm_ctl", "-Z", "gtm", "-D", gtm, "-P", "21000", "status"]).expect("status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("current node [primary]"), "{status:?}");
    // The stopped old GTM was fenced: started again, it comes up as a standby, not a second primary.
    let restarted = world
        .lab
        .host_exec("otb1", &["sh", "-c", &format!("gtm_ctl -Z gtm -D {gtm} start && sleep 0.3 && gtm_ctl -Z gtm -D {gtm} -P 21000 status")])
        .expect("restart");
    assert!(String::from_utf8_lossy(&restarted.stdout).contains("current node [standby]"), "{restarted:?}");
    let address = world.lab.host("otb2").expect("otb2").address.clone();
    for master in ["cn01-otb1", "cn02-otb2", "dn01-otb1", "dn02-otb2"] {
        assert_eq!(route(&world, master, "gtm_1"), format!("{address}:21000"), "{master} routes the GTM to otb2");
    }
    let status = world.opsh(&["otb", "status"]);
    assert!(!status.stdout.contains("MISMATCH"), "{status:?}");
}

#[test]
fn a_dry_run_promotes_nothing_and_routes_nothing() {
    let world = World::with_topology("otb");
    world.lab.crash("dn01-otb1").expect("crash");
    let before: Vec<String> = ["cn01-otb1", "cn02-otb2", "dn02-otb2"].iter().map(|m| route(&world, m, "dn01")).collect();
    let run = world.opsh(&["--dry-run", "otb", "promote", "dn01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("pg_ctl -Z datanode -D /usr/local/opentenbase/data/dn01 promote") && run.stdout.contains("ALTER NODE dn01 WITH (host="),
        "{run:?}"
    );
    let after: Vec<String> = ["cn01-otb1", "cn02-otb2", "dn02-otb2"].iter().map(|m| route(&world, m, "dn01")).collect();
    assert_eq!(before, after);
    assert!(!takes_writes(&world, "dn01-otb2"), "the standby was not promoted");
}

#[test]
fn an_unreachable_coordinator_leaves_the_run_resumable_and_resume_finishes_it() {
    let world = World::with_topology("otb");
    world.lab.crash("dn01-otb1").expect("crash dn01's master");
    world.lab.crash("cn02-otb2").expect("cn02 goes down too");
    let run = world.opsh(&["--yes", "otb", "promote", "dn01"]);
    assert_eq!(run.code, 3, "changed, resumable: {run:?}");
    assert!(run.stderr.contains("group routes: 3 of 4 done; unreachable: cn02-otb2"), "{run:?}");
    let id = world.runs().pop().expect("run");
    assert!(run.stderr.contains(&format!("opsh resume {id}")), "{run:?}");
    world.lab.start("cn02-otb2").expect("cn02 is back");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let address = world.lab.host("otb2").expect("otb2").address.clone();
    assert_eq!(route(&world, "cn02-otb2", "dn01"), format!("{address}:23001"));
}

#[test]
fn a_node_without_a_standby_is_not_promoted() {
    let world = World::with_topology("otb");
    world.lab.crash("dn01-otb1").expect("crash");
    assert_eq!(world.opsh(&["--yes", "otb", "promote", "dn01"]).code, 0);
    let again = world.opsh(&["--yes", "otb", "promote", "dn01"]);
    assert_eq!(again.code, 5, "{again:?}");
    assert!(again.stderr.contains("dn01 has no standby to promote") && again.stderr.contains("dn01-otb2 is master"), "{again:?}");
    let unknown = world.opsh(&["otb", "promote", "dn09"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("dn09 is not a node of cluster otb"), "{unknown:?}");
}

#[test]
fn rebuild_gives_a_node_its_standby_back_and_it_can_fail_over_again() {
    let world = World::with_topology("otb");
    world.lab.crash("dn01-otb1").expect("crash");
    assert_eq!(world.opsh(&["--yes", "otb", "promote", "dn01"]).code, 0);
    let rebuilt = world.opsh(&["--yes", "otb", "rebuild", "dn01"]);
    assert_eq!(rebuilt.code, 0, "{rebuilt:?}");
    assert!(!rebuilt.all().contains(&world.password()), "no password in the output");
    let old = world.lab.cluster("dn01-otb1").expect("cluster").clone();
    let auto = std::fs::read_to_string(old.data_dir.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("primary_conninfo") && !auto.contains(&world.password()), "the standby's primary_conninfo holds no password: {auto}");
    // A row written on the new master reaches the rebuilt standby.
    assert!(takes_writes(&world, "dn01-otb2"));
    let count = crate::support::wait_for(20, "the row on the rebuilt standby", || {
        world.lab.psql_as_admin(&old, "postgres", "SELECT count(*) FROM drill").ok().filter(|n| n == "1")
    });
    assert_eq!(count, "1");
    assert!(!takes_writes(&world, "dn01-otb1"), "it is a standby now");
    // And dn01 can fail over again, back to otb1.
    world.lab.crash("dn01-otb2").expect("crash the new master");
    let again = world.opsh(&["--yes", "otb", "promote", "dn01"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(takes_writes(&world, "dn01-otb1"));
    let address = world.lab.host("otb1").expect("otb1").address.clone();
    assert_eq!(route(&world, "cn01-otb1", "dn01"), format!("{address}:23001"));
}

#[test]
fn reconcile_fixes_the_routes_that_do_not_point_at_live_masters() {
    let world = World::with_topology("otb");
    let otb1 = world.lab.host("otb1").expect("otb1").address.clone();
    let otb2 = world.lab.host("otb2").expect("otb2").address.clone();
    let cn01 = world.lab.cluster("cn01-otb1").expect("cn01").clone();
    world.lab.psql_as_admin(&cn01, "postgres", &format!("UPDATE pgxc_node SET node_host = '{otb1}' WHERE node_name = 'dn02'")).expect("break a route");
    let status = world.opsh(&["otb", "status"]);
    assert!(status.stdout.lines().any(|l| l.starts_with("cn01-otb1") && l.contains("dn02") && l.contains("MISMATCH")), "{status:?}");
    let plan = world.opsh(&["--dry-run", "otb", "reconcile"]);
    assert!(
        plan.stdout.contains("1 route(s) to fix") && plan.stdout.contains(&format!("sql cn01-otb1: ALTER NODE dn02 WITH (host='{otb2}', port=23002)")),
        "{plan:?}"
    );
    let run = world.opsh(&["--yes", "otb", "reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(route(&world, "cn01-otb1", "dn02"), format!("{otb2}:23002"));
    let again = world.opsh(&["--yes", "otb", "reconcile"]);
    assert!(again.code == 0 && again.stdout.contains("0 route(s) to fix"), "{again:?}");
}

#[test]
fn a_standby_that_does_not_replicate_from_a_live_master_is_promoted_only_with_force() {
    let world = World::with_topology("otb");
    let standby = world.lab.cluster("dn01-otb2").expect("standby").clone();
    let master = world.lab.cluster("dn01-otb1").expect("master").clone();
    // Break replication: the standby now looks for its master on a port where nothing listens.
    world
        .lab
        .psql_as_admin(
            &standby,
            "postgres",
            &format!("ALTER SYSTEM SET primary_conninfo = 'host={} port=1 user=opsh'; SELECT pg_reload_conf();", master.address),
        )
        .expect("break replication");
    crate::support::wait_for(20, "the walreceiver to stop streaming", || {
        let streaming = world.lab.psql_as_admin(&standby, "postgres", "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'").ok()?;
        (streaming == "0").then_some(())
    });
    let refused = world.opsh(&["--yes", "otb", "promote", "dn01"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("dn01-otb2 is not replicating from dn01-otb1 although the master answers") && refused.stderr.contains("--force"),
        "{refused:?}"
    );
    assert!(takes_writes(&world, "dn01-otb1"), "nothing was changed");
    let forced = world.opsh(&["--yes", "otb", "promote", "dn01", "--force"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(takes_writes(&world, "dn01-otb2") && !takes_writes(&world, "dn01-otb1"), "promoted, and the old master fenced");
}

/// The line of the members table for `member` (`node member host port role …`).
fn member_line<'a>(shown: &'a str, member: &str) -> &'a str {
    shown.lines().find(|l| l.split_whitespace().nth(1) == Some(member)).unwrap_or_else(|| panic!("no row for {member}: {shown}"))
}

/// Issue 14's drill in one long-lived shell: `otb status`, otb2 freezes (its kept connections
/// hang), `otb status` again, otb2 comes back, `otb status`. A frozen server costs the read about
/// one connect timeout (3 s in the lab; it cost one statement timeout per question before, 126 s)
/// and the rest is shown; after the heal the same shell sees every member again. With every
/// server frozen the read fails: it could read nothing.
#[test]
fn status_answers_in_a_long_lived_shell_while_a_server_is_frozen_and_after_it_comes_back() {
    let mut world = World::with_topology("otb");
    let mut shell = world.shell();
    let marker = "Routes (pgxc_node";
    let (healthy, _) = shell.run("otb status", marker, 120);
    assert!(member_line(&healthy, "dn01-otb2").contains("standby, streaming"), "{healthy}");
    world.lab.cut("otb2").expect("cut otb2");
    let (frozen, took) = shell.run("otb status", marker, 120);
    assert!(took < std::time::Duration::from_secs(9), "one frozen server cost the read {took:?}, more than ~1 connect timeout (3 s): {frozen}");
    for master in ["cn01-otb1", "dn01-otb1"] {
        assert!(member_line(&frozen, master).contains("master"), "{master}: {frozen}");
    }
    for silent in ["cn01-otb2", "cn02-otb2", "dn01-otb2", "dn02-otb2"] {
        assert!(member_line(&frozen, silent).contains("cannot tell"), "{silent}: {frozen}");
    }
    assert!(!frozen.contains("outcome unknown"), "a read is never 'outcome unknown': {frozen}");
    world.lab.heal("otb2").expect("heal otb2");
    let (healed, _) = shell.run("otb status", marker, 120);
    assert!(!healed.contains("cannot tell"), "{healed}");
    assert!(member_line(&healed, "dn01-otb2").contains("standby, streaming"), "{healed}");
    drop(shell);

    world.lab.cut("otb1").expect("cut otb1");
    world.lab.cut("otb2").expect("cut otb2");
    let run = world.opsh(&["otb", "status"]);
    world.lab.heal("otb1").expect("heal otb1");
    world.lab.heal("otb2").expect("heal otb2");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("otb status: no target answered (database cn01-otb1: unreachable,"), "{run:?}");
}
