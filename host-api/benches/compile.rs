//! The baseline for a cold start (`scripts/bench-startup`): one plugin component compiled by Cranelift
//! with the engine opsh runs plugins on, and nothing else (no process start, no cache, no
//! describe(), no command).
//!
//! `OPSH_BENCH_COMPONENT=PATH cargo bench -p opsh-host --bench compile` (RUNS=count, default 5).
//! Prints `compile <seconds>`: the median of the runs.

use anyhow::Context;
use opsh_host::sandbox::Sandbox;
use wasmtime::Engine;
use wasmtime::component::Component;

fn main() -> anyhow::Result<()> {
    let Ok(path) = std::env::var("OPSH_BENCH_COMPONENT") else {
        println!("skipped: set OPSH_BENCH_COMPONENT to a plugin component (scripts/bench-startup does)");
        return Ok(());
    };
    let runs: usize = std::env::var("RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let engine = Engine::new(&Sandbox::engine_config()).map_err(|e| anyhow::anyhow!("starting the wasm engine: {e}"))?;
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = std::time::Instant::now();
        Component::new(&engine, &bytes).map_err(|e| anyhow::anyhow!("compiling {path}: {e}"))?;
        took.push(started.elapsed().as_secs_f64());
    }
    took.sort_by(f64::total_cmp);
    println!("compile {:.6}", took[took.len() / 2]);
    Ok(())
}
