//! `xdb` on a replication system shaped unlike seed 002 (`xdb-wide`: nodes by DNS name on ports
//! 5444 and 5455, xDB's own users xdbpub/xdbsub, three tables of schema `sales`, the servers on a
//! host of their own, ENABLE ALWAYS capture triggers). Outcomes are read from the databases, the
//! configuration file and pg_hba.conf themselves, and replication is driven by the stand-in CLI.

use crate::support::{Run, World, run_of};

fn sync(world: &World) -> Run {
    run_of(
        world
            .lab
            .host_exec("xsrv", &["/usr/local/xdb/bin/edb-repcli", "-dosynchronize", "sales_sub", "-repsvrfile", "/usr/local/xdb/etc/xdb_subsvrfile.conf"])
            .expect("repcli"),
    )
}

fn dns(world: &World, host: &str) -> String {
    world.lab.host(host).expect("host").dns.clone().expect("dns")
}

#[test]
fn a_switchover_records_what_xdb_records_by_dns_name_and_keeps_the_trigger_modes() {
    let world = World::with_topology("xdb-wide");
    let run = world.opsh(&["--yes", "xdb", "switchover"]);
    assert_eq!(run.code, 0, "{run:?}");
    let recorded = world.sql(
        "sub-b",
        "salesdb",
        "SELECT (SELECT format('%s:%s %s', db_host, db_port, db_user) FROM _edb_replicator_pub.xdb_pub_database) || ' / ' || (SELECT format('%s:%s %s', db_host, db_port, db_user) FROM _edb_replicator_sub.xdb_sub_database)",
    );
    assert_eq!(recorded, format!("{}:5455 xdbsub / {}:5444 xdbpub", dns(&world, "sub-b"), dns(&world, "pub-a")), "the control schema on the new publication");
    let conf = std::fs::read_to_string(world.lab.host_file("xsrv", "/usr/local/etc/edb-repl.conf")).expect("conf");
    assert!(
        conf.contains(&format!("\nhost={}\n", dns(&world, "sub-b")))
            && conf.contains("\nport=5455\n")
            && conf.contains("\nuser=xdbsub\n")
            && conf.contains("\ndatabase=salesdb\n"),
        "the controller is named as xDB records it — its DNS name, port and user, not opsh's login:\n{conf}"
    );
    let hba = std::fs::read_to_string(world.lab.cluster("sub-b").expect("cluster").data_dir.join("pg_hba.conf")).expect("hba");
    let xsrv = world.lab.host("xsrv").expect("xsrv").address.clone();
    assert!(
        hba.contains(&format!("\nhost salesdb xdbsub {xsrv}/32 scram-sha-256\n")),
        "an address rule for xDB's user, with the method the server uses:\n{hba}"
    );
    assert_eq!(
        world.sql(
            "sub-b",
            "salesdb",
            "SELECT string_agg(tgname || '=' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger WHERE tgname LIKE 'rrp%orders'"
        ),
        "rrpd_sales_orders=A,rrpi_sales_orders=A,rrpu_sales_orders=A",
        "ENABLE ALWAYS survived the move"
    );
    assert_eq!(world.sql("pub-a", "salesdb", "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rrp%'"), "0");
    world.sql(
        "sub-b",
        "salesdb",
        "INSERT INTO sales.orders (id, region) VALUES (3, 'JP'); INSERT INTO sales.line_items VALUES (3, 1, 'C-300', 7), (3, 2, 'A-100', 1);",
    );
    let synced = sync(&world);
    assert_eq!(synced.code, 0, "{synced:?}");
    assert_eq!(
        world.sql("pub-a", "salesdb", "SELECT string_agg(sku || 'x' || qty, ',' ORDER BY line) FROM sales.line_items WHERE order_id = 3"),
        "C-300x7,A-100x1",
        "replication flows sub-b -> pub-a"
    );
}

#[test]
fn a_recorded_user_that_is_not_a_superuser_or_an_ungranted_server_host_is_refused_and_nothing_changes() {
    let world = World::with_topology("xdb-wide");
    world.sql("sub-b", "postgres", "ALTER ROLE xdbsub NOSUPERUSER");
    let refused = world.opsh(&["--yes", "xdb", "switchover"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("the user xDB records for sub-b-salesdb, xdbsub, is not a superuser"), "xDB's user, not opsh's login: {refused:?}");
    assert_eq!(world.sql("pub-a", "salesdb", "SELECT count(*) FROM pg_namespace WHERE nspname = '_edb_replicator_pub'"), "1", "nothing was changed");
    world.sql("sub-b", "postgres", "ALTER ROLE xdbsub SUPERUSER");

    // Without the server host in the topology, the plugin may not ask its services: it says so.
    let mut inventory: toml::Table = toml::from_str(&std::fs::read_to_string(&world.inventory).expect("inventory")).expect("toml");
    let members = inventory["topologies"]["sales"]["members"].as_table().cloned().expect("members");
    let mut members = members;
    assert!(members.remove("server").is_some(), "the server host was a member");
    inventory["topologies"]["sales"].as_table_mut().expect("sales").insert("members".into(), members.into());
    std::fs::write(&world.inventory, toml::to_string(&inventory).expect("toml")).expect("inventory");
    let ungranted = world.opsh(&["--yes", "xdb", "switchover"]);
    assert_eq!(ungranted.code, 5, "{ungranted:?}");
    assert!(
        ungranted.stderr.contains("xsrv") && ungranted.stderr.contains("not granted") && !ungranted.stderr.contains("do not run"),
        "not granted, never 'not running': {ungranted:?}"
    );
}
