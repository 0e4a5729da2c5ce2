//! The sandbox: a plugin that panics, loops or hogs memory fails its command with a clear
//! message; the shell and other plugins go on. Third-party plugins load from the data dir, and
//! compiled components are cached.

use crate::support::{World, opsh_at};

#[test]
fn a_panicking_plugin_fails_its_command_with_its_message() {
    let world = World::new();
    let run = world.opsh(&["probe", "trap"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("plugin probe failed: it panicked") && run.stderr.contains("probe was asked to panic"), "{run:?}");
}

#[test]
fn a_runaway_plugin_is_stopped_at_its_cpu_budget() {
    let world = World::new();
    let run = world.opsh(&["probe", "spin"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("used more than 1.0 s of CPU in one call"), "{run:?}");
}

#[test]
fn a_plugin_that_hogs_memory_is_stopped_at_its_limit() {
    let world = World::new();
    let run = world.opsh(&["probe", "hog"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("plugin probe failed"), "{run:?}");
    assert!(run.stderr.contains("memory") || run.stderr.contains("alloc"), "{run:?}");
}

#[test]
fn the_shell_lives_on_after_a_plugin_traps() {
    let world = World::new();
    let text = world.repl(&[(b"probe trap\n", 1500), (b"pg status\n", 1500), (b"exit\n", 500)]);
    assert!(text.contains("plugin probe failed: it panicked"), "{text}");
    assert!(text.contains("alpha-app") && text.contains("primary"), "pg status ran after the trap, in the same shell: {text}");
}

#[test]
fn third_party_plugins_load_from_the_data_dir_and_broken_ones_are_reported() {
    let world = World::new();
    std::fs::write(world.home.path().join("data/plugins/broken.wasm"), b"not a component").expect("write");
    let run = world.opsh(&["plugins"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("probe") && run.stdout.contains("data/plugins/probe.wasm"), "{run:?}");
    assert!(run.stdout.contains("pg") && run.stdout.contains("bundled"), "{run:?}");
    assert!(run.all().contains("broken.wasm is not a valid opsh plugin component"), "{run:?}");
    let cached: Vec<_> = std::fs::read_dir(world.home.path().join("cache/components")).expect("cache dir").flatten().collect();
    assert!(cached.len() >= 2, "compiled components are cached: {cached:?}");
}

/// The compiled components in a cache directory.
fn compiled(cache: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("components"))
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.ends_with(".cwasm")).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn one_command_on_the_command_line_compiles_only_its_own_plugin() {
    let home = tempfile::tempdir().expect("home");
    let cache = home.path().join("cache");
    let run = opsh_at(home.path(), &["help", "pg"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(compiled(&cache).len(), 5, "help is a built-in: every bundled plugin is loaded for it: {run:?}");
    std::fs::remove_dir_all(&cache).expect("a cold cache again");

    // A plugin command with no inventory fails (nothing to read); the plugin itself says so, and
    // only its own component was compiled.
    let plugin_answers = |args: &[&str], answer: &str| {
        let run = opsh_at(home.path(), args);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains(answer), "the plugin itself answered: {run:?}");
        assert!(!run.stderr.contains("plugin not loaded"), "{run:?}");
    };
    plugin_answers(&["pg", "status"], "no database is granted to pg");
    let after_pg = compiled(&cache);
    assert_eq!(after_pg.len(), 1, "pg's component only: {after_pg:?}");
    plugin_answers(&["otb", "status"], "otb status: no topology in the inventory has plugin = \"otb\"");
    let after_otb = compiled(&cache);
    assert_eq!(after_otb.len(), 2, "and now otb's beside it: {after_otb:?}");
    assert!(after_otb.contains(&after_pg[0]));

    // A misspelt plugin name is no bundled plugin: everything is loaded to say what it could be.
    let run = opsh_at(home.path(), &["tungstn", "status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("did you mean tungsten"), "{run:?}");
    assert_eq!(compiled(&cache).len(), 5);
}

#[test]
fn a_plugin_cannot_reach_files_environment_or_the_network_on_its_own() {
    let world = World::new();
    let alpha = world.lab.host("alpha").expect("alpha").address.clone();
    let run = world.opsh(&["--output", "json", "probe", "escape", &format!("{alpha}:5432")]);
    assert_eq!(run.code, 0, "{run:?}");
    let cell = |c: &str| crate::support::json_cell(&run, c);
    assert!(cell("file").starts_with("denied"), "{run:?}");
    assert_eq!(cell("env"), "0 variables", "{run:?}");
    assert!(cell("network").starts_with("denied"), "the database is reachable only through the sql capability: {run:?}");
}

#[test]
fn ctrl_c_in_the_shell_cancels_a_reading_command_and_the_shell_goes_on() {
    let world = World::new();
    // 0x03 is Ctrl-C typed at the terminal.
    let text = world.repl(&[(b"probe exec alpha 'sleep 20'\n", 2500), (&[3], 1500), (b"pg status\n", 2500), (b"exit\n", 500)]);
    assert!(text.contains("cancelled (nothing was being changed)"), "{text}");
    assert!(text.contains("alpha-app") && text.contains("primary"), "the same shell ran pg status afterwards: {text}");
}

/// Every Ctrl-C cancels a reading command within a second — one waiting on a remote command and
/// one whose plugin only computes (its CPU budget is 5 s: the guest yields to the shell every
/// 100 ms) — and the same shell goes on.
#[test]
fn every_ctrl_c_cancels_a_read_within_a_second_even_one_that_only_computes() {
    let world = World::new();
    let mut shell = world.shell();
    for command in ["probe spin", "probe exec alpha 'sleep 20'", "probe spin", "probe exec alpha 'sleep 20'", "probe spin"] {
        shell.type_keys(format!("{command}\n").as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(700));
        let (shown, took) = shell.keys(&[3], "cancelled (nothing was being changed)", 20);
        assert!(took < std::time::Duration::from_secs(1), "`{command}` was cancelled {took:?} after Ctrl-C: {shown}");
        assert!(!shown.contains("CPU"), "cancelled, not stopped by its CPU budget: {shown}");
    }
    let (shown, _) = shell.run("pg status", "alpha-app", 60);
    assert!(shown.contains("primary"), "the same shell still runs commands: {shown}");
}
