//! The sandbox against a plugin that lies: the `hostile` fixture (`tests/fixtures/hostile-plugin`)
//! attacks one promise per command, and each test checks the outcome an operator cares about —
//! what the terminal received, what the plugin learnt, what opsh loaded — not opsh's own words.

use crate::support::{World, hostile_wasm, json_cell};

const GRANTS: &str = "\n[grants.hostile]\nsql = [\"alpha-app\"]\nssh = [\"alpha\"]\nprobes = [\"echo *\", \"sleep 30\"]\n";

/// The byte sequences the fixture plants; none may reach a terminal raw.
const RAW: &[&str] = &["\r\x1b[2K", "\x1b]0;owned", "\x1b]8;;", "\x1b[8m", "\u{9b}2J", "\u{202e}"];

fn assert_inert(what: &str, output: &str) {
    for raw in RAW {
        assert!(!output.contains(raw), "{what}: the terminal received {raw:?} raw:\n{output:?}");
    }
}

#[test]
fn plugin_text_reaches_the_terminal_inert_in_tables_logs_progress_and_crashes() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let run = world.opsh(&["hostile", "spoof"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_inert("spoof", &run.all());
    assert!(!run.all().contains('\x1b') && !run.all().contains('\r'), "without colour opsh writes no escape at all: {run:?}");
    // Made visible, not dropped: the operator sees what the plugin tried.
    assert!(run.stdout.contains("DOWN\\r\\x1b[2Kup"), "{run:?}");
    assert!(run.stdout.contains("dn01\\u{202e}10nd"), "{run:?}");
    assert!(run.stdout.contains("\\x9b2Jfine ⏎ node  injected-row"), "a newline in a cell is no new row: {run:?}");
    assert!(run.stderr.contains("harmless\\r\\x1b[2K\\x1b]0;owned\\x07log line"), "{run:?}");
    assert!(run.stderr.contains("step 1\\r\\x1b[2K\\x1b[8mprogress"), "{run:?}");

    let crash = world.opsh(&["hostile", "crash"]);
    assert_eq!(crash.code, 1, "{crash:?}");
    assert_inert("crash", &crash.all());
    assert!(crash.stderr.contains("boom\\r\\x1b[2K\\x1b]0;owned\\x07all good"), "{crash:?}");

    // JSON keeps the exact strings, escaped so that printing it is inert too.
    let json = world.opsh(&["--output", "json", "hostile", "spoof"]);
    assert_eq!(json.code, 0, "{json:?}");
    assert_inert("json", &json.stdout);
    assert_eq!(json_cell(&json, "state"), "DOWN\r\x1b[2Kup");
    assert_eq!(json_cell(&json, "node"), "dn01\u{202e}10nd");
}

#[test]
fn a_step_cannot_overprint_itself_in_the_plan_the_progress_or_the_journal() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let plan = world.opsh(&["hostile", "disguise", "alpha-app", "--dry-run"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_inert("plan", &plan.all());
    assert!(plan.stdout.contains("1. DROP TABLE accounts\\r\\x1b[2KANALYZE accounts"), "the title shows what it hides: {plan:?}");
    assert!(plan.stdout.contains("sql alpha-app: SELECT 'DROP TABLE accounts' /*\\r\\x1b[2K*/ AS analyze_accounts"), "{plan:?}");

    let applied = world.opsh(&["hostile", "disguise", "alpha-app", "--yes"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_inert("apply", &applied.all());
    let run = world.runs().pop().expect("a journaled run");
    let journal = world.opsh(&["journal", &run]);
    assert_eq!(journal.code, 0, "{journal:?}");
    assert_inert("journal", &journal.all());
    assert!(journal.stdout.contains("DROP TABLE accounts\\r\\x1b[2KANALYZE accounts"), "{journal:?}");
}

#[test]
fn a_colour_terminal_gets_opsh_colours_and_none_of_the_plugins_escapes() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let screen = world.repl_in(&[(b"hostile spoof\n", 2500), (b"hostile disguise alpha-app --dry-run\n", 2500), (b"exit\n", 500)], true);
    assert!(screen.contains("\x1b[1m"), "opsh still paints its own bold titles: {screen:?}");
    assert!(screen.contains("DOWN\\r\\x1b[2Kup") && screen.contains("ANALYZE accounts"), "{screen:?}");
    for raw in ["\x1b]0;owned", "\x1b]8;;", "\x1b[8m", "\u{9b}2J", "\u{202e}", "\r\x1b[2KANALYZE", "\r\x1b[2Kup", "\r\x1b[2Klog line"] {
        assert!(!screen.contains(raw), "the terminal received {raw:?} raw:\n{screen:?}");
    }
}

#[test]
fn a_plugin_learns_nothing_about_hosts_it_was_granted_nothing_on() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let beta = world.lab.host("beta").expect("beta").address.clone();
    let run = world.opsh(&["--output", "json", "hostile", "peek", "alpha", "beta", &beta]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    let result = |attempt: &str| -> String {
        doc["tables"][0]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|row| row[0]["text"] == attempt)
            .map(|row| row[1]["text"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no row {attempt}: {run:?}"))
    };
    let (other, absent) = (result("lookup other"), result("lookup absent"));
    assert!(other.starts_with("refused"), "{other}");
    assert_eq!(other.replace("beta", "X"), absent.replace("no-such-host", "X"), "a hidden host and an absent one get the same answer");
    assert_eq!(result("list hosts"), "alpha", "it lists only what it may use");
    let (sent, sent_absent) = (result("send other token"), result("send absent token"));
    // The refusal quotes the plugin's own token back to it (the operator's screen shows it as the
    // address: that is the operator's view, not the plugin's); it says nothing of whether the host exists.
    assert!(sent.starts_with("refused"), "the token of a hidden host is not sent: {sent}");
    assert_eq!(sent.replace(&beta, "X"), sent_absent.replace("{{addr:no-such-host}}", "X"), "{sent} / {sent_absent}");
    assert!(result("send hidden marker").starts_with("refused"), "{run:?}");
    assert_eq!(result("echo other address"), "{{addr:?}}", "an address of a hidden host comes back as an anonymous marker, not its name");
    assert!(!doc.to_string().contains("{{addr:beta"), "no token names the hidden host: {run:?}");
}

#[test]
fn the_operators_own_machine_is_granted_only_by_its_name() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, "\n[grants.hostile]\nssh = [\"*\"]\nfile-edit = [\"*\"]\nservice = [\"*\"]\n");
    let run = world.opsh(&["hostile", "local"]);
    assert_eq!(run.code, 5, "refused, not granted: {run:?}");
    assert!(run.stderr.contains("may not run commands on host local: not granted"), "{run:?}");
    assert!(!run.stdout.contains("root"), "{run:?}");
}

#[test]
fn twin_plugins_and_plugins_named_like_opsh_commands_are_refused() {
    let world = World::new();
    let first = world.install_hostile("a-hostile.wasm", None, GRANTS);
    let second = world.install_hostile("b-hostile.wasm", None, "");
    let reserved = world.install_hostile("journal.wasm", Some("journal"), "");
    let run = world.opsh(&["plugins"]);
    assert_eq!(run.code, 0, "{run:?}");
    let problem = run.all();
    assert!(
        problem.contains(&format!("plugin files {} and {} all call themselves \"hostile\"", first.display(), second.display())),
        "both files are named: {run:?}"
    );
    assert!(problem.contains(&format!("plugin file {} calls itself \"journal\", which is an opsh command", reserved.display())), "{run:?}");
    let used = world.opsh(&["hostile", "spoof"]);
    assert_eq!(used.code, 2, "neither twin is loaded: {used:?}");
    let journal = world.opsh(&["journal"]);
    assert_eq!(journal.code, 0, "the built-in journal still answers: {journal:?}");
}

#[test]
fn a_plugin_file_named_like_a_bundled_plugin_is_refused_even_when_that_plugin_is_not_loaded() {
    let world = World::new();
    let twin = world.install_hostile("horizon.wasm", Some("horizon"), "\n[grants.horizon]\nsql = [\"*\"]\n");
    // `pg status` loads the bundled pg only: the file calling itself horizon is still refused.
    let run = world.opsh(&["pg", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("alpha-app"), "the bundled pg ran: {run:?}");
    assert!(run.stderr.contains(&format!("plugin file {} calls itself \"horizon\", which a bundled plugin is; it is not loaded", twin.display())), "{run:?}");
    let run = world.opsh(&["horizon", "spoof"]);
    assert_eq!(run.code, 2, "the bundled horizon has no command spoof: {run:?}");
    assert!(run.stderr.contains("calls itself \"horizon\", which a bundled plugin is"), "{run:?}");
}

#[test]
fn a_grant_pinned_to_a_component_is_for_that_component_only() {
    let world = World::new();
    let good = crate::support::sha256_hex_bytes(&std::fs::read(hostile_wasm()).expect("wasm"));
    world.install_hostile("hostile.wasm", None, &format!("{GRANTS}component = \"sha256:{good}\"\n"));
    let pinned = world.opsh(&["hostile", "spoof"]);
    assert_eq!(pinned.code, 0, "the pinned component runs: {pinned:?}");
    // Another build claiming the same name: refused, with both hashes named.
    let bytes = append_custom_section(std::fs::read(hostile_wasm()).expect("wasm"));
    std::fs::write(world.home.path().join("data/plugins/hostile.wasm"), &bytes).expect("write");
    let other = crate::support::sha256_hex_bytes(&bytes);
    let run = world.opsh(&["hostile", "spoof"]);
    assert_eq!(run.code, 2, "{run:?}");
    let plugins = world.opsh(&["plugins"]);
    assert!(plugins.all().contains(&format!("are for component sha256:{good}, and it is sha256:{other}")), "{plugins:?}");
}

/// A custom section changes the component's bytes (and so its hash) without changing its code.
pub(crate) fn append_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"opsh-test";
    let payload = b"another build";
    bytes.push(0); // custom section id
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// The plan phase through SQL: every way out of the read-only transaction, checked with psql.
#[test]
fn planning_cannot_change_the_database_whatever_sql_the_plugin_sends() {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    world.install_hostile("hostile.wasm", None, GRANTS);
    assert_eq!(world.sql("alpha", "app", "SELECT rolsuper FROM pg_roles WHERE rolname = 'opsh'").trim(), "t", "the attacks run as a superuser login");
    for attack in ["commit", "rollback-then-write", "end", "read-write", "session-read-write", "do"] {
        let value = format!("hostile-{attack}");
        for extra in [&["--dry-run"][..], &["--yes"][..]] {
            let mut args = vec!["hostile", "plan-sql", "alpha-app", attack, &value];
            args.extend_from_slice(extra);
            let run = world.opsh(&args);
            assert_eq!(run.code, 1, "{attack}: the plan fails: {run:?}");
            assert!(run.stderr.contains("while planning") && run.stderr.contains("nothing was changed"), "{attack}: {run:?}");
        }
        let rows = world.sql("alpha", "app", &format!("SELECT count(*) FROM probe_log WHERE value = '{value}'"));
        assert_eq!(rows.trim(), "0", "{attack}: no row was written while planning");
    }
    let marker = std::path::PathBuf::from(format!("/tmp/opsh-hostile-copy-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let run = world.opsh(&["hostile", "plan-sql", "alpha-app", "copy-program", &marker.display().to_string(), "--dry-run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("only queries"), "{run:?}");
    assert!(!marker.exists(), "COPY … TO PROGRAM ran no command on the server");
}

#[test]
fn side_effect_functions_are_refused_however_they_are_spelt() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    // The attack, and the call it is refused for: the side-effect function itself, or the
    // function that would run SQL text given to it (whatever that text holds, or builds).
    for (attack, refused) in [
        ("quoted-terminate", "pg_terminate_backend"),
        ("comment-terminate", "pg_terminate_backend"),
        ("values-terminate", "pg_terminate_backend"),
        ("xml-terminate", "query_to_xml"),
        ("ts-stat-terminate", "ts_stat"),
        ("built-terminate", "query_to_xml_and_xmlschema"),
    ] {
        let victim = format!("opsh-victim-{attack}");
        std::thread::scope(|scope| {
            let session = scope.spawn(|| {
                world.lab.psql_as_admin(world.lab.cluster("alpha").expect("alpha"), "app", &format!("SET application_name = '{victim}'; SELECT pg_sleep(120)"))
            });
            crate::support::wait_for(10, "the victim session", || {
                (world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1").then_some(())
            });
            let run = world.opsh(&["hostile", "plan-sql", "alpha-app", attack, &victim, "--dry-run"]);
            assert_eq!(run.code, 1, "{attack}: {run:?}");
            assert!(run.stderr.contains(&format!("{refused}() changes the server")), "{attack}: {run:?}");
            // The victim still runs after the plan (it is then ended by the test, not by time).
            let alive = world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1";
            world.sql("alpha", "app", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{victim}'"));
            let _ = session.join();
            assert!(alive, "{attack}: the victim session survived the plan");
        });
    }
}

/// A reading session keeps the statements it prepared; a view the apply redefines in between
/// is read afresh by the verification: with a new column type its new rows come back (nothing
/// stale), and a side effect put into it is refused before it runs.
#[test]
fn a_view_redefined_by_the_apply_is_screened_again_when_verifying() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    world.sql("alpha", "app", "CREATE VIEW public.opsh_swapped AS SELECT 1::int AS x");
    let run = world.opsh(&["--output", "json", "hostile", "swap-view", "alpha-app", "retyped", "-", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(r#""x":"two""#), "the verification read the view as it is now: {run:?}");

    let victim = "opsh-victim-swapped";
    std::thread::scope(|scope| {
        let session = scope.spawn(|| {
            world.lab.psql_as_admin(world.lab.cluster("alpha").expect("alpha"), "app", &format!("SET application_name = '{victim}'; SELECT pg_sleep(120)"))
        });
        crate::support::wait_for(10, "the victim session", || {
            (world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1").then_some(())
        });
        world.sql("alpha", "app", "DROP VIEW public.opsh_swapped; CREATE VIEW public.opsh_swapped AS SELECT 1::int AS x");
        let run = world.opsh(&["hostile", "swap-view", "alpha-app", "terminate", victim, "--yes"]);
        let alive = world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1";
        world.sql("alpha", "app", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{victim}'"));
        let _ = session.join();
        assert!(alive, "the victim session survived the verification: {run:?}");
        assert!(run.stderr.contains("pg_terminate_backend() changes the server"), "{run:?}");
        assert_eq!(run.code, 3, "the view was changed, then verifying failed: {run:?}");
    });
}

/// One plugin's session is not another's: a temp view left by one cannot change what the
/// bundled `pg status` reports in the same opsh process.
#[test]
fn a_plugin_session_is_its_own() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let script = world.home.path().join("shadow.opsh");
    std::fs::write(&script, "hostile shadow alpha-app --yes\npg status\n").expect("script");
    let run = world.opsh(&["run", &script.display().to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.all().contains("this session now counts 4242 client backends"), "the attack works in its own session: {run:?}");
    let status = run.stdout.lines().find(|l| l.contains("alpha-app")).unwrap_or_else(|| panic!("no alpha-app row: {run:?}"));
    assert!(!status.contains("4242"), "pg status saw its own session, not the view: {status}");
}

/// A side effect wrapped in a function body is what opsh's own checks cannot see: with a
/// superuser login it happens (the documented limit), with a `plan-user` PostgreSQL refuses it.
#[test]
fn a_plan_user_stops_what_no_check_of_the_statement_can_see() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    world.sql(
        "alpha",
        "app",
        "CREATE FUNCTION public.opsh_wrapper(victim text) RETURNS boolean LANGUAGE plpgsql AS $$ \
         BEGIN RETURN (SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = victim); END $$; \
         CREATE ROLE opsh_plan LOGIN PASSWORD 'plan-secret-9'; GRANT pg_read_all_stats TO opsh_plan;",
    );
    let attack = |victim: &str| {
        std::thread::scope(|scope| {
            let session = scope.spawn(|| {
                world.lab.psql_as_admin(world.lab.cluster("alpha").expect("alpha"), "app", &format!("SET application_name = '{victim}'; SELECT pg_sleep(120)"))
            });
            crate::support::wait_for(10, "the victim session", || {
                (world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1").then_some(())
            });
            let run = world.opsh(&["hostile", "plan-sql", "alpha-app", "wrapper", victim, "--dry-run"]);
            // Whether the victim still runs right after the plan, however long the plan took;
            // then it is ended by the test, not by its sleep running out.
            let alive = world.sql("alpha", "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim}'")).trim() == "1";
            world.sql("alpha", "app", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{victim}'"));
            let _ = session.join();
            (run, alive)
        })
    };
    let (_, survived) = attack("opsh-victim-superuser");
    assert!(!survived, "as a superuser login the wrapped side effect happens: this is the limit the README states");

    let password_file = world.home.path().join("plan-password");
    std::fs::write(&password_file, "plan-secret-9\n").expect("password file");
    let inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    let with_plan_user = inventory.replacen(
        "[databases.alpha-app]\n",
        &format!("[databases.alpha-app]\nplan-user = \"opsh_plan\"\nplan-password = {{ file = \"{}\" }}\n", password_file.display()),
        1,
    );
    assert_ne!(with_plan_user, inventory, "the inventory has an alpha-app table to extend");
    std::fs::write(&world.inventory, with_plan_user).expect("write inventory");
    let (run, survived) = attack("opsh-victim-plan-user");
    assert!(survived, "with a plan-user PostgreSQL refused the wrapped side effect: {run:?}");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("(SQLSTATE 42501)"), "refused by PostgreSQL for want of privilege: {run:?}");
    assert!(!run.all().contains("plan-secret-9"), "{run:?}");
    let listed = world.opsh(&["inventory"]);
    assert!(listed.stdout.contains("plan-user opsh_plan") && !listed.all().contains("plan-secret-9"), "{listed:?}");
}

/// Deadlines: a plugin call ends at the inventory's wall clock whatever it waits on, a plugin
/// cannot ask a command for more time than the inventory allows, and a sleeping `describe()`
/// cannot stall opsh's start.
#[test]
fn a_plugin_cannot_outwait_its_deadline() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let inventory = std::fs::read_to_string(&world.inventory).expect("inventory");
    let shorter =
        inventory.replacen("[defaults]\n", "[defaults]\ncall-timeout-ms = 3000\n", 1).replacen("command-timeout-ms = 60000", "command-timeout-ms = 2000", 1);
    assert!(shorter.contains("call-timeout-ms = 3000") && shorter.contains("command-timeout-ms = 2000"), "{shorter}");
    std::fs::write(&world.inventory, shorter).expect("write inventory");
    let sleepy = world.opsh(&["hostile", "sleepy"]);
    assert_eq!(sleepy.code, 1, "{sleepy:?}");
    assert!(sleepy.stderr.contains("it ran past its deadline of 3 s for one read call (inventory [defaults] call-timeout-ms)"), "{sleepy:?}");
    let long = world.opsh(&["hostile", "long-exec", "alpha"]);
    assert_eq!(long.code, 4, "a command cut off by its timeout is outcome unknown: {long:?}");
    assert!(long.stderr.contains("`sleep` on host alpha did not finish within 2 s"), "the inventory's 2 s, not the plugin's ask: {long:?}");
}

#[test]
fn a_sleeping_describe_cannot_stall_the_start_and_a_warm_start_runs_no_plugin_code() {
    let world = World::new();
    world.install_hostile("sleeper.wasm", Some("sleeper"), "");
    // With the default CPU budget (5 s): the 2 s wall clock of describe() is what stops it.
    let output = world.command().env("OPSH_PLUGIN_CPU_MS", "5000").arg("--inventory").arg(&world.inventory).arg("plugins").output().expect("opsh");
    let run = crate::support::run_of(output);
    assert_eq!(run.code, 0, "opsh starts: {run:?}");
    assert!(run.all().contains("describe() failed: it ran past its deadline of 2 s for one describe call"), "{run:?}");
    assert!(run.stdout.contains("probe"), "the other plugins load: {run:?}");
    // The failure is remembered by the component's hash: the next start runs none of its code.
    let again = world.opsh(&["plugins"]);
    assert!(again.all().contains("at an earlier start: opsh remembers it by the component's hash"), "{again:?}");

    // The describe cache: change the cached answer, and a warm start shows the change — the
    // plugin's own describe() was not called.
    std::fs::remove_file(world.home.path().join("data/plugins/sleeper.wasm")).expect("remove sleeper");
    let cache = world.home.path().join("cache/components");
    let probe_sha = crate::support::sha256_hex_bytes(&std::fs::read(crate::support::probe_wasm()).expect("probe wasm"));
    let cached = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&probe_sha) && n.to_string_lossy().ends_with(".describe.json")))
        .unwrap_or_else(|| panic!("no cached describe of probe in {}", cache.display()));
    let text = std::fs::read_to_string(&cached).expect("cached describe");
    std::fs::write(&cached, text.replace("test fixture: exercises every capability", "answered by the describe cache")).expect("edit cache");
    let warm = world.opsh(&["help", "probe"]);
    assert_eq!(warm.code, 0, "{warm:?}");
    assert!(warm.stdout.contains("answered by the describe cache"), "{warm:?}");
}

/// file-edit on real paths: a symbolic link inside a granted directory reaches nothing outside it.
#[test]
fn a_symlink_inside_a_granted_directory_leads_nowhere() {
    let world = World::new();
    let outside = tempfile::Builder::new().prefix("opsh-outside").tempdir().expect("outside dir");
    std::os::unix::fs::symlink("/etc/passwd", world.lab.host_file("alpha", "/usr/local/etc/passwd-link")).expect("file link");
    std::os::unix::fs::symlink(outside.path(), world.lab.host_file("alpha", "/usr/local/evil")).expect("dir link");
    let read = world.opsh(&["--dry-run", "probe", "append", "alpha", "/usr/local/etc/passwd-link", "x"]);
    assert_eq!(read.code, 5, "refused: {read:?}");
    assert!(read.stderr.contains("leads through a symbolic link to /etc/passwd"), "{read:?}");
    assert!(!read.all().contains("root:x:0:0"), "{read:?}");
    let write = world.opsh(&["--yes", "probe", "append", "alpha", "/usr/local/evil/planted.conf", "x=1"]);
    assert_eq!(write.code, 5, "refused: {write:?}");
    assert!(!outside.path().join("planted.conf").exists(), "nothing was written through the linked directory");
    // The same write to the real directory works: the refusal is about the link, not the grant.
    let fine = world.opsh(&["--yes", "probe", "append", "alpha", "/usr/local/etc/plain.conf", "x=1"]);
    assert_eq!(fine.code, 0, "{fine:?}");
    assert_eq!(std::fs::read_to_string(world.lab.host_file("alpha", "/usr/local/etc/plain.conf")).expect("written"), "x=1\n");
}

/// The result of each attempt of `hostile outside-apply`, by attempt.
fn attempts(run: &crate::support::Run) -> std::collections::BTreeMap<String, String> {
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("json ({e}): {run:?}"));
    doc["tables"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| (row[0]["text"].as_str().unwrap_or_default().to_string(), row[1]["text"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Outside `apply` a command runs only as a probe the operator approved, exactly as approved:
/// whatever the plugin flags, sends as input or environment, or asks privileges for, nothing on
/// the host changes (checked on the host's own filesystem).
#[test]
fn a_command_outside_apply_runs_only_as_an_approved_probe_exactly_as_approved() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let path = "/usr/local/var/lib/hostile-was-here";
    let run = world.opsh(&["--output", "json", "hostile", "outside-apply", "alpha", "alpha-app", path]);
    assert_eq!(run.code, 0, "{run:?}");
    let results = attempts(&run);
    assert_eq!(results.len(), 9, "{results:?}");
    assert_eq!(results["shell in an argument"], format!("ran: x; touch {path}"), "an approved probe's argument stays one argument");
    for (attempt, result) in results.iter().filter(|(a, _)| *a != "shell in an argument") {
        assert!(result.starts_with("refused: "), "{attempt}: {result}");
    }
    assert!(
        results["flagged read-only"].contains("is not a probe approved for it") && results["flagged read-only"].contains("[grants.hostile]"),
        "{results:?}"
    );
    assert!(results["password"].contains("without any (passwords only while applying)"), "{results:?}");
    assert!(results["privileged"].contains("runs as the login user"), "{results:?}");
    assert!(!world.lab.host_file("alpha", path).exists(), "nothing was created on alpha");
}

/// A plugin's declared probes come with a topology that names it, on that topology's hosts; an
/// explicit grant approves only its own `probes`; every probe is listed with the plan and kept in
/// the journal.
#[test]
fn declared_probes_come_with_a_topology_shown_with_the_plan_and_journaled() {
    let world = World::new();
    let topology = "\n[topologies.hostile-net]\nplugin = \"hostile\"\nmembers = { node = [\"alpha\", \"alpha-app\"] }\n";
    world.install_hostile("hostile.wasm", None, topology);
    let run = world.opsh(&["--output", "json", "hostile", "outside-apply", "alpha", "alpha-app", "/usr/local/var/lib/x"]);
    let results = attempts(&run);
    assert_eq!(results["shell in an argument"], "ran: x; touch /usr/local/var/lib/x", "the declared `echo *` runs on the topology's host");
    assert!(results["sh -c"].starts_with("refused: "), "{results:?}");

    let plan = world.opsh(&["hostile", "probe-in-plan", "alpha-app", "alpha", "--dry-run"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("Read while planning (1 approved probe(s)):") && plan.stdout.contains("on alpha: echo planned-probe"), "{plan:?}");
    let json = world.opsh(&["--output", "json", "hostile", "probe-in-plan", "alpha-app", "alpha", "--dry-run"]);
    let doc: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(doc["probes"][0]["command"], "echo planned-probe", "{json:?}");
    let before = world.runs();
    let applied = world.opsh(&["hostile", "probe-in-plan", "alpha-app", "alpha", "--yes"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let run_id = crate::support::new_run(&world, &before);
    let probes: Vec<serde_json::Value> = world.records(&run_id).into_iter().filter(|r| r["record"] == "probe").collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(
        (probes[0]["during"].as_str(), probes[0]["host"].as_str(), probes[0]["command"].as_str()),
        (Some("plan"), Some("alpha"), Some("echo planned-probe"))
    );
    let shown = world.opsh(&["journal", &run_id]);
    assert!(shown.stdout.contains("Probes (commands run while nothing could change)") && shown.stdout.contains("echo planned-probe"), "{shown:?}");

    // An explicit grant without `probes` approves none, not even the declared ones.
    let other = World::new();
    other.install_hostile("hostile.wasm", None, "\n[grants.hostile]\nssh = [\"alpha\"]\nsql = [\"alpha-app\"]\n");
    let results = attempts(&other.opsh(&["--output", "json", "hostile", "outside-apply", "alpha", "alpha-app", "/usr/local/var/lib/x"]));
    assert!(
        results["shell in an argument"].starts_with("refused: ") && results["shell in an argument"].contains("add \"echo 'x; touch /usr/local/var/lib/x'\""),
        "{results:?}"
    );
}

/// A command handed a password prints it, encoded every common way; the plugin spreads what came
/// back into a table row, a file on the host, a log line, its own base64 and its step's note.
/// The password appears nowhere — checked with psql, on the host's disk, in opsh's output and files.
#[test]
fn a_password_handed_to_a_command_never_comes_back_in_any_encoding() {
    use base64::Engine as _;
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    world.install_hostile("hostile.wasm", None, GRANTS);
    let password = world.password();
    let path = "/usr/local/var/lib/hostile-spread";
    let run = world.opsh(&["hostile", "leak", "alpha-app", "alpha", path, "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let spread = std::fs::read_to_string(world.lab.host_file("alpha", path)).expect("the plugin wrote what it saw");
    assert!(spread.contains("********"), "what came back was the marker: {spread}");
    let row = world.sql("alpha", "app", "SELECT string_agg(value, ' ') FROM probe_log");
    assert!(row.contains("********"), "the row holds the marker: {row}");
    let mut forms = vec![password.clone(), hex::encode(&password), hex::encode_upper(&password)];
    for prefix in ["", "x", "xy"] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{password}"));
        // The characters that depend on the password alone.
        forms.push(encoded[(prefix.len() * 4).div_ceil(3)..encoded.len() - 4].to_string());
    }
    forms.push(base64::engine::general_purpose::STANDARD.encode(&spread));
    let mut places: Vec<(String, String)> = vec![("output".into(), run.all()), ("host file".into(), spread.clone()), ("table".into(), row)];
    places.extend(world.home_files().into_iter().map(|(p, c)| (p.display().to_string(), c)));
    let journal = world.opsh(&["--output", "json", "journal", &world.runs().pop().unwrap_or_default()]);
    places.push(("journal".into(), journal.all()));
    for (place, content) in &places {
        for form in forms.iter().filter(|f| f.len() >= 6) {
            assert!(!content.contains(form.as_str()), "{place} holds the password as {form}: {content}");
        }
    }
}

/// Peak resident memory of one opsh run (wait4's rusage of that very child, in KiB).
#[allow(unsafe_code)]
fn max_rss_kib(mut command: std::process::Command) -> (crate::support::Run, i64) {
    let child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn opsh");
    let pid = child.id() as libc::pid_t;
    let output = std::thread::spawn(move || {
        let mut child = child;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        use std::io::Read;
        let _ = child.stdout.take().expect("stdout").read_to_end(&mut out);
        let _ = child.stderr.take().expect("stderr").read_to_end(&mut err);
        (out, err)
    })
    .join()
    .expect("reader");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    let run = crate::support::Run { code, stdout: String::from_utf8_lossy(&output.0).into(), stderr: String::from_utf8_lossy(&output.1).into() };
    (run, usage.ru_maxrss)
}

/// What a plugin returns, logs and prints is bounded on the host's side: a 1.5 M-row result is
/// refused with a message (and opsh stays far below the 3.9 GB it once took), a flood of logs,
/// progress and output is cut without failing the command, one enormous string is refused, and a
/// capability the plugin did not declare is denied even where the inventory grants it.
#[test]
fn a_plugin_cannot_flood_the_host() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, &format!("{GRANTS}file-edit = [\"alpha:/usr/local/etc/*\"]\n"));
    let small = world.opsh(&["--output", "json", "hostile", "flood", "5000"]);
    assert_eq!(small.code, 0, "{small:?}");
    let rows = world.opsh(&["hostile", "flood", "150000"]);
    assert_eq!(rows.code, 1, "{rows:?}");
    assert!(rows.stderr.contains("it returned 150000 rows") && rows.stderr.contains("opsh takes at most 100000 rows"), "{rows:?}");
    let mut command = world.command();
    command.args(["--output", "json", "hostile", "flood", "1500000"]);
    let (flood, rss) = max_rss_kib(command);
    assert_eq!(flood.code, 1, "{flood:?}");
    assert!(flood.stdout.contains("tried to pass more than 40 MiB to opsh at once"), "{flood:?}");
    assert!(rss < 1 << 20, "opsh peaked at {} MiB", rss >> 10);
    eprintln!("1.5 M rows: opsh peaked at {} MiB", rss >> 10);

    let noise = world.opsh(&["--output", "json", "hostile", "noise"]);
    assert_eq!(noise.code, 0, "printing, logging and progress never fail the call: {noise:?}");
    assert_eq!(json_cell(&noise, "result"), "survived");
    assert!(noise.stderr.contains("its further log lines are dropped"), "{}", &noise.stderr[..noise.stderr.len().min(2000)]);
    assert!(noise.stderr.len() < 2 << 20, "{} bytes of stderr", noise.stderr.len());

    let huge = world.opsh(&["hostile", "huge-call", "alpha-app"]);
    assert_eq!(huge.code, 1, "{huge:?}");
    assert!(huge.stderr.contains("tried to pass more than 40 MiB to opsh at once"), "{huge:?}");

    let undeclared = world.opsh(&["--output", "json", "hostile", "undeclared", "alpha"]);
    assert_eq!(
        json_cell(&undeclared, "result"),
        "refused: plugin hostile did not declare the capability file-edit in describe() and may not use it",
        "{undeclared:?}"
    );
}

/// A plugin that echoes guesses through SQL learns a hit as the marker — and the operator is told
/// each time, so fishing for a password is seen.
#[test]
fn echoing_a_guessed_password_is_seen_by_the_operator() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, GRANTS);
    let miss = world.opsh(&["--output", "json", "hostile", "guess", "alpha-app", "not-the-password"]);
    assert_eq!(json_cell(&miss, "echoed"), "not-the-password", "{miss:?}");
    assert!(!miss.stderr.contains("a password from the inventory appeared"), "{miss:?}");
    let password = world.password();
    let hit = world.opsh(&["--output", "json", "hostile", "guess", "alpha-app", &password]);
    assert_eq!(json_cell(&hit, "echoed"), "********", "{hit:?}");
    assert!(hit.stderr.contains("a password from the inventory appeared in what plugin hostile got back in its read call"), "{hit:?}");
}
