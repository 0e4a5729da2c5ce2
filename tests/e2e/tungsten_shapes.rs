//! `tungsten` on a deployment shaped unlike seed 004 (`tungsten-tri`: three dataservices of 2, 4
//! and 3 hosts, FQDN Tungsten names that differ from the inventory's, east's installations at
//! paths of their own, masters not first, hosts listed out of order). Outcomes are read from the
//! stand-ins' own tools on each host and from each host's data.

use crate::support::{Run, World, run_of};

fn on(world: &World, host: &str, script: &str) -> Run {
    run_of(world.lab.host_exec(host, &["sh", "-c", script]).expect("host exec"))
}

fn data(world: &World, host: &str) -> String {
    std::fs::read_to_string(world.lab.state.dir.join(format!("tungsten/data/{host}.tsv"))).expect("host data")
}

/// `state` of `service` in the installation at `home` on `host`, as its trepctl prints it.
pub fn state(world: &World, host: &str, home: &str, service: &str) -> String {
    crate::tungsten::trepctl_state(world, host, &format!("{home}/tungsten-replicator/bin/trepctl"), service)
}

const EAST: [&str; 4] = ["e1", "e2", "e3", "e4"];
const OTHERS: [(&str, &str); 5] = [
    ("n1", "/opt/replicator/tungsten"),
    ("n2", "/opt/replicator/tungsten"),
    ("w1", "/opt/replicator/tungsten"),
    ("w2", "/opt/replicator/tungsten"),
    ("w3", "/opt/replicator/tungsten"),
];

#[test]
fn reprovision_of_one_of_three_dataservices_resets_it_on_every_other_site_and_copies_by_tungsten_name() {
    let world = World::with_topology("tungsten-tri");
    assert_ne!(data(&world, "e2"), data(&world, "n2"), "east has drifted");
    let run = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "n2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("--source=db-north-02.corp.example"), "the source is named as Tungsten knows it: {run:?}");
    for host in EAST {
        assert_eq!(data(&world, host), data(&world, "n2"), "{host} holds n2's data");
        assert_eq!(state(&world, host, "/opt/tungsten-east/tungsten", "east"), "ONLINE", "{host}'s east replicator, in east's own installation");
    }
    for (host, home) in OTHERS {
        assert_eq!(state(&world, host, home, "east"), "ONLINE", "{host}'s cross-site east replicator");
        assert_eq!(
            state(&world, host, home, if host.starts_with('n') { "west" } else { "north" }),
            "ONLINE",
            "{host}'s other cross-site service was left alone"
        );
    }
    let ls = on(&world, "e1", "echo ls | /opt/tungsten-east/tungsten/tungsten-manager/bin/cctrl").stdout;
    assert!(ls.contains("COORDINATOR[db-east-01.corp.example:AUTOMATIC:ONLINE]") && ls.matches("(ONLINE, created=0").count() == 4, "{ls}");
    assert_eq!(data(&world, "w1"), data(&world, "n2"), "west was never touched");
}

#[test]
fn a_stopped_cross_site_replicator_is_flagged_and_refused_before_anything_changes() {
    let world = World::with_topology("tungsten-tri");
    // The cross-site installation of a 3-site deployment carries two services: -service is needed.
    let unnamed = on(&world, "w1", "/opt/replicator/tungsten/tungsten-replicator/bin/trepctl status");
    assert!(unnamed.code == 1 && unnamed.stdout.contains("You must specify a service name with the -service flag"), "{unnamed:?}");
    assert_eq!(on(&world, "w3", "/opt/replicator/tungsten/tungsten-replicator/bin/replicator stop").code, 0);
    let check = world.opsh(&["tungsten", "status", "--check"]);
    assert_eq!(check.code, 6, "{check:?}");
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with("every replicator is ONLINE") && l.contains("east") && l.contains("VIOLATED") && l.contains("w3 (cross-site)")),
        "{check:?}"
    );
    let before = std::fs::read_to_string(world.lab.state.dir.join("tungsten/state.json")).expect("state");
    let refused = world.opsh(&["--yes", "tungsten", "reprovision", "east", "--from", "n2"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("w3's cross-site east replicator is STOPPED"), "{refused:?}");
    assert_eq!(std::fs::read_to_string(world.lab.state.dir.join("tungsten/state.json")).expect("state"), before, "nothing was changed");
}
