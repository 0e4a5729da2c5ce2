//! Bad input and broken targets: a clear message naming the target and what to do, the right
//! exit code, and nothing changed.

use crate::support::World;

#[test]
fn unknown_commands_and_bad_arguments_are_usage_errors() {
    let world = World::new();
    let run = world.opsh(&["frobnicate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown command \"frobnicate\"") && run.stderr.contains("try `help`"), "{run:?}");
    let run = world.opsh(&["probe", "insert", "alpha-app"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("probe insert: VALUE is required"), "{run:?}");
    let run = world.opsh(&["probe", "sql", "alpha-app", "--colour", "red"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown option --colour"), "{run:?}");
    let run = world.opsh(&["-c", "probe exec alpha 'unterminated"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("check the quotes"), "{run:?}");
}

#[test]
fn targets_outside_the_grants_are_refused_with_how_to_grant() {
    let world = World::new();
    let run = world.opsh(&["probe", "sql", "alpha-postgres"]);
    assert_eq!(run.code, 5, "refused: {run:?}");
    assert!(run.stderr.contains("may not run SQL on database alpha-postgres") && run.stderr.contains("[grants.probe]"), "{run:?}");
}

#[test]
fn unknown_targets_are_named() {
    let world = World::new();
    let run = world.opsh(&["probe", "sql", "ghost-db"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("database ghost-db is not in the inventory"), "{run:?}");
    let run = world.opsh(&["probe", "exec", "ghost-host", "true"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("host ghost-host is not in the inventory"), "{run:?}");
}

#[test]
fn an_unreachable_host_is_reported_as_such_and_works_again_when_healed() {
    let mut world = World::new();
    world.lab.cut("beta").expect("cut");
    let run = world.opsh(&["probe", "exec", "beta", "true"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("host beta") && run.stderr.contains("check that the host is up"), "{run:?}");
    let run = world.opsh(&["probe", "sql", "beta-app"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("database beta-app") && run.stderr.contains("no answer within 3 s"), "{run:?}");
    world.lab.heal("beta").expect("heal");
    let run = world.opsh(&["probe", "exec", "beta", "true"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn a_crashed_database_is_reported_with_its_address_and_what_to_check() {
    let world = World::new();
    world.lab.crash("beta").expect("crash");
    let run = world.opsh(&["probe", "sql", "beta-app"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("database beta-app (host beta port 5432") && run.stderr.contains("check that the server is up"), "{run:?}");
}

#[test]
fn a_wrong_password_is_an_authentication_error_that_names_the_source() {
    let world = World::new();
    let wrong = world.home.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let text = std::fs::read_to_string(&world.inventory).expect("inventory");
    let real = world.lab.state.dir.join("secrets/db-password").display().to_string();
    std::fs::write(&world.inventory, text.replace(&real, &wrong.display().to_string())).expect("rewrite");
    let run = world.opsh(&["probe", "sql", "alpha-app"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("password authentication failed for user \"opsh\"") && run.stderr.contains("check the password source"), "{run:?}");
    assert!(!run.all().contains("not-the-password"), "the wrong password is not shown either");
}

#[test]
fn a_command_that_outlives_its_timeout_is_outcome_unknown() {
    let world = World::new();
    let run = world.opsh(&["probe", "exec", "alpha", "sleep 5", "--timeout-ms", "500"]);
    assert_eq!(run.code, 4, "outcome unknown: {run:?}");
    assert!(run.stderr.contains("did not finish within 0.5 s: outcome unknown"), "{run:?}");
}

#[test]
fn a_malformed_or_missing_inventory_is_a_usage_error_with_the_place() {
    let world = World::new();
    let bad = world.home.path().join("bad.toml");
    std::fs::write(&bad, "[hosts.a]\naddress = '127.0.0.2'\nservice-manager = 'upstart'\n").expect("write");
    let run = world.command().arg("--inventory").arg(&bad).arg("inventory").output().map(crate::support::run_of).expect("run");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("bad.toml is malformed") && run.stderr.contains("service-manager"), "{run:?}");
    let run = world.command().args(["--inventory", "/nonexistent/inventory.toml", "inventory"]).output().map(crate::support::run_of).expect("run");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read the inventory /nonexistent/inventory.toml") && run.stderr.contains("--inventory PATH"), "{run:?}");
}

#[test]
fn a_host_whose_key_does_not_match_known_hosts_is_refused() {
    let world = World::new();
    let known_hosts = world.lab.state.dir.join("ssh/known_hosts");
    let text = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    let alpha = world.lab.host("alpha").expect("alpha").address.clone();
    let beta_key = text.lines().find(|l| !l.contains(&format!("[{alpha}]"))).expect("beta line").split_once(' ').expect("key").1.to_string();
    // alpha now "presents" beta's key as far as known_hosts is concerned: a man in the middle.
    let forged: String =
        text.lines().map(|l| if l.contains(&format!("[{alpha}]")) { format!("[{alpha}]:2222 {beta_key}\n") } else { format!("{l}\n") }).collect();
    std::fs::write(&known_hosts, forged).expect("write");
    let run = world.opsh(&["probe", "exec", "alpha", "true"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("host alpha: its host key is not in known_hosts or has changed"), "{run:?}");
}

fn ssh_processes() -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " "))
        .filter(|c| c.starts_with("ssh "))
        .collect()
}

/// Whether an ssh control master to `address` runs (`ssh … -M … ADDRESS`, as openssh starts it).
fn ssh_master_to(address: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        let args: Vec<String> =
            std::fs::read(entry.path().join("cmdline")).unwrap_or_default().split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        args.first().is_some_and(|a| a == "ssh" || a.ends_with("/ssh"))
            && args.iter().any(|a| a == "-M")
            && args.iter().any(|a| a == address || a.ends_with(&format!("@{address}")))
    })
}

/// One opsh process across a host's freeze: its ssh master to that host dies (keep-alive gives
/// up) while opsh runs something else; after the host is back, the next command on it runs on a
/// fresh connection — it is neither refused with ssh's "Could not resolve hostname none" nor
/// counted as run.
#[test]
fn a_long_lived_opsh_reconnects_to_a_host_that_froze_and_came_back() {
    let mut world = World::new();
    let beta = world.lab.host("beta").expect("beta").address.clone();
    let script = world.home.path().join("across-a-freeze.opsh");
    std::fs::write(
        &script,
        "probe exec beta \"echo one > /usr/local/var/lib/one\"\n\
         probe exec alpha \"while [ ! -e /usr/local/var/lib/go ]; do sleep 0.2; done\" --timeout-ms 55000\n\
         probe exec beta \"echo two > /usr/local/var/lib/two\"\n",
    )
    .expect("script");
    let child = world.spawn(&["run", &script.to_string_lossy()]);
    crate::support::wait_for(30, "line 1 on beta", || world.lab.host_file("beta", "/usr/local/var/lib/one").exists().then_some(()));
    assert!(ssh_master_to(&beta), "line 1 left a multiplexed master to beta: {:?}", ssh_processes());
    world.lab.cut("beta").expect("cut");
    crate::support::wait_for(45, "ssh's keep-alive to give up on the frozen beta", || (!ssh_master_to(&beta)).then_some(()));
    world.lab.heal("beta").expect("heal");
    std::fs::write(world.lab.host_file("alpha", "/usr/local/var/lib/go"), "").expect("let line 2 end");
    let run = crate::support::finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(world.lab.host_file("beta", "/usr/local/var/lib/two")).unwrap_or_default(), "two\n", "line 3 ran on beta: {run:?}");
    assert!(!run.all().contains("resolve hostname"), "{run:?}");
}
