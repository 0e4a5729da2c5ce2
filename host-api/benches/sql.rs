//! The native baseline for SQL through the sandbox (`scripts/bench-sql`): N single queries
//! `SELECT $1::int` from this process with tokio-postgres, over the connection opsh itself
//! opens (the same TLS, the same inventory database), one after another:
//! - `text`: each query by its text (tokio-postgres prepares it, then runs it: two round trips);
//! - `prepared`: the statement prepared once, then run N times (one round trip each).
//!
//! `OPSH_BENCH_INVENTORY=PATH OPSH_BENCH_DATABASE=NAME cargo bench -p opsh-host --bench sql`
//! (N=count, default 10 000). Prints one line per way: `text <seconds>`, `prepared <seconds>`.

use std::time::Instant;

use anyhow::Context;
use opsh_host::capability::sql::open;
use opsh_host::inventory::Inventory;

fn main() -> anyhow::Result<()> {
    let (Ok(inventory), Ok(database)) = (std::env::var("OPSH_BENCH_INVENTORY"), std::env::var("OPSH_BENCH_DATABASE")) else {
        println!("skipped: set OPSH_BENCH_INVENTORY and OPSH_BENCH_DATABASE (scripts/bench-sql does)");
        return Ok(());
    };
    let n: i32 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let inventory = Inventory::load(std::path::Path::new(&inventory)).with_context(|| format!("reading {inventory}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = open(&inventory, &database, false, "opsh bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        for i in 0..n {
            client.query_one("SELECT $1::int AS i", &[&i]).await?;
        }
        println!("text {:.6}", started.elapsed().as_secs_f64());
        let statement = client.prepare("SELECT $1::int AS i").await?;
        let started = Instant::now();
        for i in 0..n {
            client.query_one(&statement, &[&i]).await?;
        }
        println!("prepared {:.6}", started.elapsed().as_secs_f64());
        Ok(())
    })
}
