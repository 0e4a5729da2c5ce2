//! Each capability through the real WASM boundary, against the real lab.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{World, json_cell, sha256_hex};

#[test]
fn sql_reads_with_parameters_over_verified_tls_and_the_plugin_never_sees_the_address() {
    let world = World::new();
    let run = world.opsh(&["--output", "json", "probe", "sql", "alpha-app"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(json_cell(&run, "db"), "app");
    assert_eq!(json_cell(&run, "answer"), "42", "the $1 parameter was bound");
    assert_eq!(json_cell(&run, "tls"), "t", "the connection is encrypted (sslmode verify-full against the lab CA)");
    // The operator sees the real address; the plugin only ever saw a token.
    assert_eq!(json_cell(&run, "server"), world.lab.host("alpha").expect("alpha").address);
    assert_eq!(json_cell(&run, "plugin saw an IP"), "no");
}

#[test]
fn sql_write_is_applied_and_checked() {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    let run = world.opsh(&["--yes", "probe", "insert", "alpha-app", "hello"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log WHERE value = 'hello'"), "1");
    assert!(run.stderr.contains("done: every step applied and verified"), "{run:?}");
}

#[test]
fn a_write_while_planning_is_refused_by_postgresql_and_changes_nothing() {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    let run = world.opsh(&["--yes", "probe", "write-in-plan", "alpha-app"]);
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("read-only transaction") && run.stderr.contains("writes are refused while planning"), "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "0");
}

#[test]
fn ssh_exec_reports_exit_status_stdout_and_stderr_from_the_right_host() {
    let world = World::new();
    let run = world.opsh(&["--output", "json", "probe", "exec", "beta", "echo on-$LAB_HOST; echo oops >&2; exit 3"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(json_cell(&run, "status"), "3");
    assert_eq!(json_cell(&run, "stdout"), "on-beta");
    assert_eq!(json_cell(&run, "stderr"), "oops");
}

#[test]
fn a_command_that_changes_things_runs_only_when_applied() {
    let world = World::new();
    let marker = world.lab.host_file("alpha", "/usr/local/var/lib/marker");
    let dry = world.opsh(&["--dry-run", "probe", "run", "alpha", "touch /usr/local/var/lib/marker"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("run on alpha: sh -c 'touch /usr/local/var/lib/marker'"), "the plan shows the command: {dry:?}");
    assert!(!marker.exists(), "dry run changed nothing");
    let run = world.opsh(&["--yes", "probe", "run", "alpha", "touch /usr/local/var/lib/marker"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(marker.exists());
    // Each lab host has its own /usr/local: beta has no marker.
    assert!(!world.lab.host_file("beta", "/usr/local/var/lib/marker").exists());
}

#[test]
fn file_edit_is_atomic_keeps_mode_owner_and_a_backup() {
    let world = World::new();
    let path = world.lab.host_file("alpha", "/usr/local/etc/app.properties");
    std::fs::write(&path, "db.host=old\n").expect("seed file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("mode");
    let owner = std::fs::metadata(path.parent().expect("dir")).expect("dir").uid();
    std::os::unix::fs::chown(&path, Some(owner), None).expect("chown");

    let dry = world.opsh(&["--dry-run", "probe", "append", "alpha", "/usr/local/etc/app.properties", "db.port=5432"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("+db.port=5432") && dry.stdout.contains(" db.host=old"), "unified diff in the plan: {dry:?}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "db.host=old\n", "dry run changed nothing");

    let run = world.opsh(&["--yes", "probe", "append", "alpha", "/usr/local/etc/app.properties", "db.port=5432"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "db.host=old\ndb.port=5432\n");
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode kept");
    assert_eq!(meta.uid(), owner, "owner kept");
    let dir = path.parent().expect("dir");
    let names: Vec<String> = std::fs::read_dir(dir).expect("ls").flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    let backup = names.iter().find(|n| n.starts_with("app.properties.opsh-") && n.ends_with(".bak")).unwrap_or_else(|| panic!("no backup in {names:?}"));
    assert_eq!(std::fs::read_to_string(dir.join(backup)).expect("backup"), "db.host=old\n");
    assert!(!names.iter().any(|n| n.starts_with(".opsh-edit")), "no temp file left: {names:?}");
}

#[test]
fn a_write_with_an_outdated_hash_is_refused_by_file_edit_itself() {
    let world = World::new();
    let path = world.lab.host_file("alpha", "/usr/local/etc/app.properties");
    std::fs::write(&path, "db.host=changed-by-someone-else\n").expect("seed file");
    let stale = sha256_hex("db.host=what-the-plan-saw\n");
    let run = world.opsh(&["--yes", "probe", "append", "alpha", "/usr/local/etc/app.properties", "x=1", "--expect-sha", &stale]);
    assert_eq!(run.code, 1, "refused, nothing changed: {run:?}");
    assert!(run.stderr.contains("changed since it was read") && run.stderr.contains("nothing was written"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "db.host=changed-by-someone-else\n");
    let dir = path.parent().expect("dir");
    assert!(std::fs::read_dir(dir).expect("ls").flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".bak")), "no backup for a refused write");
}

#[test]
fn stopping_a_service_on_one_host_leaves_the_other_running() {
    let world = World::new();
    let status = |host: &str| world.lab.host_exec(host, &["/usr/local/bin/labsvc", "status", "app"]).expect("status").status.code();
    assert_eq!((status("alpha"), status("beta")), (Some(0), Some(0)), "both running before");
    let read = world.opsh(&["--output", "json", "probe", "service-status", "alpha", "app"]);
    assert_eq!(json_cell(&read, "state"), "running", "{read:?}");
    let run = world.opsh(&["--yes", "probe", "service", "alpha", "app", "stop"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(status("alpha"), Some(3), "stopped on alpha");
    assert_eq!(status("beta"), Some(0), "still running on beta");
    let read = world.opsh(&["--output", "json", "probe", "service-status", "alpha", "app"]);
    assert_eq!(json_cell(&read, "state"), "stopped", "{read:?}");
}

#[test]
fn a_database_password_reaches_a_remote_command_without_ever_being_shown() {
    let world = World::new();
    let password = world.password();
    let run = world.opsh(&["--output", "json", "--yes", "probe", "secret", "alpha", "alpha-app"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(doc["results"][0]["message"], format!("sha256 {}", sha256_hex(&password)), "the command saw the real password in its environment: {run:?}");
    let inventory = world.opsh(&["inventory"]);
    for text in [&run.all(), &inventory.all()] {
        assert!(!text.contains(&password), "password leaked: {text}");
    }
    for (path, content) in world.home_files() {
        assert!(!content.contains(&password), "password in {}", path.display());
    }
}

#[test]
fn inventory_lookups_give_plugins_address_tokens_and_operators_addresses() {
    let world = World::new();
    let run = world.opsh(&["--output", "json", "probe", "lookup", "alpha"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    let rows = doc["tables"][0]["rows"].as_array().expect("rows").clone();
    let address = rows.iter().find(|r| r[0]["text"] == "address").expect("address row");
    assert_eq!(address[1]["text"], world.lab.host("alpha").expect("alpha").address.as_str());
    assert_eq!(address[2]["text"], "no", "the plugin saw a token, not the address");
}

#[test]
fn a_transaction_is_all_or_nothing_and_scripts_run_only_when_applying() {
    let world = World::new();
    world.sql("alpha", "app", "CREATE TABLE probe_log(value text); GRANT ALL ON probe_log TO opsh;");
    let run = world.opsh(&["--yes", "probe", "txn", "alpha-app", "rolled-back", "--fail"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("database alpha-app: ERROR: division by zero (SQLSTATE 22012)"), "the SQL error names the database: {run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "0", "the insert was rolled back");
    let run = world.opsh(&["--yes", "probe", "txn", "alpha-app", "kept"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT string_agg(value, ',') FROM probe_log"), "kept");

    let run = world.opsh(&["--yes", "probe", "write-in-plan", "alpha-app", "--batch"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("a SQL script cannot run while planning"), "{run:?}");
    let run = world.opsh(&[
        "--yes",
        "probe",
        "batch",
        "alpha-app",
        "INSERT INTO probe_log VALUES ('a'); INSERT INTO probe_log VALUES ('b'); SELECT count(*) FROM probe_log",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.sql("alpha", "app", "SELECT count(*) FROM probe_log"), "3");
}

#[test]
fn files_and_services_on_the_local_machine_work_without_ssh() {
    let world = World::new();
    let text = std::fs::read_to_string(&world.inventory).expect("inventory");
    let local_dir = world.home.path().join("local-files");
    std::fs::create_dir_all(&local_dir).expect("dir");
    let path = local_dir.join("pg_hba.conf");
    std::fs::write(&path, "local all all peer\n").expect("seed");
    let text = text.replace(
        "file-edit = [\"alpha:/usr/local/*\", \"beta:/usr/local/*\"]",
        &format!("file-edit = [\"alpha:/usr/local/*\", \"beta:/usr/local/*\", \"local:{}/*\"]", local_dir.display()),
    );
    std::fs::write(&world.inventory, text.replace("service = [\"*:app\"]", "service = [\"*:app\", \"local:ssh\"]")).expect("inventory");
    let run = world.opsh(&["--yes", "probe", "append", "local", path.to_str().expect("utf-8"), "host all all 10.0.0.0/8 scram-sha-256"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "local all all peer\nhost all all 10.0.0.0/8 scram-sha-256\n");
    // `local` uses SysV `service`: the machine's own ssh service is installed and not running here.
    let run = world.opsh(&["--output", "json", "probe", "service-status", "local", "ssh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(["stopped", "running"].contains(&json_cell(&run, "state").as_str()), "{run:?}");
}
