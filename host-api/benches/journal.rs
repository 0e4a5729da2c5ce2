//! The journal's overhead per step, as ratios against baselines measured in the same run:
//! - journal: an `intent` and a `result` record, each fsync'd (what the engine writes per step);
//! - unsynced: the same two records encoded and written without fsync (what durability costs);
//! - local step: the cheapest real step, `true` run through the exec driver on host `local`.
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
            Record::Intent { at: opsh_host::timefmt::now(), index: i, step: "promote-standby".into(), by: "run".into(), pid: std::process::id() },
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
    Ok(())
}
