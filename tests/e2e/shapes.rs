//! Shapes generated, not hand-written: random OpenTenBase clusters — how many servers, nodes and
//! standbys (and whether one cascades), their names, ports, directories and bin dirs, the order
//! the inventory lists members in, which server holds each master, DNS names or addresses, and
//! whether the master is alive (a switchover) or crashed — each built in the lab and failed over
//! with `otb promote`. The outcome is checked on the servers themselves with psql: exactly one
//! writable member, no row lost, the crashed master back read-only, every route at the new master.
//!
//! It prints its seed; `OPSH_SHAPES=N` runs N shapes (default 2, what CI runs) and
//! `OPSH_SHAPES_SEED=S` replays one run. A failing shape's topology is kept in
//! `/tmp/opsh-shapes/SEED-I.toml` for `scripts/lab up` to rebuild it by hand.

use std::fmt::Write as _;

use crate::otb::{route, takes_writes};
use crate::support::{World, wait_for};

/// SplitMix64: small, and the same sequence for the same seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    node: String,
    coordinator: bool,
    host: String,
    port: u16,
    dir: String,
    bin: Option<String>,
    standby_of: Option<String>,
}

#[derive(Debug)]
struct Shape {
    toml: String,
    members: Vec<Member>,
    target: String,
    old_master: String,
    crash: bool,
    dns: bool,
}

fn generate(rng: &mut Rng) -> Shape {
    let prefixes = ["db", "pg", "otb", "node", "srv", "x"];
    let prefix = prefixes[rng.below(prefixes.len())];
    let servers: Vec<String> = (0..rng.range(2, 4)).map(|i| format!("{prefix}{}{}", rng.range(1, 9), (b'a' + i as u8) as char)).collect();
    let dns = rng.chance(50);
    let root = format!("/usr/local/r{}", rng.range(10, 99));
    let mut used_ports: Vec<(String, u16)> = Vec::new();
    let mut port_on = |rng: &mut Rng, host: &str| loop {
        let port = rng.range(20_000, 59_999) as u16;
        if !used_ports.iter().any(|(h, p)| h == host && *p == port) {
            used_ports.push((host.to_string(), port));
            return port;
        }
    };
    let mut members: Vec<Member> = Vec::new();
    let cn_base = rng.range(1, 7);
    let dn_base = rng.range(1, 7);
    let coordinators = rng.range(1, 2);
    let datanodes = rng.range(1, 3);
    let target_index = rng.below(datanodes);
    for (coordinator, count, base) in [(true, coordinators, cn_base), (false, datanodes, dn_base)] {
        for i in 0..count {
            let node = format!("{}{:02}", if coordinator { "cn" } else { "dn" }, base + i);
            let target = !coordinator && i == target_index;
            let standbys = if target { rng.range(1, 3) } else { rng.range(0, 1) };
            let mut hosts = servers.clone();
            rng.shuffle(&mut hosts);
            let mut names_here: Vec<String> = Vec::new();
            for s in 0..=standbys {
                let host = hosts[s % hosts.len()].clone();
                let name = format!("{node}-{}{}", &host, if s >= hosts.len() { format!("-{s}") } else { String::new() });
                let standby_of = match s {
                    0 => None,
                    // Sometimes the last standby cascades from the one before it.
                    _ if s >= 2 && rng.chance(40) => names_here.last().cloned(),
                    _ => names_here.first().cloned(),
                };
                let bin = rng.chance(60).then(|| format!("{root}/bin{}", rng.range(1, 2)));
                let port = port_on(rng, &host);
                members.push(Member { name: name.clone(), node: node.clone(), coordinator, host, port, dir: format!("{root}/data/{name}"), bin, standby_of });
                names_here.push(name);
            }
        }
    }
    let target = format!("dn{:02}", dn_base + target_index);
    let old_master = members.iter().find(|m| m.node == target && m.standby_of.is_none()).map(|m| m.name.clone()).unwrap_or_default();
    let mut toml = format!("description = \"generated\"\npgxc_host_form = \"{}\"\n", if dns { "dns" } else { "address" });
    for server in &servers {
        writeln!(toml, "\n[[hosts]]\nname = \"{server}\"\ndns = {dns}").ok();
    }
    for m in &members {
        write!(
            toml,
            "\n[[clusters]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\ndata_dir = \"{}\"\npgxc = {{ node = \"{}\", type = \"{}\" }}\n",
            m.name,
            m.host,
            m.port,
            m.dir,
            m.node,
            if m.coordinator { "coordinator" } else { "datanode" }
        )
        .ok();
        if let Some(bin) = &m.bin {
            writeln!(toml, "bin_dir = \"{bin}\"").ok();
        }
        if let Some(up) = &m.standby_of {
            writeln!(toml, "standby_of = \"{up}\"").ok();
        }
    }
    let mut gtm_hosts = servers.clone();
    rng.shuffle(&mut gtm_hosts);
    let gtm_ports = [port_on(rng, &gtm_hosts[0]), port_on(rng, &gtm_hosts[1])];
    for (i, role) in ["master", "standby"].iter().enumerate() {
        write!(
            toml,
            "\n[[gtms]]\nhost = \"{}\"\nnode = \"gtm_{}\"\nport = {}\nrole = \"{role}\"\ndata_dir = \"{root}/gtm{i}\"\n",
            gtm_hosts[i], cn_base, gtm_ports[i]
        )
        .ok();
    }
    // The inventory lists the members in an order of its own.
    let mut listed = members.clone();
    rng.shuffle(&mut listed);
    let list = |coordinator: bool| listed.iter().filter(|m| m.coordinator == coordinator).map(|m| format!("\"{}\"", m.name)).collect::<Vec<_>>().join(", ");
    write!(
        toml,
        "\n[inventory.topologies.gen]\nplugin = \"otb\"\nmembers = {{ coordinator = [{}], datanode = [{}], server = [{}] }}\n\n[inventory.topologies.gen.attributes]\n\"gtm.name\" = \"gtm_{cn_base}\"\n\"gtm.hosts\" = \"{},{}\"\n",
        list(true),
        list(false),
        servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "),
        gtm_hosts[1],
        gtm_hosts[0]
    )
    .ok();
    for (i, host) in gtm_hosts.iter().take(2).enumerate() {
        write!(toml, "\"gtm.{host}.port\" = \"{}\"\n\"gtm.{host}.data-dir\" = \"{root}/gtm{i}\"\n", gtm_ports[i]).ok();
    }
    Shape { toml, members, target, old_master, crash: rng.chance(50), dns }
}

/// Build the shape, fail its target node over, and check the outcome directly; `Err` says what
/// did not hold.
fn try_shape(shape: &Shape, path: &std::path::Path) -> Result<(), String> {
    std::fs::write(path, &shape.toml).map_err(|e| e.to_string())?;
    let world = World::with_topology(&path.display().to_string());
    let of_target: Vec<&Member> = shape.members.iter().filter(|m| m.node == shape.target).collect();
    let writable = || of_target.iter().filter(|m| takes_writes(&world, &m.name)).map(|m| m.name.clone()).collect::<Vec<_>>();
    if writable() != vec![shape.old_master.clone()] {
        return Err(format!("before: {} should be the only master, writable: {:?}", shape.old_master, writable()));
    }
    world.sql(&shape.old_master, "postgres", "CREATE TABLE shape_rows(x int); INSERT INTO shape_rows SELECT generate_series(1, 20);");
    for m in of_target.iter().filter(|m| m.name != shape.old_master) {
        let cluster = world.lab.cluster(&m.name).map_err(|e| e.to_string())?.clone();
        wait_for(60, "the rows on every standby", || {
            (world.lab.psql_as_admin(&cluster, "postgres", "SELECT count(*) FROM shape_rows").ok()? == "20").then_some(())
        });
    }
    if shape.crash {
        world.lab.crash(&shape.old_master).map_err(|e| e.to_string())?;
    }
    let run = world.opsh(&["--yes", "otb", "promote", &shape.target]);
    if run.code != 0 {
        return Err(format!("otb promote {} exited {}: {run:?}", shape.target, run.code));
    }
    let masters = writable();
    let [new] = masters.as_slice() else { return Err(format!("after: writable members of {}: {masters:?}, not exactly one", shape.target)) };
    if *new == shape.old_master {
        return Err(format!("the old master {new} is still the master"));
    }
    let count = world.sql(new, "postgres", "SELECT count(*) FROM shape_rows");
    if count != "20" {
        return Err(format!("the new master {new} has {count} of 20 rows"));
    }
    if shape.crash {
        world.lab.start(&shape.old_master).map_err(|e| e.to_string())?;
        if writable() != vec![new.clone()] {
            return Err(format!("after restarting the crashed master: writable {:?}", writable()));
        }
    }
    let new_member = of_target.iter().find(|m| &m.name == new).ok_or("the new master is no member")?;
    let host = world.lab.host(&new_member.host).map_err(|e| e.to_string())?;
    let want = format!("{}:{}", if shape.dns { host.dns.clone().unwrap_or_default() } else { host.address.clone() }, new_member.port);
    let masters: Vec<&Member> = shape.members.iter().filter(|m| m.standby_of.is_none() && m.node != shape.target).chain(std::iter::once(*new_member)).collect();
    for on in masters {
        let have = route(&world, &on.name, &shape.target);
        if have != want {
            return Err(format!("{} routes {} to {have}, not {want}", on.name, shape.target));
        }
    }
    Ok(())
}

#[test]
fn generated_opentenbase_shapes_fail_over_to_exactly_one_master() {
    let count: usize = std::env::var("OPSH_SHAPES").ok().and_then(|n| n.parse().ok()).unwrap_or(2);
    let seed: u64 = std::env::var("OPSH_SHAPES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("generated shapes: seed {seed}, {count} shape(s) (replay with OPSH_SHAPES_SEED={seed} OPSH_SHAPES={count})");
    let mut rng = Rng(seed);
    std::fs::create_dir_all("/tmp/opsh-shapes").expect("shape dir");
    let mut failures = Vec::new();
    for i in 0..count {
        let shape = generate(&mut rng);
        let path = std::path::PathBuf::from(format!("/tmp/opsh-shapes/{seed}-{i}.toml"));
        eprintln!(
            "shape {i}: {} members, fail over {} ({} master {}), {}",
            shape.members.len(),
            shape.target,
            if shape.crash { "crashed" } else { "live" },
            shape.old_master,
            if shape.dns { "by DNS name" } else { "by address" }
        );
        match try_shape(&shape, &path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(why) => failures.push(format!("shape {i} ({}): {why}", path.display())),
        }
    }
    assert!(failures.is_empty(), "seed {seed}: {} of {count} shapes failed:\n{}", failures.len(), failures.join("\n"));
}

/// A random multi-site Tungsten deployment: 2–3 dataservices of 1–4 hosts, Tungsten names that
/// are FQDNs or the host names, masters anywhere, per-site installation paths, the inventory's
/// own member order; one dataservice drifted and re-provisioned from a random host of another.
struct TungstenShape {
    toml: String,
    sites: Vec<(String, Vec<String>, String)>,
    failed: String,
    source: String,
}

fn generate_tungsten(rng: &mut Rng) -> TungstenShape {
    let mut pool = vec!["north", "east", "west", "south", "apac", "emea"];
    rng.shuffle(&mut pool);
    let count = rng.range(2, 3);
    let domain = ["corp.example", "db.example.net", "dc1.example"][rng.below(3)];
    let mut toml = String::from("description = \"generated\"\n");
    let mut sites = Vec::new();
    let mut names = Vec::new();
    let mut masters = Vec::new();
    let mut homes = Vec::new();
    for site in pool.iter().take(count) {
        let hosts: Vec<String> = (0..rng.range(1, 4)).map(|i| format!("{}{}{}", &site[..2], rng.range(1, 9), (b'a' + i as u8) as char)).collect();
        for host in &hosts {
            writeln!(toml, "\n[[hosts]]\nname = \"{host}\"").ok();
            if rng.chance(50) {
                names.push(format!("{host} = \"db-{host}.{domain}\""));
            }
        }
        masters.push(format!("{site} = \"{}\"", hosts[rng.below(hosts.len())]));
        let home = if rng.chance(50) { format!("/opt/t{}-{site}", rng.range(1, 9)) } else { String::new() };
        if !home.is_empty() {
            homes.push(format!("{site} = {{ cluster_home = \"{home}/cluster\", cross_site_home = \"{home}/xsite\" }}"));
        }
        sites.push((site.to_string(), hosts, home));
    }
    let failed = sites[rng.below(sites.len())].0.clone();
    let others: Vec<&(String, Vec<String>, String)> = sites.iter().filter(|(s, _, _)| *s != failed).collect();
    let from = others[rng.below(others.len())];
    let source = from.1[rng.below(from.1.len())].clone();
    let list = |hosts: &[String]| hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
    let services = sites.iter().map(|(s, h, _)| format!("{s} = [{}]", list(h))).collect::<Vec<_>>().join(", ");
    write!(
        toml,
        "\n[tungsten]\nservices = {{ {services} }}\ndrifted = \"{failed}\"\nmasters = {{ {} }}\nnames = {{ {} }}\nhomes = {{ {} }}\n",
        masters.join(", "),
        names.join(", "),
        homes.join(", ")
    )
    .ok();
    let mut members: Vec<String> = sites
        .iter()
        .map(|(s, h, _)| {
            let mut h = h.clone();
            rng.shuffle(&mut h);
            format!("{s} = [{}]", list(&h))
        })
        .collect();
    rng.shuffle(&mut members);
    let mut attributes = vec!["cluster-home = \"/opt/continuent/tungsten\"".to_string(), "cross-site-home = \"/opt/replicator/tungsten\"".to_string()];
    for (site, _, home) in &sites {
        if !home.is_empty() {
            attributes.push(format!("\"{site}.cluster-home\" = \"{home}/cluster\", \"{site}.cross-site-home\" = \"{home}/xsite\""));
        }
    }
    write!(toml, "\n[inventory.topologies.gen]\nplugin = \"tungsten\"\nmembers = {{ {} }}\nattributes = {{ {} }}\n", members.join(", "), attributes.join(", "))
        .ok();
    TungstenShape { toml, sites, failed, source }
}

fn try_tungsten_shape(shape: &TungstenShape, path: &std::path::Path) -> Result<(), String> {
    std::fs::write(path, &shape.toml).map_err(|e| e.to_string())?;
    let world = World::with_topology(&path.display().to_string());
    let data = |host: &str| std::fs::read_to_string(world.lab.state.dir.join(format!("tungsten/data/{host}.tsv"))).unwrap_or_default();
    let home = |site: &str, cross: bool| {
        let custom = &shape.sites.iter().find(|(s, _, _)| s == site).map(|(_, _, h)| h.clone()).unwrap_or_default();
        match (custom.is_empty(), cross) {
            (true, false) => "/opt/continuent/tungsten".to_string(),
            (true, true) => "/opt/replicator/tungsten".to_string(),
            (false, false) => format!("{custom}/cluster"),
            (false, true) => format!("{custom}/xsite"),
        }
    };
    let run = world.opsh(&["--yes", "tungsten", "reprovision", &shape.failed, "--from", &shape.source]);
    if run.code != 0 {
        return Err(format!("tungsten reprovision {} --from {} exited {}: {run:?}", shape.failed, shape.source, run.code));
    }
    let want = data(&shape.source);
    for (site, hosts, _) in &shape.sites {
        for host in hosts {
            let (installation, what) = if *site == shape.failed { (home(site, false), "its own") } else { (home(site, true), "cross-site") };
            let state = crate::tungsten_shapes::state(&world, host, &installation, &shape.failed);
            if state != "ONLINE" {
                return Err(format!("{host}'s {what} {} replicator is {state}", shape.failed));
            }
            if *site == shape.failed && data(host) != want {
                return Err(format!("{host} does not hold {}'s data", shape.source));
            }
        }
    }
    let first = &shape.sites.iter().find(|(s, _, _)| *s == shape.failed).ok_or("no failed site")?.1[0];
    let ls = world
        .lab
        .host_exec(first, &["sh", "-c", &format!("echo ls | {}/tungsten-manager/bin/cctrl", home(&shape.failed, false))])
        .map_err(|e| e.to_string())?;
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    if !ls.contains(":AUTOMATIC:ONLINE]") || ls.contains("(OFFLINE, created") {
        return Err(format!("{} is not back in AUTOMATIC with its connectors online: {ls}", shape.failed));
    }
    Ok(())
}

#[test]
fn generated_tungsten_shapes_reprovision_every_host_of_the_failed_dataservice() {
    let count: usize = std::env::var("OPSH_SHAPES").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("OPSH_SHAPES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("generated Tungsten shapes: seed {seed}, {count} shape(s) (replay with OPSH_SHAPES_SEED={seed} OPSH_SHAPES={count})");
    let mut rng = Rng(seed);
    std::fs::create_dir_all("/tmp/opsh-shapes").expect("shape dir");
    let mut failures = Vec::new();
    for i in 0..count {
        let shape = generate_tungsten(&mut rng);
        let path = std::path::PathBuf::from(format!("/tmp/opsh-shapes/{seed}-tungsten-{i}.toml"));
        eprintln!("tungsten shape {i}: {} dataservices, re-provision {} from {}", shape.sites.len(), shape.failed, shape.source);
        match try_tungsten_shape(&shape, &path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(why) => failures.push(format!("shape {i} ({}): {why}", path.display())),
        }
    }
    assert!(failures.is_empty(), "seed {seed}: {} of {count} shapes failed:\n{}", failures.len(), failures.join("\n"));
}
