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

#[test]
fn global_options_after_the_command_count_and_a_script_takes_yes_after_its_file() {
    let world = World::new();
    with_probe_table(&world);
    // `--inventory` after the command: the lab's databases are found through it.
    let run = world.command().args(["pg", "status", "--inventory"]).arg(&world.inventory).output().map(run_of).expect("run");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("alpha-app") && run.stdout.contains("beta-app"), "{run:?}");
    // `run FILE --yes`: the script's unconfirmed change is applied (no terminal to confirm on).
    let script = world.home.path().join("cron.opsh");
    std::fs::write(&script, "probe insert alpha-app from-cron\n").expect("write script");
    let run = world.opsh(&["run", script.to_str().expect("utf-8 path"), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT string_agg(value, ',') FROM probe_log"), "from-cron");
    // Inside a line --inventory cannot switch the session's inventory: said, nothing run.
    let run = world.opsh(&["-c", "pg status --inventory /nonexistent.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--inventory applies to the whole session"), "{run:?}");
}

#[test]
fn help_lists_the_builtins_and_the_environment_and_typos_get_a_did_you_mean() {
    let world = World::new();
    let help = world.command().arg("--help").output().map(run_of).expect("run");
    assert_eq!(help.code, 0, "{help:?}");
    for word in
        ["doctor [TOPOLOGY", "journal [--since", "resume RUN", "retry RUN STEP", "state init", "OPSH_DATA_DIR", "OPSH_INVENTORY", "6 a check found a problem"]
    {
        assert!(help.stdout.contains(word), "--help lists {word}: {help:?}");
    }
    for (args, said, code) in [
        (&["--inventroy", "x"][..], "unknown option --inventroy — did you mean --inventory?", 2),
        (&["jurnal"][..], "unknown command \"jurnal\" — did you mean journal?", 2),
        (&["pg", "stauts"][..], "pg has no command \"stauts\" — did you mean pg status?", 2),
        (&["pg", "status", "--chek"][..], "unknown option --chek; it takes none — did you mean --check?", 2),
    ] {
        let run = world.opsh(args);
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        assert!(run.stderr.contains(said), "{args:?}: {run:?}");
    }
}

#[test]
fn tab_lists_the_candidates_and_completes_their_common_prefix() {
    let world = World::new();
    // `re` Tab Tab: both built-ins are listed; `doctor alp` Tab completes to `alpha` (a host
    // and a database start so), Tab again lists both; then the line is cleared (Ctrl-U).
    // Compiled plugins cached first: the shell then reads the first key within the first pause.
    assert_eq!(world.opsh(&["help"]).code, 0);
    // A real terminal type (TERM=dumb turns line editing off).
    let text = world.repl_in(
        &[
            (b"", 1500),
            (b"re", 300),
            (b"\t", 300),
            (b"\t", 800),
            (b"\x15", 300),
            (b"doctor alp", 300),
            (b"\t", 600),
            (b"\t", 800),
            (b"\x15", 300),
            (b"jurnal\n", 1500),
            (b"exit\n", 500),
        ],
        true,
    );
    let listed = |words: &[&str]| text.lines().any(|l| l.trim_end_matches('\r').split_whitespace().eq(words.iter().copied()));
    assert!(listed(&["resume", "retry"]), "the candidates side by side: {text:?}");
    assert!(text.contains("doctor alpha\r"), "the common prefix completed: {text:?}");
    assert!(listed(&["alpha", "alpha-app", "alpha-postgres"]), "the host and the databases listed: {text:?}");
    assert!(text.contains("did you mean journal?"), "{text:?}");
}

#[test]
fn bash_completion_asks_opsh_and_offers_plugin_commands_and_inventory_names() {
    let world = World::new();
    let script = world.opsh(&["completions", "bash"]);
    assert_eq!(script.code, 0, "{script:?}");
    let bin_dir = crate::support::opsh_bin().parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // What bash's completion gives for the words typed so far (the last one being typed).
    let complete = |words: &str, cword: usize| {
        let program = format!("{}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; _opsh; printf '%s\\n' \"${{COMPREPLY[@]}}\"", script.stdout);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&program)
            .env("PATH", &path)
            .env("OPSH_INVENTORY", &world.inventory)
            .env("OPSH_CONFIG_DIR", world.home.path().join("config"))
            .env("OPSH_DATA_DIR", world.home.path().join("data"))
            .env("OPSH_CACHE_DIR", world.home.path().join("cache"))
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(complete("opsh pg st", 2), ["status"], "a plugin's command");
    let database = complete("opsh pg set-config ''", 3);
    assert!(database.contains(&"alpha-app".to_string()) && database.contains(&"beta-app".to_string()), "the inventory's databases: {database:?}");
    assert!(database.contains(&"--dry-run".to_string()), "and the line's options: {database:?}");
    assert_eq!(complete("opsh doctor alp", 2), ["alpha", "alpha-app", "alpha-postgres"], "hosts and databases of the inventory");
    let other = world.opsh(&["completions", "tcsh"]);
    assert_eq!(other.code, 2, "{other:?}");
    assert!(other.stderr.contains("usage: opsh completions bash|zsh|fish"), "{other:?}");
}
