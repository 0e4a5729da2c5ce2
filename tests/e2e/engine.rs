//! The runbook engine: journal, resume after kill -9 at every point, stale plans, locks,
//! outcome unknown, parallel groups, retry, Ctrl-C, and the JSON schema.

use std::time::Duration;

use crate::support::{Run, World, finish, has, new_run, signal, wait_for};

/// The fixture pauses half of this before and half after each effect.
const PAUSE: &str = "1000";

/// What a user checks after the fixture runbook: the rows, the config file, the service, the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EndState {
    pub(crate) rows: String,
    pub(crate) conf: String,
    app: Option<i32>,
    pub(crate) log: String,
}

pub(crate) fn prepare(world: &World) {
    world.sql("alpha", "app", "CREATE TABLE IF NOT EXISTS probe_log(value text); GRANT ALL ON probe_log TO opsh; TRUNCATE probe_log;");
    let conf = world.lab.host_file("alpha", "/usr/local/etc/runbook.conf");
    std::fs::write(&conf, "base=1\n").expect("conf");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(conf.parent().expect("dir")).expect("dir"));
    std::os::unix::fs::chown(&conf, Some(owner), Some(owner)).expect("chown");
    for leftover in ["runbook.log", "fail-stop-app", "fail-edit-conf", "slow-log-once", "fanout.log"] {
        let _ = std::fs::remove_file(world.lab.host_file("alpha", &format!("/usr/local/var/lib/{leftover}")));
    }
    let started = world.lab.host_exec("alpha", &["/usr/local/bin/labsvc", "start", "app"]).expect("start app");
    assert!(started.status.success());
}

pub(crate) fn end_state(world: &World) -> EndState {
    EndState {
        rows: world.sql("alpha", "app", "SELECT coalesce(string_agg(value, ',' ORDER BY value), '') FROM probe_log"),
        conf: std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/etc/runbook.conf")).unwrap_or_default(),
        app: world.lab.host_exec("alpha", &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code(),
        log: std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/var/lib/runbook.log")).unwrap_or_default(),
    }
}

pub(crate) fn uninterrupted() -> EndState {
    EndState { rows: "step-1,step-5".into(), conf: "base=1\nrunbook=1\n".into(), app: Some(0), log: "once\n".into() }
}

fn marker(world: &World, name: &str) -> std::path::PathBuf {
    world.lab.host_file("alpha", &format!("/usr/local/var/lib/{name}"))
}

fn runbook(world: &World, extra: &[&str]) -> Run {
    let mut args = vec!["--yes", "probe", "runbook", "alpha", "alpha-app"];
    args.extend_from_slice(extra);
    world.opsh(&args)
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Right after step N-1's result was journaled (before step N; N = 0: right after the run record).
    Boundary,
    /// During step N, before its effect (the fixture pauses 500 ms before and after each effect).
    BeforeEffect,
    /// During step N, after its effect, before its result is journaled.
    AfterEffect,
}

fn kill_everywhere_then_resume(point: KillPoint) {
    let world = World::new();
    prepare(&world);
    let run = runbook(&world, &["--pause-ms", PAUSE]);
    assert_eq!(run.code, 0, "uninterrupted run: {run:?}");
    assert_eq!(end_state(&world), uninterrupted());
    for step in 0..6usize {
        prepare(&world);
        let before = world.runs();
        let child = world.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", PAUSE]);
        let id = new_run(&world, &before);
        match point {
            KillPoint::Boundary if step == 0 => wait_for(20, "the run record", || (!world.records(&id).is_empty()).then_some(())),
            KillPoint::Boundary => wait_for(30, "the previous step's result", || has(&world, &id, "result", step - 1).then_some(())),
            KillPoint::BeforeEffect => {
                wait_for(30, "the step's intent", || has(&world, &id, "intent", step).then_some(()));
                std::thread::sleep(Duration::from_millis(150));
            }
            KillPoint::AfterEffect => {
                wait_for(30, "the step's intent", || has(&world, &id, "intent", step).then_some(()));
                std::thread::sleep(Duration::from_millis(850));
            }
        }
        signal(&child, libc::SIGKILL);
        let killed = finish(child);
        assert_eq!(killed.code, -1, "killed by a signal at step {step} ({point:?})");
        let resumed = world.opsh(&["--yes", "resume", &id]);
        assert_eq!(resumed.code, 0, "resume after kill -9 at step {step} ({point:?}): {resumed:?}");
        assert_eq!(end_state(&world), uninterrupted(), "end state after kill -9 at step {step} ({point:?}) and resume");
        let records = world.records(&id);
        assert_eq!(records.last().map(|r| r["status"].clone()), Some(serde_json::json!("done")), "the journal ends done");
        // The kill landed where it was meant to: resume's check of the interrupted step saw the
        // effect in place (after) or not yet (before).
        let checked = records.iter().find(|r| r["record"] == "check" && r["index"] == step).map(|r| r["state"].clone());
        match point {
            KillPoint::AfterEffect => assert_eq!(checked, Some(serde_json::json!("done")), "step {step}: the effect was in place and not applied again"),
            KillPoint::BeforeEffect => assert_eq!(checked, Some(serde_json::json!("not-done")), "step {step}: the effect was not in place and was applied"),
            KillPoint::Boundary => {}
        }
    }
}

#[test]
fn kill_9_at_every_step_boundary_then_resume_ends_as_an_uninterrupted_run() {
    kill_everywhere_then_resume(KillPoint::Boundary);
}

#[test]
fn kill_9_in_every_step_before_its_effect_then_resume_ends_as_an_uninterrupted_run() {
    kill_everywhere_then_resume(KillPoint::BeforeEffect);
}

#[test]
fn kill_9_in_every_step_after_its_effect_then_resume_never_applies_it_twice() {
    kill_everywhere_then_resume(KillPoint::AfterEffect);
}

/// The journal says where a run's time went: planning, each step (with `--pause-ms 200` the
/// fixture sleeps 100 ms before and 100 ms after each effect, so each took at least 200 ms),
/// verifying the goal.
#[test]
fn the_journal_shows_how_long_planning_each_step_and_verifying_took() {
    let world = World::new();
    prepare(&world);
    let before = world.runs();
    let run = runbook(&world, &["--pause-ms", "200"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = new_run(&world, &before);
    let shown = world.opsh(&["--output", "json", "journal", &id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    let doc: serde_json::Value = serde_json::from_str(shown.stdout.trim()).expect("json");
    assert!(doc["plan_ms"].as_u64().is_some_and(|ms| ms > 0), "planning took time: {doc}");
    assert!(doc["verify_ms"].as_u64().is_some(), "verifying is timed: {doc}");
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 6, "{doc}");
    for step in steps {
        assert!(step["duration_ms"].as_u64().is_some_and(|ms| ms >= 200), "each step's two pauses are in its time: {step}");
    }
    let text = world.opsh(&["journal", &id]);
    assert!(text.stdout.contains("time: plan ") && text.stdout.contains(" · verify "), "{text:?}");
}

#[test]
fn a_dry_run_changes_nothing_and_writes_no_journal() {
    let world = World::new();
    prepare(&world);
    let state = end_state(&world);
    let beta = world.lab.host_exec("beta", &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code();
    let run = runbook(&world, &["--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    for shown in [
        "INSERT INTO probe_log(value) VALUES ('step-1')",
        "service alpha: stop app",
        "+runbook=1",
        "run on alpha: sh -c 'echo once >> /usr/local/var/lib/runbook.log'",
    ] {
        assert!(run.stdout.contains(shown), "the plan shows {shown:?}: {run:?}");
    }
    assert_eq!(end_state(&world), state, "database, file and service unchanged");
    assert_eq!(world.lab.host_exec("beta", &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code(), beta);
    assert!(world.runs().is_empty(), "a dry run journals nothing");
}

#[test]
fn a_plan_that_no_longer_matches_the_live_state_is_refused_on_resume() {
    let world = World::new();
    prepare(&world);
    std::fs::write(marker(&world, "fail-stop-app"), "").expect("marker");
    let run = runbook(&world, &[]);
    assert_eq!(run.code, 3, "failed after changing something: {run:?}");
    let id = world.runs().pop().expect("run");
    assert!(run.stderr.contains("injected failure") && run.stderr.contains(&format!("opsh resume {id}")), "{run:?}");
    // Someone edits the file the plan read, then the cause is fixed and the run resumed.
    std::fs::write(world.lab.host_file("alpha", "/usr/local/etc/runbook.conf"), "base=2\n").expect("edit");
    std::fs::remove_file(marker(&world, "fail-stop-app")).expect("fix");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 3, "{resumed:?}");
    assert!(resumed.stderr.contains("runbook.conf changed since the plan read it") && resumed.stderr.contains("not applied blindly"), "{resumed:?}");
    let state = end_state(&world);
    assert_eq!(state.conf, "base=2\n", "the operator's edit was not overwritten");
    assert_eq!((state.rows.as_str(), state.log.as_str()), ("step-1", ""), "nothing after the stale step ran");
}

#[test]
fn a_second_opsh_is_refused_while_the_first_changes_the_topology() {
    let world = World::new();
    prepare(&world);
    let first = world.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "4000"]);
    let id = new_run(&world, &[]);
    wait_for(20, "the first run's first step", || has(&world, &id, "intent", 0).then_some(()));
    let second = world.opsh(&["--yes", "probe", "service", "alpha", "app", "stop"]);
    assert_eq!(second.code, 5, "refused: {second:?}");
    assert!(
        second.stderr.contains("topology basic is being changed by another opsh") && second.stderr.contains(&format!("run {id}, pid {}", first.id())),
        "{second:?}"
    );
    assert_eq!(
        world.lab.host_exec("alpha", &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code(),
        Some(0),
        "the refused run changed nothing"
    );
    signal(&first, libc::SIGKILL);
    finish(first);
    let third = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(third.code, 0, "the lock died with its holder: {third:?}");
}

#[test]
fn a_step_that_outlives_its_timeout_is_outcome_unknown_and_resume_does_not_repeat_it() {
    let world = World::new();
    prepare(&world);
    std::fs::write(marker(&world, "slow-log-once"), "").expect("marker");
    let run = runbook(&world, &[]);
    assert_eq!(run.code, 4, "outcome unknown: {run:?}");
    assert!(run.stderr.contains("outcome unknown") && run.stderr.contains("opsh resume"), "{run:?}");
    let id = world.runs().pop().expect("run");
    let results: Vec<_> = world.records(&id).into_iter().filter(|r| r["record"] == "result").collect();
    assert_eq!(results.last().map(|r| r["status"].clone()), Some(serde_json::json!("unknown")));
    std::thread::sleep(Duration::from_secs(3)); // the remote command finishes on its own
    std::fs::remove_file(marker(&world, "slow-log-once")).expect("marker");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted(), "the step that timed out was not applied twice");
}

#[test]
fn a_group_reports_n_of_m_done_and_who_was_unreachable_then_resume_finishes_it() {
    let mut world = World::new();
    world.lab.cut("beta").expect("cut");
    let run = world.opsh(&["--yes", "probe", "fanout", "--hosts", "alpha,beta"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("group fanout: 1 of 2 done; unreachable: beta (host beta"), "{run:?}");
    let id = world.runs().pop().expect("run");
    world.lab.heal("beta").expect("heal");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    for host in ["alpha", "beta"] {
        let log = std::fs::read_to_string(world.lab.host_file(host, "/usr/local/var/lib/fanout.log")).unwrap_or_default();
        assert_eq!(log, "fanout\n", "exactly once on {host}");
    }
}

#[test]
fn retry_applies_one_failed_step_and_resume_finishes_the_run() {
    let world = World::new();
    prepare(&world);
    std::fs::write(marker(&world, "fail-edit-conf"), "").expect("marker");
    let run = runbook(&world, &[]);
    assert_eq!(run.code, 3, "{run:?}");
    let id = world.runs().pop().expect("run");
    let again = world.opsh(&["--yes", "retry", &id, "edit-conf"]);
    assert_eq!(again.code, 3, "still failing while the cause is there: {again:?}");
    std::fs::remove_file(marker(&world, "fail-edit-conf")).expect("fix");
    let retried = world.opsh(&["--yes", "retry", &id, "edit-conf"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert!(retried.stderr.contains(&format!("continue the run with `opsh resume {id}`")), "{retried:?}");
    assert_eq!(end_state(&world).conf, "base=1\nrunbook=1\n");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
    let journal = world.opsh(&["journal", &id]);
    assert!(journal.stdout.contains("status done") && journal.stdout.contains("+runbook=1"), "journal shows the run with its diff: {journal:?}");
}

#[test]
fn ctrl_c_stops_after_the_current_step_and_the_run_resumes() {
    let world = World::new();
    prepare(&world);
    let before = world.runs();
    let child = world.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "1500"]);
    let id = new_run(&world, &before);
    wait_for(30, "step 2's intent", || has(&world, &id, "intent", 1).then_some(()));
    signal(&child, libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("stopping after the current step")
            && run.stderr.contains(&format!("stopped by Ctrl-C before the next step; resume with: opsh resume {id}")),
        "{run:?}"
    );
    let records = world.records(&id);
    assert!(records.iter().any(|r| r["record"] == "result" && r["index"] == 1 && r["status"] == "done"), "the current step finished");
    assert!(!records.iter().any(|r| r["record"] == "intent" && r["index"] == 2), "the next step did not start");
    assert_eq!(records.last().map(|r| r["status"].clone()), Some(serde_json::json!("interrupted")));
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
}

/// A small filesystem of its own under a directory, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "opsh-e2e-small-disk"]).arg(dir).status();
        assert!(mounted.is_ok_and(|s| s.success()), "mount a tmpfs on {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }

    /// Take every byte left.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).expect("filler");
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The disk under the journal fills up during a run of 300 one-row steps. Wherever that
/// happens (a record may still fit in the journal's last page), the run stops at the first
/// record it cannot write, saying so: no step's effect ran without its intent on disk (the rows
/// are exactly the journaled intents), the journal stays readable (a record the disk could not
/// take is taken back), and once there is room `resume` inserts every row exactly once.
#[test]
fn a_full_disk_under_the_journal_stops_the_run_before_the_next_effect() {
    let world = World::new();
    prepare(&world);
    let disk = SmallDisk::mount(&world.journal_dir(), "1m");
    let before = world.runs();
    let child = world.spawn(&["--yes", "probe", "steps", "alpha-app", "300"]);
    let id = new_run(&world, &before);
    wait_for(60, "the run record", || (!world.records(&id).is_empty()).then_some(()));
    disk.fill();
    let run = finish(child);
    let rows: usize = world.sql("alpha", "app", "SELECT count(*) FROM probe_log").trim().parse().expect("count");
    let records = world.records(&id);
    let intents = records.iter().filter(|r| r["record"] == "intent").count();
    assert!(rows < 300, "the run stopped when the disk was full: {rows} rows");
    assert_eq!(rows, intents, "every row has its intent on disk, and no more: {run:?}");
    assert_eq!(run.code, if rows > 0 { 3 } else { 1 }, "{rows} row(s) changed: {run:?}");
    assert!(run.stderr.contains("cannot write the journal"), "{run:?}");
    disk.free();
    let shown = world.opsh(&["journal", &id]);
    assert_eq!(shown.code, 0, "the journal is readable: {shown:?}");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) || ' ' || count(DISTINCT value) FROM probe_log"), "300 300", "every step once");
}

/// Ctrl-C twice: the first press would stop after the current step, the second aborts it — the
/// step is `unknown` and opsh exits 4. Aborted after its command wrote its line, `log-once` is
/// not run again on resume: its check finds the line and decides.
#[test]
fn ctrl_c_twice_aborts_the_step_and_its_check_decides_on_resume() {
    let world = World::new();
    prepare(&world);
    let before = world.runs();
    let child = world.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "3000"]);
    let id = new_run(&world, &before);
    let log = world.lab.host_file("alpha", "/usr/local/var/lib/runbook.log");
    wait_for(90, "log-once's line on alpha", || std::fs::read_to_string(&log).ok().filter(|l| l.contains("once")).map(|_| ()));
    signal(&child, libc::SIGINT);
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("aborting the current step") && run.stderr.contains("aborted by a second Ctrl-C"), "{run:?}");
    let records = world.records(&id);
    assert!(records.iter().any(|r| r["record"] == "result" && r["index"] == 3 && r["status"] == "unknown"), "{records:?}");
    assert!(!records.iter().any(|r| r["record"] == "intent" && r["index"] == 4), "the next step did not start: {records:?}");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted(), "log-once ran exactly once");
}

/// Ctrl-C at a terminal reaches every process of the foreground group: opsh, and — unless opsh
/// keeps them apart — the ssh client of the command a step runs. Typed in the shell while a
/// step's remote command runs, it lets the command finish (it writes its file after its
/// sleep): the step is done, not killed under opsh.
#[test]
fn ctrl_c_at_the_terminal_lets_the_running_remote_command_finish() {
    let world = World::new();
    let marker = "/usr/local/var/lib/ctrl-c";
    let line = format!("probe run alpha 'sleep 2; echo finished > {marker}' --yes\n");
    let text = world.repl(&[(line.as_bytes(), 1200), (&[3], 3500), (b"exit\n", 500)]);
    assert_eq!(std::fs::read_to_string(world.lab.host_file("alpha", marker)).unwrap_or_default(), "finished\n", "the remote command ran to its end: {text}");
    let id = world.runs().pop().expect("a run");
    let records = world.records(&id);
    assert!(records.iter().any(|r| r["record"] == "result" && r["index"] == 0 && r["status"] == "done"), "the step is done: {records:?}\n{text}");
    assert!(text.contains("stopping after the current step"), "{text}");
}

#[test]
fn plans_results_and_the_journal_follow_the_documented_json_schema() {
    let world = World::new();
    prepare(&world);
    let plan: serde_json::Value = serde_json::from_str(runbook(&world, &["--dry-run", "--output", "json"]).stdout.trim()).expect("plan JSON");
    assert_eq!((plan["schema"].as_u64(), plan["outcome"].as_str(), plan["exit"].as_i64()), (Some(2), Some("planned"), Some(0)));
    let kinds: Vec<&str> = plan["steps"].as_array().expect("steps").iter().map(|s| s["effects"][0]["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["sql", "service", "file", "exec", "sql", "service"]);
    assert!(plan["steps"][2]["effects"][0]["diff"].as_str().unwrap_or("").contains("+runbook=1"));

    let result: serde_json::Value = serde_json::from_str(runbook(&world, &["--output", "json"]).stdout.trim()).expect("result JSON");
    assert_eq!((result["outcome"].as_str(), result["exit"].as_i64()), (Some("done"), Some(0)));
    let run = result["run"].as_str().expect("run id").to_string();
    let results = result["results"].as_array().expect("results");
    assert_eq!(results.len(), 6);
    assert!(results.iter().all(|r| r["status"] == "done" && r["duration_ms"].is_u64() && r["id"].is_string()), "{result}");

    let runs: serde_json::Value = serde_json::from_str(world.opsh(&["--output", "json", "journal"]).stdout.trim()).expect("journal JSON");
    assert_eq!(runs["runs"][0]["run"], run.as_str());
    assert_eq!(
        (runs["runs"][0]["status"].as_str(), runs["runs"][0]["steps_done"].as_u64(), runs["runs"][0]["steps"].as_u64()),
        (Some("done"), Some(6), Some(6))
    );
    let detail: serde_json::Value = serde_json::from_str(world.opsh(&["--output", "json", "journal", &run]).stdout.trim()).expect("run JSON");
    assert!(detail["steps"].as_array().expect("steps").iter().all(|s| s["state"] == "done"));
    let records: Vec<&str> = detail["records"].as_array().expect("records").iter().map(|r| r["record"].as_str().unwrap_or("")).collect();
    assert_eq!(records.first(), Some(&"run"));
    assert_eq!(records.last(), Some(&"end"));
    assert_eq!(records.iter().filter(|r| **r == "intent").count(), 6);
    assert_eq!(records.iter().filter(|r| **r == "result").count(), 6);
}

#[test]
fn no_file_or_output_of_the_suite_holds_a_password() {
    let world = World::new();
    prepare(&world);
    let password = world.password();
    let mut outputs = vec![
        runbook(&world, &[]),
        world.opsh(&["--yes", "probe", "secret", "alpha", "alpha-app"]),
        world.opsh(&["journal"]),
        world.opsh(&["--output", "json", "journal", &world.runs().pop().unwrap_or_default()]),
        world.opsh(&["inventory"]),
    ];
    // A failing password is not echoed either.
    std::fs::write(world.lab.state.dir.join("secrets/db-password"), "wrong\n").ok();
    outputs.push(world.opsh(&["probe", "sql", "alpha-app"]));
    std::fs::write(world.lab.state.dir.join("secrets/db-password"), format!("{password}\n")).expect("restore");
    for output in &outputs {
        assert!(!output.all().contains(&password), "password in output: {output:?}");
    }
    let mut files = world.home_files();
    for host in &world.lab.state.hosts {
        let log_dir = world.lab.state.dir.join("hosts").join(&host.name).join("log");
        for entry in std::fs::read_dir(log_dir).expect("logs").flatten() {
            files.push((entry.path(), std::fs::read_to_string(entry.path()).unwrap_or_default()));
        }
    }
    assert!(files.iter().any(|(p, _)| p.extension().is_some_and(|x| x == "jsonl")), "the journal was scanned");
    for (path, content) in files {
        assert!(!content.contains(&password), "password in {}", path.display());
    }
}

#[test]
fn a_step_whose_check_says_the_world_changed_is_refused_on_resume() {
    let world = World::new();
    prepare(&world);
    std::fs::write(marker(&world, "fail-stop-app"), "").expect("marker");
    let run = runbook(&world, &[]);
    assert_eq!(run.code, 3, "{run:?}");
    let id = world.runs().pop().expect("run");
    std::fs::remove_file(marker(&world, "fail-stop-app")).expect("fix");
    world.sql("alpha", "app", "DROP TABLE probe_log");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 3, "{resumed:?}");
    assert!(resumed.stderr.contains("step insert-5 (insert step-5 (not idempotent)) no longer fits the live state"), "{resumed:?}");
    let log = std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/var/lib/runbook.log")).unwrap_or_default();
    assert_eq!(log, "once\n", "the steps before it ran; nothing after it");
    assert_eq!(world.lab.host_exec("alpha", &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code(), Some(3), "start-app did not run");
}

/// A journal written by opsh before the journal owned its record types (the fixture is a real
/// run of `probe runbook` that failed at step 3, kept byte for byte): today's opsh shows it and
/// resumes it to the state an uninterrupted run leaves.
#[test]
fn a_run_journaled_by_an_earlier_opsh_is_shown_and_resumed() {
    let world = World::new();
    prepare(&world);
    // What steps 1 and 2 of that run did.
    world.sql("alpha", "app", "INSERT INTO probe_log(value) VALUES ('step-1')");
    let stopped = world.lab.host_exec("alpha", &["/usr/local/bin/labsvc", "stop", "app"]).expect("stop app");
    assert!(stopped.status.success());
    let run = "20261201-130229-25b6";
    std::fs::create_dir_all(world.journal_dir()).expect("journal dir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/journal/v1-runbook-failed-at-step-3.jsonl");
    std::fs::copy(&fixture, world.journal_dir().join(format!("{run}.jsonl"))).expect("copy the fixture journal");

    let shown = world.opsh(&["journal", run]);
    assert_eq!(shown.code, 0, "{shown:?}");
    let states: Vec<&str> = ["insert-1", "stop-app", "edit-conf", "log-once"]
        .iter()
        .map(|id| {
            shown.stdout.lines().find(|l| l.contains(id)).map_or("missing", |l| {
                if l.contains("not started") {
                    "not started"
                } else if l.contains("failed") {
                    "failed"
                } else if l.contains("done") {
                    "done"
                } else {
                    "?"
                }
            })
        })
        .collect();
    assert_eq!(states, ["done", "done", "failed", "not started"], "{shown:?}");

    let resumed = world.opsh(&["--yes", "resume", run]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted(), "{resumed:?}");
}

/// `plan … --out FILE` then `apply FILE`: the saved plan is applied exactly (not planned again),
/// only while the plugin, the inventory and every file it edits are as they were; the file holds
/// no secret, and the journal says who planned and who applied.
#[test]
fn a_saved_plan_is_applied_exactly_and_refused_when_anything_changed() {
    use base64::Engine as _;
    let world = World::new();
    prepare(&world);
    let file = world.home.path().join("promote.plan");
    let file_arg = file.display().to_string();
    let saved = world.opsh(&["plan", "probe", "runbook", "alpha", "alpha-app", "--out", &file_arg]);
    assert_eq!(saved.code, 0, "{saved:?}");
    assert!(saved.stderr.contains(&format!("plan saved to {file_arg} (6 step(s)); nothing was changed")), "{saved:?}");
    assert_eq!(end_state(&world).rows, "", "saving a plan changed nothing");
    let text = std::fs::read_to_string(&file).expect("plan file");
    let password = world.password();
    for secret in [password.clone(), base64::engine::general_purpose::STANDARD.encode(&password)] {
        assert!(!text.contains(&secret), "the plan file holds the password");
    }
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("meta").permissions()) & 0o777, 0o600);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let probe_sha = crate::support::sha256_hex_bytes(&std::fs::read(crate::support::probe_wasm()).expect("probe wasm"));
    assert_eq!(doc["component"], format!("sha256:{probe_sha}"));
    assert_eq!(doc["files"][0]["path"], "/usr/local/etc/runbook.conf");

    // A planned file changed: refused, nothing done.
    let conf = world.lab.host_file("alpha", "/usr/local/etc/runbook.conf");
    std::fs::write(&conf, "base=1\nedited=1\n").expect("edit conf");
    let refused = world.opsh(&["--yes", "apply", &file_arg]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("alpha:/usr/local/etc/runbook.conf changed since the plan read it"), "{refused:?}");
    assert_eq!(end_state(&world).rows, "");
    std::fs::write(&conf, "base=1\n").expect("restore conf");

    // The inventory changed, the plugin changed: refused.
    let inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    std::fs::write(&world.inventory, format!("{inventory}\n# edited\n")).expect("edit inventory");
    let refused = world.opsh(&["--yes", "apply", &file_arg]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("the inventory changed since the plan was made"), "{refused:?}");
    std::fs::write(&world.inventory, &inventory).expect("restore inventory");
    let installed = world.home.path().join("data/plugins/probe.wasm");
    let original = std::fs::read(&installed).expect("installed probe");
    std::fs::write(&installed, crate::hostile::append_custom_section(original.clone())).expect("another build");
    let refused = world.opsh(&["--yes", "apply", &file_arg]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("plugin probe changed since the plan was made"), "{refused:?}");
    std::fs::write(&installed, original).expect("restore plugin");
    assert_eq!(end_state(&world).rows, "", "nothing was changed by any refused apply");

    // As it was: applied, exactly the saved plan.
    let before = world.runs();
    let applied = world.opsh(&["--yes", "apply", &file_arg]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(applied.stdout.contains(&format!("(saved plan {file_arg}, made by ")), "{applied:?}");
    assert_eq!(end_state(&world), uninterrupted());
    let run = crate::support::new_run(&world, &before);
    let header = &world.records(&run)[0];
    assert_eq!(header["plan"], doc["plan"], "the journaled plan is the saved one");
    assert_eq!(header["saved"]["file"], file_arg.as_str());
    assert_eq!(header["saved"]["planned_by"], doc["planned_by"]);
    assert!(header["operator"].as_str().is_some_and(|o| o.contains('@')), "{header}");
}

/// Resuming with another build of the plugin than the run was planned with is said, not refused
/// (an upgrade of opsh changes every bundled plugin's hash), and the run still ends as an
/// uninterrupted one would.
#[test]
fn resume_with_another_build_of_the_plugin_says_so_and_finishes() {
    let world = World::new();
    prepare(&world);
    std::fs::write(marker(&world, "fail-edit-conf"), "").expect("marker");
    let run = runbook(&world, &[]);
    assert_eq!(run.code, 3, "{run:?}");
    let id = world.runs().pop().expect("run");
    assert!(world.records(&id)[0]["component"].as_str().is_some_and(|c| c.starts_with("sha256:")), "the journal names the component");
    std::fs::remove_file(marker(&world, "fail-edit-conf")).expect("fix");
    let installed = world.home.path().join("data/plugins/probe.wasm");
    let original = std::fs::read(&installed).expect("installed probe");
    std::fs::write(&installed, crate::hostile::append_custom_section(original)).expect("another build");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(resumed.stdout.contains("plugin probe is another build than the one this run was planned with"), "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
}
