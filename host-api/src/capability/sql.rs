//! SQL on inventory databases with tokio-postgres: TLS as the inventory's sslmode asks,
//! parameters, bounded results, and a plan phase that PostgreSQL itself keeps read-only.
//!
//! **Sessions.** Each plugin has its own connection per database and per kind of phase (reading —
//! read, plan, check, verify — or applying): no temp object, setting, prepared statement or open
//! transaction of one plugin is seen by another, nor the plan's by the apply.
//!
//! **Reading phases**, against a plugin that lies:
//! 1. the session is the database's `plan-user` when the inventory names one (a role that cannot
//!    change things is the only complete defence against a superuser's side effects). Its settings
//!    are the server's own — runbooks read them (`default_transaction_read_only` tells a fenced
//!    database) — so read-only-ness comes from the transaction, checked after every statement;
//! 2. every call runs in `BEGIN TRANSACTION READ ONLY … ROLLBACK`, whose identity (its virtual
//!    transaction id) is taken first — which also takes a snapshot, so `SET TRANSACTION READ
//!    WRITE` is refused by the server;
//! 3. a statement must be a query the server can plan: it is first sent as `EXPLAIN (VERBOSE)`
//!    through the extended protocol (one statement, no smuggled second one); transaction control,
//!    `SET`, `COPY … TO PROGRAM`, `DO`, `CALL` and every other utility statement fail there and are
//!    refused before they run;
//! 4. functions that change the server although read-only transactions permit them
//!    (`pg_terminate_backend`, `pg_reload_conf`, `dblink_exec`, …) are refused, looked for in the
//!    statement as the SQL lexer sees it (comments, quoting and spacing do not hide a call) and in
//!    the server's own verbose plan (views expanded);
//! 5. after every statement the transaction must still be the same one, still read-only;
//!    otherwise the connection is dropped and the call refused.
//!
//! What remains: a function that wraps a side effect in its own body (PL/pgSQL, C) is not seen
//! by step 4 — a superuser login can run it. Give such databases a `plan-user`. Functions that
//! run SQL text handed to them (`query_to_xml`, `ts_stat`, …) are refused outright: what the
//! text holds, or builds at run time, no check of the statement can see.
//!
//! **Round trips** of a reading call: the session keeps what it prepared (the guard, each
//! statement and its `EXPLAIN`; up to 256 texts), and sends what does not depend on an answer
//! together — `BEGIN READ ONLY`, the guard and the `EXPLAIN`; then the statement, the guard and
//! `ROLLBACK`. A query asked before costs two round trips, as a client asking by text does; one
//! new to the session first has its texts parsed inside the transaction, begun in the same round.
//! Only the answers decide: the statement is sent after its `EXPLAIN` was read and screened. A
//! kept statement whose table another session changed is prepared again, once (nothing ran).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, private::BytesMut};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{Bounds, CapResult, CapabilityError};
use crate::inventory::{Inventory, SslMode};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub affected: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Functions that change a server although PostgreSQL permits them inside a READ ONLY
/// transaction. The reading phases refuse statements that call them; READ ONLY does the rest.
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "pg_create_restore_point",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock_shared",
    "pg_promote",
    "pg_reload_conf",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_switch_wal",
    "pg_rotate_logfile",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "pg_notify",
    "set_config",
    "dblink_exec",
    "pgxc_pool_reload",
    "lo_import",
    "lo_export",
    "pg_logical_emit_message",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_log_standby_snapshot",
    "pg_sync_replication_slots",
    "pg_stat_statements_reset",
    "pg_truncate_visibility_map",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
    "pg_restore_relation_stats",
    "pg_restore_attribute_stats",
    "pg_clear_relation_stats",
    "pg_clear_attribute_stats",
    // They run SQL text given to them (through SPI, when the call runs): what that text holds,
    // or builds, is seen neither in the statement nor in its plan.
    "ts_stat",
    "ts_rewrite",
];

/// Families of such functions, by prefix: `dblink` runs SQL on another connection, adminpack's
/// `pg_file_*` writes server files, `lo_*` writes large objects, `pg_stat_reset*` clears
/// statistics, replication origins move, pg_prewarm starts a worker; `query_to_xml*` and
/// `cursor_to_xml*` run SQL text when called, and `table_to_xml*` and its kin read a table or
/// view named by a string — a view's own calls, hidden the same way — out of sight of any check.
const SIDE_EFFECT_PREFIXES: &[&str] = &[
    "dblink",
    "pg_file_",
    "lo_",
    "pg_stat_reset",
    "pg_replication_origin_",
    "autoprewarm_",
    "query_to_xml",
    "cursor_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
];

/// Which plugin's session, and whether it is a reading phase's (read-only) one.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    pub plugin: &'a str,
    pub read_only: bool,
}

/// A session's connection, and (reading sessions only) the statements it has prepared: a
/// runbook asks the same few queries again and again, and a prepared one is one round trip.
struct Conn {
    client: Client,
    prepared: HashMap<String, tokio_postgres::Statement>,
}

/// Statements one reading session keeps prepared; past it, all are forgotten and it starts over.
const PREPARED_PER_SESSION: usize = 256;

impl Conn {
    fn new(client: Client) -> Self {
        Self { client, prepared: HashMap::new() }
    }

    /// Whether every one of `texts` is prepared in this session already.
    fn has_prepared(&self, texts: &[&str]) -> bool {
        texts.iter().all(|t| self.prepared.contains_key(*t))
    }

    /// Prepare, in one round trip, those of `texts` this session has not prepared yet (after
    /// `BEGIN TRANSACTION READ ONLY`, sent first in the same round, when `begin`: the server
    /// parses them inside the reading transaction), in the order given. The statements in
    /// order, or the first text the server would not parse (its index in `texts`, and why; a
    /// failed BEGIN is index 0's).
    async fn prepare_all(&mut self, texts: &[&str], begin: bool) -> Result<Vec<tokio_postgres::Statement>, (usize, tokio_postgres::Error)> {
        let unprepared = |prepared: &HashMap<String, tokio_postgres::Statement>| {
            let mut missing: Vec<&str> = Vec::new();
            for text in texts {
                if !prepared.contains_key(*text) && !missing.contains(text) {
                    missing.push(text);
                }
            }
            missing
        };
        let mut missing = unprepared(&self.prepared);
        if !missing.is_empty() && self.prepared.len() + missing.len() > PREPARED_PER_SESSION {
            self.prepared.clear();
            missing = unprepared(&self.prepared);
        }
        let client = &self.client;
        let mut requests = Vec::with_capacity(missing.len() + 1);
        if begin {
            requests.push(request(async { client.batch_execute("BEGIN TRANSACTION READ ONLY").await.map(|()| None) }));
        }
        requests.extend(missing.iter().map(|text| request(async { client.prepare(text).await.map(Some) })));
        let mut answers = pipelined(requests).await.into_iter();
        if begin && let Some(Err(e)) = answers.next() {
            return Err((0, e));
        }
        let mut failed = Vec::new();
        for (text, answer) in missing.iter().zip(answers) {
            match answer {
                Ok(Some(statement)) => {
                    self.prepared.insert(text.to_string(), statement);
                }
                Ok(None) => {}
                Err(e) => failed.push((texts.iter().position(|t| t == text).unwrap_or_default(), e)),
            }
        }
        // The first refusal in the order sent: after it, the transaction is aborted and every
        // later text fails for that reason alone.
        if let Some(first) = failed.into_iter().next() {
            return Err(first);
        }
        Ok(texts.iter().filter_map(|t| self.prepared.get(*t).cloned()).collect())
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

type Slot = Arc<Mutex<Option<Conn>>>;

pub struct SqlPool {
    inventory: Arc<Inventory>,
    /// (database, plugin, read-only) → that session's connection.
    clients: std::sync::Mutex<HashMap<(String, String, bool), Slot>>,
}

impl SqlPool {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self { inventory, clients: std::sync::Mutex::new(HashMap::new()) }
    }

    /// One statement. In a reading session it runs inside `BEGIN READ ONLY … ROLLBACK`.
    pub async fn query(&self, database: &str, session: Session<'_>, statement: &Statement, bounds: &Bounds) -> CapResult<Rows> {
        let mut rows = self.transaction(database, session, std::slice::from_ref(statement), bounds, !session.read_only).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// Several statements in one transaction (or, with `autocommit` and one statement, none).
    pub async fn transaction(&self, database: &str, session: Session<'_>, statements: &[Statement], bounds: &Bounds, autocommit: bool) -> CapResult<Vec<Rows>> {
        self.transaction_expecting(database, session, statements, bounds, autocommit, None).await
    }

    /// `transaction`, rolled back unless the statements affect exactly `expected` rows in all
    /// (a plan's "update the one row of appliance A": zero or two rows mean the plan is wrong).
    pub async fn transaction_expecting(
        &self,
        database: &str,
        session: Session<'_>,
        statements: &[Statement],
        bounds: &Bounds,
        autocommit: bool,
        expected: Option<u64>,
    ) -> CapResult<Vec<Rows>> {
        let read_only = session.read_only;
        if read_only {
            for statement in statements {
                refuse_side_effects(database, &statement.sql)?;
            }
        }
        let slot = self.slot(database, session);
        let mut guard = slot.lock().await;
        let timeout = Duration::from_millis(self.inventory.defaults.statement_timeout_ms);
        let client = self.connected(database, session, &mut guard).await?;
        if read_only {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut outcome = tokio::time::timeout_at(deadline, read_only_work(client, database, statements, bounds)).await;
            if matches!(&outcome, Ok(Err(Guarded::Postgres(e))) if stale(e)) {
                // Another session changed a table under a statement this one keeps prepared;
                // nothing ran (reads only): prepare afresh and ask once more.
                client.prepared.clear();
                outcome = tokio::time::timeout_at(deadline, read_only_work(client, database, statements, bounds)).await;
            }
            return match outcome {
                Ok(Err(Guarded::Refused(e))) => {
                    // The session may be in any state now: never reuse it.
                    *guard = None;
                    Err(e)
                }
                Ok(Err(Guarded::Postgres(e))) => settle(database, Ok(Err(e)), &mut guard, true, timeout),
                Ok(Ok(rows)) => Ok(rows),
                Err(elapsed) => settle(database, Err::<Result<Vec<Rows>, tokio_postgres::Error>, _>(elapsed), &mut guard, true, timeout),
            };
        }
        let affected_instead = std::sync::Mutex::new(None);
        let work = || async {
            let single = autocommit && statements.len() == 1 && expected.is_none();
            if !single {
                client.batch_execute("BEGIN").await?;
            }
            let mut results = Vec::with_capacity(statements.len());
            for statement in statements {
                match run_statement(client, statement, bounds).await {
                    Ok(rows) => results.push(rows),
                    Err(e) => {
                        if !single {
                            let _ = client.batch_execute("ROLLBACK").await;
                        }
                        return Err(e);
                    }
                }
            }
            let affected: u64 = results.iter().map(|r| r.affected).sum();
            if expected.is_some_and(|n| n != affected) {
                client.batch_execute("ROLLBACK").await?;
                *affected_instead.lock().unwrap_or_else(|p| p.into_inner()) = Some(affected);
                return Ok(results);
            }
            if !single {
                client.batch_execute("COMMIT").await?;
            }
            Ok::<_, tokio_postgres::Error>(results)
        };
        // A deadlock or a serialization failure rolled the whole transaction back (PostgreSQL
        // chose it as the victim): nothing of it happened, and trying again is what the server
        // asks for. A few times, a little apart; any other error is the step's.
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let outcome = tokio::time::timeout(timeout, work()).await;
            match &outcome {
                Ok(Err(e)) if attempt < MAX_ATTEMPTS && rolled_back_by_the_server(e) => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                _ => break outcome,
            }
        };
        let results = settle(database, outcome, &mut guard, false, timeout)?;
        let affected_instead = *affected_instead.lock().unwrap_or_else(|p| p.into_inner());
        match (affected_instead, expected) {
            (Some(affected), Some(n)) => Err(CapabilityError::Conflict(format!(
                "database {database}: the statements affected {affected} row(s), the plan expected exactly {n}; rolled back, nothing was changed"
            ))),
            _ => Ok(results),
        }
    }

    /// A script of several statements (simple-query protocol, no parameters). Values arrive as
    /// text. Refused in the read-only phases: a script could end the read-only transaction.
    pub async fn batch(&self, database: &str, session: Session<'_>, script: &str, bounds: &Bounds) -> CapResult<Rows> {
        if session.read_only {
            return Err(CapabilityError::ReadOnly(format!(
                "database {database}: a SQL script cannot run while planning (nothing may change yet); use single queries to read"
            )));
        }
        let slot = self.slot(database, session);
        let mut guard = slot.lock().await;
        let timeout = Duration::from_millis(self.inventory.defaults.statement_timeout_ms);
        let client = self.connected(database, session, &mut guard).await?;
        let work = async {
            use futures_lite::StreamExt;
            let stream = client.simple_query_raw(script).await?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = ScriptRows::default();
            while let Some(message) = stream.next().await {
                rows.push(message?, bounds);
            }
            Ok::<_, tokio_postgres::Error>(rows.result)
        };
        let outcome = tokio::time::timeout(timeout, work).await;
        settle(database, outcome, &mut guard, false, timeout)
    }

    fn slot(&self, database: &str, session: Session<'_>) -> Slot {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.entry((database.to_string(), session.plugin.to_string(), session.read_only)).or_default().clone()
    }

    async fn connected<'a>(&self, database: &str, session: Session<'_>, guard: &'a mut Option<Conn>) -> CapResult<&'a mut Conn> {
        if guard.as_ref().is_some_and(|c| c.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(Conn::new(self.connect(database, session.read_only).await?));
        }
        guard.as_mut().ok_or_else(|| CapabilityError::Failed(format!("database {database}: no connection")))
    }

    async fn connect(&self, name: &str, read_only: bool) -> CapResult<Client> {
        open(&self.inventory, name, read_only, "opsh").await
    }

    /// Make sure this session can talk to the database now, within the connect timeout: a
    /// connection kept from an earlier command must answer an empty query (a frozen server's
    /// never does, and is dropped); otherwise one is opened. Nothing runs on the server.
    pub async fn reach(&self, database: &str, session: Session<'_>) -> CapResult<()> {
        let slot = self.slot(database, session);
        let mut guard = slot.lock().await;
        let connect_timeout = Duration::from_millis(self.inventory.defaults.connect_timeout_ms);
        if let Some(client) = guard.as_ref().filter(|c| !c.is_closed()) {
            match tokio::time::timeout(connect_timeout, client.simple_query("")).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(_)) => *guard = None,
                Err(_) => {
                    *guard = None;
                    return Err(CapabilityError::Unreachable(format!(
                        "database {database}: its open connection did not answer within {} s; check that the server is up and reachable",
                        connect_timeout.as_secs_f32()
                    )));
                }
            }
        }
        self.connected(database, session, &mut guard).await.map(|_| ())
    }

    pub async fn close_all(&self) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.clear();
    }
}

/// Turn a statement's outcome into the capability's result, dropping the connection when it can
/// no longer be trusted (closed, or abandoned mid-statement by a timeout).
/// Tries of one transaction that the server rolled back as a deadlock victim or for a
/// serialization failure.
const MAX_ATTEMPTS: u64 = 4;

/// Perhaps a kept prepared statement whose result type a change of its tables made out of date
/// ("cached plan must not change result type"; the server plans it again itself when it can).
/// By its code alone, as the message may be in the server's language: a read that fails so for
/// another reason fails the same way once more, and nothing ran either time.
fn stale(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
}

fn rolled_back_by_the_server(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|code| *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE)
}

fn settle<T>(
    database: &str,
    outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    guard: &mut Option<Conn>,
    read_only: bool,
    timeout: Duration,
) -> CapResult<T> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let closed = guard.as_ref().is_none_or(|c| c.is_closed());
            if closed {
                *guard = None;
            }
            Err(classify_query_error(database, e, read_only, closed))
        }
        Err(_) if read_only => {
            *guard = None;
            Err(CapabilityError::Timeout(format!(
                "database {database}: no answer within {} s to a read (nothing was changed); the server may be frozen or overloaded",
                timeout.as_secs()
            )))
        }
        Err(_) => {
            // The connection is mid-statement: unusable. The server may still finish it.
            *guard = None;
            Err(CapabilityError::Timeout(format!(
                "database {database}: no answer within {} s: outcome unknown — check whether the statement took effect before retrying",
                timeout.as_secs()
            )))
        }
    }
}

enum ConnectError {
    Setup(String),
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

fn refuse_side_effects(database: &str, sql: &str) -> CapResult<()> {
    match called_functions(sql).into_iter().find(|f| changes_the_server(f)) {
        Some(function) => Err(CapabilityError::ReadOnly(format!(
            "database {database}: {function}() changes the server and cannot run while planning or reading (nothing may change yet)"
        ))),
        None => Ok(()),
    }
}

fn changes_the_server(function: &str) -> bool {
    SIDE_EFFECT_FUNCTIONS.contains(&function) || SIDE_EFFECT_PREFIXES.iter().any(|prefix| function.starts_with(prefix))
}

/// The names of the functions a SQL text calls, as PostgreSQL's lexer sees it: comments
/// (`--`, nested `/* */`), string literals (`'…'`, `E'…'`, `$tag$…$tag$`) are skipped, a quoted
/// identifier is unquoted, a schema qualifier dropped, and a name followed — after any spaces
/// or comments — by `(` is a call. Names are lower-cased (compared case-insensitively, the
/// strict reading for quoted ones).
fn called_functions(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut calls = Vec::new();
    let mut last_name: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' {
            if let Some(name) = last_name.take() {
                calls.push(name);
            }
            i += 1;
            continue;
        }
        if c == '\'' {
            // 'it''s' and E'it\'s': skip to the closing quote.
            let escapes = i > 0 && matches!(chars[i - 1], 'e' | 'E');
            i += 1;
            while i < chars.len() {
                if escapes && chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            last_name = None;
            continue;
        }
        if c == '$' {
            // $tag$ … $tag$ (a parameter $1 is no tag).
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') && !(j == i + 1 && chars[j].is_ascii_digit()) {
                j += 1;
            }
            if chars.get(j) == Some(&'$') {
                let tag: String = chars[i..=j].iter().collect();
                let rest: String = chars[j + 1..].iter().collect();
                let skipped = rest.find(&tag).map_or(chars.len(), |at| j + 1 + rest[..at].chars().count() + tag.chars().count());
                i = skipped;
                last_name = None;
                continue;
            }
        }
        if c == '"' || is_ident_start(c) {
            // One name, possibly qualified: a."b".c — only its last part counts.
            let mut name = String::new();
            loop {
                name.clear();
                if chars.get(i) == Some(&'"') {
                    i += 1;
                    while i < chars.len() {
                        if chars[i] == '"' {
                            if chars.get(i + 1) == Some(&'"') {
                                name.push('"');
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                } else {
                    while i < chars.len() && is_ident_char(chars[i]) {
                        name.push(chars[i]);
                        i += 1;
                    }
                }
                if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|n| *n == '"' || is_ident_start(*n)) {
                    i += 1;
                    continue;
                }
                break;
            }
            last_name = Some(name.to_lowercase());
            continue;
        }
        last_name = None;
        i += 1;
    }
    calls
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Why a reading call stopped: the server's own error, or a refusal of opsh's checks (after
/// which the session is not reused).
enum Guarded {
    Postgres(tokio_postgres::Error),
    Refused(CapabilityError),
}

impl From<tokio_postgres::Error> for Guarded {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

/// This transaction's identity and mode: its virtual transaction id is unique to it, so a
/// statement that ended it (and maybe began another) is seen, whatever settings it forged.
const GUARD: &str = "SELECT (SELECT virtualtransaction FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'virtualxid') AS vxid, \
                     current_setting('transaction_read_only') AS read_only";

/// What one request of a pipelined round answers.
enum Answer {
    Done,
    Guard(Option<String>, String),
    Plan(String),
    Rows(Rows),
}

/// One request of a round, boxed so that a round can mix kinds.
type Request<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn request<'a, T>(future: impl std::future::Future<Output = T> + Send + 'a) -> Request<'a, T> {
    Box::pin(future)
}

/// Requests sent together and answered in one round trip. tokio-postgres sends a request when
/// its future is first polled; every poll here goes through the list in order, so the server
/// receives (and runs) them in the list's order.
async fn pipelined<T>(requests: Vec<Request<'_, T>>) -> Vec<T> {
    use std::task::Poll;
    let mut pending: Vec<Option<Request<'_, T>>> = requests.into_iter().map(Some).collect();
    let mut answers: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (request, answer) in pending.iter_mut().zip(answers.iter_mut()) {
            if let Some(future) = request
                && let Poll::Ready(value) = future.as_mut().poll(cx)
            {
                *answer = Some(value);
                *request = None;
            }
        }
        if pending.iter().all(Option::is_none) { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    answers.into_iter().flatten().collect()
}

async fn begin_read_only(client: &Client) -> Result<Answer, tokio_postgres::Error> {
    client.batch_execute("BEGIN TRANSACTION READ ONLY").await.map(|()| Answer::Done)
}

async fn rollback(client: &Client) -> Result<Answer, tokio_postgres::Error> {
    client.batch_execute("ROLLBACK").await.map(|()| Answer::Done)
}

async fn guard(client: &Client, prepared: &tokio_postgres::Statement) -> Result<Answer, tokio_postgres::Error> {
    let row = client.query_one(prepared, &[]).await?;
    Ok(Answer::Guard(row.try_get(0)?, row.try_get(1)?))
}

/// The server's verbose plan of a statement (`EXPLAIN (VERBOSE)` of it, prepared).
async fn plan_of(client: &Client, explain: &tokio_postgres::Statement, statement: &Statement) -> Result<Answer, tokio_postgres::Error> {
    let params: Vec<TextParam> = statement.params.iter().map(TextParam::from).collect();
    let stream = client.query_raw(explain, params.iter()).await?;
    let mut stream = std::pin::pin!(stream);
    let mut plan = String::new();
    use futures_lite::StreamExt;
    while let Some(row) = stream.next().await {
        let line: String = row?.try_get(0)?;
        plan.push_str(&line);
        plan.push('\n');
    }
    Ok(Answer::Plan(plan))
}

async fn rows(client: &Client, prepared: &tokio_postgres::Statement, statement: &Statement, bounds: &Bounds) -> Result<Answer, tokio_postgres::Error> {
    rows_of(client, prepared, statement, bounds).await.map(Answer::Rows)
}

/// The `EXPLAIN (VERBOSE)` a statement is screened with: through the extended protocol, one
/// statement only; a utility statement (transaction control, SET, COPY, DO, CALL …) is no query
/// and fails to parse.
fn explain_text(statement: &Statement) -> String {
    format!("EXPLAIN (VERBOSE, COSTS OFF) {}", statement.sql)
}

/// A reading call: one read-only transaction, every statement screened by the server's planner
/// and the side-effect list first, and the transaction's identity checked after each. In round
/// trips: what the session has not prepared yet (the guard, each statement and its EXPLAIN —
/// parsed, nothing run); then `BEGIN READ ONLY`, the guard and the first EXPLAIN; then each
/// statement with the guard after it (and its successor's EXPLAIN, or the ROLLBACK).
async fn read_only_work(conn: &mut Conn, database: &str, statements: &[Statement], bounds: &Bounds) -> Result<Vec<Rows>, Guarded> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let explains: Vec<String> = statements.iter().map(explain_text).collect();
    let mut texts = vec![GUARD];
    for (statement, explain) in statements.iter().zip(&explains) {
        texts.push(explain);
        texts.push(&statement.sql);
    }
    // Statements new to the session are parsed inside the reading transaction, begun with them.
    let begun = !conn.has_prepared(&texts);
    let prepared = match conn.prepare_all(&texts, begun).await {
        Ok(prepared) => prepared,
        Err((index, e)) => {
            let Some(statement) = (index > 0).then(|| &statements[(index - 1) / 2]) else {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                return Err(Guarded::Postgres(e));
            };
            // The server's own words say whether the query is malformed or is no query at all
            // (a utility statement is a syntax error after EXPLAIN).
            let first = statement.sql.split_whitespace().next().unwrap_or_default().to_uppercase();
            let said = e.as_db_error().map(|db| db.message().to_string()).unwrap_or_else(|| e.to_string());
            return Err(Guarded::Refused(CapabilityError::ReadOnly(format!(
                "database {database}: only queries (SELECT, VALUES, TABLE, WITH …) run while planning or reading; `{first} …` is refused (the server cannot plan it: {said})"
            ))));
        }
    };
    let client = &conn.client;
    let check = &prepared[0];
    let (explain, run) = (|n: usize| &prepared[1 + 2 * n], |n: usize| &prepared[2 + 2 * n]);
    let first = &statements[0];
    let mut opening = Vec::with_capacity(3);
    if !begun {
        opening.push(request(begin_read_only(client)));
    }
    opening.push(request(guard(client, check)));
    opening.push(request(plan_of(client, explain(0), first)));
    let mut round = request(pipelined(opening));
    let mut started = None;
    let mut results = Vec::with_capacity(statements.len());
    for (n, statement) in statements.iter().enumerate() {
        let answers = round.await;
        let mut plan = String::new();
        for answer in answers {
            match answer {
                Ok(Answer::Guard(vxid, _)) => started = vxid,
                Ok(Answer::Plan(text)) => plan = text,
                Ok(_) => {}
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(Guarded::Postgres(e));
                }
            }
        }
        if let Err(e) = refuse_side_effects(database, &plan) {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Guarded::Refused(e));
        }
        let next = match statements.get(n + 1) {
            Some(following) => request(plan_of(client, explain(n + 1), following)),
            None => request(rollback(client)),
        };
        let answers = pipelined(vec![request(rows(client, run(n), statement, bounds)), request(guard(client, check)), next]).await;
        let mut answers = answers.into_iter();
        match answers.next() {
            Some(Ok(Answer::Rows(rows))) => results.push(rows),
            Some(Err(e)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(Guarded::Postgres(e));
            }
            // Never so: a call answered with fewer results than statements is refused.
            _ => {
                return Err(Guarded::Refused(CapabilityError::Failed(format!("database {database}: statement {} of the call gave no result", n + 1))));
            }
        }
        let (now, read_only) = match answers.next() {
            Some(Ok(Answer::Guard(now, read_only))) => (now, read_only),
            Some(Err(e)) => {
                // The session is kept for the next call: never inside this transaction.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(Guarded::Postgres(e));
            }
            _ => (None, String::new()),
        };
        if now != started || started.is_none() || read_only != "on" {
            return Err(Guarded::Refused(CapabilityError::ReadOnly(format!(
                "database {database}: statement {} of the call ended or changed its read-only transaction; refused, and its session closed (nothing may change while planning or reading)",
                n + 1
            ))));
        }
        // The following statement's plan (or the ROLLBACK) already answered in this round.
        round = request(std::future::ready(answers.collect::<Vec<_>>()));
    }
    for answer in round.await {
        answer?;
    }
    Ok(results)
}

async fn run_statement(client: &Client, statement: &Statement, bounds: &Bounds) -> Result<Rows, tokio_postgres::Error> {
    let prepared = client.prepare(&statement.sql).await?;
    rows_of(client, &prepared, statement, bounds).await
}

/// A prepared statement's rows, bounded (rows and bytes) as they arrive.
async fn rows_of(client: &Client, prepared: &tokio_postgres::Statement, statement: &Statement, bounds: &Bounds) -> Result<Rows, tokio_postgres::Error> {
    let params: Vec<TextParam> = statement.params.iter().map(TextParam::from).collect();
    let columns: Vec<Column> = prepared.columns().iter().map(|c| Column { name: c.name().to_string(), type_name: c.type_().name().to_string() }).collect();
    let stream = client.query_raw(prepared, params.iter()).await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    use futures_lite::StreamExt;
    while let Some(row) = stream.next().await {
        let row = row?;
        if truncated {
            continue;
        }
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let Cell(value) = row.try_get::<_, Cell>(i)?;
            bytes += value_size(&value);
            values.push(value);
        }
        if rows.len() >= bounds.max_rows || bytes > bounds.max_result_bytes {
            truncated = true;
            continue;
        }
        rows.push(values);
    }
    let affected = stream.rows_affected().unwrap_or(0);
    Ok(Rows { columns, rows, affected, truncated })
}

/// The rows of the last statement of a script that returned any, read as they arrive and
/// bounded like a query's (rows and bytes), however many the script produces.
#[derive(Default)]
struct ScriptRows {
    result: Rows,
    current: Vec<Vec<Value>>,
    columns: Vec<Column>,
    bytes: usize,
    truncated: bool,
}

impl ScriptRows {
    fn push(&mut self, message: SimpleQueryMessage, bounds: &Bounds) {
        match message {
            SimpleQueryMessage::RowDescription(description) => {
                self.columns = description.iter().map(|c| Column { name: c.name().to_string(), type_name: "text".into() }).collect();
                self.current.clear();
                (self.bytes, self.truncated) = (0, false);
            }
            SimpleQueryMessage::Row(row) => {
                let values: Vec<Value> = (0..row.len()).map(|i| row.get(i).map_or(Value::Null, |v| Value::Text(v.to_string()))).collect();
                self.bytes += values.iter().map(value_size).sum::<usize>();
                if self.current.len() >= bounds.max_rows || self.bytes > bounds.max_result_bytes {
                    self.truncated = true;
                    return;
                }
                self.current.push(values);
            }
            SimpleQueryMessage::CommandComplete(n) => {
                self.result.affected = n;
                if !self.columns.is_empty() {
                    self.result.columns = std::mem::take(&mut self.columns);
                    self.result.rows = std::mem::take(&mut self.current);
                    self.result.truncated = self.truncated;
                }
            }
            _ => {}
        }
    }
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(text) => text.len() + 8,
        _ => 8,
    }
}

fn classify_connect_error(where_: &str, e: tokio_postgres::Error) -> CapabilityError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "28P01" | "28000" => CapabilityError::Auth(format!("{where_}: {} — check the password source of this database in the inventory", db.message())),
            "3D000" => CapabilityError::NotFound(format!("{where_}: {}", db.message())),
            "57P03" => CapabilityError::Unreachable(format!("{where_}: {} (the server is starting, stopping or in recovery)", db.message())),
            _ => CapabilityError::Failed(format!("{where_}: {} (SQLSTATE {code})", db.message())),
        };
    }
    let mut text = e.to_string();
    if let Some(source) = e.source() {
        text = format!("{text}: {source}");
    }
    if text.contains("password") && text.contains("missing") {
        return CapabilityError::Auth(format!(
            "{where_}: the server asks for a password and the inventory gives none; add `password = {{ env = \"…\" }}` or a .pgpass line"
        ));
    }
    CapabilityError::Unreachable(format!("{where_}: cannot connect ({text}); check that the server is up and reachable"))
}

fn classify_query_error(database: &str, e: tokio_postgres::Error, read_only: bool, closed: bool) -> CapabilityError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        if code == "25006" && read_only {
            return CapabilityError::ReadOnly(format!(
                "database {database}: {} — writes are refused while planning; a plugin may only change things while applying",
                db.message()
            ));
        }
        if code == "57014" {
            return CapabilityError::Timeout(format!("database {database}: statement cancelled ({}): outcome unknown", db.message()));
        }
        return CapabilityError::Failed(format!("database {database}: ERROR: {}{detail} (SQLSTATE {code})", db.message()));
    }
    if closed {
        return CapabilityError::Timeout(format!(
            "database {database}: the connection was lost during the statement ({}): outcome unknown — check whether it took effect",
            with_causes(&e)
        ));
    }
    CapabilityError::Failed(format!("database {database}: {}", with_causes(&e)))
}

/// tokio-postgres' messages leave out their cause ("error deserializing column 0"): add it.
fn with_causes(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Every parameter is sent in PostgreSQL's text format, so the server parses it as whatever
/// type the statement needs (`int`, `pg_lsn`, `inet` …): plugins need not know binary encodings.
#[derive(Debug)]
struct TextParam(Option<String>);

impl From<&Value> for TextParam {
    fn from(value: &Value) -> Self {
        Self(match value {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "t".into() } else { "f".into() }),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Text(t) => Some(t.clone()),
        })
    }
}

impl ToSql for TextParam {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A result value decoded from PostgreSQL's binary format into the WIT value type.
struct Cell(Value);

impl<'a> tokio_postgres::types::FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        use tokio_postgres::types::FromSql;
        let value = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID | Type::XID | Type::REGCLASS | Type::REGPROC | Type::REGTYPE => Value::Int(u32::from_sql(&Type::OID, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::CHAR => Value::Text(char::from(i8::from_sql(ty, raw)? as u8).to_string()),
            Type::JSON | Type::XML => Value::Text(std::str::from_utf8(raw)?.to_string()),
            Type::JSONB => Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_string()),
            Type::PG_LSN => Value::Text(tokio_postgres::types::PgLsn::from_sql(ty, raw)?.to_string()),
            Type::BYTEA => Value::Text(format!("\\x{}", hex::encode(raw))),
            Type::UUID => Value::Text(uuid_text(raw)?),
            Type::NUMERIC => Value::Text(numeric_text(raw)?),
            Type::TIMESTAMP => Value::Text(timestamp_text(i64::from_sql(&Type::INT8, raw)?, "")),
            Type::TIMESTAMPTZ => Value::Text(timestamp_text(i64::from_sql(&Type::INT8, raw)?, "+00")),
            Type::DATE => Value::Text(date_text(i32::from_sql(&Type::INT4, raw)?.into())),
            Type::VOID => Value::Null,
            _ if <String as FromSql>::accepts(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => {
                return Err(format!("opsh cannot decode type {}; cast the column to text in the query (col::text)", ty.name()).into());
            }
        };
        Ok(Self(value))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Self(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn uuid_text(raw: &[u8]) -> Result<String, Box<dyn StdError + Sync + Send>> {
    if raw.len() != 16 {
        return Err("bad uuid".into());
    }
    let h = hex::encode(raw);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// PostgreSQL's binary NUMERIC: base-10000 digits with a weight and a display scale.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn StdError + Sync + Send>> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("short numeric")?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    let dscale = word(3)? as u16 as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digit = |k: i32| -> Result<i16, Box<dyn StdError + Sync + Send>> { if k < 0 || k as usize >= ndigits { Ok(0) } else { word(4 + k as usize) } };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            let d = digit(k)?;
            if k == 0 { out.push_str(&d.to_string()) } else { out.push_str(&format!("{d:04}")) }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut k = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(k)?));
            k += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

const POSTGRES_EPOCH_DAYS: i64 = 10_957; // 2000-01-01 in days since 1970-01-01

fn date_text(days_since_2000: i64) -> String {
    let (y, m, d) = crate::timefmt::civil_from_days(days_since_2000 + POSTGRES_EPOCH_DAYS);
    format!("{y:04}-{m:02}-{d:02}")
}

fn timestamp_text(micros_since_2000: i64, zone: &str) -> String {
    let days = micros_since_2000.div_euclid(86_400_000_000);
    let rest = micros_since_2000.rem_euclid(86_400_000_000);
    let (h, mi, s, us) = (rest / 3_600_000_000, rest / 60_000_000 % 60, rest / 1_000_000 % 60, rest % 1_000_000);
    let fraction = if us == 0 { String::new() } else { format!(".{us:06}") };
    format!("{} {h:02}:{mi:02}:{s:02}{fraction}{zone}", date_text(days))
}

/// Open a connection to inventory database `name` within the connect timeout, as its change
/// user (or, for `read_only`, its plan user): TLS and the password as the inventory says. The
/// connection is driven by a task of the current runtime.
pub async fn open(inventory: &Inventory, name: &str, read_only: bool, application: &str) -> CapResult<Client> {
    let db = inventory
        .database(name)
        .ok_or_else(|| CapabilityError::NotFound(format!("database {name} is not in the inventory ({})", inventory.source.display())))?;
    let host = inventory.host(&db.host).ok_or_else(|| CapabilityError::NotFound(format!("database {name}: host {} is not in the inventory", db.host)))?;
    let (user, password) = match (&db.plan_user, read_only) {
        (Some(plan_user), true) => (plan_user.as_str(), inventory.plan_password(name).map_err(|e| CapabilityError::Auth(format!("{e:#}")))?),
        _ => (db.user.as_str(), inventory.database_password(name).map_err(|e| CapabilityError::Auth(format!("{e:#}")))?),
    };
    let connect_timeout = Duration::from_millis(inventory.defaults.connect_timeout_ms);
    let mut config = tokio_postgres::Config::new();
    config.host(&host.address).port(db.port).dbname(&db.dbname).user(user).application_name(application).connect_timeout(connect_timeout);
    if let Some(password) = &password {
        config.password(password.expose());
    }
    let where_ = format!("database {name} (host {} port {}, dbname {}, user {user})", db.host, db.port, db.dbname);
    let connecting = async {
        if db.sslmode == SslMode::Disable {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok(client)
        } else {
            config.ssl_mode(match db.sslmode {
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let tls = super::tls::client_config(name, db).map_err(ConnectError::Setup)?;
            let (client, connection) = config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await?;
            tokio::spawn(connection);
            Ok(client)
        }
    };
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(ConnectError::Setup(message))) => Err(CapabilityError::Invalid(message)),
        Ok(Err(ConnectError::Postgres(e))) => Err(classify_connect_error(&where_, e)),
        Err(_) => {
            Err(CapabilityError::Unreachable(format!("{where_}: no answer within {} s; check that the server is up and reachable", connect_timeout.as_secs())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline tokio-postgres is given: every request sent (first polled) in the list's
    /// order before any answer is awaited, and the answers back in the list's order however
    /// they arrive.
    #[test]
    fn a_pipelined_round_sends_in_order_and_answers_in_order() {
        let log = std::sync::Mutex::new(Vec::new());
        let requests = (0..4u32)
            .map(|i| {
                let log = &log;
                request(async move {
                    log.lock().expect("log").push(format!("sent {i}"));
                    // The later a request, the sooner its answer.
                    for _ in 0..(4 - i) {
                        futures_lite::future::yield_now().await;
                    }
                    log.lock().expect("log").push(format!("answered {i}"));
                    i * 10
                })
            })
            .collect();
        let answers = futures_lite::future::block_on(pipelined(requests));
        assert_eq!(answers, [0, 10, 20, 30]);
        let log = log.into_inner().expect("log");
        assert_eq!(log[..4], ["sent 0", "sent 1", "sent 2", "sent 3"], "{log:?}");
        assert_eq!(log[4..], ["answered 3", "answered 2", "answered 1", "answered 0"], "{log:?}");
    }

    #[test]
    fn numeric_decodes() {
        // 12345.678 : ndigits 3, weight 1, sign 0, dscale 3, digits [1, 2345, 6780]
        let raw: Vec<u8> = [3i16, 1, 0, 3, 1, 2345, 6780].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(numeric_text(&raw).expect("numeric"), "12345.678");
        let small: Vec<u8> = [1i16, -1, 0x4000u16 as i16, 2, 500].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(numeric_text(&small).expect("numeric"), "-0.05");
    }

    #[test]
    fn dates_decode() {
        assert_eq!(date_text(0), "2000-01-01");
        assert_eq!(timestamp_text(9_676_800_000_000 + 3_723_000_001, "+00"), "2000-04-22 01:02:03.000001+00");
    }

    #[test]
    fn plan_phase_refuses_admin_functions() {
        assert!(refuse_side_effects("d", "SELECT pg_promote()").is_err());
        assert!(refuse_side_effects("d", "select x from my_pg_promote_log").is_ok());
    }

    #[test]
    fn calls_are_found_as_the_lexer_sees_them() {
        for hidden in [
            r#"SELECT "pg_terminate_backend"(pid) FROM pg_stat_activity"#,
            "SELECT pg_reload_conf/**/()",
            "SELECT pg_catalog.pg_reload_conf -- comment\n ()",
            r#"SELECT "pg_catalog"."PG_RELOAD_CONF"()"#,
            "SELECT /* a /* nested */ comment */ dblink('x', 'DELETE FROM t')",
            "SELECT lo_unlink(1)",
            "SELECT * FROM (VALUES (1), (pg_reload_conf()::int)) v",
            // SQL text run by the function that is handed it.
            "SELECT query_to_xml('SELECT 1', true, false, '')",
            "SELECT pg_catalog.table_to_xml('some_view'::regclass, true, false, '')",
            "SELECT * FROM ts_stat($$SELECT to_tsvector('x')$$)",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT a, b FROM aliases')",
        ] {
            assert!(refuse_side_effects("d", hidden).is_err(), "{hidden}");
        }
        for harmless in [
            "SELECT 'pg_reload_conf()' AS text",
            "SELECT $$ pg_terminate_backend(1) $$",
            "SELECT $q$ it's pg_promote() $q$, $1::int",
            "SELECT E'\\' pg_promote() '",
            "SELECT \"pg_reload_conf\" FROM t",
            "SELECT -- pg_promote()\n 1",
        ] {
            assert!(refuse_side_effects("d", harmless).is_ok(), "{harmless}: {:?}", called_functions(harmless));
        }
    }
}
