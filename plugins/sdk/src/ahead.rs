//! Reads asked at once. A status asks every member of a cluster the same questions; asked one
//! after another they cost the sum of their round trips, asked together (the host's `gather`,
//! opsh:plugin@0.2.1) they cost the slowest one. [`settled`] gets that without the plugin
//! listing its reads: it runs a read-only function in rounds. In a round every read
//! (`sql::query`, a probe through `ssh::exec`, `file_edit::read`, `service::status`) that was
//! gathered before takes its answer, and every other one fails at once and is noted; the noted
//! reads are then gathered together, and the function runs again. The first run that needed
//! nothing new is the answer: every read it made was a real one, gathered. A function whose
//! reads depend on earlier answers (status: reachable? then its services) takes one round per
//! level, not one round trip per read:
//!
//! ```ignore
//! fn read(call: Invocation) -> CommandResult<Vec<Table>> {
//!     ahead::settled(|| status(&Horizon::load()?))
//! }
//! ```
//!
//! Rules that keep it honest. Only a function that changes nothing may run in rounds (read,
//! plan, check, verify: the host enforces that they change nothing anyway): it runs several
//! times. While a round is not known to be the last, its log lines are held (and shown only for
//! the last one) and progress is not shown. A read the host cannot
//! gather (a transaction, a script, a command with environment or privilege) runs directly, in
//! every round. After [`MAX_ROUNDS`] rounds the function runs once more with reads not gathered
//! asked directly. The host checks each gathered ask exactly as it checks the call it stands for
//! (grant, probe approval, reading session, tokens, scrubbing, deadline).
//!
//! What it costs. A first round sees every read fail, so it takes every error path: a read made
//! only after another failed (a fallback: the next member when the first does not answer) is
//! gathered with the rest, although the last run may not need it. A read after a `?` waits for
//! the round after the one that answered what the `?` tested: ask what a loop needs before
//! looking at any of it (`let asked: Vec<_> = items.map(read).collect();`, then `?`), or each
//! item costs a round. A function that sleeps between reads (a wait) runs once more with direct
//! reads: answers gathered once cannot show it a change.
//!
//! Built against opsh:plugin@0.1.0 the SDK asks the noted reads one by one: the same answers,
//! no gain. Natively a test's `fake::World` answers them and records each as `gather …`.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::CapabilityError;
use crate::wit::{file_edit, host, service, sql, ssh};

/// Rounds before the function runs with direct reads (a status is two or three levels deep).
pub const MAX_ROUNDS: usize = 6;

/// One read to gather.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    Query {
        database: String,
        sql: String,
        params: Vec<sql::Value>,
    },
    /// A read-only command (a probe): no environment, no privilege.
    Probe {
        host: String,
        argv: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout_ms: Option<u32>,
    },
    ReadFile {
        host: String,
        path: String,
    },
    Service {
        host: String,
        service: String,
    },
}

impl Ask {
    /// What identifies the read.
    fn key(&self) -> String {
        match self {
            Self::Query { database, sql, params } => format!("sql\0{database}\0{sql}\0{params:?}"),
            Self::Probe { host, argv, stdin, timeout_ms } => format!("exec\0{host}\0{argv:?}\0{stdin:?}\0{timeout_ms:?}"),
            Self::ReadFile { host, path } => format!("read\0{host}\0{path}"),
            Self::Service { host, service } => format!("service\0{host}\0{service}"),
        }
    }
}

/// What a read brought back.
#[derive(Debug, Clone)]
enum Answer {
    Rows(sql::Rows),
    Output(ssh::ExecOutput),
    File(file_edit::FileSnapshot),
    Service(service::ServiceState),
}

type Answered = Result<Answer, CapabilityError>;

#[derive(Default)]
struct Rounds {
    /// Inside `settled` (a `settled` inside it runs its function as part of the outer one).
    inside: bool,
    /// A round is running: a read not gathered yet fails and is noted.
    active: bool,
    /// The round waited (`host.sleep`): the function expects the world to change between its
    /// reads, which answers gathered once cannot show; it runs again with direct reads.
    waited: bool,
    /// The answers gathered so far, by `Ask::key`.
    answers: HashMap<String, Answered>,
    /// The reads of this round that had no answer yet, in the order made, each once.
    missed: Vec<(String, Ask)>,
    /// Log lines of this round, shown if it is the last.
    held: Vec<(host::LogLevel, String)>,
}

thread_local! {
    static ROUNDS: RefCell<Rounds> = RefCell::new(Rounds::default());
}

/// Run `f` (it must change nothing) in rounds until a run needs no read that was not gathered.
pub fn settled<T>(mut f: impl FnMut() -> T) -> T {
    if ROUNDS.with(|r| r.borrow().inside) {
        // Already in rounds: the outer `settled` gathers for this one too.
        return f();
    }
    ROUNDS.with(|r| *r.borrow_mut() = Rounds { inside: true, active: true, ..Rounds::default() });
    for _ in 0..MAX_ROUNDS {
        let out = f();
        let (missed, waited) = ROUNDS.with(|r| {
            let mut rounds = r.borrow_mut();
            let missed = std::mem::take(&mut rounds.missed);
            if !missed.is_empty() || rounds.waited {
                rounds.held.clear();
            }
            (missed, rounds.waited)
        });
        if waited {
            // It waits between reads: nothing gathered may answer it.
            drop(out);
            ROUNDS.with(|r| *r.borrow_mut() = Rounds { inside: true, ..Rounds::default() });
            let out = f();
            ROUNDS.with(|r| *r.borrow_mut() = Rounds::default());
            return out;
        }
        if missed.is_empty() {
            return finish(out);
        }
        drop(out);
        let (keys, asks): (Vec<String>, Vec<Ask>) = missed.into_iter().unzip();
        let answers = ask_all(asks);
        ROUNDS.with(|r| r.borrow_mut().answers.extend(keys.into_iter().zip(answers)));
    }
    // Deeper than the rounds allow: what was gathered answers, the rest is asked directly.
    ROUNDS.with(|r| {
        let mut rounds = r.borrow_mut();
        rounds.active = false;
        rounds.waited = false;
        rounds.held.clear();
    });
    let out = f();
    ROUNDS.with(|r| *r.borrow_mut() = Rounds::default());
    out
}

/// The last round's log lines are shown, and the rounds forgotten.
fn finish<T>(out: T) -> T {
    let held = ROUNDS.with(|r| std::mem::take(&mut *r.borrow_mut()).held);
    for (level, message) in held {
        raw_log(level, &message);
    }
    out
}

/// Inside rounds: `None` for a read outside rounds (ask it), else its answer — or, not gathered
/// yet, a failure and a note to gather it.
fn answer(ask: Ask) -> Option<Answered> {
    ROUNDS.with(|r| {
        let mut rounds = r.borrow_mut();
        if !rounds.inside {
            return None;
        }
        let key = ask.key();
        if let Some(answer) = rounds.answers.get(&key) {
            return Some(answer.clone());
        }
        if !rounds.active {
            return None;
        }
        if !rounds.missed.iter().any(|(k, _)| *k == key) {
            rounds.missed.push((key, ask));
        }
        Some(Err(CapabilityError::Failed("not gathered yet (this run of the plugin's function is discarded)".into())))
    })
}

/// Is a round running whose log lines must be held?
pub(crate) fn holding() -> bool {
    ROUNDS.with(|r| r.borrow().active)
}

/// A sleep in a round: not waited; the function runs again with direct reads (see `settled`).
pub(crate) fn waits() -> bool {
    ROUNDS.with(|r| {
        let mut rounds = r.borrow_mut();
        if rounds.active {
            rounds.waited = true;
        }
        rounds.active
    })
}

pub(crate) fn hold(level: host::LogLevel, message: &str) {
    ROUNDS.with(|r| r.borrow_mut().held.push((level, message.to_string())));
}

fn raw_log(level: host::LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wit::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::fake::record_log(level, message);
}

fn mismatch() -> CapabilityError {
    CapabilityError::Failed("the answer gathered for this read is of another kind".into())
}

pub(crate) fn rows(database: &str, sql: &str, params: &[sql::Value]) -> Option<Result<sql::Rows, CapabilityError>> {
    answer(Ask::Query { database: database.into(), sql: sql.into(), params: params.to_vec() }).map(|a| match a? {
        Answer::Rows(rows) => Ok(rows),
        _ => Err(mismatch()),
    })
}

pub(crate) fn output(host: &str, request: &ssh::ExecRequest) -> Option<Result<ssh::ExecOutput, CapabilityError>> {
    // Only a probe is gathered: no environment, no privilege.
    if !request.read_only || request.privileged || !request.env.is_empty() {
        return None;
    }
    let ask = Ask::Probe { host: host.into(), argv: request.argv.clone(), stdin: request.stdin.clone(), timeout_ms: request.timeout_ms };
    answer(ask).map(|a| match a? {
        Answer::Output(out) => Ok(out),
        _ => Err(mismatch()),
    })
}

pub(crate) fn file(host: &str, path: &str) -> Option<Result<file_edit::FileSnapshot, CapabilityError>> {
    answer(Ask::ReadFile { host: host.into(), path: path.into() }).map(|a| match a? {
        Answer::File(snapshot) => Ok(snapshot),
        _ => Err(mismatch()),
    })
}

pub(crate) fn service_state(host: &str, name: &str) -> Option<Result<service::ServiceState, CapabilityError>> {
    answer(Ask::Service { host: host.into(), service: name.into() }).map(|a| match a? {
        Answer::Service(state) => Ok(state),
        _ => Err(mismatch()),
    })
}

/// The host's `gather`: one call, the answers in the order asked.
#[cfg(all(target_arch = "wasm32", feature = "wit-0-2"))]
fn ask_all(asks: Vec<Ask>) -> Vec<Answered> {
    use crate::wit::gather;
    let mut answers = Vec::with_capacity(asks.len());
    // The host takes at most 1024 asks at once.
    for chunk in asks.chunks(1024) {
        let wit: Vec<gather::Ask> = chunk
            .iter()
            .cloned()
            .map(|ask| match ask {
                Ask::Query { database, sql, params } => gather::Ask::Query(gather::QueryAsk { database, sql, params }),
                Ask::Probe { host, argv, stdin, timeout_ms } => gather::Ask::Exec(gather::ExecAsk {
                    host,
                    request: ssh::ExecRequest { argv, env: Vec::new(), stdin, timeout_ms, privileged: false, read_only: true },
                }),
                Ask::ReadFile { host, path } => gather::Ask::ReadFile(gather::FileAsk { host, path }),
                Ask::Service { host, service } => gather::Ask::ServiceStatus(gather::ServiceAsk { host, service }),
            })
            .collect();
        let mut got: Vec<Answered> = gather::all(&wit)
            .into_iter()
            .map(|answer| {
                answer.map(|a| match a {
                    gather::Answer::Rows(rows) => Answer::Rows(rows),
                    gather::Answer::Output(out) => Answer::Output(out),
                    gather::Answer::File(snapshot) => Answer::File(snapshot),
                    gather::Answer::Service(state) => Answer::Service(state),
                })
            })
            .collect();
        // A host that answered fewer asks than it was given broke the contract: the rest fail.
        got.resize_with(chunk.len(), || Err(CapabilityError::Failed("the host's gather answered fewer asks than it was given".into())));
        answers.extend(got);
    }
    answers
}

/// One by one: the host's 0.1 imports, or natively the test's World (recorded as `gather …`).
#[cfg(not(all(target_arch = "wasm32", feature = "wit-0-2")))]
fn ask_all(asks: Vec<Ask>) -> Vec<Answered> {
    #[cfg(not(target_arch = "wasm32"))]
    let _gathering = crate::fake::Gathering::start();
    let direct = Direct::start();
    let answers = asks
        .into_iter()
        .map(|ask| match ask {
            Ask::Query { database, sql, params } => crate::sql::query(&database, &sql, &params).map(Answer::Rows),
            Ask::Probe { host, argv, stdin, timeout_ms } => {
                let request = ssh::ExecRequest { argv, env: Vec::new(), stdin, timeout_ms, privileged: false, read_only: true };
                crate::ssh::exec(&host, &request).map(Answer::Output)
            }
            Ask::ReadFile { host, path } => crate::file_edit::read(&host, &path).map(Answer::File),
            Ask::Service { host, service } => crate::service::status(&host, &service).map(Answer::Service),
        })
        .collect();
    drop(direct);
    answers
}

/// While gathering one by one, reads go to the capabilities, not to the rounds.
#[cfg(not(all(target_arch = "wasm32", feature = "wit-0-2")))]
struct Direct(Rounds);

#[cfg(not(all(target_arch = "wasm32", feature = "wit-0-2")))]
impl Direct {
    fn start() -> Self {
        Self(ROUNDS.with(|r| std::mem::take(&mut *r.borrow_mut())))
    }
}

#[cfg(not(all(target_arch = "wasm32", feature = "wit-0-2")))]
impl Drop for Direct {
    fn drop(&mut self) {
        let rounds = std::mem::take(&mut self.0);
        ROUNDS.with(|r| *r.borrow_mut() = rounds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{World, rows as table, text};

    /// Reachable? then its service: two levels, two gathers, and the last run the answer.
    fn status() -> Vec<String> {
        ["a", "b"]
            .iter()
            .map(|h| match crate::probe(h, &["true"], Some(1_000)) {
                Ok(_) => match crate::service::status(h, "svc") {
                    Ok(service::ServiceState::Running) => format!("{h}: running"),
                    Ok(_) => format!("{h}: not running"),
                    Err(e) => format!("{h}: service {}", e.message()),
                },
                Err(e) => format!("{h}: {}", e.message()),
            })
            .collect()
    }

    #[test]
    fn reads_that_depend_on_answers_are_gathered_level_by_level_and_the_last_run_is_the_answer() {
        let world = World::new().exec("a", "true", 0, "").exec_fails("b", "true", CapabilityError::Unreachable("host b: no answer".into())).service(
            "a",
            "svc",
            service::ServiceState::Running,
        );
        let (shown, asked) = world.run(|| settled(status));
        assert_eq!(shown, ["a: running", "b: host b: no answer"]);
        assert_eq!(asked, ["gather exec a: true", "gather exec b: true", "gather service a: status svc"], "one gather per level, nothing asked twice");
    }

    #[test]
    fn outside_rounds_reads_are_asked_directly_and_a_query_keeps_its_parameters_apart() {
        let world = World::new().sql("db", "SELECT $1", table(&["x"], vec![vec![text("1")]]));
        let (n, asked) = world.run(|| {
            let inside = settled(|| {
                let one = crate::sql::query("db", "SELECT $1", &[sql::Value::Int(1)]).map(|r| r.rows.len());
                let two = crate::sql::query("db", "SELECT $1", &[sql::Value::Int(2)]).map(|r| r.rows.len());
                (one, two)
            });
            let after = crate::sql::query("db", "SELECT $1", &[sql::Value::Int(1)]).map(|r| r.rows.len());
            (inside, after)
        });
        assert_eq!(n, ((Ok(1), Ok(1)), Ok(1)));
        assert_eq!(asked, ["gather sql db: SELECT $1", "gather sql db: SELECT $1", "sql db: SELECT $1"]);
    }

    #[test]
    fn a_function_that_waits_between_reads_runs_with_direct_reads() {
        let world = World::new().exec("a", "true", 0, "");
        let (tries, asked) = world.run(|| {
            settled(|| {
                let mut tries = 0;
                let _ = crate::wait::until(300, 100, "a answers", || {
                    tries += 1;
                    crate::probe("a", &["true"], None).map(|_| false).map_err(|e| e.brief())
                });
                tries
            })
        });
        assert_eq!(tries, 3, "it waited as asked, each try a real read");
        assert_eq!(asked.iter().filter(|a| *a == "exec a: true").count(), 3, "{asked:?}");
    }

    #[test]
    fn a_log_line_is_shown_once_for_the_last_round_only() {
        let world = World::new().exec("a", "true", 0, "");
        let ((), _) = world.run(|| {
            settled(|| {
                let _ = crate::probe("a", &["true"], None);
                crate::host::log(host::LogLevel::Info, "probed a");
            });
            assert_eq!(crate::fake::logged(), ["probed a"]);
        });
    }
}
