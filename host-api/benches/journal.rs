//! The journal's overhead per step, as ratios against baselines measured in the same run:
//! - journal: an `intent` and a `result` record, each fsync'd (what the engine writes per step);
//! - unsynced: the same two records encoded and written without fsync (what durability costs);
//! - local step: the cheapest real step, `true` run through the exec driver on host `local`.
//! - team mode (with `OPSH_BENCH_STATE_INVENTORY=PATH`, an inventory whose `[state]` database
//!   has `opsh state init` done, e.g. the `team` lab's): the same records also committed to the
//!   state database, and taking a topology lock there against taking the local file lock.
//!
//! `cargo bench -p opsh-host --bench journal` (STEPS=N to change the count).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsh_host::capability::exec::{ExecRequest, Remote};
use opsh_host::inventory::Inventory;
use opsh_host::journal::{Journal, Record, Redactor, StepStatus};

fn per_step(total: Duration, steps: usize) -> f64 {
    total.as_secs_f64() * 1e6 / steps as f64
}

fn main() -> anyhow::Result<()> {
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir()?;
    let redact: Redactor = Arc::new(|s: &str| s.to_string());

    let journal = Journal::create(dir.path(), redact)?;
    let started = Instant::now();
    for i in 0..steps {
        journal.intent(i, "promote-standby", "run")?;
        journal.result(i, "promote-standby", StepStatus::Done, "promoted; accepts writes", 12)?;
    }
    let journaled = started.elapsed();

    let mut plain = std::fs::File::create(dir.path().join("unsynced.jsonl"))?;
    let started = Instant::now();
    for i in 0..steps {
        for record in [
            Record::Intent {
                at: opsh_host::timefmt::now(),
                index: i,
                step: "promote-standby".into(),
                by: "run".into(),
                pid: std::process::id(),
                operator: String::new(),
            },
            Record::Result {
                at: opsh_host::timefmt::now(),
                index: i,
                step: "promote-standby".into(),
                status: StepStatus::Done,
                message: "promoted; accepts writes".into(),
                duration_ms: 12,
            },
        ] {
            plain.write_all(serde_json::to_string(&record)?.as_bytes())?;
            plain.write_all(b"\n")?;
        }
    }
    let unsynced = started.elapsed();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let remote = Remote::new(Arc::new(Inventory::empty()), dir.path().join("ssh"));
    let local_steps = steps.min(200);
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..local_steps {
            remote.exec("local", ExecRequest::new(vec!["true".into()])).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let local = started.elapsed();

    let (j, u, l) = (per_step(journaled, steps), per_step(unsynced, steps), per_step(local, local_steps));
    println!("journal overhead per step ({steps} steps, {} on {})", "intent + result, fsync'd", dir.path().display());
    println!("  journal (fsync'd)      {j:9.1} µs/step");
    println!("  unsynced write         {u:9.1} µs/step   journal = {:.1}x this", j / u);
    println!("  cheapest real step     {l:9.1} µs/step   journal = {:.2}x this (local `true` via the exec driver)", j / l);
    if let Ok(path) = std::env::var("OPSH_BENCH_STATE_INVENTORY") {
        team_mode(std::path::Path::new(&path), steps, j)?;
    }
    Ok(())
}

/// Team mode's cost: per step (two records committed to the state database too) and per lock.
fn team_mode(inventory: &std::path::Path, steps: usize, local_per_step: f64) -> anyhow::Result<()> {
    use opsh_host::state::StateDb;
    let inventory = Arc::new(Inventory::load(inventory)?);
    let dir = tempfile::tempdir()?;
    let redact: Redactor = Arc::new(|s: &str| s.to_string());
    let state = Arc::new(StateDb::connect(&inventory).map_err(anyhow::Error::msg)?.ok_or_else(|| anyhow::anyhow!("the inventory has no [state]"))?);
    state.check_schema().map_err(anyhow::Error::msg)?;
    let journal = Journal::create(dir.path(), redact)?.mirrored(state.clone());
    let started = Instant::now();
    for i in 0..steps {
        journal.intent(i, "promote-standby", "run")?;
        journal.result(i, "promote-standby", StepStatus::Done, "promoted; accepts writes", 12)?;
    }
    let shared = per_step(started.elapsed(), steps);
    let rounds = steps.min(200);
    let keys = vec!["topology-bench".to_string()];
    let started = Instant::now();
    for i in 0..rounds {
        let held = opsh_host::lock::acquire(&dir.path().join("locks"), &keys, &format!("bench-{i}")).map_err(anyhow::Error::msg)?;
        drop(held);
    }
    let local_lock = per_step(started.elapsed(), rounds);
    let started = Instant::now();
    for i in 0..rounds {
        state.lock(&keys, &format!("bench-{i}")).map_err(anyhow::Error::msg)?;
        state.unlock_all();
    }
    let shared_lock = per_step(started.elapsed(), rounds);
    println!("team mode ({} as the state database)", state.name);
    println!("  journal + state db     {shared:9.1} µs/step   = {:.1}x the local journal", shared / local_per_step);
    println!("  local lock             {local_lock:9.1} µs/lock");
    println!("  state db lock          {shared_lock:9.1} µs/lock   = {:.1}x the local lock (take + give back)", shared_lock / local_lock);
    Ok(())
}
