//! Status at scale: the large labs are built — `pg32` (32 hosts, one PostgreSQL each),
//! `tungsten32` (two dataservices of 16 hosts) and `otb-large` (8 datanodes and 4 coordinators with
//! standbys on 12 servers), all listed in shuffled order — and one status answers for every member,
//! one host frozen or one master dead. Each row is compared with what psql, trepctl or pgxc_node
//! say on that member itself.

use crate::support::World;

#[test]
fn pg_status_answers_for_each_of_32_servers_while_one_is_frozen() {
    let mut world = World::with_topology("pg32");
    assert_eq!(world.lab.state.clusters.len(), 32);
    world.lab.cut("fleet-07").expect("cut fleet-07");
    let run = world.opsh(&["--output", "json", "pg", "status"]);
    world.lab.heal("fleet-07").expect("heal fleet-07");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"));
    let records = doc["tables"][0]["records"].as_array().unwrap_or_else(|| panic!("no records: {run:?}"));
    assert_eq!(records.len(), 64, "a row for each of the two databases (app, postgres) of every server: {run:?}");
    assert_eq!(run.code, 0, "one server of 32 frozen is a partial answer, not a failed read: {run:?}");
    for cluster in world.lab.state.clusters.clone() {
        for db in ["app", "postgres"] {
            let database = format!("{}-{db}", cluster.name);
            let record = records.iter().find(|r| r["database"] == database.as_str()).unwrap_or_else(|| panic!("no row for {database}: {run:?}"));
            if cluster.name == "fleet-07" {
                assert_eq!(record["state"], "unreachable", "{run:?}");
                continue;
            }
            let role = world.sql(&cluster.name, db, "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END");
            assert_eq!(record["state"], "up", "{database}: {run:?}");
            assert_eq!(record["role"], role.trim(), "{database}: {run:?}");
        }
    }
}

/// The `tungsten32` lab (two dataservices of 16 hosts each, 64 replicators, hosts listed shuffled):
/// one `tungsten status` reports every replicator as its own trepctl on that host does, flags the
/// two that are not ONLINE, and with a host frozen still answers for the 31 others.
#[test]
fn tungsten_status_answers_for_each_of_32_hosts() {
    use crate::tungsten::{CLUSTER_TREPCTL, CROSS_TREPCTL, trepctl_field};
    let mut world = World::with_topology("tungsten32");
    assert_eq!(world.lab.state.hosts.len(), 32);
    let stop = world.lab.host_exec("tyo-05", &["/opt/continuent/tungsten/tungsten-replicator/bin/replicator", "stop"]).expect("stop");
    assert!(stop.status.success(), "{stop:?}");
    let offline = world.lab.host_exec("par-14", &[CROSS_TREPCTL, "-service", "tokyo", "offline"]).expect("offline");
    assert!(offline.status.success(), "{offline:?}");

    let replicators = |run: &crate::support::Run| -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"));
        let table = doc["tables"].as_array().and_then(|t| t.iter().find(|t| t["title"] == "Replicators")).cloned();
        table.and_then(|t| t["records"].as_array().cloned()).unwrap_or_else(|| panic!("no replicators: {run:?}"))
    };
    let run = world.opsh(&["--output", "json", "tungsten", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = replicators(&run);
    assert_eq!(rows.len(), 64, "two replicators on each of 32 hosts: {run:?}");
    for host in world.lab.state.hosts.clone() {
        let site = if host.name.starts_with("par") { ("paris", "tokyo") } else { ("tokyo", "paris") };
        for (installation, trepctl, service) in [("cluster", CLUSTER_TREPCTL, site.0), ("cross-site", CROSS_TREPCTL, site.1)] {
            let row = rows
                .iter()
                .find(|r| r["host"] == host.name.as_str() && r["installation"] == installation)
                .unwrap_or_else(|| panic!("no {installation} row for {}: {run:?}", host.name));
            assert_eq!(row["service"], service, "{row}");
            match trepctl_field(&world, &host.name, trepctl, service, "state") {
                Ok(state) => {
                    assert_eq!(row["state"], state.as_str(), "{} {installation}: {row}", host.name);
                    let role = trepctl_field(&world, &host.name, trepctl, service, "role").expect("role");
                    assert_eq!(row["role"], role.as_str(), "{} {installation}: {row}", host.name);
                }
                // A stopped replicator: trepctl cannot connect, and status must not call it ONLINE.
                Err(said) => {
                    assert_eq!((host.name.as_str(), installation), ("tyo-05", "cluster"), "only tyo-05's replicator was stopped: {said}");
                    assert!(row["state"].as_str().is_some_and(|s| s != "ONLINE"), "{row}");
                }
            }
        }
    }
    let check = world.opsh(&["tungsten", "status", "--check"]);
    assert_eq!(check.code, 6, "two replicators are not ONLINE: {check:?}");
    let violated: Vec<&str> = check.stdout.lines().filter(|l| l.starts_with("every replicator is ONLINE") && l.contains("VIOLATED")).collect();
    assert!(violated.iter().any(|l| l.contains("tokyo") && l.contains("tyo-05") && l.contains("par-14")), "{check:?}");
    assert!(!violated.iter().any(|l| l.contains("paris")), "paris's 32 replicators are ONLINE: {check:?}");

    world.lab.cut("par-03").expect("cut par-03");
    let frozen = world.opsh(&["--output", "json", "tungsten", "status"]);
    world.lab.heal("par-03").expect("heal par-03");
    assert_eq!(frozen.code, 0, "one host of 32 frozen is a partial answer: {frozen:?}");
    let rows = replicators(&frozen);
    assert_eq!(rows.len(), 64, "{frozen:?}");
    for row in &rows {
        let state = row["state"].as_str().unwrap_or_default();
        if row["host"] == "par-03" {
            assert!(state.contains("par-03") && state.contains("ssh"), "the frozen host's rows say why: {row}");
        } else if !(row["host"] == "tyo-05" && row["installation"] == "cluster" || row["host"] == "par-14" && row["installation"] == "cross-site") {
            assert_eq!(state, "ONLINE", "{row}");
        }
    }
}

/// The `otb-large` lab (8 datanodes and 4 coordinators, each with a streaming standby, and a GTM
/// pair, on 12 servers listed shuffled): with dn5's master dead, `otb status` shows each of the 24
/// members' role as the member itself reports it and each route as the masters' pgxc_node holds
/// it; `otb promote dn5` then leaves exactly one writable dn5 and all 11 other masters route dn5 to
/// it.
#[test]
fn otb_status_answers_for_each_of_24_nodes() {
    use crate::otb::{route, takes_writes};
    let world = World::with_topology("otb-large");
    let clusters = world.lab.state.clusters.clone();
    assert_eq!(clusters.len(), 24);
    world.lab.crash("dn5-ams-05").expect("crash dn5's master");
    let run = world.opsh(&["--output", "json", "otb", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"));
    let table = |title: &str| -> Vec<serde_json::Value> {
        let table = doc["tables"].as_array().and_then(|t| t.iter().find(|t| t["title"] == title)).cloned();
        table.and_then(|t| t["records"].as_array().cloned()).unwrap_or_else(|| panic!("no table {title}: {run:?}"))
    };
    let members = table("Cluster otb");
    assert_eq!(members.len(), 24, "{run:?}");
    for cluster in &clusters {
        let row = members.iter().find(|r| r["member"] == cluster.name.as_str()).unwrap_or_else(|| panic!("no row for {}: {run:?}", cluster.name));
        let role = row["role"].as_str().unwrap_or_default();
        if cluster.name == "dn5-ams-05" {
            assert_eq!(role, "stopped", "{row}");
            continue;
        }
        let recovery = world.sql(&cluster.name, "postgres", "SELECT pg_is_in_recovery()");
        assert_eq!(role.starts_with("standby"), recovery.trim() == "t", "{}: {row}", cluster.name);
        assert_eq!(role == "master", recovery.trim() == "f", "{}: {row}", cluster.name);
    }
    let masters: Vec<String> = clusters.iter().filter(|c| c.standby_of.is_none() && c.name != "dn5-ams-05").map(|c| c.name.clone()).collect();
    assert_eq!(masters.len(), 11);
    let routes = table("Routes (pgxc_node on every master)");
    assert_eq!(routes.len(), 11 * 13, "13 routes (12 nodes and the GTM) on each live master: {run:?}");
    for master in &masters {
        for node in ["cn1", "cn2", "cn3", "cn4", "dn1", "dn2", "dn3", "dn4", "dn5", "dn6", "dn7", "dn8"] {
            let row = routes.iter().find(|r| r["on"] == master.as_str() && r["node"] == node).unwrap_or_else(|| panic!("no route {node} on {master}"));
            let held = route(&world, master, node);
            let host = world.lab.state.hosts.iter().find(|h| held.starts_with(&format!("{}:", h.address))).expect("a lab host's address");
            let port = held.rsplit(':').next().unwrap_or_default();
            assert_eq!(row["route"], format!("{}:{port}", host.name).as_str(), "{node} on {master}");
        }
    }

    let promote = world.opsh(&["--yes", "otb", "promote", "dn5"]);
    assert_eq!(promote.code, 0, "{promote:?}");
    assert!(takes_writes(&world, "dn5-ams-06"), "the standby of dn5 takes writes");
    let dn5: Vec<&str> = clusters.iter().filter(|c| c.name.starts_with("dn5-")).map(|c| c.name.as_str()).collect();
    let writable: Vec<&&str> = dn5.iter().filter(|c| takes_writes(&world, c)).collect();
    assert_eq!(writable, vec![&"dn5-ams-06"], "exactly one writable dn5");
    let address = world.lab.host("ams-06").expect("ams-06").address.clone();
    for master in masters.iter().filter(|m| !m.starts_with("dn5-")) {
        assert_eq!(route(&world, master, "dn5"), format!("{address}:23005"), "{master} routes dn5 to its new master");
    }
}
