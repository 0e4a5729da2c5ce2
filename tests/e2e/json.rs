//! `--output json`: every document opsh prints — read, plan, saved plan, change, journal, doctor,
//! import, the built-ins, usage errors, an inventory that does not load — is validated against
//! the published schema (`docs/opsh-output.schema.json`) by an independent validator (Python's
//! `jsonschema`, installed by scripts/setup into target/tools/venv), and says the exit code the
//! process really exited with. Values are read from the lab with psql, never from opsh.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{Run, World, run_of, target_dir};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

const VALIDATE: &str = r#"
import json, sys
import jsonschema
from jsonschema.exceptions import best_match
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
failed = 0
for line in sys.stdin:
    name, _, text = line.rstrip("\n").partition("\t")
    error = best_match(validator.iter_errors(json.loads(text)))
    if error is not None:
        failed += 1
        print(f"{name}: {error.message} at {'/'.join(map(str, error.absolute_path))}")
sys.exit(1 if failed else 0)
"#;

/// Validate each (name, document) against the schema file; the validator's complaints.
fn validate(documents: &[(String, Value)]) -> String {
    let python = target_dir().parent().expect("target").join("tools/venv/bin/python");
    assert!(python.exists(), "{} is missing: scripts/setup installs jsonschema there", python.display());
    let mut child = Command::new(&python)
        .args(["-c", VALIDATE])
        .arg(workspace().join("docs/opsh-output.schema.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let mut input = String::new();
    for (name, doc) in documents {
        input.push_str(&format!("{name}\t{doc}\n"));
    }
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("feed the validator");
    let out = child.wait_with_output().expect("validator");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { String::new() } else { said }
}

/// The one document a command printed, checked to say the exit code the process exited with.
fn document(name: &str, run: &Run) -> Value {
    let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: exactly one JSON document on stdout: {run:?}");
    let doc: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {run:?}"));
    assert_eq!(doc["exit"].as_i64(), Some(i64::from(run.code)), "{name}: the document's exit is the process's: {run:?}");
    doc
}

#[test]
fn every_json_document_follows_the_published_schema_and_says_the_real_exit_code() {
    let world = World::new();
    let json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        world.opsh(&all)
    };
    let mut docs: Vec<(String, Value)> = Vec::new();
    let mut keep = |name: &str, run: Run| -> Value {
        let doc = document(name, &run);
        docs.push((name.to_string(), doc.clone()));
        doc
    };

    for args in [&["help"][..], &["help", "pg"], &["help", "journal"], &["plugins"], &["inventory"], &["doctor"]] {
        keep(&args.join(" "), json(args));
    }
    let status = keep("pg status", json(&["pg", "status"]));
    // Cells are values: the connection count is a number, as the server counts them.
    let table = &status["tables"][0];
    let record = table["records"].as_array().expect("records").iter().find(|r| r["database"] == "alpha-app").expect("alpha-app's record").clone();
    assert!(record["connections"].is_u64(), "connections is a number: {record}");
    assert_eq!(record["state"], "up", "{record}");
    let version = world.sql("alpha", "app", "SHOW server_version");
    assert_eq!(record["version"], serde_json::json!(version), "a version stays the server's own text: {record}");

    let planned = keep("dry run", json(&["--dry-run", "pg", "set-config", "alpha-app", "work_mem", "8MB"]));
    assert!(planned["summary"].as_str().is_some_and(|s| s.contains("work_mem")), "a dry run keeps its summary: {planned}");
    assert_eq!(world.sql("alpha", "app", "SELECT setting FROM pg_settings WHERE name = 'work_mem'"), "4096", "the dry run changed nothing");
    let file = world.home.path().join("work_mem.plan");
    let file_arg = file.display().to_string();
    keep("saved plan", json(&["plan", "pg", "set-config", "alpha-app", "work_mem", "8MB", "--out", &file_arg]));
    let done = keep("change", json(&["--yes", "pg", "set-config", "alpha-app", "work_mem", "8MB"]));
    assert_eq!(world.sql("alpha", "app", "SELECT setting FROM pg_settings WHERE name = 'work_mem'"), "8192", "the change took effect");
    let run = done["run"].as_str().expect("run id").to_string();
    keep("journal", json(&["journal"]));
    keep("journal RUN", json(&["journal", &run]));
    keep("import", json(&["inventory", "import", "ssh-config", &workspace().join("tests/fixtures/import/ssh_config").display().to_string()]));

    let unknown = keep("unknown command", json(&["nosuch"]));
    assert_eq!((unknown["outcome"].as_str(), unknown["exit"].as_i64()), (Some("usage"), Some(2)), "{unknown}");
    assert!(unknown["message"].as_str().is_some_and(|m| m.contains("unknown command \"nosuch\"")), "{unknown}");
    let option = keep("unknown option", json(&["pg", "status", "--bogus"]));
    assert!(option["message"].as_str().is_some_and(|m| m.contains("--bogus")), "{option}");
    let missing = world.home.path().join("no-such-inventory.toml").display().to_string();
    let unloaded = run_of(world.command().args(["--output", "json", "--inventory", &missing, "pg", "status"]).output().expect("opsh"));
    let unloaded = keep("inventory that does not load", unloaded);
    assert_eq!(unloaded["outcome"], "usage", "{unloaded}");

    // A cron job's LANG does not change the document.
    let ja = run_of(
        world.command().env("LANG", "ja_JP.UTF-8").arg("--inventory").arg(&world.inventory).args(["--output", "json", "pg", "status"]).output().expect("opsh"),
    );
    let ja = keep("pg status under LANG=ja", ja);
    assert_eq!(ja["tables"][0]["title"], "PostgreSQL databases", "{ja}");

    assert_eq!(validate(&docs), "", "documents that do not follow docs/opsh-output.schema.json");

    // The validator is not asleep: a document with a field the schema does not know, and one
    // without its exit code, are refused.
    let mut extra = status.clone();
    extra["surprise"] = serde_json::json!(1);
    let mut no_exit = planned.clone();
    no_exit.as_object_mut().expect("object").remove("exit");
    let said = validate(&[("extra".into(), extra), ("no exit".into(), no_exit)]);
    assert!(said.contains("extra:") && said.contains("no exit:"), "{said}");
}
