//! Plugins built against opsh:plugin@0.2.0 (the `vtwo` fixture, `tests/fixtures/v2-plugin`):
//! the host performs a declared step from its effects, exactly as the operator confirmed them,
//! and holds a custom step to the effects it declared. Outcomes are checked with psql and on the
//! host's disk.

use crate::support::{World, finish, new_run, signal, wait_for};

const GRANTS: &str = "\n[grants.vtwo]\nsql = [\"alpha-app\"]\nssh = [\"alpha\"]\nprobes = [\"grep -c v2 /usr/local/var/lib/v2.log\"]\n";

fn v2_world() -> World {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh; INSERT INTO probe_log VALUES ('keep');");
    let wasm = crate::support::target_dir().parent().expect("target").join("wasm-plugins/wasm32-wasip2/plugin/opsh_v2_plugin.wasm");
    std::fs::copy(&wasm, world.home.path().join("data/plugins/vtwo.wasm"))
        .unwrap_or_else(|e| panic!("the 0.2 fixture plugin was not built at {}: {e}", wasm.display()));
    let mut inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    inventory.push_str(GRANTS);
    std::fs::write(&world.inventory, inventory).expect("write inventory");
    world
}

fn count(world: &World, value: &str) -> String {
    world.sql("alpha", "app", &format!("SELECT count(*) FROM probe_log WHERE value = '{value}'")).trim().to_string()
}

/// What the journal says the host performed is, byte for byte, what `--dry-run` showed; the
/// plugin's `apply` is never called (it fails the step if it is).
#[test]
fn a_declared_step_is_performed_by_the_host_exactly_as_shown() {
    let world = v2_world();
    let shown = world.opsh(&["vtwo", "declared", "alpha-app", "alpha", "--dry-run"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    for line in [
        "sql alpha-app: INSERT INTO probe_log(value) VALUES ($1)",
        "| with $1 = 'v2-declared'",
        "| exactly 1 row(s), else rolled back",
        "wait until v2.log has its line",
    ] {
        assert!(shown.stdout.contains(line), "{line:?} not shown: {shown:?}");
    }
    assert!(!shown.stdout.contains("built for opsh:plugin 0.1"), "{shown:?}");
    let json = world.opsh(&["--output", "json", "vtwo", "declared", "alpha-app", "alpha", "--dry-run"]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(count(&world, "v2-declared"), "0", "a dry run changed nothing");

    let before = world.runs();
    let run = world.opsh(&["--yes", "vtwo", "declared", "alpha-app", "alpha"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(count(&world, "v2-declared"), "1");
    assert_eq!(std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/var/lib/v2.log")).unwrap_or_default(), "v2\n");
    let id = crate::support::new_run(&world, &before);
    let records = world.records(&id);
    assert_eq!(records[0]["previews"], planned["steps"], "the journaled plan is the one shown");
    assert!(records[0]["plan"]["steps"].as_array().expect("steps").iter().all(|s| s["runs"] == "host"), "{:?}", records[0]["plan"]);
}

#[test]
fn an_expected_row_count_that_does_not_hold_rolls_the_step_back() {
    let world = v2_world();
    let run = world.opsh(&["--yes", "vtwo", "mismatch", "alpha-app"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("affected 1 row(s), the plan expected exactly 2; rolled back"), "{run:?}");
    assert_eq!((count(&world, "keep"), count(&world, "changed")), ("1".into(), "0".into()), "the UPDATE was rolled back");
}

/// A custom step's apply makes its one approved change; a DELETE it did not declare runs as a
/// read (PostgreSQL refuses it) and a command it did not declare is refused before it runs.
#[test]
fn a_custom_step_makes_only_the_changes_it_declared() {
    let world = v2_world();
    let shown = world.opsh(&["vtwo", "custom", "alpha-app", "alpha", "--dry-run"]);
    assert!(shown.stdout.contains("not previewable, applied by the plugin (each change must be one below): the plugin decides at run time"), "{shown:?}");
    let run = world.opsh(&["--yes", "vtwo", "custom", "alpha-app", "alpha"]);
    assert_eq!(run.code, 0, "{run:?}");
    let note = run.all();
    for part in ["approved insert: 1 row", "again: refused", "delete: refused", "other input: refused", "input: ran: Some(0)", "touch: refused"] {
        assert!(note.contains(part), "{part:?}: {run:?}");
    }
    assert!(note.contains("read-only transaction") && note.contains("is not in the approved plan"), "{run:?}");
    assert_eq!((count(&world, "keep"), count(&world, "v2-custom")), ("1".into(), "1".into()), "the approved INSERT ran once, the DELETE not at all");
    assert_eq!(
        std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/var/lib/v2-input")).unwrap_or_default(),
        "approved\n",
        "only the approved input"
    );
    assert!(!world.lab.host_file("alpha", "/usr/local/var/lib/v2-evil").exists(), "the undeclared command did not run");
}

/// A plugin built against 0.1 keeps loading and running; its plans say that it applies its own
/// steps, unbound to the preview.
#[test]
fn a_plugin_built_for_0_1_still_runs_and_its_plan_says_so() {
    let world = v2_world();
    let plugins = world.opsh(&["plugins"]);
    let row = |name: &str| plugins.stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(row("vtwo").contains("0.2") && row("probe").contains("0.1"), "{plugins:?}");
    let plan = world.opsh(&["probe", "insert", "alpha-app", "x", "--dry-run"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("(a plugin built for opsh:plugin 0.1: it applies its steps itself; what it changes is not bound to this preview)"),
        "{plan:?}"
    );
    let run = world.opsh(&["--yes", "probe", "insert", "alpha-app", "x"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(count(&world, "x"), "1");
}

/// A saved plan file edited after it was made: what is shown comes from the plan that would run
/// (not the file's previews), and a 0.2 plugin's steps turned into "the plugin applies it" are
/// refused.
#[test]
fn an_edited_plan_file_shows_what_would_run_or_is_refused() {
    let world = v2_world();
    let file = world.home.path().join("v2.plan");
    let file_arg = file.display().to_string();
    let saved = world.opsh(&["plan", "vtwo", "declared", "alpha-app", "alpha", "--out", &file_arg]);
    assert_eq!(saved.code, 0, "{saved:?}");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("plan")).expect("json");
    doc["previews"][0]["effects"][0]["statements"][0] = "SELECT 1".into();
    std::fs::write(&file, doc.to_string()).expect("edit previews");
    let shown = world.opsh(&["apply", &file_arg, "--dry-run"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("INSERT INTO probe_log(value) VALUES ($1)") && !shown.stdout.contains("SELECT 1"), "{shown:?}");
    for step in doc["plan"]["steps"].as_array_mut().expect("steps") {
        step.as_object_mut().expect("step").remove("runs");
    }
    std::fs::write(&file, doc.to_string()).expect("edit runs");
    let refused = world.opsh(&["--yes", "apply", &file_arg]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("was planned for a plugin built against another opsh:plugin version"), "{refused:?}");
    assert_eq!(count(&world, "v2-declared"), "0", "nothing ran");
}

/// The bundled `pg` plugin is built against 0.2: the host runs its ALTER SYSTEM and reload and
/// waits for the value, exactly as the plan shows them; psql sees the new setting.
#[test]
fn the_bundled_pg_plugin_is_performed_by_the_host() {
    let world = World::new();
    let plan = world.opsh(&["pg", "set-config", "beta-app", "work_mem", "8MB", "--dry-run"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    for line in
        ["sql beta-app: ALTER SYSTEM SET \"work_mem\" = '8MB'", "sql beta-app: SELECT pg_reload_conf()", "wait until work_mem = 8MB is in effect (at most 5 s)"]
    {
        assert!(plan.stdout.contains(line), "{line:?}: {plan:?}");
    }
    assert!(!plan.stdout.contains("built for opsh:plugin 0.1"), "{plan:?}");
    let json = world.opsh(&["--output", "json", "pg", "set-config", "beta-app", "work_mem", "8MB", "--dry-run"]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    let before = world.runs();
    let run = world.opsh(&["--yes", "pg", "set-config", "beta-app", "work_mem", "8MB"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("beta", "app", "SHOW work_mem"), "8MB");
    let id = crate::support::new_run(&world, &before);
    let steps = world.records(&id)[0]["plan"]["steps"].clone();
    assert!(steps.as_array().is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["runs"] == "host")), "{steps}");
    assert_eq!(crate::support::performed_as_shown(&world, &planned, &id), 2, "ALTER SYSTEM and the reload, as shown");
    let journal = world.opsh(&["journal", &id]);
    assert!(journal.stdout.contains("sql beta-app: ALTER SYSTEM SET \"work_mem\" = '8MB'"), "journal RUN lists what the host sent: {journal:?}");
}

/// A step whose command cannot start (alpha's sshd is frozen: nothing answers a new ssh
/// connection) fails as "not started", and the journal says so: its effect is `unsent`, `journal
/// RUN` shows `nothing` sent for it, the JSON `sent: 0 of 1`. The step before it did change
/// alpha-app (exit 3); resume after sshd is back runs the command once.
#[test]
fn the_journal_says_a_failed_steps_command_never_started() {
    let world = v2_world();
    let sshd = world.lab.host("alpha").expect("alpha").init_pid;
    let before = world.runs();
    opsh_lab::procs::signal(sshd, libc::SIGSTOP);
    let run = world.opsh(&["--yes", "vtwo", "declared", "alpha-app", "alpha"]);
    opsh_lab::procs::signal(sshd, libc::SIGCONT);
    assert_eq!(run.code, 3, "step 1 changed alpha-app, step 2 failed: {run:?}");
    assert!(run.stderr.contains("not started: host alpha"), "{run:?}");
    assert_eq!(count(&world, "v2-declared"), "1");
    assert!(!world.lab.host_file("alpha", "/usr/local/var/lib/v2.log").exists(), "the command did not run");
    let id = crate::support::new_run(&world, &before);
    let records = world.records(&id);
    assert!(records.iter().any(|r| r["record"] == "performed" && r["index"] == 1), "{records:?}");
    assert!(records.iter().any(|r| r["record"] == "unsent" && r["index"] == 1), "{records:?}");
    let shown = world.opsh(&["journal", &id]);
    let row = shown.stdout.lines().find(|l| l.split_whitespace().nth(1) == Some("log")).unwrap_or_else(|| panic!("{shown:?}"));
    assert!(row.contains("failed") && row.contains("nothing"), "{row}");
    let json: serde_json::Value = serde_json::from_str(world.opsh(&["--output", "json", "journal", &id]).stdout.trim()).expect("journal JSON");
    assert_eq!(json["steps"][0]["sent"], serde_json::json!({ "effects": 1, "of": 1 }));
    assert_eq!(json["steps"][1]["sent"], serde_json::json!({ "effects": 0, "of": 1 }));

    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(count(&world, "v2-declared"), "1", "step 1 was not run again");
    assert_eq!(std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/var/lib/v2.log")).unwrap_or_default(), "v2\n");
}

/// kill -9 while a step's remote command runs: the command goes on on its host (ssh without a
/// pty sends it no hangup). An idempotent step whose check cannot tell is applied again on
/// resume — and without the host's run-once marker, its command would start a second time
/// beside the first. It runs once: the resume waits for the first to finish and takes its
/// outcome, and says so.
#[test]
fn kill_9_while_a_remote_command_runs_then_resume_waits_for_it_instead_of_running_it_again() {
    let world = v2_world();
    let log = "/usr/local/var/lib/once.log";
    let script = format!("echo start >> {log}; sleep 4; echo end >> {log}; echo finished");
    let before = world.runs();
    let child = world.spawn(&["--yes", "vtwo", "run", "alpha", &script]);
    let id = new_run(&world, &before);
    let host_log = world.lab.host_file("alpha", log);
    wait_for(60, "the command's start on alpha", || std::fs::read_to_string(&host_log).ok().filter(|l| l.contains("start")).map(|_| ()));
    signal(&child, libc::SIGKILL);
    assert_eq!(finish(child).code, -1, "killed by a signal");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(std::fs::read_to_string(&host_log).expect("the log"), "start\nend\n", "the command ran once, to its end: {resumed:?}");
    assert!(resumed.stderr.contains("not run again: an earlier, interrupted attempt of this step ran it to the end (exit 0)"), "{resumed:?}");
    let records = world.records(&id);
    let names: Vec<&str> = records.iter().filter(|r| r["record"] == "performed").filter_map(|r| r["once"].as_str()).collect();
    assert_eq!(names.len(), 2, "both attempts journaled the command's name: {records:?}");
    assert_eq!(names[0], names[1], "the resume sent it under the first attempt's name");

    // A step whose attempt ended with a seen outcome runs anew under a new name.
    let again = world.opsh(&["--yes", "vtwo", "run", "alpha", &script]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(std::fs::read_to_string(&host_log).expect("the log"), "start\nend\nstart\nend\n", "a new run runs it");
}
