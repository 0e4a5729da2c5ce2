//! The store data of one plugin call, and the capability imports it implements. Every import
//! follows one shape: grant check, phase check, reveal what goes out, driver, conceal what comes
//! back, account the time spent outside the guest (it does not count against the CPU budget).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v2::gather;
use super::bindings::{file_edit, host, service, sql, ssh, types};
use crate::capability::exec::{EnvValue, ExecRequest};
use crate::capability::reach::{self, Outages};
use crate::capability::{self, CapResult, Capabilities, CapabilityError, Phase};
use crate::grants::Capability;

/// What the shell is told while a plugin runs.
pub trait Events: Send + Sync {
    fn log(&self, plugin: &str, level: host::LogLevel, message: &str);
    fn progress(&self, plugin: &str, message: &str, fraction: Option<f32>);
    /// An approved probe is about to run outside `apply` (`command` as `probe::shown` writes it).
    fn probe(&self, plugin: &str, phase: &str, host: &str, command: &str);
}

pub struct CallCtx {
    pub plugin: String,
    /// What the plugin declared in `describe()`: it may use nothing else.
    pub declared: Arc<super::Declared>,
    pub phase: Phase,
    pub caps: Arc<Capabilities>,
    pub events: Arc<dyn Events>,
    pub locale: String,
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) started: Instant,
    pub(super) host_time: Duration,
    pub(super) cpu_budget: Duration,
    pub(super) ran_out_of_cpu: bool,
    /// Wall clock: past it every capability call fails as a timeout and the guest is stopped.
    pub(super) deadline: Instant,
    /// The call's wall-clock limit and where it comes from, for messages.
    pub(super) wall_limit: (Duration, &'static str),
    pub(super) past_deadline: bool,
    /// What this call has logged so far (bounded, see `host::Host::log`).
    pub(super) logged: Logged,
    /// Applying a custom step: the effects the operator approved; every changing call must be
    /// one of them, whole, and each is used once.
    pub(super) approved: Option<Approved>,
    /// Whether the operator was told that a password reached this call's answers.
    pub(super) told_of_secret: std::sync::atomic::AtomicBool,
    /// In a reading call: the targets that did not answer (see `capability::reach`).
    pub(super) outages: Arc<Outages>,
}

/// The declared effects of the custom step being applied, and which were used.
pub struct Approved {
    effects: Vec<crate::plan::Effect>,
    used: std::sync::Mutex<Vec<bool>>,
}

impl Approved {
    pub fn new(effects: Vec<crate::plan::Effect>) -> Self {
        let used = std::sync::Mutex::new(vec![false; effects.len()]);
        Self { effects, used }
    }

    /// The first unused effect that `fits`, now used.
    fn take(&self, fits: impl Fn(&crate::plan::Effect) -> bool) -> Option<&crate::plan::Effect> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let index = self.effects.iter().enumerate().position(|(i, e)| !used[i] && fits(e))?;
        used[index] = true;
        Some(&self.effects[index])
    }
}

/// Log lines and progress of one call: capped in number, size and rate, so that a plugin cannot
/// flood the operator's terminal or the host's memory.
#[derive(Debug, Default)]
pub struct Logged {
    lines: usize,
    bytes: usize,
    dropped: usize,
    last_progress: Option<Instant>,
}

const MAX_LOG_LINES: usize = 2_000;
const MAX_LOG_BYTES: usize = 1 << 20;
const MAX_LOG_LINE: usize = 4 << 10;
const MAX_PROGRESS_LINE: usize = 512;
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A plugin's authority, the same whether it makes a call or the host acts for it (a declared
/// step): the capability is one it declared, and the inventory grants it on the target.
pub(crate) fn permitted(
    plugin: &str,
    declared: &super::Declared,
    caps: &Capabilities,
    capability: Capability,
    target: &str,
    detail: Option<&str>,
) -> CapResult<()> {
    if !declared.capabilities.contains(&capability) {
        return Err(CapabilityError::Denied(format!("plugin {plugin} did not declare the capability {capability} in describe() and may not use it")));
    }
    caps.grants.check(plugin, capability, target, detail).map_err(CapabilityError::Denied)
}

/// May this plugin see host `name` (and so send to it, and learn which host a name is)?
pub(crate) fn sees(plugin: &str, caps: &Capabilities, name: &str) -> bool {
    caps.grants.may_see(plugin, name) || caps.grants.manages_topology(plugin, &caps.inventory, name)
}

/// Address tokens in what the plugin sends, as addresses, for the hosts it may see only.
pub(crate) fn reveal_for(plugin: &str, caps: &Capabilities, text: &str) -> CapResult<String> {
    caps.addresses.reveal_for(text, &|host| sees(plugin, caps, host)).map_err(CapabilityError::Invalid)
}

/// At most `max` bytes of `text`, cut at a character boundary, saying how much was cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{} … ({} more bytes)", &text[..at], text.len() - at).into()
}

impl WasiView for CallCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl CallCtx {
    pub(super) fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_time)
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn deadline_error(&self) -> CapabilityError {
        CapabilityError::Timeout(format!(
            "plugin {}: its {} call reached its deadline of {:.0} s ({}): outcome unknown",
            self.plugin,
            self.phase.name(),
            self.wall_limit.0.as_secs_f32(),
            self.wall_limit.1
        ))
    }

    /// A capability call, bounded by what is left of the plugin call's deadline (the future
    /// holds no borrow of the context: a store's data is not `Sync`).
    /// The deadline is an instant, not a length of time: a call that starts later (one of many
    /// gathered asks, waiting for its turn) gets only what is left when it starts.
    fn bounded<T, F: Future<Output = CapResult<T>>>(&self, work: F) -> impl Future<Output = CapResult<T>> + use<T, F> {
        let (deadline, late) = (tokio::time::Instant::from_std(self.deadline), self.deadline_error());
        async move {
            if tokio::time::Instant::now() >= deadline {
                return Err(late);
            }
            tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(late))
        }
    }

    /// `bounded`, and in a reading call a target that did not answer earlier in it fails at once
    /// (one that cannot be connected to now is not waited for again).
    fn reaching<T, F: Future<Output = CapResult<T>>>(&self, target: String, work: F) -> impl Future<Output = CapResult<T>> + use<T, F> {
        let outages = (!self.phase.may_change()).then(|| self.outages.clone());
        let bounded = self.bounded(work);
        async move {
            let started = Instant::now();
            let result = match outages.as_ref().map(|o| o.check(&target)) {
                Some(Err(e)) => Err(e),
                _ => bounded.await,
            };
            if let Some(outages) = &outages {
                outages.note(&target, &result, started.elapsed());
                outages.tally(&target, &result);
            }
            result
        }
    }

    fn grant(&self, capability: Capability, target: &str, detail: Option<&str>) -> CapResult<()> {
        if self.phase == Phase::Describe {
            return Err(CapabilityError::Denied(format!("plugin {}: describe() may not use capabilities", self.plugin)));
        }
        permitted(&self.plugin, &self.declared, &self.caps, capability, target, detail)
    }

    fn refuse_change(&self, what: &str) -> CapResult<()> {
        if self.phase.may_change() {
            Ok(())
        } else {
            Err(CapabilityError::ReadOnly(format!("{what} refused: plugin {} is in its {} phase, where nothing may change", self.plugin, self.phase.name())))
        }
    }

    /// May this plugin see host `name` (and so send to it, and learn which host a name is)?
    fn sees(&self, name: &str) -> bool {
        sees(&self.plugin, &self.caps, name)
    }

    fn reveal(&self, text: &str) -> CapResult<String> {
        reveal_for(&self.plugin, &self.caps, text)
    }

    /// Everything that comes back into the sandbox: addresses as tokens, known secrets (and
    /// their encodings) as the marker.
    fn conceal(&self, text: &str) -> String {
        // Secrets first: a password that holds an address is still a password.
        let scrubbed = self.caps.scrubber.scrub(text);
        if matches!(scrubbed, std::borrow::Cow::Owned(_)) {
            self.tell_of_secret();
        }
        self.caps.addresses.conceal_for(&scrubbed, &|host| self.sees(host))
    }

    fn conceal_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        match String::from_utf8(bytes) {
            Ok(text) => self.conceal(&text).into_bytes(),
            Err(e) => {
                let raw = e.into_bytes();
                let scrubbed = self.caps.scrubber.scrub_bytes(raw.clone());
                if scrubbed != raw {
                    self.tell_of_secret();
                }
                scrubbed
            }
        }
    }

    /// A password reached what a plugin gets back (it sees the marker): the operator is told,
    /// once per call — a plugin fishing for a password by echoing guesses is seen doing it.
    fn tell_of_secret(&self) {
        if !self.told_of_secret.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let message = format!(
                "a password from the inventory appeared in what plugin {} got back in its {} call; it was shown ******** instead",
                self.plugin,
                self.phase.name()
            );
            self.events.log(&self.plugin, host::LogLevel::Warn, &message);
        }
    }

    /// Errors cross into the sandbox too: addresses in them are concealed like everything else.
    fn to_wit_error(&self, error: CapabilityError) -> types::CapabilityError {
        let m = self.conceal(error.message());
        match error {
            CapabilityError::Denied(_) => types::CapabilityError::Denied(m),
            CapabilityError::NotFound(_) => types::CapabilityError::NotFound(m),
            CapabilityError::Unreachable(_) => types::CapabilityError::Unreachable(m),
            CapabilityError::Auth(_) => types::CapabilityError::Auth(m),
            CapabilityError::Timeout(_) => types::CapabilityError::Timeout(m),
            CapabilityError::ReadOnly(_) => types::CapabilityError::ReadOnly(m),
            CapabilityError::Conflict(_) => types::CapabilityError::Conflict(m),
            CapabilityError::Failed(_) => types::CapabilityError::Failed(m),
            CapabilityError::Invalid(_) => types::CapabilityError::Invalid(m),
        }
    }

    fn finish<T>(&mut self, started: Instant, result: CapResult<T>) -> Result<T, types::CapabilityError> {
        self.host_time += started.elapsed();
        result.map_err(|e| self.to_wit_error(e))
    }

    /// This plugin's session for these statements — the reading one outside `apply` — and the
    /// rows they must affect. In a custom step, SQL that is not, whole and in order, one of the
    /// step's unused approved effects runs as a read: PostgreSQL refuses it a change.
    fn sql_session(&self, database: &str, statements: &[(&str, &[sql::Value])], transaction: bool) -> (bool, Option<u64>) {
        if !self.phase.may_change() {
            return (true, None);
        }
        let Some(approved) = &self.approved else { return (false, None) };
        let fits = |e: &crate::plan::Effect| match e {
            crate::plan::Effect::Sql { database: d, statements: texts, params, transaction: t, .. } => {
                d == database
                    && texts.len() == statements.len()
                    && (*t == transaction || statements.len() == 1)
                    && statements.iter().enumerate().all(|(i, (text, values))| {
                        let want = params.get(i).map(Vec::as_slice).unwrap_or_default();
                        texts[i] == *text && want.len() == values.len() && want.iter().zip(values.iter()).all(|(w, v)| *w == crate::plan::SqlParam::from(v))
                    })
            }
            _ => false,
        };
        match approved.take(fits) {
            Some(crate::plan::Effect::Sql { expect_affected, .. }) => (false, *expect_affected),
            _ => (true, None),
        }
    }

    /// In a custom step, a change must be one of the step's approved effects not yet used.
    fn approve(&self, what: &str, fits: impl Fn(&crate::plan::Effect) -> bool) -> CapResult<()> {
        match &self.approved {
            Some(approved) if approved.take(fits).is_none() => Err(CapabilityError::Denied(format!(
                "plugin {}: {what} is not in the approved plan (the step's declared effects, each once); nothing was changed",
                self.plugin
            ))),
            _ => Ok(()),
        }
    }

    fn sql_statement(&self, sql: &str, params: Vec<sql::Value>) -> CapResult<capability::sql::Statement> {
        let params = params
            .into_iter()
            .map(|p| {
                Ok(match p {
                    sql::Value::Null => capability::sql::Value::Null,
                    sql::Value::Boolean(b) => capability::sql::Value::Bool(b),
                    sql::Value::Int(i) => capability::sql::Value::Int(i),
                    sql::Value::Float(f) => capability::sql::Value::Float(f),
                    sql::Value::Text(t) => capability::sql::Value::Text(self.reveal(&t)?),
                })
            })
            .collect::<CapResult<Vec<_>>>()?;
        Ok(capability::sql::Statement { sql: self.reveal(sql)?, params })
    }

    fn wit_rows(&self, rows: capability::sql::Rows) -> sql::Rows {
        sql::Rows {
            columns: rows.columns.into_iter().map(|c| sql::Column { name: c.name, type_name: c.type_name }).collect(),
            rows: rows
                .rows
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|v| match v {
                            capability::sql::Value::Null => sql::Value::Null,
                            capability::sql::Value::Bool(b) => sql::Value::Boolean(b),
                            capability::sql::Value::Int(i) => sql::Value::Int(i),
                            capability::sql::Value::Float(f) => sql::Value::Float(f),
                            capability::sql::Value::Text(t) => sql::Value::Text(self.conceal(&t)),
                        })
                        .collect()
                })
                .collect(),
            affected: rows.affected,
            truncated: rows.truncated,
        }
    }
}

/// A read ready to go: it borrows nothing of the call, so that several run at once (`gather`).
type Pending<T> = std::pin::Pin<Box<dyn Future<Output = CapResult<T>> + Send>>;

/// The reads a plugin may gather, each prepared as its own capability call prepares it (grant,
/// phase, tokens revealed) and its answer made fit for the sandbox as that call's is.
impl CallCtx {
    /// A statement in the reading session, whatever the phase.
    fn query_read(&self, database: String, sql: String, params: Vec<sql::Value>) -> CapResult<Pending<capability::sql::Rows>> {
        self.grant(Capability::Sql, &database, None)?;
        let statement = self.sql_statement(&sql, params)?;
        let (caps, plugin) = (self.caps.clone(), self.plugin.clone());
        let target = reach::database(&database);
        Ok(Box::pin(self.reaching(target, async move {
            caps.sql.query(&database, capability::sql::Session { plugin: &plugin, read_only: true }, &statement, &caps.bounds).await
        })))
    }

    fn exec_pending(&self, host_name: String, exec: ExecRequest) -> Pending<capability::exec::ExecOutput> {
        let caps = self.caps.clone();
        let target = reach::host(&host_name);
        Box::pin(self.reaching(target, async move { caps.remote.exec(&host_name, exec).await }))
    }

    fn file_read(&self, host_name: String, path: String) -> CapResult<Pending<capability::file_edit::FileSnapshot>> {
        self.grant(Capability::FileEdit, &host_name, Some(&path))?;
        let caps = self.caps.clone();
        let target = reach::host(&host_name);
        Ok(Box::pin(self.reaching(target, async move { capability::file_edit::read(&caps.remote, &host_name, &path, true, &caps.bounds).await })))
    }

    fn service_status(&self, host_name: String, name: String) -> CapResult<Pending<capability::service::State>> {
        self.grant(Capability::Service, &host_name, Some(&name))?;
        let caps = self.caps.clone();
        let target = reach::host(&host_name);
        Ok(Box::pin(self.reaching(target, async move { capability::service::status(&caps.remote, &caps.inventory, &host_name, &name).await })))
    }

    fn wit_output(&self, out: capability::exec::ExecOutput) -> ssh::ExecOutput {
        ssh::ExecOutput { status: out.status, stdout: self.conceal_bytes(out.stdout), stderr: self.conceal_bytes(out.stderr), truncated: out.truncated }
    }

    fn wit_snapshot(&self, snapshot: capability::file_edit::FileSnapshot) -> file_edit::FileSnapshot {
        // The hash of a file that holds a password would let a plugin test guesses offline: it
        // gets the hash of what it was shown (writing such a file is refused anyway).
        let sha256 = if self.caps.scrubber.holds_secret(&snapshot.content) {
            hex::encode(sha2::Sha256::digest(self.conceal(&snapshot.content).as_bytes()))
        } else {
            snapshot.sha256
        };
        file_edit::FileSnapshot { exists: snapshot.exists, content: self.conceal(&snapshot.content), sha256, mode: snapshot.mode }
    }
}

fn wit_state(state: capability::service::State) -> service::ServiceState {
    match state {
        capability::service::State::Running => service::ServiceState::Running,
        capability::service::State::Stopped => service::ServiceState::Stopped,
        capability::service::State::Unknown => service::ServiceState::Unknown,
    }
}

impl types::Host for CallCtx {}

impl sql::Host for CallCtx {
    async fn query(&mut self, database: String, sql: String, params: Vec<sql::Value>) -> Result<sql::Rows, types::CapabilityError> {
        let started = Instant::now();
        let caps = self.caps.clone();
        // The grant first: a refused call must not spend a custom step's approved effect.
        let granted = self.grant(Capability::Sql, &database, None);
        let (read_only, expected) = if granted.is_ok() { self.sql_session(&database, &[(sql.as_str(), params.as_slice())], false) } else { (true, None) };
        let session = capability::sql::Session { plugin: &self.plugin, read_only };
        let prepared = granted.and_then(|()| self.sql_statement(&sql, params));
        let result = match prepared {
            Ok(statement) if expected.is_some() => self
                .reaching(
                    reach::database(&database),
                    caps.sql.transaction_expecting(&database, session, std::slice::from_ref(&statement), &caps.bounds, true, expected),
                )
                .await
                .map(|mut rows| rows.pop().unwrap_or_default()),
            Ok(statement) => self.reaching(reach::database(&database), caps.sql.query(&database, session, &statement, &caps.bounds)).await,
            Err(e) => Err(e),
        };
        let result = result.map(|rows| self.wit_rows(rows));
        self.finish(started, result)
    }

    async fn transaction(&mut self, database: String, statements: Vec<sql::Statement>) -> Result<Vec<sql::Rows>, types::CapabilityError> {
        let started = Instant::now();
        let granted = self.grant(Capability::Sql, &database, None);
        let (read_only, expected) = if granted.is_ok() {
            let texts: Vec<(&str, &[sql::Value])> = statements.iter().map(|s| (s.sql.as_str(), s.params.as_slice())).collect();
            self.sql_session(&database, &texts, true)
        } else {
            (true, None)
        };
        let prepared = granted.and_then(|()| statements.into_iter().map(|s| self.sql_statement(&s.sql, s.params)).collect::<CapResult<Vec<_>>>());
        let caps = self.caps.clone();
        let session = capability::sql::Session { plugin: &self.plugin, read_only };
        let result = match prepared {
            Ok(statements) => {
                self.reaching(reach::database(&database), caps.sql.transaction_expecting(&database, session, &statements, &caps.bounds, false, expected)).await
            }
            Err(e) => Err(e),
        };
        let result = result.map(|all| all.into_iter().map(|rows| self.wit_rows(rows)).collect());
        self.finish(started, result)
    }

    async fn batch(&mut self, database: String, script: String) -> Result<sql::Rows, types::CapabilityError> {
        let started = Instant::now();
        // A script is never one of a custom step's effects: it could not keep their row counts.
        let read_only = !self.phase.may_change() || self.approved.is_some();
        let prepared = self.grant(Capability::Sql, &database, None).and_then(|()| self.reveal(&script));
        let caps = self.caps.clone();
        let session = capability::sql::Session { plugin: &self.plugin, read_only };
        let result = match prepared {
            Ok(script) => self.reaching(reach::database(&database), caps.sql.batch(&database, session, &script, &caps.bounds)).await,
            Err(e) => Err(e),
        };
        let result = result.map(|rows| self.wit_rows(rows));
        self.finish(started, result)
    }
}

impl CallCtx {
    /// `probe_only`: the command runs only as an approved probe, whatever the phase (`gather`).
    fn exec_request(&self, host_name: &str, mut request: ssh::ExecRequest, probe_only: bool) -> CapResult<ExecRequest> {
        self.grant(Capability::Ssh, host_name, None)?;
        let argv = request.argv.iter().map(|a| self.reveal(a)).collect::<CapResult<Vec<_>>>()?;
        let raw_stdin = request.stdin.clone();
        let stdin = match request.stdin.take() {
            Some(bytes) => Some(match String::from_utf8(bytes) {
                Ok(text) => self.reveal(&text)?.into_bytes(),
                Err(e) => e.into_bytes(),
            }),
            None => None,
        };
        if probe_only || !self.phase.may_change() || (self.approved.is_some() && request.read_only) {
            self.probe_allowed(host_name, &request, &argv, stdin.as_deref())?;
        } else {
            let env: Vec<(String, crate::plan::EnvSpec)> = request.env.iter().map(|(name, value)| (name.clone(), value.into())).collect();
            let shown = crate::probe::shown(&argv, stdin.as_deref());
            self.approve(&format!("running `{shown}` on host {host_name}"), |e| match e {
                crate::plan::Effect::Exec { host, argv: a, env: e, stdin: input, timeout_ms, privileged, .. } => {
                    host == host_name
                        && *a == request.argv
                        && *e == env
                        && *input == raw_stdin
                        && *privileged == request.privileged
                        && timeout_ms.is_none_or(|most| request.timeout_ms.is_some_and(|asked| asked <= most))
                }
                _ => false,
            })?;
        }
        let mut exec = ExecRequest::new(argv);
        for (name, value) in request.env {
            let value = match value {
                ssh::EnvValue::Plain(text) => EnvValue::Plain(self.reveal(&text)?),
                ssh::EnvValue::DatabasePassword(database) => {
                    self.grant(Capability::Sql, &database, None)?;
                    self.refuse_change(&format!("handing the password of database {database} to a command on host {host_name}"))?;
                    let secret = self
                        .caps
                        .inventory
                        .database_password(&database)
                        .map_err(|e| CapabilityError::Auth(format!("{e:#}")))?
                        .ok_or_else(|| CapabilityError::NotFound(format!("database {database} has no password in the inventory")))?;
                    EnvValue::Secret(secret)
                }
            };
            exec.env.push((name, value));
        }
        exec.stdin = stdin;
        // A plugin may ask for less time than the inventory's command timeout, never for more,
        // and never past its own call's deadline.
        let most = Duration::from_millis(self.caps.inventory.defaults.command_timeout_ms);
        let asked = request.timeout_ms.map_or(most, |ms| Duration::from_millis(ms.into()).min(most));
        exec.timeout = Some(asked.min(self.remaining()).max(Duration::from_millis(1)));
        exec.privileged = request.privileged;
        exec.max_output = self.caps.bounds.max_output_bytes;
        Ok(exec)
    }
}

impl CallCtx {
    /// Outside `apply` a command runs only as a probe the operator approved, exactly as
    /// approved (no environment, no privilege), and the operator sees and the journal keeps it.
    fn probe_allowed(&self, host_name: &str, request: &ssh::ExecRequest, argv: &[String], stdin: Option<&[u8]>) -> CapResult<()> {
        let command = crate::probe::shown(argv, stdin);
        let phase = self.phase.name();
        if !request.read_only {
            return self.refuse_change(&format!("running `{command}` on host {host_name} (not declared read-only)"));
        }
        if !request.env.is_empty() {
            return Err(CapabilityError::ReadOnly(format!(
                "plugin {}: `{command}` on host {host_name} asks for environment variables in its {phase} phase; a probe runs without any (passwords only while applying)",
                self.plugin
            )));
        }
        if request.privileged {
            return Err(CapabilityError::ReadOnly(format!(
                "plugin {}: `{command}` on host {host_name} asks for privileges in its {phase} phase; a probe runs as the login user",
                self.plugin
            )));
        }
        self.caps.grants.check_probe(&self.plugin, host_name, argv, stdin, &self.declared.probes).map_err(CapabilityError::Denied)?;
        self.events.probe(&self.plugin, phase, host_name, &command);
        Ok(())
    }
}

impl ssh::Host for CallCtx {
    async fn exec(&mut self, host_name: String, request: ssh::ExecRequest) -> Result<ssh::ExecOutput, types::CapabilityError> {
        let started = Instant::now();
        let result = match self.exec_request(&host_name, request, false) {
            Ok(exec) => self.exec_pending(host_name, exec).await,
            Err(e) => Err(e),
        };
        let result = result.map(|out| self.wit_output(out));
        self.finish(started, result)
    }
}

impl file_edit::Host for CallCtx {
    async fn read(&mut self, host_name: String, path: String) -> Result<file_edit::FileSnapshot, types::CapabilityError> {
        let started = Instant::now();
        let result = match self.file_read(host_name, path) {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        let result = result.map(|snapshot| self.wit_snapshot(snapshot));
        self.finish(started, result)
    }

    async fn write(
        &mut self,
        host_name: String,
        path: String,
        content: String,
        expected_sha256: Option<String>,
    ) -> Result<file_edit::WriteOutcome, types::CapabilityError> {
        let started = Instant::now();
        let prepared = self
            .grant(Capability::FileEdit, &host_name, Some(&path))
            .and_then(|()| self.refuse_change(&format!("writing {path} on host {host_name}")))
            .and_then(|()| {
                self.approve(&format!("writing {path} on host {host_name}"), |e| {
                    matches!(e, crate::plan::Effect::File { host, path: p, new_content, expected_sha256: want } if *host == host_name && *p == path && *new_content == content && expected_sha256.as_deref() == Some(want.as_str()))
                })
            })
            .and_then(|()| self.reveal(&content));
        let caps = self.caps.clone();
        let write = async {
            let content = prepared?;
            capability::file_edit::keep_secrets(&caps.remote, &caps.scrubber, &caps.bounds, &host_name, &path, &content).await?;
            capability::file_edit::write(&caps.remote, &host_name, &path, &content, expected_sha256.as_deref(), true).await
        };
        let result = self.bounded(write).await;
        let result = result.map(|outcome| file_edit::WriteOutcome { backup_path: outcome.backup_path, sha256: outcome.sha256 });
        self.finish(started, result)
    }
}

impl service::Host for CallCtx {
    async fn status(&mut self, host_name: String, name: String) -> Result<service::ServiceState, types::CapabilityError> {
        let started = Instant::now();
        let result = match self.service_status(host_name, name) {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        let result = result.map(wit_state);
        self.finish(started, result)
    }

    async fn control(&mut self, host_name: String, name: String, action: service::ServiceAction) -> Result<(), types::CapabilityError> {
        use capability::service::Action;
        let started = Instant::now();
        let action = match action {
            service::ServiceAction::Start => Action::Start,
            service::ServiceAction::Stop => Action::Stop,
            service::ServiceAction::Restart => Action::Restart,
            service::ServiceAction::Reload => Action::Reload,
        };
        let prepared =
            self.grant(Capability::Service, &host_name, Some(&name))
                .and_then(|()| self.refuse_change(&format!("{} of service {name} on host {host_name}", action.name())))
                .and_then(|()| {
                    self.approve(&format!("{} of service {name} on host {host_name}", action.name()), |e| {
                    matches!(e, crate::plan::Effect::Service { host, service, action: a } if *host == host_name && *service == name && a == action.name())
                })
                });
        let caps = self.caps.clone();
        let result = match prepared {
            Ok(()) => self.bounded(capability::service::control(&caps.remote, &caps.inventory, &host_name, &name, action)).await,
            Err(e) => Err(e),
        };
        self.finish(started, result)
    }
}

impl host::Host for CallCtx {
    async fn log(&mut self, level: host::LogLevel, message: String) {
        let logged = &mut self.logged;
        if logged.lines >= MAX_LOG_LINES || logged.bytes >= MAX_LOG_BYTES {
            logged.dropped += 1;
            if logged.dropped == 1 {
                let note = format!(
                    "plugin {} logs more than {MAX_LOG_LINES} lines or {} KiB in one call: its further log lines are dropped",
                    self.plugin,
                    MAX_LOG_BYTES >> 10
                );
                self.events.log(&self.plugin, host::LogLevel::Warn, &note);
            }
            return;
        }
        let message = cut(&message, MAX_LOG_LINE);
        logged.lines += 1;
        logged.bytes += message.len();
        let message = self.caps.addresses.reveal_lossy(&message);
        self.events.log(&self.plugin, level, &message);
    }

    /// Shown at most every 100 ms (the last one of a burst is the one that counts, and the next
    /// log line or the step's end replaces it anyway).
    async fn progress(&mut self, message: String, fraction: Option<f32>) {
        let now = Instant::now();
        if self.logged.last_progress.is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY) {
            return;
        }
        self.logged.last_progress = Some(now);
        let message = self.caps.addresses.reveal_lossy(&cut(&message, MAX_PROGRESS_LINE));
        self.events.progress(&self.plugin, &message, fraction);
    }

    async fn locale(&mut self) -> String {
        self.locale.clone()
    }

    /// At most 60 s, never past the call's deadline; `describe()` may not wait at all.
    async fn sleep(&mut self, ms: u32) {
        if self.phase == Phase::Describe {
            return;
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(ms.min(60_000).into()).min(self.remaining())).await;
        self.host_time += started.elapsed();
    }

    async fn lookup(&mut self, name: String) -> Result<host::TargetInfo, types::CapabilityError> {
        let result = self.lookup_target(&name);
        result.map_err(|e| self.to_wit_error(e))
    }

    async fn list_targets(&mut self, kind: String) -> Vec<String> {
        let inventory = &self.caps.inventory;
        let names: Vec<String> = match kind.as_str() {
            "host" => inventory.hosts.keys().cloned().collect(),
            "database" => inventory.databases.keys().cloned().collect(),
            "topology" => inventory.topologies.keys().cloned().collect(),
            _ => Vec::new(),
        };
        names.into_iter().filter(|n| self.caps.grants.may_see(&self.plugin, n) || self.caps.grants.manages_topology(&self.plugin, inventory, n)).collect()
    }
}

impl CallCtx {
    fn lookup_target(&self, name: &str) -> CapResult<host::TargetInfo> {
        let inventory = &self.caps.inventory;
        let visible = self.caps.grants.may_see(&self.plugin, name) || self.caps.grants.manages_topology(&self.plugin, inventory, name);
        let unknown = || CapabilityError::NotFound(format!("{name} is not in the inventory, or plugin {} was granted nothing on it", self.plugin));
        if !visible {
            return Err(unknown());
        }
        let token = crate::address_book::AddressBook::token;
        let mut attributes: Vec<(String, String)> = Vec::new();
        let kind;
        if let Some(h) = inventory.host(name) {
            kind = "host";
            attributes.push(("address".into(), token(name)));
            // The kinds of the host's other names; each is `{{addr:NAME:KIND}}` inside. Which of
            // its names are IPv4 / IPv6 addresses (not which addresses): a pg_hba rule or an
            // ACL needs an address and the width of its mask.
            attributes.push(("aliases".into(), h.aliases.keys().cloned().collect::<Vec<_>>().join(",")));
            let family = |value: &str| match value.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => "ipv4",
                Ok(std::net::IpAddr::V6(_)) => "ipv6",
                Err(_) => "name",
            };
            attributes.push(("address-kind".into(), family(&h.address).into()));
            for (kind, value) in &h.aliases {
                attributes.push((format!("alias.{kind}.kind"), family(value).into()));
            }
            attributes.push((
                "service-manager".into(),
                match &h.service_manager {
                    crate::inventory::ServiceManager::Named(crate::inventory::ServiceManagerName::Systemd) => "systemd".into(),
                    crate::inventory::ServiceManager::Named(crate::inventory::ServiceManagerName::Sysv) => "sysv".into(),
                    crate::inventory::ServiceManager::Command { .. } => "command".into(),
                    crate::inventory::ServiceManager::Unset => "none".into(),
                },
            ));
            attributes.extend(h.attributes.iter().map(|(k, v)| (k.clone(), self.conceal(v))));
        } else if let Some(d) = inventory.database(name) {
            kind = "database";
            attributes.push(("host".into(), d.host.clone()));
            attributes.push(("address".into(), token(&d.host)));
            attributes.push(("port".into(), d.port.to_string()));
            attributes.push(("dbname".into(), d.dbname.clone()));
            attributes.push(("user".into(), d.user.clone()));
            attributes.push(("sslmode".into(), d.sslmode.name().to_string()));
            attributes.extend(d.attributes.iter().map(|(k, v)| (k.clone(), self.conceal(v))));
        } else if let Some(t) = inventory.topologies.get(name) {
            kind = "topology";
            if let Some(plugin) = &t.plugin {
                attributes.push(("plugin".into(), plugin.clone()));
            }
            for (role, members) in &t.members {
                attributes.push((format!("member.{role}"), members.join(",")));
            }
            attributes.extend(t.attributes.iter().map(|(k, v)| (k.clone(), self.conceal(v))));
        } else {
            return Err(unknown());
        }
        Ok(host::TargetInfo { name: name.to_string(), kind: kind.to_string(), attributes })
    }
}

/// At most this many asks in one `gather.all`.
const MAX_GATHERED: usize = 1024;

/// What a gathered ask brought back, before it is made fit for the sandbox.
enum Gathered {
    Rows(capability::sql::Rows),
    Output(capability::exec::ExecOutput),
    File(capability::file_edit::FileSnapshot),
    Service(capability::service::State),
}

impl Gathered {
    /// Roughly what it costs the host to hold.
    fn bytes(&self) -> usize {
        match self {
            Self::Rows(rows) => rows
                .rows
                .iter()
                .flatten()
                .map(|v| match v {
                    capability::sql::Value::Text(t) => t.len() + 8,
                    _ => 16,
                })
                .sum(),
            Self::Output(out) => out.stdout.len() + out.stderr.len(),
            Self::File(snapshot) => snapshot.content.len(),
            Self::Service(_) => 1,
        }
    }
}

impl CallCtx {
    /// One ask, prepared as its own call would be; the rest of its work is the future.
    fn gathered(&self, ask: gather::Ask) -> CapResult<Pending<Gathered>> {
        if self.phase == Phase::Describe {
            return Err(CapabilityError::Denied(format!("plugin {}: describe() may not use capabilities", self.plugin)));
        }
        Ok(match ask {
            gather::Ask::Query(q) => {
                let pending = self.query_read(q.database, q.sql, q.params)?;
                Box::pin(async move { pending.await.map(Gathered::Rows) })
            }
            gather::Ask::Exec(e) => {
                if !e.request.read_only {
                    let shown = crate::probe::shown(&e.request.argv, None);
                    return Err(CapabilityError::ReadOnly(format!(
                        "plugin {}: `{shown}` on host {} was gathered but is not declared read-only; gather runs probes only (run a change as a step's effect)",
                        self.plugin, e.host
                    )));
                }
                let exec = self.exec_request(&e.host, e.request, true)?;
                let pending = self.exec_pending(e.host, exec);
                Box::pin(async move { pending.await.map(Gathered::Output) })
            }
            gather::Ask::ReadFile(f) => {
                let pending = self.file_read(f.host, f.path)?;
                Box::pin(async move { pending.await.map(Gathered::File) })
            }
            gather::Ask::ServiceStatus(s) => {
                let pending = self.service_status(s.host, s.service)?;
                Box::pin(async move { pending.await.map(Gathered::Service) })
            }
        })
    }

    fn wit_answer(&self, gathered: Gathered) -> gather::Answer {
        match gathered {
            Gathered::Rows(rows) => gather::Answer::Rows(self.wit_rows(rows)),
            Gathered::Output(out) => gather::Answer::Output(self.wit_output(out)),
            Gathered::File(snapshot) => gather::Answer::File(self.wit_snapshot(snapshot)),
            Gathered::Service(state) => gather::Answer::Service(wit_state(state)),
        }
    }
}

/// One gathered ask, run unless the answers so far already passed `budget`; its answer counts
/// against the budget and is dropped (as `over`) when it takes the total past it.
async fn held_within(
    index: usize,
    pending: CapResult<Pending<Gathered>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    budget: usize,
    over: CapabilityError,
) -> (usize, CapResult<Gathered>) {
    use std::sync::atomic::Ordering::Relaxed;
    if held.load(Relaxed) > budget {
        return (index, Err(over));
    }
    let result = match pending {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    let result = result.and_then(|g| {
        let bytes = g.bytes();
        if held.fetch_add(bytes, Relaxed) + bytes > budget { Err(over) } else { Ok(g) }
    });
    (index, result)
}

impl gather::Host for CallCtx {
    /// Every ask is prepared in order (a refused one fails alone and runs nothing), then the
    /// prepared ones run at most `parallel` at a time; the time is the host's, not the guest's.
    async fn all(&mut self, asks: Vec<gather::Ask>) -> Vec<Result<gather::Answer, types::CapabilityError>> {
        use futures_util::StreamExt;
        let started = Instant::now();
        if asks.len() > MAX_GATHERED {
            let e = CapabilityError::Invalid(format!(
                "plugin {}: gathered {} asks at once, more than {MAX_GATHERED}; nothing was asked (gather fewer at a time)",
                self.plugin,
                asks.len()
            ));
            let e = self.to_wit_error(e);
            return vec![Err(e); asks.len()];
        }
        let pending: Vec<CapResult<Pending<Gathered>>> = asks.into_iter().map(|ask| self.gathered(ask)).collect();
        let at_once = self.caps.inventory.defaults.parallel.max(1);
        // What the answers hold so far: past the bound an answer is dropped as it arrives, and an
        // ask not started yet is not started (host memory: the bound, plus what is in flight).
        let budget = self.caps.bounds.max_result_bytes;
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let over = CapabilityError::Failed(format!(
            "plugin {}: the answers of one gather passed {} MiB; this one was dropped (ask for less at once)",
            self.plugin,
            budget >> 20
        ));
        let mut runs = Vec::with_capacity(pending.len());
        for (index, p) in pending.into_iter().enumerate() {
            runs.push(held_within(index, p, held.clone(), budget, over.clone()));
        }
        // Unordered: a slow ask does not keep later ones from starting; sorted back below.
        let mut done: Vec<(usize, CapResult<Gathered>)> = futures_util::stream::iter(runs).buffer_unordered(at_once).collect().await;
        done.sort_by_key(|(index, _)| *index);
        let answers = done.into_iter().map(|(_, result)| result.map(|g| self.wit_answer(g)).map_err(|e| self.to_wit_error(e))).collect();
        self.host_time += started.elapsed();
        answers
    }
}
