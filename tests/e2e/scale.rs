//! Status at scale: the `pg32` lab (32 hosts, one PostgreSQL each, listed in shuffled order) is
//! built, and one `pg status` answers for every server, one of them frozen. Each row is compared
//! with what psql says on that server itself.

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
