//! Every example a bundled plugin gives in `help` runs, in its lab, as the help promises: read
//! commands read, change commands plan (`--dry-run` is added where the example has none, so
//! nothing changes). An example that needs an earlier event (a failover before a rebuild) must be
//! refused with the reason listed here — examples are documentation that is tested.

use crate::support::World;

/// (plugin, lab, example → the refusal expected on a fresh lab).
const CASES: &[(&str, &str, &[(&str, &str)])] = &[
    ("pg", "basic", &[]),
    ("otb", "otb", &[("otb rebuild dn01", "is already a streaming standby")]),
    ("horizon", "horizon", &[("horizon reinit-slony ta1 --db edb", "ta2-edb is a Slony subscriber")]),
    ("tungsten", "tungsten", &[]),
    ("xdb", "xdb", &[("xdb swap-control-schema --topology xdb-trigger --dry-run", "swap-control-schema needs the servers stopped")]),
];

fn examples_of(world: &World, plugin: &str) -> Vec<String> {
    let help = world.opsh(&["--output", "json", "help", plugin]);
    assert_eq!(help.code, 0, "{help:?}");
    let doc: serde_json::Value = serde_json::from_str(help.stdout.trim()).unwrap_or_else(|e| panic!("help is JSON ({e}): {help:?}"));
    let examples: Vec<String> = doc["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["examples"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["command"].as_str().map(str::to_string))
        .collect();
    assert!(!examples.is_empty(), "{plugin} documents examples");
    examples
}

fn run_examples(plugin: &str) {
    let (_, lab, refusals) = CASES.iter().find(|(p, _, _)| *p == plugin).expect("case");
    let world = World::with_topology(lab);
    for example in examples_of(&world, plugin) {
        let mut args: Vec<&str> = example.split_whitespace().collect();
        if !args.contains(&"--dry-run") {
            args.insert(0, "--dry-run");
        }
        let run = world.opsh(&args);
        match refusals.iter().find(|(e, _)| *e == example) {
            Some((_, why)) => assert!(run.code == 5 && run.stderr.contains(why), "`{example}` is refused on a fresh lab because {why}: {run:?}"),
            None => assert_eq!(run.code, 0, "`{example}` runs as its help says: {run:?}"),
        }
    }
}

#[test]
fn pg_examples_run() {
    run_examples("pg");
}

#[test]
fn otb_examples_run() {
    run_examples("otb");
}

#[test]
fn horizon_examples_run() {
    run_examples("horizon");
}

#[test]
fn tungsten_examples_run() {
    run_examples("tungsten");
}

#[test]
fn xdb_examples_run() {
    run_examples("xdb");
}
