//! Real Slony-I replication in a lab: per database, the schema on every node, `slonik` on the
//! origin (init cluster, nodes, paths both ways, set 1 with every public table and sequence),
//! the product's own start script for each node's slon, then `subscribe set` — and a wait until
//! every subscriber holds exactly the origin's rows (slonik returns before the copy is done).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::{Lab, check};
use crate::topology::SlonySpec;

pub const CLUSTER: &str = "slony";

/// Every database of every spec at once: the copies then overlap instead of queueing.
pub fn replicate(lab: &Lab, specs: &[SlonySpec]) -> Result<()> {
    let mut pending = Vec::new();
    for spec in specs {
        let nodes: Vec<&String> = std::iter::once(&spec.origin).chain(&spec.subscribers).collect();
        for (db, schema) in &spec.schemas {
            for node in &nodes {
                lab.psql_as_admin(lab.cluster_with(node, db)?, db, schema).with_context(|| format!("creating the schema of {db} on {node}"))?;
            }
            let origin = lab.cluster_with(&spec.origin, db)?;
            let tables = lab.psql_as_admin(origin, db, "SELECT coalesce(string_agg(format('%I.%I', n.nspname, c.relname), ' ' ORDER BY c.relname) FILTER (WHERE c.relkind = 'r'), '') || '|' || coalesce(string_agg(format('%I.%I', n.nspname, c.relname), ' ' ORDER BY c.relname) FILTER (WHERE c.relkind = 'S'), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S')")?;
            let (tables, sequences) = tables.split_once('|').context("listing the tables to replicate")?;
            let mut script = preamble(lab, &nodes, db)?;
            script.push_str(&format!("init cluster (id = 1, comment = 'node 1 {}');\n", spec.origin));
            for (i, node) in nodes.iter().enumerate().skip(1) {
                script.push_str(&format!("store node (id = {}, comment = 'node {} {node}', event node = 1);\n", i + 1, i + 1));
            }
            for (i, server) in nodes.iter().enumerate() {
                for j in 0..nodes.len() {
                    if i != j {
                        script.push_str(&format!("store path (server = {}, client = {}, conninfo = '{}');\n", i + 1, j + 1, conninfo(lab, server, db)?));
                    }
                }
            }
            script.push_str("create set (id = 1, origin = 1, comment = 'All tables and Sequences');\n");
            for (id, table) in tables.split_whitespace().enumerate() {
                script.push_str(&format!("set add table (set id = 1, origin = 1, id = {}, fully qualified name = '{table}');\n", id + 1));
            }
            for (id, sequence) in sequences.split_whitespace().enumerate() {
                script.push_str(&format!("set add sequence (set id = 1, origin = 1, id = {}, fully qualified name = '{sequence}');\n", id + 1));
            }
            slonik(lab, &spec.origin, db, "init", &script)?;
            for node in &nodes {
                start_slon(lab, node, db, spec)?;
            }
            let mut subscribe = preamble(lab, &nodes, db)?;
            for i in 1..nodes.len() {
                subscribe.push_str(&format!("subscribe set (id = 1, provider = 1, receiver = {}, forward = no);\n", i + 1));
            }
            slonik(lab, &spec.origin, db, "subscribe", &subscribe)?;
            let digest = digest_query(tables);
            let want = lab.psql_as_admin(origin, db, &digest)?;
            for subscriber in &spec.subscribers {
                pending.push(Copy { spec, subscriber: subscriber.clone(), db: db.clone(), digest: digest.clone(), want: want.clone(), restarted: false });
            }
        }
    }
    wait_for_copies(lab, pending)
}

struct Copy<'a> {
    spec: &'a SlonySpec,
    subscriber: String,
    db: String,
    digest: String,
    want: String,
    restarted: bool,
}

fn conninfo(lab: &Lab, host: &str, db: &str) -> Result<String> {
    let cluster = lab.cluster_with(host, db)?;
    Ok(format!("dbname={db} host={} port={} user=opsh", cluster.address, cluster.port))
}

fn preamble(lab: &Lab, nodes: &[&String], db: &str) -> Result<String> {
    let mut script = format!("cluster name = {CLUSTER};\n");
    for (i, node) in nodes.iter().enumerate() {
        script.push_str(&format!("node {} admin conninfo = '{}';\n", i + 1, conninfo(lab, node, db)?));
    }
    Ok(script)
}

fn slonik(lab: &Lab, host: &str, db: &str, what: &str, script: &str) -> Result<()> {
    let path = format!("/usr/local/var/lib/slonik-{db}-{what}.txt");
    fs::write(lab.host_file(host, &path), script)?;
    let output = lab.host_exec(host, &["slonik", &path])?;
    check(&output, &format!("slonik {what} for {db} on {host}"))
}

fn start_slon(lab: &Lab, host: &str, db: &str, spec: &SlonySpec) -> Result<()> {
    let output = lab.host_exec(host, &[&spec.start_script.replace("{db}", db)])?;
    check(&output, &format!("starting slon for {db} on {host}"))
}

/// Until every subscriber holds the origin's rows in every table. A slon that lost the start
/// race (it logs "nothing to listen for" and stalls for 10 s) is restarted once, as
/// lab-facts.md measured.
fn wait_for_copies(lab: &Lab, mut pending: Vec<Copy>) -> Result<()> {
    let started = Instant::now();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for mut copy in pending {
            let cluster = lab.cluster_with(&copy.subscriber, &copy.db)?;
            let active = lab.psql_as_admin(cluster, &copy.db, "SELECT coalesce(bool_and(sub_active), false) FROM _slony.sl_subscribe")?;
            if active == "t" && lab.psql_as_admin(cluster, &copy.db, &copy.digest)? == copy.want {
                continue;
            }
            if !copy.restarted && started.elapsed() > Duration::from_secs(6) {
                let _ = lab.host_exec(&copy.subscriber, &["pkill", "-f", &format!("slon .*dbname={}( |'|$)", copy.db)]);
                std::thread::sleep(Duration::from_millis(300));
                start_slon(lab, &copy.subscriber, &copy.db, copy.spec)?;
                copy.restarted = true;
            }
            if started.elapsed() > Duration::from_secs(45) {
                bail!(
                    "{} did not receive {} from {} within 45 s (see the slon logs under the host's /usr/local/var/log)",
                    copy.subscriber,
                    copy.db,
                    copy.spec.origin
                );
            }
            still.push(copy);
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One line that changes whenever any row of `tables` (space-separated, qualified) does.
pub fn digest_query(tables: &str) -> String {
    let parts: Vec<String> =
        tables.split_whitespace().map(|t| format!("(SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '-') FROM {t} t)")).collect();
    format!("SELECT {}", if parts.is_empty() { "''".to_string() } else { parts.join(" || ' ' || ") })
}
