//! `opsh doctor` against real labs: every host's ssh login and every database's login, TLS and
//! version, and each tool and privilege the plugins need — checked by the host on the lab's
//! real servers, with faults a pre-flight must find (a cut host, a wrong password, a tool that is
//! not where the inventory says) and a plugin that lies about what it needs.

use serde_json::Value;

use crate::support::World;

/// (target, check) → (result, detail, fix) of a `doctor --output json` run.
fn checks_of(run: &crate::support::Run) -> Vec<(String, String, String, String, String)> {
    let doc: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("doctor's JSON ({e}): {run:?}"));
    doc["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {run:?}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("target"), s("check"), s("result"), s("detail"), s("fix"))
        })
        .collect()
}

fn result_of<'a>(checks: &'a [(String, String, String, String, String)], target: &str, check: &str) -> &'a (String, String, String, String, String) {
    checks.iter().find(|c| c.0 == target && c.1 == check).unwrap_or_else(|| panic!("no check {check:?} of {target}: {checks:#?}"))
}

/// Rewrite one table of the inventory (`databases.NAME`), as an operator would by hand.
fn edit_inventory(world: &World, edit: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(&world.inventory).expect("inventory");
    let mut doc: toml::Table = text.parse().expect("inventory TOML");
    edit(&mut doc);
    std::fs::write(&world.inventory, toml::to_string(&doc).expect("TOML")).expect("write inventory");
}

fn database<'a>(doc: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    doc.get_mut("databases").and_then(|d| d.get_mut(name)).and_then(toml::Value::as_table_mut).unwrap_or_else(|| panic!("no database {name}"))
}

#[test]
fn doctor_on_a_healthy_otb_lab_passes_every_check_and_checks_what_the_runbooks_need() {
    let world = World::with_topology("otb");
    let run = world.opsh(&["--output", "json", "doctor"]);
    assert_eq!(run.code, 0, "{run:?}");
    let checks = checks_of(&run);
    let failed: Vec<_> = checks.iter().filter(|c| c.2 == "failed").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for host in ["otb1", "otb2"] {
        assert_eq!(result_of(&checks, host, "ssh").2, "ok");
        // The tools otb's steps run, where the inventory says they are, found on the real host.
        let tools: Vec<&str> = checks.iter().filter(|c| c.0 == host && c.1.starts_with("tool ")).map(|c| c.1.as_str()).collect();
        for tool in ["pg_ctl", "pg_controldata", "pg_rewind", "pg_basebackup", "gtm_ctl", "flock"] {
            assert!(tools.iter().any(|t| t.ends_with(&format!("/{tool}")) || *t == format!("tool {tool}")), "{host} needs {tool}: {tools:?}");
        }
    }
    for db in ["cn01-otb1", "cn01-otb2", "cn02-otb2", "dn01-otb1", "dn01-otb2", "dn02-otb2", "dn02-otb1"] {
        assert_eq!(result_of(&checks, db, "login opsh").2, "ok", "{db}");
        assert!(result_of(&checks, db, "server").3.starts_with("PostgreSQL 15"), "{db}");
        assert_eq!(result_of(&checks, db, "privilege superuser").2, "ok", "{db}");
        assert_eq!(result_of(&checks, db, "privilege replication").2, "ok", "{db}");
    }
    // One database: it and its host, nothing else.
    let one = world.opsh(&["--output", "json", "doctor", "dn01-otb2"]);
    assert_eq!(one.code, 0, "{one:?}");
    let targets: std::collections::BTreeSet<String> = checks_of(&one).into_iter().map(|c| c.0).filter(|t| t != "probe").collect();
    assert_eq!(targets.into_iter().collect::<Vec<_>>(), ["dn01-otb2", "otb2"]);
    let text = world.opsh(&["doctor", "otb"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stderr.contains(&format!("doctor: all {} checks passed", checks.len())), "the topology is the whole lab: {text:?}");
}

#[test]
fn doctor_finds_a_cut_host_a_wrong_password_and_a_missing_tool_and_still_checks_the_rest() {
    let mut world = World::with_topology("otb");
    let wrong = world.home.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    edit_inventory(&world, |doc| {
        database(doc, "dn01-otb1").insert("password".into(), toml::Value::Table(toml::toml! { file = (wrong.display().to_string()) }));
        let dn02 = database(doc, "dn02-otb1");
        let attributes = dn02.entry("attributes").or_insert_with(|| toml::Value::Table(Default::default()));
        attributes.as_table_mut().expect("attributes").insert("bin-dir".into(), "/opt/not-installed/bin".into());
    });
    world.lab.cut("otb2").expect("cut otb2");
    let run = world.opsh(&["--output", "json", "doctor"]);
    let text = world.opsh(&["doctor"]);
    world.lab.heal("otb2").expect("heal otb2");
    assert_eq!(run.code, 6, "a failed check is exit 6: {run:?}");
    let checks = checks_of(&run);

    let otb2 = result_of(&checks, "otb2", "ssh");
    assert_eq!((otb2.2.as_str(), otb2.3.as_str()), ("failed", "unreachable"), "{otb2:?}");
    assert!(otb2.4.contains("check that the host is up"), "{otb2:?}");
    assert!(
        checks.iter().filter(|c| c.0 == "otb2" && c.1.starts_with("tool ")).all(|c| c.2 == "skipped"),
        "tools of an unreachable host are not guessed: {checks:#?}"
    );
    for db in ["cn01-otb2", "cn02-otb2", "dn01-otb2", "dn02-otb2"] {
        let login = result_of(&checks, db, "login opsh");
        assert_eq!((login.2.as_str(), login.3.as_str()), ("failed", "unreachable"), "{db}: {login:?}");
    }

    let refused = result_of(&checks, "dn01-otb1", "login opsh");
    assert_eq!((refused.2.as_str(), refused.3.as_str()), ("failed", "auth failed"), "{refused:?}");
    assert!(refused.4.contains("password authentication failed"), "{refused:?}");
    assert!(!run.all().contains("not-the-password") && !run.all().contains(&world.lab.password().expect("password")), "no password is shown");

    let missing = result_of(&checks, "otb1", "tool /opt/not-installed/bin/pg_ctl");
    assert_eq!((missing.2.as_str(), missing.3.as_str()), ("failed", "missing"), "{missing:?}");
    assert!(missing.4.contains("bin-dir"), "it says where the path came from: {missing:?}");

    // What did answer is checked as usual.
    assert_eq!(result_of(&checks, "otb1", "ssh").2, "ok");
    assert_eq!(result_of(&checks, "otb1", "tool pg_ctl").2, "ok", "{checks:#?}");
    for db in ["cn01-otb1", "dn02-otb1"] {
        assert_eq!(result_of(&checks, db, "login opsh").2, "ok", "{db}");
    }
    let failed = checks.iter().filter(|c| c.2 == "failed").count();
    assert_eq!(text.code, 6, "{text:?}");
    assert!(text.stderr.contains(&format!("doctor: {failed} of ")), "the text says how many failed: {text:?}");
    assert!(text.stderr.contains("dn01-otb1 login opsh: database dn01-otb1"), "each failure with what to do, below the table: {text:?}");
    assert!(text.stdout.lines().all(|l| l.chars().count() <= 120), "the table fits 120 columns: {text:?}");
}

#[test]
fn doctor_names_a_mistyped_target_and_checks_nothing() {
    let world = World::with_topology("otb");
    let run = world.opsh(&["doctor", "dn01-otb3"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("dn01-otb3 is no topology, host or database") && run.stderr.contains("did you mean dn01-otb1?"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// The hostile fixture answers `requirements` with a command line disguised as a tool and with
/// targets it was granted nothing on: doctor runs none of it and says so.
#[test]
fn a_plugin_cannot_smuggle_a_command_through_doctor_or_make_it_probe_what_it_was_not_granted() {
    let world = World::new();
    world.install_hostile("hostile.wasm", None, "\n[grants.hostile]\nsql = [\"alpha-app\"]\nssh = [\"alpha\"]\n");
    let run = world.opsh(&["--output", "json", "doctor"]);
    assert_eq!(run.code, 6, "{run:?}");
    let checks = checks_of(&run);
    for smuggled in ["true; touch /tmp/opsh-doctor-pwned", "$(touch /tmp/opsh-doctor-pwned)"] {
        let check = result_of(&checks, "alpha", &format!("tool {smuggled}"));
        assert_eq!((check.2.as_str(), check.3.as_str()), ("failed", "missing"), "a command line is looked up as one program name: {check:?}");
    }
    assert!(!world.lab.host_file("alpha", "/tmp/opsh-doctor-pwned").exists(), "nothing ran on alpha");
    assert!(!std::path::Path::new("/tmp/opsh-doctor-pwned").exists(), "nothing ran here");
    for (target, check) in [("beta", "tool sh"), ("beta-app", "privilege superuser")] {
        let refused = result_of(&checks, target, check);
        assert_eq!((refused.2.as_str(), refused.3.as_str()), ("failed", "not the plugin's"), "{refused:?}");
        assert!(refused.4.contains("plugin hostile names") && refused.4.contains("not checked"), "{refused:?}");
    }
    assert_eq!(result_of(&checks, "alpha-app", "privilege superuser").2, "ok", "its honest need is checked");
    assert_eq!(result_of(&checks, "beta", "ssh").2, "ok", "beta itself is checked as every host is");
}
