//! `horizon` on appliances shaped unlike seeds 000/001 (`horizon-trio`: a tenant of three
//! appliances with fdb and edb only, non-default ports, DNS names, IP addresses in the properties
//! files and DNS names in diagnose's JDBC URLs, start scripts with dbname last, the inventory
//! listing the primary second). Outcomes are read from the databases and files themselves.

use crate::support::{World, wait_for};

const TENANT: [&str; 3] = ["t2a", "t2b", "t2c"];

/// A write as any client makes it, in a new session; `Err` carries PostgreSQL's message.
fn write(world: &World, appliance: &str, db: &str, sql: &str) -> Result<String, String> {
    let cluster = world.lab.cluster(appliance).expect("cluster").clone();
    world.lab.psql_as_admin(&cluster, db, sql).map_err(|e| format!("{e:#}"))
}

/// The appliances of the tenant whose `db` takes a write right now.
fn writable(world: &World, db: &str) -> Vec<String> {
    let sql = match db {
        "fdb" => "INSERT INTO desktop_pool (org_id, name) VALUES (2002, 'probe') RETURNING 1",
        _ => "INSERT INTO event (message) VALUES ('probe') RETURNING 1",
    };
    TENANT.iter().filter(|a| write(world, a, db, sql).is_ok()).map(|a| a.to_string()).collect()
}

fn file(world: &World, host: &str, path: &str) -> String {
    std::fs::read_to_string(world.lab.host_file(host, path)).unwrap_or_else(|e| panic!("{host}:{path}: {e}"))
}

fn arrives(world: &World, appliance: &str, db: &str, query: &str, want: &str) {
    wait_for(90, &format!("{query} on {appliance} {db} to give {want}"), || (world.sql(appliance, db, query) == want).then_some(()));
}

fn seed_query(world: &World, appliance: &str, db: &str) -> String {
    world.sql(
        appliance,
        db,
        "SELECT a.set_id, a.set_comment, (SELECT last_value FROM _slony.sl_local_node_id) AS local_id, CASE WHEN a.set_origin = (SELECT last_value FROM _slony.sl_local_node_id) THEN TRUE ELSE FALSE END AS master_node from _slony.sl_set a;",
    )
}

#[test]
fn enable_writes_on_a_tenant_of_three_leaves_one_writable_copy_and_reinit_refuses_the_newer_side() {
    let world = World::with_topology("horizon-trio");
    for db in ["fdb", "edb"] {
        assert_eq!(writable(&world, db), vec!["t2a"], "before: only the primary takes writes in {db}");
    }
    let run = world.opsh(&["--yes", "horizon", "enable-writes", "t2b"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("t2c stays a Slony subscriber of t2a"), "the plan says what happens to the third appliance: {run:?}");
    for db in ["fdb", "edb"] {
        assert_eq!(writable(&world, db), vec!["t2b"], "after: exactly one copy of {db} takes writes (t2a fenced, t2c a subscriber)");
    }
    let (t2a, t2b, t2c) = (
        world.lab.host("t2a").expect("t2a").address.clone(),
        world.lab.host("t2b").expect("t2b").address.clone(),
        world.lab.host("t2c").expect("t2c").address.clone(),
    );
    let fdb = file(&world, "t2b", "/usr/local/desktone/release/active/conf/fdb.properties");
    assert!(fdb.contains(&format!("fdb.hosts={t2b},{t2c}\n")) && !fdb.contains(&t2a), "the IP list lost t2a and kept its form:\n{fdb}");
    assert!(fdb.contains(&format!("fdb.url=jdbc:postgresql://{t2b}:6432,{t2c}:6432/fdb?ssl=true\n")), "{fdb}");
    let dns = world.lab.host("t2b").expect("t2b").dns.clone().expect("dns");
    let diagnose = file(&world, "t2b", "/usr/local/xmpms/diagnose/config/application.properties");
    assert!(
        diagnose.contains(&format!("db.jdbc.url=jdbc:postgresql://{dns}:6432/avdb?ssl=true\n"))
            && diagnose.contains(&format!("db.fdb.jdbc.url=jdbc:postgresql://{dns}:6432/fdb?ssl=true\n")),
        "the JDBC URLs name t2b by its DNS name, with the database's port:\n{diagnose}"
    );
    let check = world.opsh(&["horizon", "status", "--check"]);
    assert!(check.stdout.lines().any(|l| l.starts_with("at most one copy takes writes") && l.contains("tenant 2002 fdb") && l.contains("holds")), "{check:?}");

    // t2b has writes of its own now: making it a subscriber of the old primary is refused.
    write(&world, "t2b", "edb", "INSERT INTO event (message) VALUES ('only on t2b')").expect("t2b takes writes");
    let wrong = world.opsh(&["--yes", "horizon", "reinit-slony", "t2b", "--origin", "t2a"]);
    assert_eq!(wrong.code, 5, "{wrong:?}");
    assert!(wrong.stderr.contains("t2b has the newer writes") && wrong.stderr.contains("horizon reinit-slony t2a --origin t2b"), "{wrong:?}");
    assert_eq!(world.sql("t2b", "edb", "SELECT count(*) FROM event WHERE message = 'only on t2b'"), "1", "nothing was truncated");

    // The right way round: the old primary becomes a subscriber of t2b (the origin chosen live).
    let reinit = world.opsh(&["--yes", "horizon", "reinit-slony", "t2a"]);
    assert_eq!(reinit.code, 0, "{reinit:?}");
    arrives(&world, "t2a", "edb", "SELECT count(*) FROM event WHERE message = 'only on t2b'", "1");
    for db in ["fdb", "edb"] {
        assert_eq!(seed_query(&world, "t2b", db), "1|All tables and Sequences|1|t", "{db}");
        let refused = write(&world, "t2a", db, "INSERT INTO event (message) VALUES ('x')");
        assert!(refused.is_err(), "t2a is a subscriber of {db}: {refused:?}");
    }
    assert_eq!(world.sql("t2a", "fdb", "SELECT current_setting('default_transaction_read_only')"), "off", "its fence was lifted for Slony");
}

#[test]
fn promote_refuses_a_lagging_new_primary_in_numbers_then_loses_nothing_once_it_caught_up() {
    let world = World::with_topology("horizon-trio");
    // sp-west's slon stops: it falls behind while sp-east takes writes.
    assert_eq!(world.lab.host_exec("sp-west", &["killall", "slon"]).expect("killall").status.code(), Some(0));
    world.sql("sp-east", "fdb", "INSERT INTO organization VALUES (3003, 'written while sp-west lagged')");
    wait_for(90, "sp-west to be more than 30 s behind", || {
        let lag = world.sql("sp-east", "fdb", "SELECT coalesce(max(extract(epoch FROM st_lag_time)), 0)::int FROM _slony.sl_status");
        (lag.parse::<i64>().unwrap_or(0) > 31).then_some(())
    });
    let refused = world.opsh(&["--yes", "horizon", "promote", "service-provider", "sp-west", "--old", "sp-east"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("sp-west-fdb is")
            && refused.stderr.contains("Slony events")
            && refused.stderr.contains("behind sp-east-fdb")
            && refused.stderr.contains("--force"),
        "{refused:?}"
    );
    assert_eq!(seed_query(&world, "sp-east", "fdb"), "1|All tables and Sequences|1|t", "nothing was changed");
    let forced = world.opsh(&["--dry-run", "horizon", "promote", "service-provider", "sp-west", "--old", "sp-east", "--force"]);
    assert!(forced.code == 0 && forced.stdout.contains("--force: sp-west-fdb is") && forced.stdout.contains("those changes are lost"), "{forced:?}");

    // sp-west's slon back: it catches up, the promotion goes through and keeps the late row.
    let started = world.lab.host_exec("sp-west", &["/usr/local/desktone/scripts/start_slon_fdb.sh"]).expect("start slon");
    assert!(started.status.success(), "{started:?}");
    arrives(&world, "sp-west", "fdb", "SELECT count(*) FROM organization WHERE id = 3003", "1");
    arrives(&world, "sp-east", "fdb", "SELECT coalesce(max(extract(epoch FROM st_lag_time)), 0) < 20 FROM _slony.sl_status", "t");
    let run = world.opsh(&["--yes", "horizon", "promote", "service-provider", "sp-west", "--old", "sp-east"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[4] Wait until sp-west have confirmed every change of sp-east-fdb"), "Slony's own sync ran first: {run:?}");
    assert_eq!(world.sql("sp-west", "fdb", "SELECT count(*) FROM organization WHERE id = 3003"), "1", "no row lost");
    assert_eq!(seed_query(&world, "sp-west", "fdb"), "1|All tables and Sequences|1|t");
    world.sql("sp-west", "fdb", "INSERT INTO organization VALUES (3004, 'after the promotion')");
    arrives(&world, "sp-east", "fdb", "SELECT count(*) FROM organization WHERE id = 3004", "1");
}

#[test]
fn promote_tenant_of_three_makes_the_third_appliance_follow_the_new_origin() {
    let world = World::with_topology("horizon-trio");
    let run = world.opsh(&["--yes", "horizon", "promote", "tenant", "t2c", "--old", "t2a", "--org", "2002"]);
    assert_eq!(run.code, 0, "{run:?}");
    let bits = "SELECT string_agg(name || '=' || capabilities, ',' ORDER BY name) FROM appliance WHERE org_id = 2002";
    assert_eq!(world.sql("sp-east", "fdb", bits), "t2a=3903,t2b=3903,t2c=4095", "the primary bits moved to t2c only");
    for db in ["fdb", "edb"] {
        assert_eq!(writable(&world, db), vec!["t2c"], "exactly one copy of {db} takes writes");
        assert_eq!(seed_query(&world, "t2c", db), "1|All tables and Sequences|1|t", "{db}");
    }
    world.sql("t2c", "edb", "INSERT INTO event (message) VALUES ('from t2c')");
    arrives(&world, "t2a", "edb", "SELECT count(*) FROM event WHERE message = 'from t2c'", "1");
    arrives(&world, "t2b", "edb", "SELECT count(*) FROM event WHERE message = 'from t2c'", "1");
}
