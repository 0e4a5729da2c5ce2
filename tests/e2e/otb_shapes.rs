//! `otb` on a cluster shaped unlike seed 003 (`otb-trio`: three servers by DNS name, dn1 with two
//! standbys and its master listed last, dn2 with a cascading standby, per-member ports and
//! directories, tools off the PATH, the GTM on its own ports). Every outcome is checked on the
//! servers themselves (psql through each server's socket, the lab's own gtm_ctl), never by
//! reading what opsh says.

use crate::otb::{route, takes_writes};
use crate::support::{World, wait_for};

const DN1: [&str; 3] = ["dn1-a", "dn1-b", "dn1-c"];

/// The members of `members` that accept a write right now.
fn writable(world: &World, members: &[&str]) -> Vec<String> {
    members.iter().filter(|m| takes_writes(world, m)).map(|m| m.to_string()).collect()
}

fn dns(world: &World, host: &str) -> String {
    world.lab.host(host).expect("host").dns.clone().expect("the host has a DNS name")
}

/// Every master of the other nodes (and the new one) routes `node` to `host:port`, by DNS name.
fn assert_routes(world: &World, node: &str, masters: &[&str], host: &str, port: u16) {
    for master in masters {
        assert_eq!(route(world, master, node), format!("{}:{port}", dns(world, host)), "{master} routes {node} to {host} by its DNS name");
    }
}

/// `member` streams from the server at `port` (its WAL receiver, as the server reports it).
fn streams_from_port(world: &World, member: &str, port: u16) -> bool {
    world.sql(member, "postgres", &format!("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming' AND conninfo ~ 'port={port}( |$)'")) == "1"
}

/// Rows of `table` on `member` (0 when the table does not exist there yet).
fn rows(world: &World, member: &str, table: &str) -> String {
    let cluster = world.lab.cluster(member).expect("cluster").clone();
    world.lab.psql_as_admin(&cluster, "postgres", &format!("SELECT count(*) FROM {table}")).unwrap_or_else(|_| "0".into())
}

#[test]
fn a_switchover_with_two_standbys_and_the_master_listed_last_ends_with_one_master() {
    let world = World::with_topology("otb-trio");
    assert_eq!(writable(&world, &DN1), vec!["dn1-c"], "before: dn1-c is the only master");
    world.sql("dn1-c", "postgres", "CREATE TABLE kept(x int); INSERT INTO kept SELECT generate_series(1, 100);");
    let run = world.opsh(&["--yes", "otb", "promote", "dn1"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("this is a switchover"), "the plan says the master was healthy: {run:?}");
    let masters = writable(&world, &DN1);
    assert_eq!(masters.len(), 1, "exactly one writable master of dn1: {masters:?}");
    let new = masters[0].clone();
    assert_ne!(new, "dn1-c", "the old master, listed last, is not the one left writable");
    assert_eq!(rows(&world, &new, "kept"), "100", "every row of the old master is on the new one");
    // The old master is fenced: started again, it comes up read-only.
    world.lab.start("dn1-c").expect("start the old master again");
    assert_eq!(writable(&world, &DN1), vec![new.clone()], "after restarting the old master, still one master");
    // The other standby follows the new master: a row written there reaches it.
    let other = DN1.iter().find(|m| **m != new && **m != "dn1-c").expect("the other standby").to_string();
    let port = world.lab.cluster(&new).expect("new").port;
    wait_for(30, "the other standby to stream from the new master", || streams_from_port(&world, &other, port).then_some(()));
    world.sql(&new, "postgres", "CREATE TABLE after_switchover(x int); INSERT INTO after_switchover VALUES (1);");
    wait_for(30, "the row on the other standby", || (rows(&world, &other, "after_switchover") == "1").then_some(()));
    let host = world.lab.cluster(&new).expect("new").host.clone();
    assert_routes(&world, "dn1", &["cn1-a", "cn2-c", "dn2-a", &new], &host, port);
    let status = world.opsh(&["otb", "status", "--check"]);
    assert_eq!(status.code, 0, "no invariant is violated: {status:?}");
}

#[test]
fn with_the_master_crashed_the_most_advanced_standby_wins_and_the_old_master_cannot_come_back() {
    let world = World::with_topology("otb-trio");
    // dn1-a stops receiving; the rows written next reach dn1-b only.
    let master = world.lab.cluster("dn1-c").expect("master").clone();
    world.sql("dn1-a", "postgres", &format!("ALTER SYSTEM SET primary_conninfo = 'host={} port=1 user=opsh'; SELECT pg_reload_conf();", master.address));
    wait_for(30, "dn1-a to stop streaming", || {
        (world.sql("dn1-a", "postgres", "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == "0").then_some(())
    });
    world.sql("dn1-c", "postgres", "CREATE TABLE late(x int); INSERT INTO late SELECT generate_series(1, 50);");
    wait_for(30, "the rows on dn1-b", || (rows(&world, "dn1-b", "late") == "50").then_some(()));
    world.lab.crash("dn1-c").expect("the master crashes");
    let run = world.opsh(&["--yes", "otb", "promote", "dn1"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("dn1-b is promoted as the most advanced standby"), "the plan says why: {run:?}");
    assert_eq!(writable(&world, &DN1), vec!["dn1-b"], "the standby that has every row is the master");
    assert_eq!(rows(&world, "dn1-b", "late"), "50");
    world.lab.start("dn1-c").expect("the crashed master is started again");
    assert_eq!(writable(&world, &DN1), vec!["dn1-b"], "the crashed master was fenced on disk: it came back read-only");
    // dn1-a, behind, was pointed at the new master and catches up.
    wait_for(30, "dn1-a to catch up from dn1-b", || (rows(&world, "dn1-a", "late") == "50").then_some(()));
    assert_routes(&world, "dn1", &["cn1-a", "cn2-c", "dn2-a", "dn1-b"], "pgxb", 40021);
}

#[test]
fn two_masters_are_flagged_by_status_and_check_and_promote_refuses_to_pick_one() {
    let world = World::with_topology("otb-trio");
    // A split brain made by hand: dn1-a promoted while dn1-c still takes writes.
    let promoted =
        world.lab.host_exec("pgxa", &["/usr/local/otb/bin/pg_ctl", "-Z", "datanode", "-D", "/usr/local/otb/data/dn1-s1", "promote"]).expect("promote by hand");
    assert!(promoted.status.success(), "{promoted:?}");
    wait_for(30, "dn1-a to take writes", || takes_writes(&world, "dn1-a").then_some(()));
    assert_eq!(writable(&world, &DN1), vec!["dn1-a", "dn1-c"]);
    let status = world.opsh(&["otb", "status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("at most one writable master") && l.contains("dn1") && l.contains("VIOLATED") && l.contains("dn1-a, dn1-c")),
        "{status:?}"
    );
    let check = world.opsh(&["otb", "status", "--check"]);
    assert_eq!(check.code, 6, "--check fails on the split brain: {check:?}");
    assert!(check.stderr.contains("check failed") && check.stderr.contains("VIOLATED"), "{check:?}");
    let refused = world.opsh(&["--yes", "otb", "promote", "dn1"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("dn1 has 2 writable masters (dn1-a, dn1-c): a split brain"), "{refused:?}");
    assert_eq!(writable(&world, &DN1), vec!["dn1-a", "dn1-c"], "nothing was changed");
    let json = world.opsh(&["--output", "json", "otb", "status", "--check"]);
    let doc: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert_eq!(doc["exit"], 6, "{json:?}");
}

#[test]
fn the_gtm_fails_over_to_a_standby_with_its_own_port_and_directory() {
    let world = World::with_topology("otb-trio");
    let stop = world.lab.host_exec("pgxb", &["/usr/local/otb/bin/gtm_ctl", "-Z", "gtm", "-D", "/usr/local/otb/gtm-main", "stop"]).expect("stop");
    assert!(stop.status.success(), "{stop:?}");
    let run = world.opsh(&["--yes", "otb", "promote", "gtm"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status = world
        .lab
        .host_exec("pgxc", &["/usr/local/otb/gtm-bin/gtm_ctl", "-Z", "gtm", "-D", "/usr/local/otb/gtm-standby", "-P", "50011", "status"])
        .expect("status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("current node [primary]"), "{status:?}");
    assert_routes(&world, "gtm_main", &["cn1-a", "cn2-c", "dn1-c", "dn2-a"], "pgxc", 50011);
    let restarted = world
        .lab
        .host_exec("pgxb", &["sh", "-c", "/usr/local/otb/bin/gtm_ctl -Z gtm -D /usr/local/otb/gtm-main start && sleep 0.3 && /usr/local/otb/bin/gtm_ctl -D /usr/local/otb/gtm-main -P 50001 status"])
        .expect("restart");
    assert!(String::from_utf8_lossy(&restarted.stdout).contains("current node [standby]"), "the old GTM comes back as a standby: {restarted:?}");
}

#[test]
fn a_cascading_standby_keeps_following_when_its_upstream_is_promoted() {
    let world = World::with_topology("otb-trio");
    world.lab.crash("dn2-a").expect("dn2's master crashes");
    let run = world.opsh(&["--yes", "otb", "promote", "dn2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(writable(&world, &["dn2-a", "dn2-b", "dn2-c"]), vec!["dn2-b"], "the standby of the master, not the cascading one, is promoted");
    world.sql("dn2-b", "postgres", "CREATE TABLE cascade_check(x int); INSERT INTO cascade_check VALUES (1), (2);");
    wait_for(30, "the row on the cascading standby", || (rows(&world, "dn2-c", "cascade_check") == "2").then_some(()));
    world.lab.start("dn2-a").expect("the crashed master is started again");
    assert_eq!(writable(&world, &["dn2-a", "dn2-b", "dn2-c"]), vec!["dn2-b"]);
    assert_routes(&world, "dn2", &["cn1-a", "cn2-c", "dn1-c", "dn2-b"], "pgxb", 40002);
}

#[test]
fn a_member_that_cannot_be_asked_is_refused_until_the_operator_forces() {
    let mut world = World::with_topology("otb-trio");
    world.lab.cut("pgxb").expect("cut pgxb: dn1-b, cn1-b, dn2-b and the GTM master freeze");
    let refused = world.opsh(&["--yes", "otb", "promote", "dn1"]);
    world.lab.heal("pgxb").expect("heal");
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("dn1-b on pgxb") && refused.stderr.contains("--force"), "{refused:?}");
    assert_eq!(writable(&world, &DN1), vec!["dn1-c"], "nothing was changed");
}

/// The node names the shell completes and checks are the inventory's (cn1, dn2 here, not the
/// lab's cn01/dn01), and a misspelt one gets a "did you mean" before the plugin refuses it.
#[test]
fn node_names_are_completed_from_the_inventory_and_a_misspelt_one_gets_a_did_you_mean() {
    let world = World::with_topology("otb-trio");
    let completed = world.opsh(&["__complete", "otb", "promote", ""]);
    assert_eq!(completed.code, 0, "{completed:?}");
    let words: Vec<&str> = completed.stdout.lines().collect();
    assert_eq!(words[..5], ["cn1", "cn2", "dn1", "dn2", "gtm"], "{completed:?}");
    let rebuild = world.opsh(&["__complete", "otb", "rebuild", "d"]);
    assert_eq!(rebuild.stdout.lines().collect::<Vec<_>>(), ["dn1", "dn2"], "{rebuild:?}");

    let typo = world.opsh(&["--dry-run", "otb", "promote", "dn3"]);
    assert_ne!(typo.code, 0, "the plugin refuses a node it does not know: {typo:?}");
    assert!(typo.stderr.contains("node \"dn3\" is not in the inventory") && typo.stderr.contains("did you mean dn1?"), "{typo:?}");
    assert_eq!(writable(&world, &["dn1-a", "dn1-b", "dn1-c"]).len(), 1, "nothing was promoted");
}
