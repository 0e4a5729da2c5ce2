//! `gather` (opsh:plugin@0.2.1): many reads in one call, each held to the rules of the call it
//! stands for. The `gather` fixture (`tests/fixtures/gather-plugin`) attacks it as a hostile
//! plugin would; outcomes are checked with psql and on the host's disk.

use crate::support::{Run, World};

const GRANTS: &str =
    "\n[grants.gather]\nsql = [\"alpha-app\"]\nssh = [\"alpha\"]\nprobes = [\"echo *\", \"sleep *\", \"cat /usr/local/var/lib/gather-secret\"]\n";

fn gather_world() -> World {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    let wasm = crate::support::target_dir().parent().expect("target").join("wasm-plugins/wasm32-wasip2/plugin/opsh_gather_plugin.wasm");
    std::fs::copy(&wasm, world.home.path().join("data/plugins/gather.wasm"))
        .unwrap_or_else(|e| panic!("the gather fixture plugin was not built at {}: {e}", wasm.display()));
    let mut inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    inventory.push_str(GRANTS);
    std::fs::write(&world.inventory, inventory).expect("write inventory");
    world
}

/// `opsh --output json ARGS` with every probe it runs shown (OPSH_DEBUG).
fn debug_run(world: &World, args: &[&str]) -> Run {
    let output = world.command().env("OPSH_DEBUG", "1").arg("--inventory").arg(&world.inventory).args(["--output", "json"]).args(args).output().expect("opsh");
    crate::support::run_of(output)
}

/// The commands opsh ran on hosts, as it showed them.
fn probes_run(run: &Run) -> Vec<String> {
    run.stderr.lines().filter_map(|l| l.split_once("probe on ").map(|(_, rest)| rest.to_string())).collect()
}

/// The cells of the first table, as text.
fn cells(run: &Run) -> Vec<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("json ({e}): {run:?}"));
    doc["tables"][0]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows: {run:?}"))
        .iter()
        .map(|row| row.as_array().expect("cells").iter().map(|c| c["text"].as_str().unwrap_or_default().to_string()).collect())
        .collect()
}

/// Every ask the host refuses alone is refused inside a batch too, for the reason it gives
/// alone; the honest ask among them is answered; and nothing changed on the host or in the
/// database.
#[test]
fn an_ask_refused_alone_is_refused_in_a_gather_and_changes_nothing() {
    let world = gather_world();
    let path = "/usr/local/var/lib/gathered-was-here";
    let run = debug_run(&world, &["gather", "sneak", "alpha", "alpha-app", "beta-app", path]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(probes_run(&run), [format!("alpha: echo 'x; touch {path}'"), "alpha: echo honest".to_string()], "only the approved probes ran: {run:?}");
    let rows = cells(&run);
    let outcome: Vec<(&str, &str)> = rows.iter().map(|r| (r[1].as_str(), r[2].as_str())).collect();
    assert_eq!(outcome.len(), 11, "one answer per ask, in order: {rows:?}");
    let expect: [(&str, &str); 11] = [
        ("read-only", "is not declared read-only; gather runs probes only"),
        ("denied", "is not a probe approved for it"),
        ("ok", "status Some(0)"),
        ("read-only", "writes are refused while planning"),
        ("read-only", "pg_promote"),
        ("denied", "beta-app"),
        ("read-only", "without any (passwords only while applying)"),
        ("read-only", "runs as the login user"),
        ("denied", "did not declare the capability file-edit"),
        ("denied", "did not declare the capability service"),
        ("ok", "status Some(0)"),
    ];
    for (i, ((kind, says), (got_kind, got))) in expect.iter().zip(&outcome).enumerate() {
        assert_eq!(kind, got_kind, "ask {i}: {got}");
        assert!(got.contains(says), "ask {i}: {got:?} should say {says:?}");
    }
    assert!(!world.lab.host_file("alpha", path).exists(), "nothing was created on alpha");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log").trim(), "0", "no row was written");
}

/// More asks than the host takes: every answer says so and nothing was asked.
#[test]
fn a_flood_of_asks_is_refused_whole() {
    let world = gather_world();
    let run = debug_run(&world, &["gather", "flood", "alpha"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = &cells(&run)[0];
    assert_eq!((row[1].as_str(), row[2].as_str()), ("1025", "1025"), "one answer per ask, each invalid: {row:?}");
    assert!(row[3].contains("more than 1024; nothing was asked"), "{row:?}");
    assert_eq!(probes_run(&run), Vec::<String>::new(), "no probe ran: {run:?}");
}

/// Two dozen probes gathered on one host all answer, each its own: the host runs at most a few
/// at once over the host's connection, below sshd's MaxSessions (10), which would refuse the
/// rest as if the host had gone.
#[test]
fn a_burst_on_one_host_is_answered_whole_and_in_order() {
    let world = gather_world();
    let run = debug_run(&world, &["gather", "burst", "alpha"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = &cells(&run)[0];
    assert_eq!(row, &["24", "24", ""], "{run:?}");
    assert_eq!(probes_run(&run).len(), 24, "each ran once: {run:?}");
}

/// Gathered probes that outlast their command timeout each fail as a timeout, and opsh answers
/// with what did come back.
#[test]
fn a_gathered_probe_ends_at_its_command_timeout() {
    let world = gather_world();
    let inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    let shorter = inventory.replacen("command-timeout-ms = 60000", "command-timeout-ms = 2000", 1);
    assert!(shorter.contains("command-timeout-ms = 2000"), "{shorter}");
    std::fs::write(&world.inventory, shorter).expect("write inventory");
    let run = world.opsh(&["--output", "json", "gather", "stall", "alpha", "3", "return"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = cells(&run);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0][1], "ok", "the quick probe answered: {rows:?}");
    for row in &rows[1..] {
        assert_eq!(row[1], "timeout", "{row:?}");
        assert!(row[2].contains("`sleep` on host alpha did not finish within 2 s"), "{row:?}");
    }
}

/// The call's deadline is an instant: forty gathered probes that would each outlast it (five
/// times the eight one host runs at once) all end at it, not each a deadline after its start.
#[test]
fn gathered_probes_waiting_for_their_turn_end_at_the_call_deadline_too() {
    let world = gather_world();
    let inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    let shorter = inventory.replacen("[defaults]\n", "[defaults]\ncall-timeout-ms = 3000\n", 1);
    assert!(shorter.contains("call-timeout-ms = 3000"), "{shorter}");
    std::fs::write(&world.inventory, shorter).expect("write inventory");
    let started = std::time::Instant::now();
    let run = world.opsh(&["gather", "stall", "alpha", "40", "linger"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("it ran past its deadline of 3 s for one read call (inventory [defaults] call-timeout-ms)"), "{run:?}");
    // Five turns of 3 s each would be 15 s; the deadline, plus opsh's start, is well under 12 s.
    assert!(took < std::time::Duration::from_secs(12), "the call ended at its deadline, not after {took:?}: {run:?}");
}

/// One budget (16 MiB) holds for all the answers of a gather: forty answers of 1 MiB each
/// bring the plugin exactly sixteen, and each of the others is dropped with a reason, in place;
/// nothing the plugin can ask in one call makes the host hold more.
#[test]
fn the_answers_of_one_gather_stop_at_its_budget() {
    let world = gather_world();
    let run = world.opsh(&["--output", "json", "gather", "hoard", "alpha", "alpha-app"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = &cells(&run)[0];
    let mib = 1usize << 20;
    let received = (16 * mib - 16 * 8).to_string();
    assert_eq!(row[..4], ["40", "16", received.as_str(), "24"], "sixteen answers of 1 MiB, the 24 others dropped: {row:?}");
    assert_eq!(row[4], "plugin gather: the answers of one gather passed 16 MiB; this one was dropped (ask for less at once)", "{row:?}");
}

/// A gathered answer holds the address token, never the address, and a password in a file a
/// probe prints comes back as the marker (the plugin shows it reversed, so the shell's own
/// redaction of its output could not hide a leak).
#[test]
fn a_gathered_answer_shows_the_plugin_no_address_and_no_password() {
    let world = gather_world();
    let password = world.password();
    std::fs::write(world.lab.host_file("alpha", "/usr/local/var/lib/gather-secret"), format!("password={password}\n")).expect("secret file");
    let run = world.opsh(&["--output", "json", "gather", "seen", "alpha", "alpha-app"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = &cells(&run)[0];
    assert_eq!(row[0], "the token", "{run:?}");
    let reversed: String = password.chars().rev().collect();
    assert!(!row[1].contains(&reversed), "the plugin saw the password: {row:?}");
    assert_eq!(row[1], "********=drowssap", "{row:?}");
}
