//! `horizon`: the Horizon DaaS failover runbooks (seeds 000/001) against the `horizon` lab —
//! real PostgreSQL, real Slony-I 2.2 with real slon daemons, real sshd, Horizon's files at the
//! seed's paths.

use crate::support::{World, finish, new_run, signal, wait_for};

pub(crate) const DBS: [(&str, &str); 3] = [
    ("fdb", "INSERT INTO tenant_setting VALUES ('failover', 'done')"),
    ("edb", "INSERT INTO event (message) VALUES ('written on the new primary')"),
    ("avdb", "INSERT INTO app_volume (name, size_mb) VALUES ('hotfix', 10)"),
];

fn address(world: &World, host: &str) -> String {
    world.lab.host(host).expect("host").address.clone()
}

/// A write as any client would make it; `Err` carries PostgreSQL's message.
pub(crate) fn write(world: &World, appliance: &str, db: &str, sql: &str) -> Result<String, String> {
    let cluster = world.lab.cluster(appliance).expect("cluster").clone();
    world.lab.psql_as_admin(&cluster, db, sql).map_err(|e| format!("{e:#}"))
}

pub(crate) fn file(world: &World, host: &str, path: &str) -> String {
    std::fs::read_to_string(world.lab.host_file(host, path)).unwrap_or_else(|e| panic!("{host}:{path}: {e}"))
}

pub(crate) fn service_running(world: &World, host: &str, service: &str) -> bool {
    world.lab.host_exec(host, &["/usr/local/bin/labsvc", "status", service]).expect("labsvc").status.code() == Some(0)
}

/// The seed's verification query, exactly as an operator pastes it.
pub(crate) const SEED_QUERY: &str = "SELECT a.set_id, a.set_comment, (SELECT last_value FROM _slony.sl_local_node_id) AS local_id, CASE WHEN a.set_origin = (SELECT last_value FROM _slony.sl_local_node_id)THEN TRUE ELSE FALSE END AS master_node from _slony.sl_set a;";

fn seed_query(world: &World, appliance: &str, db: &str) -> String {
    world.sql(appliance, db, SEED_QUERY)
}

fn arrives(world: &World, appliance: &str, db: &str, query: &str, want: &str) {
    wait_for(60, &format!("{query} on {appliance} {db} to give {want}"), || (world.sql(appliance, db, query) == want).then_some(()));
}

/// What the secondary ta2 looks like after enable-writes: its tables take writes, its files name
/// only itself, its services run.
fn assert_secondary_enabled(world: &World) {
    let (ta1, ta2) = (address(world, "ta1"), address(world, "ta2"));
    for (db, sql) in DBS {
        write(world, "ta2", db, sql).unwrap_or_else(|e| panic!("ta2 {db} takes writes after enable-writes: {e}"));
        let properties = file(world, "ta2", &format!("/usr/local/desktone/release/active/conf/{db}.properties"));
        assert!(properties.contains(&format!("{db}.hosts={ta2}\n")) && !properties.contains(&ta1), "{db}.properties names only ta2:\n{properties}");
    }
    let diagnose = file(world, "ta2", "/usr/local/xmpms/diagnose/config/application.properties");
    assert!(diagnose.contains(&format!("db.jdbc.url=jdbc:postgresql://{ta2}:5432/avdb?ssl=true\n")), "{diagnose}");
    assert!(diagnose.contains(&format!("db.fdb.jdbc.url=jdbc:postgresql://{ta2}:5432/fdb?ssl=true\n")) && !diagnose.contains(&ta1), "{diagnose}");
    for service in ["dtService", "av-manager", "diagnose"] {
        assert!(service_running(world, "ta2", service), "{service} runs on ta2");
    }
    let av_setup = file(world, "ta2", "/usr/local/desktone/var/av-setup.log");
    assert!(av_setup.contains(&format!("DB_HOST={ta2} DB_PASSWORD=(set, opens avdb)")), "av-setup ran with ta2 and a working password: {av_setup}");
}

#[test]
fn enable_writes_with_the_primary_crashed_then_reinit_slony_when_it_is_back() {
    let world = World::with_topology("horizon");
    world.lab.crash("ta1").expect("the primary's database crashes");
    let refused = write(&world, "ta2", "edb", DBS[1].1);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("is replicated and cannot be modified on a subscriber node")),
        "before: Slony's trigger refuses: {refused:?}"
    );

    let early = world.opsh(&["--yes", "horizon", "promote", "tenant", "ta2", "--old", "ta1", "--org", "1001"]);
    assert_eq!(early.code, 5, "a permanent promotion needs the old primary's databases: {early:?}");
    assert!(early.stderr.contains("ta1-fdb does not answer") && early.stderr.contains("horizon enable-writes ta2"), "{early:?}");

    let run = world.opsh(&["--yes", "horizon", "enable-writes", "ta2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("ta1-fdb does not answer") || run.stderr.contains("ta1-fdb does not answer"),
        "the plan said the primary's data cannot be copied: {run:?}"
    );
    assert_secondary_enabled(&world);
    assert!(!service_running(&world, "ta1", "dtService"), "the primary's sshd answered: its services were stopped too");
    let password = world.password();
    assert!(!run.all().contains(&password), "the password is never shown");
    for (path, content) in world.home_files() {
        assert!(!content.contains(&password), "{} holds the password", path.display());
    }

    // "Restart the primary appliance": it comes back believing it is still the origin.
    world.lab.start("ta1").expect("ta1 restarted");
    let reinit = world.opsh(&["--yes", "horizon", "reinit-slony", "ta1"]);
    assert_eq!(reinit.code, 0, "{reinit:?}");
    arrives(&world, "ta1", "edb", "SELECT count(*) FROM event WHERE message = 'written on the new primary'", "1");
    arrives(&world, "ta1", "avdb", "SELECT count(*) FROM app_volume WHERE name = 'hotfix'", "1");
    let fenced = write(&world, "ta1", "fdb", "INSERT INTO tenant_setting VALUES ('split', 'brain')");
    assert!(fenced.as_ref().is_err_and(|e| e.contains("cannot be modified on a subscriber node")), "the old primary no longer takes writes: {fenced:?}");
    for db in ["fdb", "edb", "avdb"] {
        assert_eq!(seed_query(&world, "ta2", db), "1|All tables and Sequences|1|t", "{db}");
    }
}

#[test]
fn promote_service_provider_moves_the_primary_bits_and_slony_replicates_back() {
    let world = World::with_topology("horizon");
    let state = |world: &World| {
        (
            file(world, "sp1", "/usr/local/desktone/release/active/conf/fdb.properties"),
            file(world, "sp2", "/usr/local/desktone/release/active/conf/fdb.properties"),
            world.sql("sp1", "fdb", "SELECT string_agg(name || '=' || capabilities, ',' ORDER BY name) FROM appliance"),
            seed_query(world, "sp1", "fdb"),
            seed_query(world, "sp2", "fdb"),
            service_running(world, "sp1", "dtService") && service_running(world, "sp2", "dtService"),
        )
    };
    let before = state(&world);
    let origin = world.opsh(&["--yes", "horizon", "enable-writes", "sp1"]);
    assert!(origin.code == 5 && origin.stderr.contains("sp1-fdb is already the Slony origin"), "{origin:?}");
    let stranger = world.opsh(&["--yes", "horizon", "enable-writes", "nowhere"]);
    assert!(stranger.code == 2 && stranger.stderr.contains("sp1, sp2, ta1, ta2"), "{stranger:?}");
    let dry = world.opsh(&["--dry-run", "--lang", "ja", "horizon", "promote", "service-provider", "sp2", "--old", "sp1"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("[5] sp1-fdb で _slony スキーマを削除") && dry.stdout.contains("[6] sp2-fdb でプライマリ ビットを sp1 から sp2 へ移す"),
        "Japanese step titles with the seed's numbers: {dry:?}"
    );
    assert!(
        dry.stdout.contains("set add table (set id = 1, origin = 1, id = 1, fully qualified name = 'public.appliance')"),
        "the slonik script is shown: {dry:?}"
    );
    let json = world.opsh(&["--output", "json", "--dry-run", "horizon", "promote", "service-provider", "sp2", "--old", "sp1"]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert_eq!(state(&world), before, "--dry-run changed nothing");

    let runs = world.runs();
    let run = world.opsh(&["--yes", "horizon", "promote", "service-provider", "sp2", "--old", "sp1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = crate::support::new_run(&world, &runs);
    let custom: Vec<&serde_json::Value> = planned["steps"].as_array().into_iter().flatten().filter(|s| s["runs"] != "host").map(|s| &s["id"]).collect();
    assert_eq!(custom, ["slony-subscribe-fdb"], "every step but the subscription is the host's");
    let compared = crate::support::performed_as_shown(&world, &planned, &id);
    assert!(compared >= 10, "the host performed {compared} effects");
    let bits = "SELECT string_agg(name || '=' || capabilities, ',' ORDER BY name) FROM appliance WHERE name IN ('sp1', 'sp2')";
    assert_eq!(world.sql("sp2", "fdb", bits), "sp1=3903,sp2=4095", "capabilities & 65343 on sp1, | 192 on sp2");
    assert_eq!(seed_query(&world, "sp2", "fdb"), "1|All tables and Sequences|1|t");
    write(&world, "sp2", "fdb", "INSERT INTO organization VALUES (1002, 'tenant two')").expect("sp2 takes writes");
    arrives(&world, "sp1", "fdb", "SELECT name FROM organization WHERE id = 1002", "tenant two");
    arrives(&world, "sp1", "fdb", bits, "sp1=3903,sp2=4095");
    let refused = write(&world, "sp1", "fdb", "INSERT INTO organization VALUES (1003, 'x')");
    assert!(refused.is_err(), "sp1 is a subscriber now: {refused:?}");
    assert!(service_running(&world, "sp2", "dtService") && !service_running(&world, "sp1", "dtService"), "dtService runs on the new primary only");
    let sp1 = address(&world, "sp1");
    assert!(!file(&world, "sp2", "/usr/local/desktone/release/active/conf/fdb.properties").contains(&sp1));
}

#[test]
fn promote_tenant_moves_the_bits_on_the_service_provider_and_reverses_every_database() {
    let world = World::with_topology("horizon");
    let run = world.opsh(&["--yes", "horizon", "promote", "tenant", "ta2", "--old", "ta1", "--org", "1001"]);
    assert_eq!(run.code, 0, "{run:?}");
    let bits = "SELECT string_agg(name || '=' || capabilities, ',' ORDER BY name) FROM appliance WHERE name IN ('ta1', 'ta2')";
    assert_eq!(world.sql("sp1", "fdb", bits), "ta1=3903,ta2=4095", "the seed updates the primary service-provider appliance's fdb");
    arrives(&world, "sp2", "fdb", bits, "ta1=3903,ta2=4095");
    for (db, sql) in DBS {
        write(&world, "ta2", db, sql).unwrap_or_else(|e| panic!("ta2 {db} is the origin: {e}"));
        assert_eq!(seed_query(&world, "ta2", db), "1|All tables and Sequences|1|t", "{db}");
    }
    arrives(&world, "ta1", "fdb", "SELECT value FROM tenant_setting WHERE key = 'failover'", "done");
    arrives(&world, "ta1", "edb", "SELECT count(*) FROM event WHERE message = 'written on the new primary'", "1");
    arrives(&world, "ta1", "avdb", "SELECT size_mb FROM app_volume WHERE name = 'hotfix'", "10");
    let again = world.opsh(&["--yes", "horizon", "promote", "tenant", "ta2", "--old", "ta2", "--org", "1001"]);
    assert_eq!(again.code, 2, "NEW and --old the same: {again:?}");
    let unknown = world.opsh(&["--yes", "horizon", "promote", "tenant", "ta2", "--old", "ta1", "--org", "7"]);
    assert!(unknown.code == 2 && unknown.stderr.contains("no tenant organisation 7") && unknown.stderr.contains("1001"), "{unknown:?}");
}

#[test]
fn kill_9_between_drop_schema_and_the_properties_edit_then_resume_completes() {
    let world = World::with_topology("horizon");
    world.lab.crash("ta1").expect("crash the primary's database");
    let child = world.spawn(&["--yes", "horizon", "enable-writes", "ta2"]);
    let id = new_run(&world, &[]);
    let dropped = |world: &World| {
        let records = world.records(&id);
        ["fdb", "edb", "avdb"].iter().all(|db| records.iter().any(|r| r["record"] == "result" && r["step"] == format!("drop-slony-ta2-{db}")))
    };
    wait_for(60, "the _slony schemas to be dropped", || dropped(&world).then_some(()));
    signal(&child, libc::SIGKILL);
    let killed = finish(child);
    assert_eq!(killed.code, -1, "killed: {killed:?}");
    let records = world.records(&id);
    assert!(!records.iter().any(|r| r["record"] == "result" && r["step"] == "start-services-ta2"), "killed before the end");

    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_secondary_enabled(&world);
    let records = world.records(&id);
    assert_eq!(records.last().map(|r| r["status"].clone()), Some(serde_json::json!("done")), "the journal ends done");
    let checked_drop = records.iter().any(|r| r["record"] == "check" && r["step"] == "drop-slony-ta2-fdb");
    assert!(!checked_drop, "steps finished before the kill are not asked again");
}

#[test]
fn enable_writes_with_the_primary_still_answering_copies_its_latest_data_first() {
    let world = World::with_topology("horizon");
    // The primary's slon stops, so a write it takes never reaches the secondary by Slony.
    assert_eq!(world.lab.host_exec("ta1", &["killall", "slon"]).expect("killall").status.code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(500));
    world.sql("ta1", "edb", "INSERT INTO event (message) VALUES ('only on the primary')");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(world.sql("ta2", "edb", "SELECT count(*) FROM event WHERE message = 'only on the primary'"), "0", "not replicated");
    // The secondary's slons hang (stopped, they act on no TERM): stopping them must escalate.
    let frozen = world.lab.host_exec("ta2", &["pkill", "-STOP", "-x", "slon"]).expect("pkill");
    assert_eq!(frozen.status.code(), Some(0), "{frozen:?}");

    let run = world.opsh(&["--yes", "horizon", "enable-writes", "ta2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let left = world.lab.host_exec("ta2", &["pgrep", "-x", "slon"]).expect("pgrep");
    assert_eq!(left.status.code(), Some(1), "no slon is left on ta2: {left:?}");
    assert!(run.all().contains("restored edb; the backup is kept in /usr/local/var/backups/opsh-horizon-edb-"), "the restore says where its dump is: {run:?}");
    assert_eq!(world.sql("ta2", "edb", "SELECT count(*) FROM event WHERE message = 'only on the primary'"), "1", "the primary's latest data was copied");
    assert_eq!(
        world.sql("ta2", "fdb", "SELECT string_agg(name, ',' ORDER BY id) FROM desktop_pool"),
        world.sql("ta1", "fdb", "SELECT string_agg(name, ',' ORDER BY id) FROM desktop_pool")
    );
    assert!(!service_running(&world, "ta1", "dtService"), "the primary's services were stopped");
    assert_secondary_enabled(&world);
    assert!(!run.all().contains(&world.password()), "the restore's passwords are never shown");
}
