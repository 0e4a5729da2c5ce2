//! Team mode against the `team` lab: two opsh "machines" (their own data and config
//! directories, their own host names in UTS namespaces of their own) share the inventory, whose
//! `[state]` names a real PostgreSQL 15 on the lab host `keeper`. What each test checks is read
//! with psql, on the hosts' disks, or in the state database itself.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::engine::{end_state, prepare, uninterrupted};
use crate::support::{Run, World, finish, opsh_bin, probe_wasm, run_of, signal, wait_for};

/// One operator's machine: its own opsh home, its own host name.
struct Machine {
    inventory: PathBuf,
    name: &'static str,
    home: tempfile::TempDir,
}

impl Machine {
    fn new(world: &World, name: &'static str) -> Self {
        let home = tempfile::Builder::new().prefix(&format!("opsh-e2e-{name}")).tempdir().expect("home");
        std::fs::create_dir_all(home.path().join("data/plugins")).expect("plugin dir");
        std::fs::copy(probe_wasm(), home.path().join("data/plugins/probe.wasm")).expect("install the probe plugin");
        Self { inventory: world.inventory.clone(), name, home }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("unshare");
        // A UTS namespace of its own: opsh reads this machine name as every process there would.
        command
            .args(["--uts", "sh", "-c", "printf %s \"$0\" > /proc/sys/kernel/hostname && exec \"$@\"", self.name])
            .arg(opsh_bin())
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args)
            .env("OPSH_CONFIG_DIR", self.home.path().join("config"))
            .env("OPSH_DATA_DIR", self.home.path().join("data"))
            .env("OPSH_CACHE_DIR", self.home.path().join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("OPSH_INVENTORY")
            .stdin(Stdio::null());
        command
    }

    fn opsh(&self, args: &[&str]) -> Run {
        run_of(self.command(args).output().expect("run opsh"))
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn opsh")
    }

    fn journal_dir(&self) -> PathBuf {
        self.home.path().join("data/journal")
    }

    fn runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = std::fs::read_dir(self.journal_dir())
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string)).collect())
            .unwrap_or_default();
        runs.sort();
        runs
    }

    fn records(&self, run: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.journal_dir().join(format!("{run}.jsonl"))).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The one run this machine started.
    fn only_run(&self) -> String {
        wait_for(30, &format!("a run on {}", self.name), || self.runs().first().cloned())
    }

    fn journaled(&self, run: &str, record: &str, index: usize) -> bool {
        self.records(run).iter().any(|r| r["record"] == record && r["index"] == index)
    }
}

/// The records of `run` the state database holds, in order, as text.
fn stored(world: &World, run: &str) -> String {
    state_sql(world, &format!("SELECT string_agg(line, E'\\n' ORDER BY seq) FROM opsh.records WHERE run = '{run}'"))
}

/// The state database, as psql sees it.
fn state_sql(world: &World, sql: &str) -> String {
    world.sql("keeper", "opsh", sql)
}

fn team() -> World {
    let world = World::with_topology("team");
    prepare(&world);
    world
}

fn init(machine: &Machine) {
    let init = machine.opsh(&["state", "init"]);
    assert_eq!(init.code, 0, "{init:?}");
}

fn work_mem(world: &World, cluster: &str) -> String {
    world.sql(cluster, "app", "SELECT setting || unit FROM pg_settings WHERE name = 'work_mem'")
}

#[test]
fn state_init_creates_the_schema_once_and_a_newer_schema_is_refused_with_nothing_changed() {
    let world = team();
    let a = Machine::new(&world, "laptop-a");
    let early = a.opsh(&["--yes", "probe", "runbook", "alpha", "alpha-app"]);
    assert_eq!(early.code, 5, "no schema yet: {early:?}");
    assert!(early.stderr.contains("has no opsh schema yet: run `opsh state init`"), "{early:?}");
    assert_eq!(end_state(&world).rows, "", "nothing was changed");

    let created = a.opsh(&["state", "init"]);
    assert!(created.code == 0 && created.stdout.contains("opsh schema version 1 created"), "{created:?}");
    assert_eq!(state_sql(&world, "SELECT max(version) FROM opsh.schema_version"), "1");
    let again = a.opsh(&["state", "init"]);
    assert!(again.code == 0 && again.stdout.contains("already there"), "{again:?}");

    // A newer opsh migrated the schema: this one neither touches it nor works against it.
    state_sql(&world, "INSERT INTO opsh.schema_version (version) VALUES (2)");
    let newer = a.opsh(&["state", "init"]);
    assert!(newer.code == 5 && newer.stderr.contains("schema version 2, newer than this opsh knows (1)"), "{newer:?}");
    let change = a.opsh(&["--yes", "probe", "runbook", "alpha", "alpha-app"]);
    assert!(change.code == 5 && change.stderr.contains("newer than this opsh knows") && change.stderr.contains("nothing was changed"), "{change:?}");
    assert_eq!(end_state(&world).rows, "", "nothing was changed");
    assert_eq!(state_sql(&world, "SELECT string_agg(version::text, ',' ORDER BY version) FROM opsh.schema_version"), "1,2");
}

#[test]
fn a_second_machine_is_refused_by_name_then_resumes_the_first_machines_killed_run_to_the_same_end() {
    let world = team();
    let (a, b) = (Machine::new(&world, "laptop-a"), Machine::new(&world, "jump-b"));
    init(&a);
    let child = a.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "5000"]);
    let run = a.only_run();
    wait_for(60, "step 2's intent on laptop-a", || a.journaled(&run, "intent", 1).then_some(()));

    // The same topology from another machine: refused, naming who holds it.
    let refused = b.opsh(&["--yes", "pg", "set-config", "alpha-app", "work_mem", "8MB"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    let pid = a.records(&run)[0]["pid"].as_u64().expect("pid");
    assert!(
        refused.stderr.contains(&format!("topology blue is being changed by root@laptop-a (run {run}, pid {pid}, since ")),
        "the holder by user@machine, run and pid: {refused:?}"
    );
    // Erasing who holds it (a colleague with psql, or an opsh that lies) does not free it.
    state_sql(&world, "DELETE FROM opsh.locks");
    let still = b.opsh(&["--yes", "pg", "set-config", "alpha-app", "work_mem", "8MB"]);
    assert!(still.code == 5 && still.stderr.contains("topology blue is being changed by another opsh whose row in opsh.locks is missing"), "{still:?}");
    assert_eq!(work_mem(&world, "alpha"), "4096kB", "nothing was changed on alpha");
    // Another topology meanwhile: not held, changed at once.
    let other = b.opsh(&["--yes", "pg", "set-config", "beta-app", "work_mem", "8MB"]);
    assert_eq!(other.code, 0, "{other:?}");
    assert_eq!(work_mem(&world, "beta"), "8192kB");
    assert!(a.records(&run).iter().all(|r| r["record"] != "end"), "laptop-a's run was still going");

    // laptop-a dies mid-run; jump-b takes over at once, from the shared journal alone.
    signal(&child, libc::SIGKILL);
    let killed = finish(child);
    assert_eq!(killed.code, -1, "{killed:?}");
    assert!(b.runs().iter().all(|r| *r != run), "jump-b has no local copy of the run");
    let resumed = b.opsh(&["--yes", "resume", &run]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted(), "the same end state as an uninterrupted run, checked on alpha");

    // Every record names who wrote it, in the state database itself.
    let writers = state_sql(
        &world,
        &format!("SELECT string_agg(DISTINCT os_user || '@' || machine, ',' ORDER BY os_user || '@' || machine) FROM opsh.records WHERE run = '{run}'"),
    );
    assert_eq!(writers, "root@jump-b,root@laptop-a");
    let last = state_sql(&world, &format!("SELECT line::jsonb ->> 'status' FROM opsh.records WHERE run = '{run}' ORDER BY seq DESC LIMIT 1"));
    assert_eq!(last, "done");
    let listed = a.opsh(&["--output", "json", "journal"]);
    let doc: serde_json::Value = serde_json::from_str(listed.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {listed:?}"));
    let entry = doc["runs"].as_array().and_then(|runs| runs.iter().find(|r| r["run"] == run)).cloned().unwrap_or_default();
    assert_eq!(entry["status"], "done", "laptop-a sees the run finished elsewhere: {doc}");
    assert_eq!(entry["operators"], serde_json::json!(["root@laptop-a", "root@jump-b"]), "{doc}");
    let lines = doc["runs"].as_array().map(|r| r.iter().map(|r| r["line"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()).unwrap_or_default();
    assert!(lines.iter().any(|l| l == "pg set-config beta-app work_mem 8MB"), "jump-b's own change is listed on laptop-a too: {lines:?}");

    // The audit a team feeds to its own systems: by day, every record with who wrote it.
    let day = a.records(&run)[0]["at"].as_str().map(|at| at[..10].to_string()).expect("the run's day");
    let audit = |since: &str| {
        let shown = b.opsh(&["--output", "json", "journal", "--since", since]);
        assert_eq!(shown.code, 0, "{shown:?}");
        serde_json::from_str::<serde_json::Value>(shown.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {shown:?}"))
    };
    let runs = |doc: &serde_json::Value| {
        doc["runs"].as_array().map(|r| r.iter().map(|r| r["run"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()).unwrap_or_default()
    };
    assert!(runs(&audit(&day)).contains(&run), "the run is in the audit of its day");
    assert_eq!(runs(&audit("2099-01-01")), Vec::<String>::new(), "nothing is after a later day");
    let bad = b.opsh(&["journal", "--since", "yesterday"]);
    assert!(bad.code == 2 && bad.stderr.contains("journal --since takes a day as YYYY-MM-DD"), "{bad:?}");
    let one = b.opsh(&["--output", "json", "journal", &run]);
    let doc: serde_json::Value = serde_json::from_str(one.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {one:?}"));
    let by: Vec<&str> = doc["records"].as_array().map(|r| r.iter().map(|r| r["by"].as_str().unwrap_or_default()).collect()).unwrap_or_default();
    assert!(!by.is_empty() && by.iter().all(|w| *w == "root@laptop-a" || *w == "root@jump-b"), "every record names its writer: {by:?}");
    assert_eq!(by.first(), Some(&"root@laptop-a"));
    assert_eq!(by.last(), Some(&"root@jump-b"), "the end was written by the machine that finished it");
}

#[test]
fn with_the_state_database_down_a_change_is_refused_unless_local_state_is_chosen_and_that_is_journaled() {
    let world = team();
    let a = Machine::new(&world, "laptop-a");
    init(&a);
    world.lab.crash("keeper").expect("stop the state database");
    let refused = a.opsh(&["--yes", "probe", "runbook", "alpha", "alpha-app"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("the state database keeper-opsh cannot be reached") && refused.stderr.contains("--local-state"),
        "says what failed and what to do: {refused:?}"
    );
    assert_eq!(end_state(&world).rows, "", "nothing was changed");
    let journal = a.opsh(&["journal"]);
    assert!(journal.code == 1 && journal.stderr.contains("cannot be reached"), "the shared journal cannot be read: {journal:?}");

    let local = a.opsh(&["--yes", "--local-state", "probe", "runbook", "alpha", "alpha-app"]);
    assert_eq!(local.code, 0, "{local:?}");
    assert_eq!(end_state(&world), uninterrupted());
    let run = a.only_run();
    assert_eq!(a.records(&run)[0]["state"], serde_json::json!({ "database": "keeper-opsh", "local_only": true }));

    // Back up: the next contact pushes what was journaled meanwhile, so the team sees it.
    world.lab.start("keeper").expect("start the state database");
    let listed = a.opsh(&["journal"]);
    assert!(listed.code == 0 && listed.stdout.contains(&run), "{listed:?}");
    let local = std::fs::read_to_string(a.journal_dir().join(format!("{run}.jsonl"))).expect("local journal");
    assert_eq!(stored(&world, &run), local.trim_end(), "every local record is in the state database, as written");
}

#[test]
fn the_state_database_frozen_mid_run_stops_before_the_next_step_with_exit_3_and_resume_finishes() {
    let mut world = team();
    let a = Machine::new(&world, "laptop-a");
    init(&a);
    let child = a.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "2000"]);
    let run = a.only_run();
    wait_for(60, "step 1's result", || a.journaled(&run, "result", 0).then_some(()));
    world.lab.cut("keeper").expect("freeze the state database's host");
    let stopped = finish(child);
    world.lab.heal("keeper").expect("heal");
    assert_eq!(stopped.code, 3, "changed, then stopped: {stopped:?}");
    assert!(stopped.stderr.contains("state database keeper-opsh"), "says why: {stopped:?}");
    let state = end_state(&world);
    assert_eq!(state.rows, "step-1", "step 1 had run; the non-idempotent step 5 never did");
    assert_eq!(state.conf, "base=1\n", "step 3's edit never ran: the run stopped at most after step 2");
    assert_eq!(state.log, "", "the non-idempotent step 4 never ran");

    let resumed = a.opsh(&["--yes", "resume", &run]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
    let local = std::fs::read_to_string(a.journal_dir().join(format!("{run}.jsonl"))).expect("local journal");
    assert_eq!(stored(&world, &run), local.trim_end(), "the records made while it was frozen were pushed, as written");
}

#[test]
fn a_run_is_continued_on_another_machine_only_by_the_same_plugin_component() {
    let world = team();
    let (a, b) = (Machine::new(&world, "laptop-a"), Machine::new(&world, "jump-b"));
    init(&a);
    std::fs::write(world.lab.host_file("alpha", "/usr/local/var/lib/fail-edit-conf"), "").expect("inject a failure at step 3");
    let failed = a.opsh(&["--yes", "probe", "runbook", "alpha", "alpha-app"]);
    assert_eq!(failed.code, 3, "{failed:?}");
    let run = a.only_run();
    std::fs::remove_file(world.lab.host_file("alpha", "/usr/local/var/lib/fail-edit-conf")).expect("fixed");
    // jump-b's probe plugin is another build: the same component plus a custom section.
    let plugin = b.home.path().join("data/plugins/probe.wasm");
    let mut bytes = std::fs::read(&plugin).expect("plugin");
    let (name, payload) = (b"opsh-test", b"another build");
    bytes.extend_from_slice(&[0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(&plugin, bytes).expect("write the other build");
    let refused = b.opsh(&["--yes", "resume", &run]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("was started by root@laptop-a") && refused.stderr.contains("install the same plugin here"), "{refused:?}");
    assert_eq!(end_state(&world).rows, "step-1", "nothing more was changed");
    // Any unique end of the id names the run too, as the shared journal knows it.
    let resumed = a.opsh(&["--yes", "resume", &run[run.len() - 4..]]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
}

#[test]
fn a_run_whose_state_session_the_server_ends_stops_before_its_next_effect() {
    let world = team();
    let a = Machine::new(&world, "laptop-a");
    init(&a);
    let child = a.spawn(&["--yes", "probe", "runbook", "alpha", "alpha-app", "--pause-ms", "2000"]);
    let run = a.only_run();
    wait_for(60, "step 1's result", || a.journaled(&run, "result", 0).then_some(()));
    // An administrator (or a failover of the state database) ends the session holding the locks.
    let ended = state_sql(&world, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'opsh state'");
    assert_eq!(ended, "1", "the run's own state session");
    let stopped = finish(child);
    assert_eq!(stopped.code, 3, "changed, then stopped: {stopped:?}");
    assert!(stopped.stderr.contains("state database keeper-opsh"), "says why: {stopped:?}");
    let state = end_state(&world);
    assert_eq!((state.rows.as_str(), state.conf.as_str(), state.log.as_str()), ("step-1", "base=1\n", ""), "nothing after step 2 ran");
    let resumed = a.opsh(&["--yes", "resume", &run]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(end_state(&world), uninterrupted());
}
