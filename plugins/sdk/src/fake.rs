//! A plugin's logic runs natively under `cargo test`: its capability calls (`sql::query`,
//! `ssh::exec`, `file_edit::read`, …) go to a [`World`] the test describes — the databases'
//! answers, the commands' output, the files, the inventory — instead of the opsh host. Only on
//! the native target: in wasm the same names are the host's imports.
//!
//! ```ignore
//! let world = World::new()
//!     .target("database", "alpha-app", &[("host", "alpha")])
//!     .sql("alpha-app", "FROM pg_settings", rows(&["shown", "context"], vec![vec![text("100ms"), text("superuser")]]));
//! let plan = world.run(|| Pg::plan(invocation("set-config", &[("database", "alpha-app")])));
//! ```
//!
//! An answer is picked by the first rule whose text occurs in the request (a SQL statement, a
//! command line joined by spaces); a request no rule answers fails with a message naming it, so
//! a test shows what the plugin asked for. Every request is recorded ([`World::asked`]).

use std::cell::RefCell;
use std::rc::Rc;

use crate::CapabilityError;
use crate::wit::{service as wservice, sql as wsql, ssh as wssh};

/// What a plugin sees of the world in a native test.
#[derive(Default)]
pub struct World {
    targets: Vec<(String, String, Vec<(String, String)>)>,
    sql: Vec<(String, String, Result<wsql::Rows, CapabilityError>)>,
    exec: Vec<(String, String, Result<wssh::ExecOutput, CapabilityError>)>,
    files: Vec<(String, String, String)>,
    services: Vec<(String, String, wservice::ServiceState)>,
    asked: RefCell<Vec<String>>,
}

thread_local! {
    static WORLD: RefCell<Option<Rc<World>>> = const { RefCell::new(None) };
    static GATHERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

thread_local! {
    static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record_log(_level: crate::wit::host::LogLevel, message: &str) {
    LOGGED.with(|l| l.borrow_mut().push(message.to_string()));
}

/// The log lines the plugin showed on this thread so far.
pub fn logged() -> Vec<String> {
    LOGGED.with(|l| l.borrow().clone())
}

/// While it lives, what the plugin asks is recorded as `gather …` (asked ahead, see `ahead`).
pub(crate) struct Gathering(());

impl Gathering {
    pub(crate) fn start() -> Self {
        GATHERING.with(|g| g.set(true));
        Self(())
    }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        GATHERING.with(|g| g.set(false));
    }
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// An inventory target (`host`, `database`, `topology`) with its attributes.
    pub fn target(mut self, kind: &str, name: &str, attributes: &[(&str, &str)]) -> Self {
        let attributes = attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.targets.push((kind.into(), name.into(), attributes));
        self
    }

    /// SQL on `database` whose text contains `contains` gets `rows`.
    pub fn sql(mut self, database: &str, contains: &str, rows: wsql::Rows) -> Self {
        self.sql.push((database.into(), contains.into(), Ok(rows)));
        self
    }

    /// SQL on `database` whose text contains `contains` fails with `error`.
    pub fn sql_fails(mut self, database: &str, contains: &str, error: CapabilityError) -> Self {
        self.sql.push((database.into(), contains.into(), Err(error)));
        self
    }

    /// A command on `host` whose argv, joined by spaces, contains `contains` exits `status`
    /// with `stdout`.
    pub fn exec(mut self, host: &str, contains: &str, status: i32, stdout: &str) -> Self {
        let out = wssh::ExecOutput { status: Some(status), stdout: stdout.as_bytes().to_vec(), stderr: Vec::new(), truncated: false };
        self.exec.push((host.into(), contains.into(), Ok(out)));
        self
    }

    /// A command on `host` that cannot be run (the host is unreachable, say).
    pub fn exec_fails(mut self, host: &str, contains: &str, error: CapabilityError) -> Self {
        self.exec.push((host.into(), contains.into(), Err(error)));
        self
    }

    pub fn file(mut self, host: &str, path: &str, content: &str) -> Self {
        self.files.push((host.into(), path.into(), content.into()));
        self
    }

    pub fn service(mut self, host: &str, name: &str, state: wservice::ServiceState) -> Self {
        self.services.push((host.into(), name.into(), state));
        self
    }

    /// Run `f` (a plugin export) with this world answering its capability calls.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> (T, Vec<String>) {
        let world = Rc::new(self);
        WORLD.with(|w| *w.borrow_mut() = Some(world.clone()));
        LOGGED.with(|l| l.borrow_mut().clear());
        let out = f();
        WORLD.with(|w| *w.borrow_mut() = None);
        let asked = world.asked.borrow().clone();
        (out, asked)
    }

    /// What the plugin asked for so far, one line per request.
    pub fn asked(&self) -> Vec<String> {
        self.asked.borrow().clone()
    }
}

fn with<T>(request: String, answer: impl FnOnce(&World) -> Result<T, CapabilityError>) -> Result<T, CapabilityError> {
    WORLD.with(|w| match w.borrow().as_ref() {
        Some(world) => {
            let shown = if GATHERING.with(|g| g.get()) { format!("gather {request}") } else { request.clone() };
            world.asked.borrow_mut().push(shown);
            answer(world)
        }
        None => Err(CapabilityError::Failed(format!("{request}: no fake World is installed (call it inside World::run)"))),
    })
}

fn unanswered(request: &str) -> CapabilityError {
    CapabilityError::Failed(format!("the test's World has no answer for {request}"))
}

/// Rows with these columns (all typed `text` in the description).
pub fn rows(columns: &[&str], rows: Vec<Vec<wsql::Value>>) -> wsql::Rows {
    let columns = columns.iter().map(|c| wsql::Column { name: c.to_string(), type_name: "text".into() }).collect();
    wsql::Rows { columns, rows, affected: 0, truncated: false }
}

pub fn text(value: &str) -> wsql::Value {
    wsql::Value::Text(value.into())
}

pub mod sql {
    pub use crate::wit::sql::{Column, Rows, Statement, Value};

    use super::{unanswered, with};
    use crate::CapabilityError;

    pub fn query(database: &str, sql: &str, params: &[Value]) -> Result<Rows, CapabilityError> {
        if let Some(answer) = crate::ahead::rows(database, sql, params) {
            return answer;
        }
        let request = format!("sql {database}: {sql}");
        with(request.clone(), |w| {
            w.sql
                .iter()
                .find(|(db, contains, _)| db == database && sql.contains(contains.as_str()))
                .map(|(_, _, r)| r.clone())
                .unwrap_or(Err(unanswered(&request)))
        })
    }

    pub fn transaction(database: &str, statements: &[Statement]) -> Result<Vec<Rows>, CapabilityError> {
        statements.iter().map(|s| query(database, &s.sql, &s.params)).collect()
    }

    pub fn batch(database: &str, script: &str) -> Result<Rows, CapabilityError> {
        query(database, script, &[])
    }
}

pub mod ssh {
    pub use crate::wit::ssh::{EnvValue, ExecOutput, ExecRequest};

    use super::{unanswered, with};
    use crate::CapabilityError;

    pub fn exec(host: &str, request: &ExecRequest) -> Result<ExecOutput, CapabilityError> {
        if let Some(answer) = crate::ahead::output(host, request) {
            return answer;
        }
        let line = request.argv.join(" ");
        let shown = format!("exec {host}: {line}");
        with(shown.clone(), |w| {
            w.exec.iter().find(|(h, contains, _)| h == host && line.contains(contains.as_str())).map(|(_, _, r)| r.clone()).unwrap_or(Err(unanswered(&shown)))
        })
    }
}

pub mod file_edit {
    pub use crate::wit::file_edit::{FileSnapshot, WriteOutcome};

    use super::with;
    use crate::CapabilityError;

    /// A file the World does not hold does not exist.
    pub fn read(host: &str, path: &str) -> Result<FileSnapshot, CapabilityError> {
        if let Some(answer) = crate::ahead::file(host, path) {
            return answer;
        }
        with(format!("read {host}:{path}"), |w| {
            let content = w.files.iter().find(|(h, p, _)| h == host && p == path).map(|(_, _, c)| c.clone());
            Ok(FileSnapshot {
                exists: content.is_some(),
                sha256: format!("fake-{:016x}", fnv(content.as_deref().unwrap_or_default())),
                content: content.unwrap_or_default(),
                mode: 0o644,
            })
        })
    }

    /// Plans change nothing: a write is refused, as the host refuses it while planning.
    pub fn write(host: &str, path: &str, _content: &str, _expected_sha256: Option<&str>) -> Result<WriteOutcome, CapabilityError> {
        with(format!("write {host}:{path}"), |_| Err(CapabilityError::ReadOnly(format!("{host}:{path}: nothing may change while planning"))))
    }

    /// A stable stand-in for the host's SHA-256 (FNV-1a; only equality matters in a test).
    fn fnv(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }
}

pub mod service {
    pub use crate::wit::service::{ServiceAction, ServiceState};

    use super::{unanswered, with};
    use crate::CapabilityError;

    pub fn status(host: &str, service: &str) -> Result<ServiceState, CapabilityError> {
        if let Some(answer) = crate::ahead::service_state(host, service) {
            return answer;
        }
        let request = format!("service {host}: status {service}");
        with(request.clone(), |w| w.services.iter().find(|(h, s, _)| h == host && s == service).map(|(_, _, st)| *st).ok_or_else(|| unanswered(&request)))
    }

    pub fn control(host: &str, service: &str, action: ServiceAction) -> Result<(), CapabilityError> {
        with(format!("service {host}: {action:?} {service}"), |_| Ok(()))
    }
}

pub mod host {
    pub use crate::wit::host::{LogLevel, TargetInfo};

    use super::with;
    use crate::CapabilityError;

    /// Recorded for [`super::logged`]; held while the plugin runs in rounds (`ahead`).
    pub fn log(level: LogLevel, message: &str) {
        if crate::ahead::holding() {
            crate::ahead::hold(level, message);
        } else {
            super::record_log(level, message);
        }
    }

    pub fn progress(_message: &str, _fraction: Option<f32>) {}

    pub fn locale() -> String {
        "en".into()
    }

    /// No time passes in a test; a sleep inside rounds still counts as waiting (`ahead`).
    pub fn sleep(_ms: u32) {
        let _ = crate::ahead::waits();
    }

    pub fn lookup(name: &str) -> Result<TargetInfo, CapabilityError> {
        with(format!("lookup {name}"), |w| {
            w.targets
                .iter()
                .find(|(_, n, _)| n == name)
                .map(|(kind, n, attributes)| TargetInfo { name: n.clone(), kind: kind.clone(), attributes: attributes.clone() })
                .ok_or_else(|| CapabilityError::NotFound(format!("{name} is not in the test's inventory")))
        })
    }

    pub fn list_targets(kind: &str) -> Vec<String> {
        with(format!("list {kind}"), |w| Ok(w.targets.iter().filter(|(k, _, _)| k == kind).map(|(_, n, _)| n.clone()).collect())).unwrap_or_default()
    }
}

/// A command as the shell hands it to the plugin: `COMMAND` with one value per named argument.
pub fn invocation(command: &str, args: &[(&str, &str)]) -> crate::Invocation {
    crate::Invocation { command: command.into(), args: args.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect() }
}

/// The ids of a plan's steps, in order.
pub fn ids(plan: &crate::ChangePlan) -> Vec<&str> {
    plan.steps.iter().map(|s| s.id.as_str()).collect()
}
