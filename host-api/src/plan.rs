//! A plan as opsh keeps it — in the journal, for `resume` and `retry` by a later opsh. opsh owns
//! these types, not the bindings generated from a WIT version: their JSON changes only when opsh
//! decides (a journal written by an earlier opsh still reads), and a plugin built against any
//! WIT version converts to and from them. The JSON is the one journals have always had
//! (`tests/assets/journal/` keeps one written before these types existed).

use serde::{Deserialize, Serialize};

use crate::sandbox::bindings::runbook as wit;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub summary: Text,
    pub steps: Vec<Step>,
    pub warnings: Vec<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub title: Text,
    pub target: String,
    pub effects: Vec<Effect>,
    pub group: String,
    pub idempotent: bool,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Sql { database: String, statements: Vec<String> },
    File { host: String, path: String, expected_sha256: String, new_content: String },
    Service { host: String, service: String, action: String },
    Exec { host: String, argv: Vec<String> },
    Opaque(Text),
}

impl From<&wit::Text> for Text {
    fn from(t: &wit::Text) -> Self {
        Self { en: t.en.clone(), ja: t.ja.clone() }
    }
}

impl From<&Text> for wit::Text {
    fn from(t: &Text) -> Self {
        Self { en: t.en.clone(), ja: t.ja.clone() }
    }
}

impl From<&wit::Invocation> for Invocation {
    fn from(i: &wit::Invocation) -> Self {
        Self { command: i.command.clone(), args: i.args.clone() }
    }
}

impl From<&Invocation> for wit::Invocation {
    fn from(i: &Invocation) -> Self {
        Self { command: i.command.clone(), args: i.args.clone() }
    }
}

impl From<&wit::ChangePlan> for Plan {
    fn from(p: &wit::ChangePlan) -> Self {
        Self { summary: (&p.summary).into(), steps: p.steps.iter().map(Step::from).collect(), warnings: p.warnings.iter().map(Text::from).collect() }
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
            wit::Effect::Sql(s) => Self::Sql { database: s.database.clone(), statements: s.statements.clone() },
            wit::Effect::File(f) => {
                Self::File { host: f.host.clone(), path: f.path.clone(), expected_sha256: f.expected_sha256.clone(), new_content: f.new_content.clone() }
            }
            wit::Effect::Service(s) => Self::Service { host: s.host.clone(), service: s.service.clone(), action: s.action.clone() },
            wit::Effect::Exec(x) => Self::Exec { host: x.host.clone(), argv: x.argv.clone() },
            wit::Effect::Opaque(t) => Self::Opaque(t.into()),
        }
    }
}

impl From<&Effect> for wit::Effect {
    fn from(e: &Effect) -> Self {
        match e {
            Effect::Sql { database, statements } => Self::Sql(wit::SqlEffect { database: database.clone(), statements: statements.clone() }),
            Effect::File { host, path, expected_sha256, new_content } => Self::File(wit::FileEffect {
                host: host.clone(),
                path: path.clone(),
                expected_sha256: expected_sha256.clone(),
                new_content: new_content.clone(),
            }),
            Effect::Service { host, service, action } => {
                Self::Service(wit::ServiceEffect { host: host.clone(), service: service.clone(), action: action.clone() })
            }
            Effect::Exec { host, argv } => Self::Exec(wit::ExecEffect { host: host.clone(), argv: argv.clone() }),
            Effect::Opaque(t) => Self::Opaque(t.into()),
        }
    }
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
