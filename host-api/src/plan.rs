//! A plan as opsh keeps it — in the journal, for `resume` and `retry` by a later opsh. opsh owns
//! these types, not the bindings generated from a WIT version: their JSON changes only when opsh
//! decides (a journal written by an earlier opsh still reads), and a plugin built against any
//! WIT version converts to and from them. The JSON is the one journals have always had
//! (`tests/assets/journal/` keeps one written before these types existed).

use serde::{Deserialize, Serialize};

use crate::sandbox::bindings::runbook as wit;
use crate::sandbox::bindings::v2::runbook as wit2;
use crate::sandbox::bindings::{service, sql, ssh};

/// Text in English and Japanese.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub en: String,
    pub ja: String,
}

/// A command as the operator typed it, parsed against the plugin's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub command: String,
    pub args: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub summary: Text,
    pub steps: Vec<Step>,
    pub warnings: Vec<Text>,
    /// What stays as it is when the run stops after a change (0.2; absent before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub if_stopped: Vec<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub title: Text,
    pub target: String,
    pub effects: Vec<Effect>,
    pub group: String,
    pub idempotent: bool,
    pub data: String,
    /// Who performs the step (absent in journals of 0.1-only opsh: the plugin).
    #[serde(default, skip_serializing_if = "Runner::is_plugin")]
    pub runs: Runner,
}

/// Who performs a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    /// A 0.1 plugin's step: its `apply` runs it; the effects are its preview only.
    #[default]
    Plugin,
    /// A 0.2 step the host performs from its effects, exactly as shown.
    Host,
    /// A 0.2 step the plugin's `apply` performs (the host cannot from a declaration, for this
    /// reason); each changing call must match one of its effects.
    Custom(Text),
}

impl Runner {
    fn is_plugin(&self) -> bool {
        *self == Self::Plugin
    }
}

/// What a step changes. Fields added for 0.2 are absent from the JSON of a 0.1 step, so a
/// journal reads the same in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    Sql {
        database: String,
        statements: Vec<String>,
        /// Each statement's parameters (`$1` …), in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<Vec<SqlParam>>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        transaction: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_affected: Option<u64>,
    },
    File {
        host: String,
        path: String,
        expected_sha256: String,
        new_content: String,
    },
    Service {
        host: String,
        service: String,
        action: String,
    },
    Exec {
        host: String,
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<(String, EnvSpec)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<Vec<u8>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        privileged: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ok_status: Vec<i32>,
    },
    Opaque(Text),
    Wait {
        until: Text,
        interval_ms: u32,
        timeout_ms: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqlParam {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// An environment variable of a command: a value, or the name of the database whose password
/// the host hands over (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvSpec {
    Plain(String),
    DatabasePassword(String),
}

/// SQL as the operator sees it before it runs and the journal keeps it as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlShown {
    pub database: String,
    pub statements: Vec<String>,
    /// Each statement's parameters, as SQL literals (`$1` is the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transaction: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_affected: Option<u64>,
}

/// A command as shown and as sent (addresses revealed, passwords only named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecShown {
    pub host: String,
    pub argv: Vec<String>,
    /// `NAME=value`, or `NAME=(password of database DB)`: never a password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Exit statuses that mean success besides 0 (or instead of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ok_status: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceShown {
    pub host: String,
    pub service: String,
    pub action: String,
}

/// One effect as the host sent it on a plugin's behalf: journaled right before it is sent, so
/// the journal shows what was done, not what was meant. SQL, commands and services have the
/// fields of their preview (`runbook::Preview`), so the two compare as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Performed {
    Sql(SqlShown),
    Exec(ExecShown),
    /// The content written is kept as its hash (it is in the plan; a diff is in the preview).
    File {
        host: String,
        path: String,
        expected_sha256: String,
        sha256: String,
    },
    Service(ServiceShown),
}

impl Performed {
    /// One line of it, for `journal RUN`.
    pub fn summary(&self) -> String {
        match self {
            Performed::Sql(SqlShown { database, statements, .. }) => format!("sql {database}: {}", statements.join("; ")),
            Performed::Exec(ExecShown { host, argv, stdin, privileged, .. }) => format!(
                "{host}: {}{}{}",
                if *privileged { "(privileged) " } else { "" },
                argv.join(" "),
                stdin.as_ref().map(|input| format!(" (input: {} line(s))", input.lines().count())).unwrap_or_default()
            ),
            Performed::File { host, path, sha256, .. } => format!("write {host}:{path} (sha256 {})", &sha256[..sha256.len().min(12)]),
            Performed::Service(ServiceShown { host, service, action }) => format!("{action} {service} on {host}"),
        }
    }
}

impl From<&crate::sandbox::bindings::types::Text> for Text {
    fn from(t: &wit::Text) -> Self {
        Self { en: t.en.clone(), ja: t.ja.clone() }
    }
}

impl From<&Text> for crate::sandbox::bindings::types::Text {
    fn from(t: &Text) -> Self {
        Self { en: t.en.clone(), ja: t.ja.clone() }
    }
}

/// What converts alike for every WIT version: the invocation both ways, a plan from it.
macro_rules! alike_in_every_version {
    ($wit:ident) => {
        impl From<&$wit::Invocation> for Invocation {
            fn from(i: &$wit::Invocation) -> Self {
                Self { command: i.command.clone(), args: i.args.clone() }
            }
        }

        impl From<&Invocation> for $wit::Invocation {
            fn from(i: &Invocation) -> Self {
                Self { command: i.command.clone(), args: i.args.clone() }
            }
        }
    };
}

alike_in_every_version!(wit);
alike_in_every_version!(wit2);

impl From<&wit::ChangePlan> for Plan {
    fn from(p: &wit::ChangePlan) -> Self {
        Self {
            summary: (&p.summary).into(),
            steps: p.steps.iter().map(Step::from).collect(),
            warnings: p.warnings.iter().map(Text::from).collect(),
            if_stopped: Vec::new(),
        }
    }
}

impl From<&wit2::ChangePlan> for Plan {
    fn from(p: &wit2::ChangePlan) -> Self {
        Self {
            summary: (&p.summary).into(),
            steps: p.steps.iter().map(Step::from).collect(),
            warnings: p.warnings.iter().map(Text::from).collect(),
            if_stopped: p.if_stopped.iter().map(Text::from).collect(),
        }
    }
}

impl From<&Plan> for wit::ChangePlan {
    fn from(p: &Plan) -> Self {
        Self { summary: (&p.summary).into(), steps: p.steps.iter().map(wit::Step::from).collect(), warnings: p.warnings.iter().map(wit::Text::from).collect() }
    }
}

impl From<&wit::Step> for Step {
    fn from(s: &wit::Step) -> Self {
        Self {
            id: s.id.clone(),
            title: (&s.title).into(),
            target: s.target.clone(),
            effects: s.effects.iter().map(Effect::from).collect(),
            group: s.group.clone(),
            idempotent: s.idempotent,
            data: s.data.clone(),
            runs: Runner::Plugin,
        }
    }
}

impl From<&Step> for wit::Step {
    fn from(s: &Step) -> Self {
        Self {
            id: s.id.clone(),
            title: (&s.title).into(),
            target: s.target.clone(),
            effects: s.effects.iter().map(wit::Effect::from).collect(),
            group: s.group.clone(),
            idempotent: s.idempotent,
            data: s.data.clone(),
        }
    }
}

impl From<&wit::Effect> for Effect {
    fn from(e: &wit::Effect) -> Self {
        match e {
            wit::Effect::Sql(s) => {
                Self::Sql { database: s.database.clone(), statements: s.statements.clone(), params: vec![], transaction: false, expect_affected: None }
            }
            wit::Effect::File(f) => {
                Self::File { host: f.host.clone(), path: f.path.clone(), expected_sha256: f.expected_sha256.clone(), new_content: f.new_content.clone() }
            }
            wit::Effect::Service(s) => Self::Service { host: s.host.clone(), service: s.service.clone(), action: s.action.clone() },
            wit::Effect::Exec(x) => {
                Self::Exec { host: x.host.clone(), argv: x.argv.clone(), env: vec![], stdin: None, timeout_ms: None, privileged: false, ok_status: vec![] }
            }
            wit::Effect::Opaque(t) => Self::Opaque(t.into()),
        }
    }
}

/// A 0.1 plugin gets back only what a 0.1 plugin made (0.2 fields are empty then).
impl From<&Effect> for wit::Effect {
    fn from(e: &Effect) -> Self {
        match e {
            Effect::Sql { database, statements, .. } => Self::Sql(wit::SqlEffect { database: database.clone(), statements: statements.clone() }),
            Effect::File { host, path, expected_sha256, new_content } => Self::File(wit::FileEffect {
                host: host.clone(),
                path: path.clone(),
                expected_sha256: expected_sha256.clone(),
                new_content: new_content.clone(),
            }),
            Effect::Service { host, service, action } => {
                Self::Service(wit::ServiceEffect { host: host.clone(), service: service.clone(), action: action.clone() })
            }
            Effect::Exec { host, argv, .. } => Self::Exec(wit::ExecEffect { host: host.clone(), argv: argv.clone() }),
            Effect::Opaque(t) => Self::Opaque(t.into()),
            Effect::Wait { until, .. } => Self::Opaque(until.into()),
        }
    }
}

// opsh:plugin@0.2.0 — every field has its place.

impl From<&wit2::Step> for Step {
    fn from(s: &wit2::Step) -> Self {
        Self {
            id: s.id.clone(),
            title: (&s.title).into(),
            target: s.target.clone(),
            effects: s.effects.iter().map(Effect::from).collect(),
            group: s.group.clone(),
            idempotent: s.idempotent,
            data: s.data.clone(),
            runs: match &s.custom {
                Some(reason) => Runner::Custom(reason.into()),
                None => Runner::Host,
            },
        }
    }
}

impl From<&Step> for wit2::Step {
    fn from(s: &Step) -> Self {
        Self {
            id: s.id.clone(),
            title: (&s.title).into(),
            target: s.target.clone(),
            effects: s.effects.iter().filter_map(wit2_effect).collect(),
            group: s.group.clone(),
            idempotent: s.idempotent,
            data: s.data.clone(),
            custom: match &s.runs {
                Runner::Custom(reason) => Some(reason.into()),
                Runner::Host | Runner::Plugin => None,
            },
        }
    }
}

pub fn action_name(action: service::ServiceAction) -> &'static str {
    match action {
        service::ServiceAction::Start => "start",
        service::ServiceAction::Stop => "stop",
        service::ServiceAction::Restart => "restart",
        service::ServiceAction::Reload => "reload",
    }
}

fn action_of(name: &str) -> Option<service::ServiceAction> {
    [service::ServiceAction::Start, service::ServiceAction::Stop, service::ServiceAction::Restart, service::ServiceAction::Reload]
        .into_iter()
        .find(|a| action_name(*a) == name)
}

impl From<&sql::Value> for SqlParam {
    fn from(v: &sql::Value) -> Self {
        match v {
            sql::Value::Null => Self::Null,
            sql::Value::Boolean(b) => Self::Bool(*b),
            sql::Value::Int(i) => Self::Int(*i),
            sql::Value::Float(f) => Self::Float(*f),
            sql::Value::Text(t) => Self::Text(t.clone()),
        }
    }
}

impl From<&SqlParam> for sql::Value {
    fn from(v: &SqlParam) -> Self {
        match v {
            SqlParam::Null => Self::Null,
            SqlParam::Bool(b) => Self::Boolean(*b),
            SqlParam::Int(i) => Self::Int(*i),
            SqlParam::Float(f) => Self::Float(*f),
            SqlParam::Text(t) => Self::Text(t.clone()),
        }
    }
}

impl From<&wit2::Effect> for Effect {
    fn from(e: &wit2::Effect) -> Self {
        match e {
            wit2::Effect::Sql(s) => Self::Sql {
                database: s.database.clone(),
                statements: s.statements.iter().map(|st| st.sql.clone()).collect(),
                params: s.statements.iter().map(|st| st.params.iter().map(SqlParam::from).collect()).collect(),
                transaction: s.transaction,
                expect_affected: s.expect_affected,
            },
            wit2::Effect::Exec(x) => Self::Exec {
                host: x.host.clone(),
                argv: x.argv.clone(),
                env: x.env.iter().map(|(name, value)| (name.clone(), value.into())).collect(),
                stdin: x.stdin.clone(),
                timeout_ms: x.timeout_ms,
                privileged: x.privileged,
                ok_status: x.ok_status.clone(),
            },
            wit2::Effect::File(f) => {
                Self::File { host: f.host.clone(), path: f.path.clone(), expected_sha256: f.expected_sha256.clone(), new_content: f.new_content.clone() }
            }
            wit2::Effect::Service(s) => Self::Service { host: s.host.clone(), service: s.service.clone(), action: action_name(s.action).to_string() },
            wit2::Effect::Wait(w) => Self::Wait { until: (&w.until).into(), interval_ms: w.interval_ms, timeout_ms: w.timeout_ms },
        }
    }
}

impl From<&ssh::EnvValue> for EnvSpec {
    fn from(value: &ssh::EnvValue) -> Self {
        match value {
            ssh::EnvValue::Plain(v) => Self::Plain(v.clone()),
            ssh::EnvValue::DatabasePassword(db) => Self::DatabasePassword(db.clone()),
        }
    }
}

/// A 0.2 effect back as the plugin made it (an opaque one, which 0.2 has not, is left out).
fn wit2_effect(e: &Effect) -> Option<wit2::Effect> {
    Some(match e {
        Effect::Sql { database, statements, params, transaction, expect_affected } => wit2::Effect::Sql(wit2::SqlEffect {
            database: database.clone(),
            statements: statements
                .iter()
                .enumerate()
                .map(|(i, sql)| sql::Statement {
                    sql: sql.clone(),
                    params: params.get(i).map(|p| p.iter().map(sql::Value::from).collect()).unwrap_or_default(),
                })
                .collect(),
            transaction: *transaction,
            expect_affected: *expect_affected,
        }),
        Effect::Exec { host, argv, env, stdin, timeout_ms, privileged, ok_status } => wit2::Effect::Exec(wit2::ExecEffect {
            host: host.clone(),
            argv: argv.clone(),
            env: env
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        EnvSpec::Plain(v) => ssh::EnvValue::Plain(v.clone()),
                        EnvSpec::DatabasePassword(db) => ssh::EnvValue::DatabasePassword(db.clone()),
                    };
                    (name.clone(), value)
                })
                .collect(),
            stdin: stdin.clone(),
            timeout_ms: *timeout_ms,
            privileged: *privileged,
            ok_status: ok_status.clone(),
        }),
        Effect::File { host, path, expected_sha256, new_content } => wit2::Effect::File(wit2::FileEffect {
            host: host.clone(),
            path: path.clone(),
            expected_sha256: expected_sha256.clone(),
            new_content: new_content.clone(),
        }),
        Effect::Service { host, service, action } => {
            wit2::Effect::Service(wit2::ServiceEffect { host: host.clone(), service: service.clone(), action: action_of(action)? })
        }
        Effect::Wait { until, interval_ms, timeout_ms } => {
            wit2::Effect::Wait(wit2::WaitEffect { until: until.into(), interval_ms: *interval_ms, timeout_ms: *timeout_ms })
        }
        Effect::Opaque(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's JSON of a plan is the one journals have always had: the fixture written
    /// before these types existed reads, and writes back the same.
    #[test]
    fn the_plan_of_an_old_journal_reads_and_writes_back_unchanged() {
        let fixture = include_str!("../../tests/assets/journal/v1-runbook-failed-at-step-3.jsonl");
        let run: serde_json::Value = serde_json::from_str(fixture.lines().next().expect("run record")).expect("json");
        let plan: Plan = serde_json::from_value(run["plan"].clone()).expect("plan");
        assert_eq!(plan.steps.len(), 6);
        assert_eq!(serde_json::to_value(&plan).expect("json"), run["plan"]);
        let invocation: Invocation = serde_json::from_value(run["invocation"].clone()).expect("invocation");
        assert_eq!(serde_json::to_value(&invocation).expect("json"), run["invocation"]);
        assert_eq!(Plan::from(&wit::ChangePlan::from(&plan)), plan, "and through the bindings and back");
    }
}
