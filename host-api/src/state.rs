//! Team mode. With `[state] database = "NAME"` in the inventory, every opsh that uses that
//! inventory — on any machine, as any user — keeps its locks and its journal in that PostgreSQL
//! database as well as locally, so two operators can never change one topology at once and a run
//! that died on one laptop can be resumed from another.
//!
//! - **Locks** are PostgreSQL session advisory locks taken by a connection that lives exactly as
//!   long as the change: a killed opsh, a closed laptop lid or a dead jump host ends the session
//!   and the server releases them (at once for a killed process; for a vanished machine when
//!   the server's TCP keepalive gives up, which this session sets to about 25 s). A row in
//!   `opsh.locks` says who holds each (run, OS user, machine, pid, since); a row whose session
//!   no longer holds the lock is never an obstacle, and a lock held by a live session cannot be
//!   taken.
//! - **The journal**: each record is committed here (autocommit) right after the local file has
//!   it and before the effect it announces starts. A record that cannot be committed fails the
//!   append, so the run stops before the next effect; the local records made meanwhile are
//!   pushed on the next contact (`sync`).
//! - **Schema**: versioned migrations applied by `opsh state init`; a schema newer than this
//!   opsh knows is refused.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::inventory::Inventory;
use crate::journal::{Audited, Mirror, RunLog};

/// The schema version this opsh writes; `MIGRATIONS[v]` takes a schema from version `v` to
/// `v + 1`.
pub const SCHEMA_VERSION: i32 = 1;

const MIGRATIONS: &[&str] = &[
    // 0 → 1: the journal's records and who holds which lock.
    "CREATE TABLE opsh.records (
        run text NOT NULL,
        seq integer NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        os_user text NOT NULL,
        machine text NOT NULL,
        pid integer NOT NULL,
        line text NOT NULL,
        PRIMARY KEY (run, seq));
     CREATE INDEX records_at ON opsh.records (at);
     CREATE TABLE opsh.locks (
        key text PRIMARY KEY,
        run text NOT NULL,
        os_user text NOT NULL,
        machine text NOT NULL,
        pid integer NOT NULL,
        since timestamptz NOT NULL,
        backend integer NOT NULL,
        lock_id bigint NOT NULL);",
];

/// `opsh.locks l`'s row is true now: the session it names holds that very advisory lock.
const HELD: &str = "EXISTS (SELECT 1 FROM pg_locks p WHERE p.pid = l.backend AND p.locktype = 'advisory' AND p.granted AND p.objsubid = 1 \
                    AND ((p.classid::bigint << 32) | p.objid::bigint) = l.lock_id)";

/// The high half of every opsh advisory lock key (`opsh` in ASCII): other applications' locks
/// in the same database do not collide with ours.
const LOCK_CLASS: i64 = 0x6f70_7368;

/// Who is running this opsh: the OS user, the machine's name, the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub user: String,
    pub machine: String,
    pub pid: u32,
}

impl Who {
    /// Read once per process (every intent record names it).
    pub fn current() -> Self {
        static WHO: std::sync::OnceLock<Who> = std::sync::OnceLock::new();
        WHO.get_or_init(|| Self { user: os_user(), machine: machine(), pid: std::process::id() }).clone()
    }

    /// `user@machine`, as the journal's `operator` says.
    pub fn operator(&self) -> String {
        format!("{}@{}", self.user, self.machine)
    }
}

/// The name of the user running this process, from the password database (not `$USER`).
fn os_user() -> String {
    whoami::username().ok().filter(|u| !u.is_empty()).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into())
}

/// This machine's name (its UTS namespace's: what `hostname` prints).
fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// A connection to the state database, for the length of one change (or one `journal`).
pub struct StateDb {
    /// The inventory's name of the database.
    pub name: String,
    pub who: Who,
    runtime: Option<tokio::runtime::Runtime>,
    client: Arc<Client>,
    timeout: Duration,
    /// Set once a call has failed: the session (and with it the locks) may be gone, so nothing
    /// more is recorded through it.
    broken: Mutex<Option<String>>,
    /// The advisory locks this session took: every record written after proves it still
    /// holds them (a session ended by the server, or a pooler's other backend, does not).
    held: Mutex<Vec<i64>>,
}

impl StateDb {
    /// Connect to the inventory's state database; `None` without `[state]`.
    pub fn connect(inventory: &Arc<Inventory>) -> Result<Option<Self>, String> {
        let Some(state) = &inventory.state else { return Ok(None) };
        let name = state.database.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("opsh-state")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the state database's client: {e}"))?;
        let timeout = Duration::from_millis(inventory.defaults.connect_timeout_ms.max(1000));
        let opening = {
            let inventory = inventory.clone();
            let name = name.clone();
            async move {
                let client = crate::capability::sql::open(&inventory, &name, false, "opsh state").await.map_err(|e| e.message().to_string())?;
                // A machine that vanishes is found out by the server within about 25 s, which
                // then ends this session and releases its locks.
                // A session ended by the server would take the locks with it mid-run.
                let settings = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; \
                                SET statement_timeout = 0; SET idle_session_timeout = 0; SET idle_in_transaction_session_timeout = 0";
                match tokio::time::timeout(timeout, client.batch_execute(settings)).await {
                    Ok(Ok(())) => Ok::<_, String>(client),
                    Ok(Err(e)) => Err(pg_message(&e)),
                    Err(_) => Err(format!("no answer within {:.0} s", timeout.as_secs_f32())),
                }
            }
        };
        let client = match on(&runtime, opening) {
            Ok(client) => client,
            Err(e) => {
                // Dropped inside the caller's runtime, a runtime must not wait for its tasks.
                runtime.shutdown_background();
                return Err(format!("the state database {name} cannot be reached: {e}"));
            }
        };
        Ok(Some(Self {
            name,
            who: Who::current(),
            runtime: Some(runtime),
            client: Arc::new(client),
            timeout,
            broken: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        }))
    }

    /// Run `work` on the state connection, waiting at most the timeout for it.
    fn call<T, F>(&self, what: &str, work: impl FnOnce(Arc<Client>) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        if let Some(why) = self.broken.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(format!("{what}: the state database {} stopped answering earlier ({why})", self.name));
        }
        let Some(runtime) = &self.runtime else { return Err(format!("{what}: the state database client has stopped")) };
        let timeout = self.timeout;
        let work = work(self.client.clone());
        let outcome = on(runtime, async move {
            match tokio::time::timeout(timeout, work).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(pg_message(&e)),
                Err(_) => Err(format!("no answer within {:.0} s", timeout.as_secs_f32())),
            }
        });
        outcome.map_err(|why| {
            *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            format!("{what} in the state database {}: {why}", self.name)
        })
    }

    /// The schema version there: 0 when opsh's schema is not there at all.
    fn version(&self) -> Result<i32, String> {
        self.call("reading opsh's schema version", |client| async move {
            let exists: bool = client.query_one("SELECT to_regclass('opsh.schema_version') IS NOT NULL", &[]).await?.get(0);
            if !exists {
                return Ok(0);
            }
            Ok(client.query_one("SELECT coalesce(max(version), 0) FROM opsh.schema_version", &[]).await?.get::<_, i32>(0))
        })
    }

    /// Refuse to use a schema this opsh does not know, or one not created yet.
    pub fn check_schema(&self) -> Result<(), String> {
        match self.version()? {
            SCHEMA_VERSION => Ok(()),
            0 => Err(format!("the state database {} has no opsh schema yet: run `opsh state init` once", self.name)),
            v if v > SCHEMA_VERSION => Err(format!(
                "the state database {} has opsh schema version {v}, newer than this opsh knows ({SCHEMA_VERSION}): upgrade opsh on this machine",
                self.name
            )),
            v => Err(format!("the state database {} has opsh schema version {v}; run `opsh state init` to migrate it to {SCHEMA_VERSION}", self.name)),
        }
    }

    /// Create or migrate opsh's schema; returns (version before, version now). Concurrent inits
    /// wait for each other; a newer schema is left untouched and refused.
    pub fn init(&self) -> Result<(i32, i32), String> {
        let steps: Vec<&'static str> = MIGRATIONS.to_vec();
        let outcome = self.call("creating opsh's schema", move |client| async move {
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}); CREATE SCHEMA IF NOT EXISTS opsh; \
                     CREATE TABLE IF NOT EXISTS opsh.schema_version (version integer NOT NULL, at timestamptz NOT NULL DEFAULT now())"
                ))
                .await?;
            let before: i32 = client.query_one("SELECT coalesce(max(version), 0) FROM opsh.schema_version", &[]).await?.get(0);
            if before > SCHEMA_VERSION {
                client.batch_execute("ROLLBACK").await?;
                return Ok(Err(before));
            }
            for migration in steps.iter().skip(before as usize) {
                if let Err(e) = client.batch_execute(migration).await {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
            }
            if before < SCHEMA_VERSION {
                client.batch_execute(&format!("INSERT INTO opsh.schema_version (version) VALUES ({SCHEMA_VERSION})")).await?;
            }
            client.batch_execute("COMMIT").await?;
            Ok(Ok(before))
        })?;
        match outcome {
            Ok(before) => Ok((before, SCHEMA_VERSION)),
            Err(newer) => Err(format!(
                "the state database {} has opsh schema version {newer}, newer than this opsh knows ({SCHEMA_VERSION}): nothing was changed; upgrade opsh",
                self.name
            )),
        }
    }

    /// Take every lock or none, for as long as this connection lives. The error names the
    /// holder. A holder on this machine whose process has ended is waited for a moment (its
    /// session is being closed by the server).
    pub fn lock(&self, keys: &[String], run: &str) -> Result<(), String> {
        let mut tries = 0;
        loop {
            match self.try_lock(keys, run) {
                Err(Refusal::Held { holder: Some(h), .. }) if tries < 30 && h.machine == self.who.machine && !crate::lock::process_alive(h.pid) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(refusal) => return Err(refusal.to_string()),
                Ok(()) => return Ok(()),
            }
        }
    }

    fn try_lock(&self, keys: &[String], run: &str) -> Result<(), Refusal> {
        let keys_ids: Vec<i64> = keys.iter().map(|k| lock_id(k)).collect();
        let keys = keys.to_vec();
        let who = self.who.clone();
        let run = run.to_string();
        let outcome = self.call("taking the locks", move |client| async move {
            let mut taken: Vec<i64> = Vec::new();
            for key in &keys {
                let id = lock_id(key);
                let got: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&id]).await?.get(0);
                if !got {
                    for id in &taken {
                        client.query_one("SELECT pg_advisory_unlock($1)", &[id as &(dyn tokio_postgres::types::ToSql + Sync)]).await?;
                    }
                    let holder = client
                        .query(&format!("SELECT l.run, l.os_user, l.machine, l.pid, to_char(l.since, 'YYYY-MM-DD HH24:MI:SS TZ') FROM opsh.locks l WHERE l.key = $1 AND {HELD}"), &[key])
                        .await?;
                    let holder = holder.first().map(|r| Box::new(Holder {
                        run: r.get(0),
                        user: r.get(1),
                        machine: r.get(2),
                        pid: r.get::<_, i32>(3).max(0) as u32,
                        since: r.get(4),
                    }));
                    return Ok(Err((key.clone(), holder)));
                }
                taken.push(id);
                client
                    .execute(
                        "INSERT INTO opsh.locks (key, run, os_user, machine, pid, since, backend, lock_id) VALUES ($1, $2, $3, $4, $5, now(), pg_backend_pid(), $6) \
                         ON CONFLICT (key) DO UPDATE SET run = EXCLUDED.run, os_user = EXCLUDED.os_user, machine = EXCLUDED.machine, pid = EXCLUDED.pid, \
                         since = EXCLUDED.since, backend = EXCLUDED.backend, lock_id = EXCLUDED.lock_id",
                        &[key, &run, &who.user, &who.machine, &(who.pid as i32), &id],
                    )
                    .await?;
            }
            Ok(Ok(()))
        })
        .map_err(Refusal::Failed)?;
        if outcome.is_ok() {
            self.held.lock().unwrap_or_else(|p| p.into_inner()).extend(keys_ids.iter().copied());
        }
        outcome.map_err(|(key, holder)| Refusal::Held { key, holder })
    }

    /// Give back every lock this session holds (the run ended; the connection may live on).
    pub fn unlock_all(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let _ = self.call("giving back the locks", |client| async move { client.batch_execute("SELECT pg_advisory_unlock_all()").await });
    }

    /// The runs whose lock a live session holds now.
    pub fn live_runs(&self) -> Result<Vec<String>, String> {
        self.call("reading the locks", |client| async move {
            let rows = client.query(&format!("SELECT DISTINCT l.run FROM opsh.locks l WHERE {HELD}"), &[]).await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    /// The journal lines of every run with a record at or after `since` (`YYYY-MM-DD`, or all),
    /// each line with who wrote it: (run, [(line, user, machine)]), runs in id order.
    pub fn runs(&self, since: Option<&str>) -> Result<Vec<(String, Vec<Line>)>, String> {
        let since = since.map(str::to_string);
        self.call("reading the journal", move |client| async move {
            let rows = client
                .query(
                    "SELECT run, line, os_user, machine, to_char(at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MSOF') FROM opsh.records \
                     WHERE $1::text IS NULL OR run IN (SELECT run FROM opsh.records WHERE at >= $1::date) ORDER BY run, seq",
                    &[&since],
                )
                .await?;
            let mut runs: Vec<(String, Vec<Line>)> = Vec::new();
            for row in rows {
                let run: String = row.get(0);
                let line = Line { text: row.get(1), user: row.get(2), machine: row.get(3), at: row.get(4) };
                match runs.last_mut() {
                    Some((last, lines)) if *last == run => lines.push(line),
                    _ => runs.push((run, vec![line])),
                }
            }
            Ok(runs)
        })
    }

    /// The journal lines of one run, by its id or a unique prefix or suffix of it.
    pub fn run(&self, id: &str) -> Result<Option<(String, Vec<Line>)>, String> {
        let pattern = id.to_string();
        let ids: Vec<String> = self.call("finding the run", move |client| async move {
            let rows = client
                .query("SELECT DISTINCT run FROM opsh.records WHERE run = $1 OR starts_with(run, $1) OR right(run, length($1)) = $1 ORDER BY run", &[&pattern])
                .await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })?;
        let run = match ids.iter().find(|r| *r == id).or(if ids.len() == 1 { ids.first() } else { None }) {
            Some(run) => run.clone(),
            None if ids.is_empty() => return Ok(None),
            None => return Err(format!("{} runs in the state database {} match {id:?}; give more of the id", ids.len(), self.name)),
        };
        let wanted = run.clone();
        let lines = self.call("reading the run", move |client| async move {
            let rows = client
                .query("SELECT line, os_user, machine, to_char(at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MSOF') FROM opsh.records WHERE run = $1 ORDER BY seq", &[&wanted])
                .await?;
            Ok(rows.iter().map(|r| Line { text: r.get(0), user: r.get(1), machine: r.get(2), at: r.get(3) }).collect::<Vec<_>>())
        })?;
        Ok(Some((run, lines)))
    }

    /// Every run with a record on or after `since` (all without), as the state database has
    /// it: who wrote each record, and whether its process is alive (it holds its lock).
    pub fn audited(&self, since: Option<&str>) -> Result<(Vec<Audited>, Vec<String>), String> {
        let live = self.live_runs()?;
        let (mut runs, mut damaged) = (Vec::new(), Vec::new());
        for (run, lines) in self.runs(since)? {
            match self.parse(&run, &lines) {
                Ok(log) => runs.push(audited(log, &lines, live.contains(&run))),
                Err(e) => damaged.push(e),
            }
        }
        Ok((runs, damaged))
    }

    /// One run by its id (or a unique prefix or suffix), as the state database has it.
    pub fn audited_run(&self, id: &str) -> Result<Option<Audited>, String> {
        let live = self.live_runs()?;
        let Some((run, lines)) = self.run(id)? else { return Ok(None) };
        let log = self.parse(&run, &lines)?;
        let alive = live.contains(&run);
        Ok(Some(audited(log, &lines, alive)))
    }

    fn parse(&self, run: &str, lines: &[Line]) -> Result<RunLog, String> {
        let text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
        RunLog::parse(run, &text, &format!("{run} in the state database {}", self.name)).map_err(|e| format!("{e:#}"))
    }

    /// Push what the local journal has and the state database does not: records made while it
    /// could not be reached. Only runs journaled for this state database are pushed. Returns how
    /// many records were pushed.
    pub fn sync(&self, journal_dir: &Path) -> Result<usize, String> {
        let mut pushed = 0;
        for log in RunLog::list(journal_dir) {
            if log.state_database() != Some(self.name.as_str()) {
                continue;
            }
            // A run kept on this machine by choice is pushed once it has ended: pushed while
            // it goes on, it would look dead elsewhere (it holds no shared lock).
            if log.local_only() && !matches!(log.status().as_str(), "done" | "failed" | "unknown" | "interrupted" | "refused") {
                continue;
            }
            pushed += self.push(journal_dir, &log.run)?;
        }
        Ok(pushed)
    }

    /// Push the complete records of one local run that the state database does not have.
    pub fn push(&self, journal_dir: &Path, run: &str) -> Result<usize, String> {
        let Ok(text) = std::fs::read_to_string(journal_dir.join(format!("{run}.jsonl"))) else { return Ok(0) };
        // Only whole lines: a torn last one (its writer died, or writes it now) is no record.
        let lines: Vec<&str> = text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')).collect();
        let have: i64 = self.call("counting a run's records", {
            let run = run.to_string();
            move |client| async move { Ok(client.query_one("SELECT count(*) FROM opsh.records WHERE run = $1", &[&run]).await?.get(0)) }
        })?;
        let mut pushed = 0;
        for (seq, line) in lines.iter().enumerate().skip(have.max(0) as usize) {
            match self.insert(run, seq as u32, line)? {
                Ok(()) => pushed += 1,
                // Another machine went on with the run meanwhile: the shared journal is the
                // run's, and what only this machine kept of it had not started any effect.
                Err(NotStored::Differs { .. }) => break,
                Err(why) => return Err(format!("pushing run {run} to the state database {}: {why}", self.name)),
            }
        }
        Ok(pushed)
    }
}

impl Mirror for StateDb {
    fn record(&self, run: &str, seq: u32, line: &str) -> anyhow::Result<()> {
        match self.insert(run, seq, line) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => {
                *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
                Err(anyhow::anyhow!("recording the journal in the state database {}: {why}", self.name))
            }
            Err(e) => Err(anyhow::Error::msg(e)),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotStored {
    /// Another record holds its place (another machine went on with the run).
    Differs { run: String, seq: u32 },
    /// The session no longer holds the locks it took.
    LockLost,
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Differs { run, seq } => {
                write!(f, "it already holds another record {seq} of run {run} (written by another opsh): this run's journal and the shared one differ")
            }
            Self::LockLost => f.write_str("this session no longer holds the run's locks (was it ended by the server or a pooler?)"),
        }
    }
}

impl StateDb {
    /// Store one record: proving, once locks are taken, that this session still holds them;
    /// a record already there counts as stored only if it is the same.
    fn insert(&self, run: &str, seq: u32, line: &str) -> Result<Result<(), NotStored>, String> {
        let (run, line, who) = (run.to_string(), line.to_string(), self.who.clone());
        let held: Vec<i64> = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.call("recording the journal", move |client| async move {
            let count = held.len() as i64;
            let inserted = client
                .execute(
                    "INSERT INTO opsh.records (run, seq, os_user, machine, pid, line) SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE (SELECT count(*) FROM pg_locks p WHERE p.pid = pg_backend_pid() AND p.locktype = 'advisory' AND p.granted AND p.objsubid = 1 \
                            AND ((p.classid::bigint << 32) | p.objid::bigint) = ANY($7)) = $8 \
                     ON CONFLICT (run, seq) DO NOTHING",
                    &[&run, &(seq as i32), &who.user, &who.machine, &(who.pid as i32), &line, &held, &count],
                )
                .await?;
            if inserted == 1 {
                return Ok(Ok(()));
            }
            let there = client.query("SELECT line FROM opsh.records WHERE run = $1 AND seq = $2", &[&run, &(seq as i32)]).await?;
            Ok(match there.first().map(|r| r.get::<_, String>(0)) {
                Some(same) if same == line => Ok(()),
                Some(_) => Err(NotStored::Differs { run, seq }),
                None => Err(NotStored::LockLost),
            })
        })
    }
}

impl Drop for StateDb {
    fn drop(&mut self) {
        // Closing the session releases its locks; the runtime may be dropped inside another.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Who holds a lock, as `opsh.locks` says.
struct Holder {
    run: String,
    user: String,
    machine: String,
    pid: u32,
    since: String,
}

enum Refusal {
    Held { key: String, holder: Option<Box<Holder>> },
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(why) => f.write_str(why),
            Self::Held { key, holder } => {
                let what = key.replace("topology-", "topology ").replace("target-", "target ");
                match holder {
                    Some(h) => write!(
                        f,
                        "{what} is being changed by {}@{} (run {}, pid {}, since {}); wait for it to finish, or ask them",
                        h.user, h.machine, h.run, h.pid, h.since
                    ),
                    None => write!(
                        f,
                        "{what} is being changed by another opsh whose row in opsh.locks is missing (not written yet, or deleted): it holds the lock all the same; try again later"
                    ),
                }
            }
        }
    }
}

/// One journal line as the state database keeps it.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub user: String,
    pub machine: String,
    pub at: String,
}

fn audited(mut log: RunLog, lines: &[Line], alive: bool) -> Audited {
    log.live = Some(alive);
    let by = lines.iter().map(|l| format!("{}@{}", l.user, l.machine)).collect();
    let stored = lines.iter().map(|l| l.at.clone()).collect();
    Audited { log, by, stored }
}

/// The advisory lock id of a key: opsh's class in the high half, a hash of the key below.
fn lock_id(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let low = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (LOCK_CLASS << 32) | i64::from(low)
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Run a future on the state runtime and wait for it from any thread (also from inside another
/// runtime: only this thread blocks).
fn on<T: Send + 'static>(runtime: &tokio::runtime::Runtime, work: impl Future<Output = Result<T, String>> + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().unwrap_or_else(|_| Err("the state database client stopped".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_in_opshs_class_and_differ_per_key() {
        let (a, b) = (lock_id("topology-otb"), lock_id("topology-xdb"));
        assert_eq!(a >> 32, LOCK_CLASS);
        assert_eq!(b >> 32, LOCK_CLASS);
        assert_ne!(a, b);
        assert_eq!(a, lock_id("topology-otb"), "stable across processes");
    }

    #[test]
    fn every_migration_is_counted_in_the_version() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn who_is_the_user_and_machine_id_and_hostname_name() {
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd).args(args).output().expect(cmd);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let who = Who::current();
        assert_eq!(who.user, run("id", &["-un"]));
        assert_eq!(who.machine, run("uname", &["-n"]));
        assert_eq!(who.operator(), format!("{}@{}", who.user, who.machine));
    }
}
