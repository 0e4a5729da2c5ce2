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
    let routes = psql(
        &world,
        "cn01-otb1",
        "SELECT node_name || ' ' || node_type::text || ' ' || node_host || ':' || node_port FROM pgxc_node ORDER BY node_name",
        &password,
    );
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
    // ALTER NODE and ALTER GTM NODE find the row by name whatever its type (nodemgr.c).
    let by_name = psql(&world, "cn02-otb2", &format!("alter gtm node dn01 with (host='{otb2}', port=23001)"), &password);
    assert_eq!(by_name.code, 0, "{by_name:?}");
    for (sql, refusal) in [
        ("alter node dn09 with (host='x', port=1)", "PGXC Node dn09: object not defined"),
        ("alter node dn01 with (hots='x')", "incorrect option: hots"),
        ("alter node dn01 with (port=70000)", "port value is out of range"),
        ("alter node dn01 with (port='23001')", "invalid argument for port: \"23001\""),
        ("alter node DN09 with (port=1)", "PGXC Node dn09: object not defined"),
        ("alter gtm node gtm_1 with (port=21000)", "PGXC node gtm_1: host, port should be specified"),
        ("alter node dn01", "No options specified"),
        ("begin; select pgxc_pool_reload(); commit", "pgxc_pool_reload cannot run inside a transaction block"),
    ] {
        let run = psql(&world, "cn02-otb2", sql, &password);
        assert!(run.code != 0 && run.stderr.contains(refusal), "{sql}: {run:?}");
    }
    // A standby's catalog follows its master by streaming replication, and refuses changes.
    let on_master = psql(&world, "dn01-otb1", &format!("alter node cn01 with (host='{otb2}', port=15433)"), &password);
    assert_eq!(on_master.code, 0, "{on_master:?}");
    let replicated = crate::support::wait_for(10, "the route change on dn01's standby", || {
        let run = psql(
            &world,
            "dn01-otb2",
            "SELECT pg_is_in_recovery()::text || ' ' || node_host || ':' || node_port FROM pgxc_node WHERE node_name = 'cn01'",
            &password,
        );
        (run.stdout.trim() == format!("true {otb2}:15433")).then_some(run)
    });
    assert_eq!(replicated.code, 0);
    let on_standby = psql(&world, "dn01-otb2", &format!("alter node cn01 with (host='{otb2}')"), &password);
    assert!(on_standby.stderr.contains("cannot assign TransactionIds during recovery"), "{on_standby:?}");
    let wrong = psql(&world, "dn01-otb1", "SELECT 1", "not-the-password");
    assert!(wrong.stderr.contains("password authentication failed"), "SCRAM passes through the proxy: {wrong:?}");
}

#[test]
fn pg_ctl_and_gtm_ctl_take_options_and_refuse_like_the_real_tools() {
    let world = World::with_topology("otb");
    let dn01 = "/usr/local/opentenbase/data/dn01";
    // pg_ctl: any -Z is taken (and makes it silent); only start needs coordinator or datanode.
    let status = on_host(&world, "otb1", &format!("pg_ctl -Z gtm_proxy -D {dn01} status"));
    assert!(status.code == 0 && status.stdout.contains("server is running"), "{status:?}");
    let start = on_host(&world, "otb1", &format!("pg_ctl -D {dn01} start"));
    assert!(start.code == 1 && start.stderr.contains("Coordinator or Datanode option not specified (-Z)"), "{start:?}");
    let rewind = on_host(&world, "otb2", &format!("pg_rewind -D {dn01} -R --source-server='host=x'"));
    assert!(rewind.code == 1 && rewind.stderr.contains("invalid option -- 'R'"), "OpenTenBase's pg_rewind has no -R: {rewind:?}");
    let unnamed = on_host(&world, "otb2", &format!("pg_rewind -D {dn01} --source-server='host=x'"));
    assert!(unnamed.code == 1 && unnamed.stderr.contains("no node name specified (--node-name)"), "{unnamed:?}");
    // gtm_ctl, as src/gtm/gtm_ctl/gtm_ctl.c.
    let gtm = "/usr/local/opentenbase/data/gtm";
    let no_port = on_host(&world, "otb2", &format!("gtm_ctl -D {gtm} status"));
    assert!(no_port.code == 1 && no_port.stderr.contains("option -P GTM_port is not specified"), "status needs -P: {no_port:?}");
    let bad_type = on_host(&world, "otb2", &format!("gtm_ctl -Z gtm_master -D {gtm} -P 21000 status"));
    assert!(bad_type.code == 1 && bad_type.stderr.contains("gtm_master launch name set not correct"), "{bad_type:?}");
    let no_dir = on_host(&world, "otb2", "gtm_ctl stop");
    assert!(no_dir.code == 1 && no_dir.stderr.contains("no GTM/GTM Proxy directory specified "), "{no_dir:?}");
    let standby = on_host(&world, "otb2", &format!("gtm_ctl -D {gtm} -P 21000 status"));
    assert!(standby.code == 0 && standby.stdout.contains("current node [standby]"), "-Z is optional: {standby:?}");
    let wrong_port = on_host(&world, "otb2", &format!("gtm_ctl -D {gtm} -P 21999 status"));
    assert!(wrong_port.code == 0 && wrong_port.stdout.contains("can not get timestamp"), "{wrong_port:?}");
    // promote only signals: silent, exit 0 even on a master, and the standby turns primary later.
    let on_master = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} promote"));
    assert!(on_master.code == 0 && on_master.stdout.is_empty() && on_master.stderr.is_empty(), "{on_master:?}");
    let promoted = on_host(&world, "otb2", &format!("gtm_ctl -Z gtm -D {gtm} promote"));
    assert!(promoted.code == 0 && promoted.stdout.is_empty(), "{promoted:?}");
    let primary = crate::support::wait_for(10, "the GTM standby to turn primary", || {
        let run = on_host(&world, "otb2", &format!("gtm_ctl -Z gtm -D {gtm} -P 21000 status"));
        run.stdout.contains("current node [primary]").then_some(run)
    });
    assert_eq!(primary.code, 0);
    assert!(
        std::fs::read_to_string(world.lab.host_file("otb2", &format!("{gtm}/gtm.conf")))
            .expect("gtm.conf")
            .ends_with("startup = ACT\n#===========================================\n")
    );
    let stopped = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} stop; gtm_ctl -Z gtm -D {gtm} -P 21000 status"));
    assert!(
        stopped.code == 1 && stopped.stdout.contains("server stopped") && stopped.stderr.contains("could not open PID file"),
        "status never exits 3: {stopped:?}"
    );
    let again = on_host(&world, "otb1", &format!("gtm_ctl -Z gtm -D {gtm} stop"));
    assert!(again.code == 1 && again.stderr.contains("Is server running?"), "{again:?}");
    // The same path on the two servers is two different GTMs: each server has its own.
    assert!(on_host(&world, "otb2", &format!("gtm_ctl -Z gtm -D {gtm} -P 21000 status")).stdout.contains("server is running"));
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
