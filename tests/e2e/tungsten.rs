//! `tungsten reprovision`: seed 004 against the `tungsten` lab, whose cctrl, trepctl,
//! replicator, tpm and tungsten_provision_slave are stand-ins with the real tools' output and
//! refusals (tests/src/tungsten.rs).

use crate::support::{Run, World, run_of};

pub(crate) const CCTRL: &str = "/opt/continuent/tungsten/tungsten-manager/bin/cctrl";
pub(crate) const CLUSTER_TREPCTL: &str = "/opt/continuent/tungsten/tungsten-replicator/bin/trepctl";
pub(crate) const CROSS_TREPCTL: &str = "/opt/replicator/tungsten/tungsten-replicator/bin/trepctl";
const REPLICATOR: &str = "/opt/continuent/tungsten/tungsten-replicator/bin/replicator";
const PROVISION: &str = "/opt/continuent/tungsten/tungsten-replicator/scripts/tungsten_provision_slave";

fn on(world: &World, host: &str, script: &str) -> Run {
    run_of(world.lab.host_exec(host, &["sh", "-c", script]).expect("host exec"))
}

pub(crate) fn data(world: &World, host: &str) -> String {
    std::fs::read_to_string(world.lab.state.dir.join(format!("tungsten/data/{host}.tsv"))).expect("host data")
}

pub(crate) fn cctrl_ls(world: &World, host: &str) -> String {
    on(world, host, &format!("echo ls | {CCTRL}")).stdout
}

/// `state` of a replication service as trepctl reports it (or its "Connection failed").
pub(crate) fn trepctl_state(world: &World, host: &str, trepctl: &str, service: &str) -> String {
    trepctl_field(world, host, trepctl, service, "state").unwrap_or_else(|stdout| stdout)
}

/// `field` of a replication service as its trepctl prints it, or trepctl's whole output when it
/// has no such line (a stopped replicator: "Connection failed").
pub(crate) fn trepctl_field(world: &World, host: &str, trepctl: &str, service: &str, field: &str) -> Result<String, String> {
    let run = on(world, host, &format!("{trepctl} -service {service} status"));
    let value =
        run.stdout.lines().find_map(|l| l.strip_prefix(field).filter(|v| v.starts_with([' ', ':'])).map(|v| v.trim_start_matches([' ', ':']).to_string()));
    value.ok_or(run.stdout)
}

/// Everything the procedure must restore: policy, connectors, every replicator.
fn assert_back_in_service(world: &World) {
    let ls = cctrl_ls(world, "east1");
    assert!(ls.contains("COORDINATOR[east1:AUTOMATIC:ONLINE]"), "policy automatic last: {ls}");
    assert_eq!(ls.matches("(ONLINE, created=0").count(), 3, "all connectors online: {ls}");
    for host in ["east1", "east2", "east3"] {
        assert_eq!(trepctl_state(world, host, CLUSTER_TREPCTL, "east"), "ONLINE", "{host}'s east replicator");
        assert_eq!(data(world, host), data(world, "west1"), "{host} holds west1's data");
    }
    for host in ["west1", "west2", "west3"] {
        assert_eq!(trepctl_state(world, host, CROSS_TREPCTL, "east"), "ONLINE", "{host}'s cross-site east replicator");
    }
}

#[test]
fn reprovision_copies_the_definitive_data_and_ends_in_automatic_policy() {
    let world = World::with_topology("tungsten");
    assert_ne!(data(&world, "east2"), data(&world, "west1"), "east has drifted");
    let state =
        |world: &World| (std::fs::read_to_string(world.lab.state.dir.join("tungsten/state.json")).expect("state"), data(world, "east1"), data(world, "east2"));
    let before = state(&world);
    let dry = world.opsh(&["--dry-run", "tungsten", "reprovision", "east", "--from", "west1"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let order: Vec<usize> = [
        "set policy maintenance",
        "router * offline",
        "trepctl -service east offline",
        "reset -all -y",
        "replicator stop",
        "tpm reset east",
        "replicator start",
        "--source=west1",
        "trepctl -service east online",
        "router * online",
        "set policy automatic",
    ]
    .iter()
    .map(|needle| dry.stdout.find(needle).unwrap_or_else(|| panic!("the plan shows {needle}: {dry:?}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "the seed's order, maintenance first and automatic last: {order:?}");
    let json = world.opsh(&["--output", "json", "--dry-run", "tungsten", "reprovision", "east", "--from", "west1"]);
    let planned: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert!(planned["steps"].as_array().is_some_and(|s| s.iter().all(|s| s["runs"] == "host")), "the host performs every step: {planned}");
    assert_eq!(state(&world), before, "--dry-run changed nothing");

    let runs = world.runs();
    let run = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "west1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = crate::support::new_run(&world, &runs);
    let compared = crate::support::performed_as_shown(&world, &planned, &id);
    assert!(compared >= 12, "the host performed {compared} effects");
    assert_back_in_service(&world);
    assert_ne!(data(&world, "west1"), before.1, "west1's data was not replaced by east's");
}

#[test]
fn a_failed_provision_leaves_maintenance_and_resume_finishes_only_when_every_replicator_is_online() {
    let world = World::with_topology("tungsten");
    let fault = world.lab.state.dir.join("tungsten/fail-provision-east2");
    std::fs::write(&fault, "").expect("inject a provisioning failure on east2");
    let run = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "west1"]);
    assert_eq!(run.code, 3, "changed, resumable: {run:?}");
    assert!(
        run.stderr.contains("east stays in MAINTENANCE policy") && run.stderr.contains("opsh resume"),
        "says it stays in maintenance and how to resume: {run:?}"
    );
    let id = world.runs().pop().expect("run id");
    assert!(cctrl_ls(&world, "east1").contains("COORDINATOR[east1:MAINTENANCE:ONLINE]"), "never back to automatic half-reset");

    // Meanwhile someone stops east3's replicator. The fault is fixed; the resumed run provisions
    // east2 but will not put the connectors online while east3 is down.
    assert_eq!(on(&world, "east3", &format!("{REPLICATOR} stop")).code, 0);
    std::fs::remove_file(&fault).expect("fix the fault");
    let resumed = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(resumed.code, 3, "{resumed:?}");
    assert!(
        resumed.stderr.contains("opsh does not put east's connectors online while its replicators are not (east3's east replicator is STOPPED)"),
        "the plugin catches it before cctrl would refuse: {resumed:?}"
    );
    let ls = cctrl_ls(&world, "east1");
    assert!(ls.contains("MAINTENANCE") && !ls.contains("(ONLINE, created=0"), "still maintenance, connectors still offline: {ls}");
    assert_eq!(data(&world, "east2"), data(&world, "west1"), "east2 was provisioned by the resume");

    assert_eq!(on(&world, "east3", &format!("{REPLICATOR} start")).code, 0);
    let finished = world.opsh(&["--yes", "resume", &id]);
    assert_eq!(finished.code, 0, "{finished:?}");
    assert_back_in_service(&world);
}

#[test]
fn the_stand_ins_refuse_the_wrong_order_and_the_plugin_refuses_first() {
    let world = World::with_topology("tungsten");
    // The tools' own refusals.
    let reset = on(&world, "west1", &format!("{CROSS_TREPCTL} -service east reset -all -y"));
    assert!(reset.code == 1 && reset.stdout.contains("Replication service east must be offline before resetting."), "{reset:?}");
    let managed = on(&world, "east2", &format!("{CLUSTER_TREPCTL} -service east offline && {CLUSTER_TREPCTL} -service east status"));
    assert!(
        managed.stdout.lines().any(|l| l.starts_with("state ") && l.ends_with(": ONLINE")),
        "in AUTOMATIC policy the manager puts it back online: {managed:?}"
    );
    let itself = on(&world, "east2", &format!("{PROVISION} --direct --source=east2"));
    assert!(
        itself.code == 1 && itself.stdout.contains("You cannot provision a node from itself."),
        "errors on stdout, as Tungsten's scripts print them: {itself:?}"
    );
    assert_eq!(on(&world, "east2", &format!("{REPLICATOR} stop")).code, 0);
    let refused = on(&world, "east2", &format!("{CLUSTER_TREPCTL} -service east status"));
    assert!(refused.code == 1 && refused.stdout.contains("Connection failed: A component of type 'replicator'"), "{refused:?}");

    let routers = on(&world, "east1", &format!("printf 'router * offline\\nrouter * online\\n' | {CCTRL}"));
    assert!(
        routers.code == 1 && routers.stdout.contains("ERROR: cannot put the connectors of east online: datasources not ONLINE: east2 (replicator STOPPED)"),
        "{routers:?}"
    );
    assert_eq!(data(&world, "east2"), data(&world, "east1").replace("east1", "east2"), "nothing was copied");

    // The plugin's pre-checks, before anything changes.
    let from_itself = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "east1"]);
    assert!(from_itself.code == 2 && from_itself.stderr.contains("is a host of east itself"), "{from_itself:?}");
    assert_eq!(on(&world, "west2", "/opt/continuent/tungsten/tungsten-replicator/bin/replicator stop").code, 0);
    let unhealthy = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "west2"]);
    assert!(unhealthy.code == 5 && unhealthy.stderr.contains("west2's west replicator is STOPPED: a source must be healthy and online"), "{unhealthy:?}");
    let unknown = world.opsh(&["--yes", "tungsten", "reprovision", "north", "--from", "west1"]);
    assert!(unknown.code == 2 && unknown.stderr.contains("its dataservices are"), "{unknown:?}");
    assert!(cctrl_ls(&world, "east1").contains("AUTOMATIC"), "refused plans changed nothing");
}
