//! The `otb` lab's OpenTenBase stand-ins answer and refuse as OpenTenBase does, over the real
//! wire protocol (psql, SCRAM), with real streaming replication behind them.

use std::process::Command;

use crate::support::{World, run_of};

fn psql(world: &World, cluster: &str, sql: &str, password: &str) -> crate::support::Run {
    let cluster = world.lab.cluster(cluster).expect("cluster");
    let output = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &cluster.address, "-p", &cluster.port.to_string(), "-U", "opsh", "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .output()
        .expect("psql");
    run_of(output)
}

fn on_host(world: &World, host: &str, script: &str) -> crate::support::Run {
    run_of(world.lab.host_exec(host, &["sh", "-c", script]).expect("host exec"))
}

#[test]
fn coordinators_and_datanodes_answer_alter_node_and_refuse_what_opentenbase_refuses() {
    let world = World::with_topology("otb");
    let password = world.password();
    let otb1 = world.lab.host("otb1").expect("otb1").address.clone();
    let otb2 = world.lab.host("otb2").expect("otb2").address.clone();
    let routes = psql(&world, "cn01-otb1", "SELECT node_name || ' ' || node_type::text || ' ' || node_host || ':' || node_port FROM pgxc_node ORDER BY node_name", &password);
    assert_eq!(
        routes.stdout.trim(),
        format!("cn01 C {otb1}:15432\ncn02 C {otb2}:15432\ndn01 D {otb1}:23001\ndn02 D {otb2}:23002\ngtm_1 G {otb1}:21000"),
        "{routes:?}"
    );
    let altered = psql(&world, "cn02-otb2", &format!("alter node dn01 with (host='{otb2}',port=23001);"), &password);
    assert_eq!(altered.code, 0, "{altered:?}");
    let gtm = psql(&world, "cn02-otb2", &format!("ALTER GTM NODE gtm_1 WITH (host='{otb2}', port=21000)"), &password);
    assert_eq!(gtm.code, 0, "{gtm:?}");
    assert_eq!(psql(&world, "cn02-otb2", "SELECT pgxc_pool_reload()", &password).stdout.trim(), "t");
    let now = psql(&world, "cn02-otb2", "SELECT string_agg(node_host, ',' ORDER BY node_name) FROM pgxc_node WHERE node_name IN ('dn01', 'gtm_1')", &password);
    assert_eq!(now.stdout.trim(), format!("{otb2},{otb2}"));
    for (sql, refusal) in [
        ("alter node dn09 with (host='x', port=1)", "PGXC Node dn09: object not defined"),
        ("alter node dn01 with (hots='x')", "option \"hots\" not recognized"),
        ("alter node dn01 with (port=70000)", "port value is out of range"),
        ("alter gtm node dn01 with (port=1)", "PGXC Node dn01: object not defined"),
    ] {
        let run = psql(&world, "cn02-otb2", sql, &password);
        assert!(run.code != 0 && run.stderr.contains(refusal), "{sql}: {run:?}");
    }
    // A standby's catalog follows its master by streaming replication, and refuses changes.
    let on_master = psql(&world, "dn01-otb1", &format!("alter node cn01 with (host='{otb2}', port=15433)"), &password);
    assert_eq!(on_master.code, 0, "{on_master:?}");
    let replicated = crate::support::wait_for(10, "the route change on dn01's standby", || {
        let run = psql(&world, "dn01-otb2", "SELECT pg_is_in_recovery()::text || ' ' || node_host || ':' || node_port FROM pgxc_node WHERE node_name = 'cn01'", &password);
        (run.stdout.trim() == format!("true {otb2}:15433")).then_some(run)
    });
    assert_eq!(replicated.code, 0);
    let on_standby = psql(&world, "dn01-otb2", &format!("alter node cn01 with (host='{otb2}')"), &password);
    assert!(on_standby.stderr.contains("read-only transaction"), "{on_standby:?}");
    let wrong = psql(&world, "dn01-otb1", "SELECT 1", "not-the-password");
    assert!(wrong.stderr.contains("password authentication failed"), "SCRAM passes through the proxy: {wrong:?}");
}

#[test]
fn pg_ctl_and_gtm_ctl_take_node_types_and_refuse_like_the_real_tools() {
    let world = World::with_topology("otb");
    let bad_type = on_host(&world, "otb1", "pg_ctl -Z gtm_proxy -D /usr/local/opentenbase/data/dn01 status");
    assert!(bad_type.code == 1 && bad_type.stderr.contains("-Z option must be"), "{bad_type:?}");
    let status = on_host(&world, "otb1", "pg_ctl -Z datanode -D /usr/local/opentenbase/data/dn01 status");
    assert!(status.code == 0 && status.stdout.contains("server is running"), "{status:?}");
    let gtm = "/usr/local/opentenbase/data/gtm";
    let no_type = on_host(&world, "otb2", &format!("gtm_ctl -D {gtm} status"));
    assert!(no_type.code == 1 && no_type.stderr.contains("option -Z must be specified"), "{no_type:?}");
    let master = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} promote"));
    assert!(master.code == 1 && master.stderr.contains("not in standby mode"), "{master:?}");
    let promoted = on_host(&world, "otb2", &format!("gtm_ctl -Z gtm -D {gtm} promote && gtm_ctl -Z gtm -D {gtm} status"));
    assert!(promoted.code == 0 && promoted.stdout.contains("role: master"), "{promoted:?}");
    let stopped = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} stop; gtm_ctl -Z gtm -D {gtm} status"));
    assert!(stopped.code == 3 && stopped.stdout.contains("no server running"), "{stopped:?}");
    let again = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} stop"));
    assert!(again.code == 1 && again.stderr.contains("Is server running?"), "{again:?}");
    // The same path on the two servers is two different GTMs: each server has its own.
    assert!(on_host(&world, "otb2", &format!("gtm_ctl -Z gtm -D {gtm} status")).stdout.contains("server is running"));
}

#[test]
fn a_crashed_node_refuses_connections_and_starts_again() {
    let world = World::with_topology("otb");
    let password = world.password();
    world.lab.crash("dn01-otb1").expect("crash");
    let down = psql(&world, "dn01-otb1", "SELECT 1", &password);
    assert_ne!(down.code, 0, "{down:?}");
    world.lab.start("dn01-otb1").expect("start");
    let up = psql(&world, "dn01-otb1", "SELECT pg_is_in_recovery()", &password);
    assert_eq!(up.stdout.trim(), "f", "{up:?}");
}
