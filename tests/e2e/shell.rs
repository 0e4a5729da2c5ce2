//! The shell's contract for scripts and cron: confirmation, scripts, output formats.

use crate::support::{World, run_of};

fn with_probe_table(world: &World) {
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
}

#[test]
fn without_a_terminal_and_without_yes_a_change_is_refused_and_nothing_changes() {
    let world = World::new();
    with_probe_table(&world);
    let run = world.opsh(&["probe", "insert", "alpha-app", "unconfirmed"]);
    assert_eq!(run.code, 5, "refused: {run:?}");
    assert!(run.stderr.contains("no terminal to confirm on: add --yes"), "{run:?}");
    assert!(run.stdout.contains("Plan: probe insert") && run.stdout.contains("INSERT INTO probe_log"), "the plan is shown: {run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "0");
}

#[test]
fn a_script_stops_at_its_first_failing_line() {
    let world = World::new();
    with_probe_table(&world);
    let script = world.home.path().join("failover.opsh");
    std::fs::write(
        &script,
        "# a runbook script\nprobe insert alpha-app first --yes\n\nprobe write-in-plan alpha-app --yes\nprobe insert alpha-app third --yes\n",
    )
    .expect("write script");
    let run = world.opsh(&["run", script.to_str().expect("utf-8 path")]);
    // Line 2 changed the database before line 4 failed: "changed, then failed", not "nothing
    // was changed".
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("failover.opsh:4: stopped here (exit 3)"), "{run:?}");
    assert!(run.stderr.contains("earlier lines changed things: line 2: run ") && run.stderr.contains("changed what it planned"), "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT string_agg(value, ',') FROM probe_log"), "first");
    // Nothing changed before the failing line: it keeps its own code.
    std::fs::write(
        &script,
        "probe write-in-plan alpha-app --yes
probe insert alpha-app fourth --yes
",
    )
    .expect("write script");
    let run = world.opsh(&["run", script.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stderr.contains("earlier lines changed"), "{run:?}");
}

#[test]
fn a_script_with_a_bad_line_runs_nothing() {
    let world = World::new();
    with_probe_table(&world);
    let script = world.home.path().join("typo.opsh");
    std::fs::write(&script, "probe insert alpha-app first --yes\nprobe insrt alpha-app second --yes\n").expect("write script");
    let run = world.opsh(&["run", script.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("typo.opsh:2: probe has no command \"insrt\"") && run.stderr.contains("nothing was changed"), "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "0");
}

#[test]
fn inventory_lists_the_lab_hosts_and_no_secret() {
    let world = World::new();
    let run = world.command().arg("--inventory").arg(world.lab.inventory_path()).args(["-c", "inventory"]).output().map(run_of).expect("run");
    assert_eq!(run.code, 0, "{run:?}");
    for host in &world.lab.state.hosts {
        assert!(run.stdout.contains(&host.name) && run.stdout.contains(&host.address), "{run:?}");
    }
    assert!(run.stdout.contains("file ") && run.stdout.contains("secrets/db-password"), "where the password comes from is shown: {run:?}");
    assert!(!run.all().contains(&world.password()), "{run:?}");
}

#[test]
fn dry_run_plans_come_out_as_json_and_change_nothing() {
    let world = World::new();
    with_probe_table(&world);
    let run = world.opsh(&["--output", "json", "--dry-run", "probe", "insert", "alpha-app", "x"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON document");
    assert_eq!(doc["outcome"], "planned");
    assert_eq!(doc["exit"], 0);
    assert_eq!(doc["steps"][0]["id"], "insert-row");
    assert_eq!(doc["steps"][0]["effects"][0]["kind"], "sql");
    assert_eq!(doc["steps"][0]["effects"][0]["statements"][0], "INSERT INTO probe_log(value) VALUES ($1)");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "0");
}

#[test]
fn help_describes_plugin_commands_in_the_operators_language() {
    let world = World::new();
    let run = world.opsh(&["help"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("pg set-config") && run.stdout.contains("probe insert"), "{run:?}");
    let run = world.opsh(&["--lang", "ja", "help", "pg", "set-config"]);
    assert!(run.stdout.contains("サーバー設定を変更") && run.stdout.contains("pg set-config DATABASE NAME VALUE"), "{run:?}");
}

#[test]
fn the_bundled_pg_plugin_changes_a_setting_and_verifies_it() {
    let world = World::new();
    let run = world.opsh(&["--yes", "pg", "set-config", "beta-app", "work_mem", "8MB"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("beta", "app", "SHOW work_mem"), "8MB");
    assert_eq!(world.sql("alpha", "app", "SHOW work_mem"), "4MB", "only beta changed");
    let run = world.opsh(&["--yes", "pg", "set-config", "beta-app", "no_such_setting", "1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("beta-app has no setting named \"no_such_setting\""), "{run:?}");
}
