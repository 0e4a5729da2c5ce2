//! SQL on inventory databases with tokio-postgres: one cached connection per database, TLS as
//! the inventory's sslmode asks, parameters, bounded results, and host-enforced read-only mode
//! for the plan phase.

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
/// transaction. The plan phase refuses statements that call them; READ ONLY does the rest.
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
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
];

type Slot = Arc<Mutex<Option<Client>>>;

pub struct SqlPool {
    inventory: Arc<Inventory>,
    clients: std::sync::Mutex<HashMap<String, Slot>>,
}

impl SqlPool {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self { inventory, clients: std::sync::Mutex::new(HashMap::new()) }
    }

    /// One statement. In `read_only` mode it runs inside `BEGIN READ ONLY … ROLLBACK`.
    pub async fn query(&self, database: &str, statement: &Statement, read_only: bool, bounds: &Bounds) -> CapResult<Rows> {
        let mut rows = self.transaction(database, std::slice::from_ref(statement), read_only, bounds, !read_only).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// Several statements in one transaction (or, with `autocommit` and one statement, none).
    pub async fn transaction(&self, database: &str, statements: &[Statement], read_only: bool, bounds: &Bounds, autocommit: bool) -> CapResult<Vec<Rows>> {
        if read_only {
            for statement in statements {
                refuse_side_effects(database, &statement.sql)?;
            }
        }
        let slot = self.slot(database);
        let mut guard = slot.lock().await;
        let timeout = Duration::from_millis(self.inventory.defaults.statement_timeout_ms);
        let client = self.connected(database, &mut guard).await?;
        let work = async {
            let single = autocommit && statements.len() == 1 && !read_only;
            if !single {
                let begin = if read_only { "BEGIN TRANSACTION READ ONLY" } else { "BEGIN" };
                client.batch_execute(begin).await?;
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
            if !single {
                client.batch_execute(if read_only { "ROLLBACK" } else { "COMMIT" }).await?;
            }
            Ok::<_, tokio_postgres::Error>(results)
        };
        let outcome = tokio::time::timeout(timeout, work).await;
        settle(database, outcome, &mut guard, read_only, timeout)
    }

    /// A script of several statements (simple-query protocol, no parameters). Values arrive as
    /// text. Refused in the read-only phases: a script could end the read-only transaction.
    pub async fn batch(&self, database: &str, script: &str, read_only: bool, bounds: &Bounds) -> CapResult<Rows> {
        if read_only {
            return Err(CapabilityError::ReadOnly(format!(
                "database {database}: a SQL script cannot run while planning (nothing may change yet); use single queries to read"
            )));
        }
        let slot = self.slot(database);
        let mut guard = slot.lock().await;
        let timeout = Duration::from_millis(self.inventory.defaults.statement_timeout_ms);
        let client = self.connected(database, &mut guard).await?;
        let outcome = tokio::time::timeout(timeout, client.simple_query(script)).await;
        settle(database, outcome, &mut guard, false, timeout).map(|messages| simple_rows(messages, bounds))
    }

    fn slot(&self, database: &str) -> Slot {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.entry(database.to_string()).or_default().clone()
    }

    async fn connected<'a>(&self, database: &str, guard: &'a mut Option<Client>) -> CapResult<&'a Client> {
        if guard.as_ref().is_some_and(|c| c.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect(database).await?);
        }
        guard.as_ref().ok_or_else(|| CapabilityError::Failed(format!("database {database}: no connection")))
    }

    async fn connect(&self, name: &str) -> CapResult<Client> {
        let db = self
            .inventory
            .database(name)
            .ok_or_else(|| CapabilityError::NotFound(format!("database {name} is not in the inventory ({})", self.inventory.source.display())))?;
        let host =
            self.inventory.host(&db.host).ok_or_else(|| CapabilityError::NotFound(format!("database {name}: host {} is not in the inventory", db.host)))?;
        let password = self.inventory.database_password(name).map_err(|e| CapabilityError::Auth(format!("{e:#}")))?;
        let connect_timeout = Duration::from_millis(self.inventory.defaults.connect_timeout_ms);
        let mut config = tokio_postgres::Config::new();
        config.host(&host.address).port(db.port).dbname(&db.dbname).user(&db.user).application_name("opsh").connect_timeout(connect_timeout);
        if let Some(password) = &password {
            config.password(password.expose());
        }
        let where_ = format!("database {name} (host {} port {}, dbname {}, user {})", db.host, db.port, db.dbname, db.user);
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
        match tokio::time::timeout(connect_timeout + Duration::from_secs(1), connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(ConnectError::Setup(message))) => Err(CapabilityError::Invalid(message)),
            Ok(Err(ConnectError::Postgres(e))) => Err(classify_connect_error(&where_, e)),
            Err(_) => Err(CapabilityError::Unreachable(format!(
                "{where_}: no answer within {} s; check that the server is up and reachable",
                connect_timeout.as_secs()
            ))),
        }
    }

    pub async fn close_all(&self) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.clear();
    }
}

/// Turn a statement's outcome into the capability's result, dropping the connection when it can
/// no longer be trusted (closed, or abandoned mid-statement by a timeout).
fn settle<T>(
    database: &str,
    outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    guard: &mut Option<Client>,
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
    let lower = sql.to_ascii_lowercase();
    for function in SIDE_EFFECT_FUNCTIONS {
        if let Some(at) = lower.find(function) {
            let before_ok = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric() && lower.as_bytes()[at - 1] != b'_';
            let rest = lower[at + function.len()..].trim_start();
            if before_ok && rest.starts_with('(') {
                return Err(CapabilityError::ReadOnly(format!(
                    "database {database}: {function}() changes the server and cannot run while planning (nothing may change yet)"
                )));
            }
        }
    }
    Ok(())
}

async fn run_statement(client: &Client, statement: &Statement, bounds: &Bounds) -> Result<Rows, tokio_postgres::Error> {
    let prepared = client.prepare(&statement.sql).await?;
    let params: Vec<TextParam> = statement.params.iter().map(TextParam::from).collect();
    let columns: Vec<Column> = prepared.columns().iter().map(|c| Column { name: c.name().to_string(), type_name: c.type_().name().to_string() }).collect();
    let stream = client.query_raw(&prepared, params.iter()).await?;
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

fn simple_rows(messages: Vec<SimpleQueryMessage>, bounds: &Bounds) -> Rows {
    let mut result = Rows::default();
    let mut current: Vec<Vec<Value>> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(description) => {
                columns = description.iter().map(|c| Column { name: c.name().to_string(), type_name: "text".into() }).collect();
                current.clear();
            }
            SimpleQueryMessage::Row(row) => {
                if current.len() >= bounds.max_rows {
                    result.truncated = true;
                    continue;
                }
                current.push((0..row.len()).map(|i| row.get(i).map_or(Value::Null, |v| Value::Text(v.to_string()))).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => {
                result.affected = n;
                if !columns.is_empty() {
                    result.columns = std::mem::take(&mut columns);
                    result.rows = std::mem::take(&mut current);
                }
            }
            _ => {}
        }
    }
    result
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
