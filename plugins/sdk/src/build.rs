//! Builders for what a plugin describes and returns.

use crate::{ArgInfo, ArgKind, Cell, CommandInfo, CommandKind, Completion, Effect, Example, Step, Table, Text};

/// Text in English and Japanese (empty `ja` falls back to English).
pub fn text(en: &str, ja: &str) -> Text {
    Text { en: en.to_string(), ja: ja.to_string() }
}

/// `describe().capabilities`: the capabilities the plugin uses (the host denies any other), and
/// the probes it runs while nothing may change — argv patterns, one glob per argument, optional
/// `<<< STDIN` (e.g. `*/pg_ctl status -D *`). A topology that names the plugin grants them on its
/// hosts; elsewhere the operator approves them in `[grants.PLUGIN] probes`.
pub fn capabilities(uses: &[&str], probes: &[&str]) -> Vec<String> {
    uses.iter().map(|c| c.to_string()).chain(probes.iter().map(|p| format!("probe:{p}"))).collect()
}

/// A step title with the seed runbook's step number(s) in front, so that an operator can hold the
/// paper runbook next to the plan: `[5] Back up …` (an empty `ja` stays empty: English is shown).
pub fn titled(seed: &str, en: &str, ja: &str) -> Text {
    text(&format!("[{seed}] {en}"), &if ja.is_empty() { String::new() } else { format!("[{seed}] {ja}") })
}

/// A refusal: nothing was changed, and why (an empty `ja` shows the English).
pub fn refused(en: impl AsRef<str>, ja: impl AsRef<str>) -> crate::CommandError {
    crate::CommandError::Refused(text(en.as_ref(), ja.as_ref()))
}

pub fn command(name: &str, kind: CommandKind, summary: Text) -> CommandBuilder {
    CommandBuilder(CommandInfo { name: name.to_string(), kind, summary: summary.clone(), help: summary, args: Vec::new(), examples: Vec::new() })
}

pub struct CommandBuilder(CommandInfo);

impl CommandBuilder {
    pub fn help(mut self, help: Text) -> Self {
        self.0.help = help;
        self
    }

    fn arg(mut self, name: &str, kind: ArgKind, required: bool, help: Text, completion: Completion) -> Self {
        self.0.args.push(ArgInfo { name: name.to_string(), kind, required, help, completion });
        self
    }

    pub fn positional(self, name: &str, help: Text, completion: Completion) -> Self {
        self.arg(name, ArgKind::Positional, true, help, completion)
    }

    pub fn option(self, name: &str, required: bool, help: Text, completion: Completion) -> Self {
        self.arg(name, ArgKind::Option, required, help, completion)
    }

    pub fn flag(self, name: &str, help: Text) -> Self {
        self.arg(name, ArgKind::Flag, false, help, Completion::None)
    }

    pub fn example(mut self, command: &str, description: Text) -> Self {
        self.0.examples.push(Example { command: command.to_string(), description });
        self
    }

    pub fn build(self) -> CommandInfo {
        self.0
    }
}

pub fn step(id: &str, title: Text, target: &str) -> StepBuilder {
    StepBuilder(Step {
        id: id.to_string(),
        title,
        target: target.to_string(),
        effects: Vec::new(),
        group: String::new(),
        idempotent: false,
        data: String::new(),
        #[cfg(feature = "wit-0-2")]
        custom: None,
    })
}

pub struct StepBuilder(Step);

impl StepBuilder {
    pub fn effect(mut self, effect: Effect) -> Self {
        self.0.effects.push(effect);
        self
    }

    #[cfg(not(feature = "wit-0-2"))]
    pub fn sql(self, database: &str, statements: &[&str]) -> Self {
        self.effect(Effect::Sql(crate::SqlEffect { database: database.to_string(), statements: statements.iter().map(|s| s.to_string()).collect() }))
    }

    /// Statements without parameters; several run in one transaction.
    #[cfg(feature = "wit-0-2")]
    pub fn sql(self, database: &str, statements: &[&str]) -> Self {
        let statements = statements.iter().map(|s| crate::sql::Statement { sql: s.to_string(), params: Vec::new() }).collect::<Vec<_>>();
        let transaction = statements.len() > 1;
        self.effect(Effect::Sql(crate::SqlEffect { database: database.to_string(), statements, transaction, expect_affected: None }))
    }

    /// One statement with parameters (`$1` …).
    #[cfg(feature = "wit-0-2")]
    pub fn sql_with(self, database: &str, sql: &str, params: Vec<crate::sql::Value>) -> Self {
        let statements = vec![crate::sql::Statement { sql: sql.to_string(), params }];
        self.effect(Effect::Sql(crate::SqlEffect { database: database.to_string(), statements, transaction: false, expect_affected: None }))
    }

    /// The last SQL effect must affect exactly `rows` rows (else the host rolls it back).
    #[cfg(feature = "wit-0-2")]
    pub fn expect_rows(mut self, rows: u64) -> Self {
        if let Some(Effect::Sql(sql)) = self.0.effects.iter_mut().rev().find(|e| matches!(e, Effect::Sql(_))) {
            sql.expect_affected = Some(rows);
            sql.transaction = true;
        }
        self
    }

    /// Wait until the step's check says done, asking every `interval_ms`, at most `timeout_ms`.
    #[cfg(feature = "wit-0-2")]
    pub fn wait_until(self, until: Text, interval_ms: u32, timeout_ms: u32) -> Self {
        self.effect(Effect::Wait(crate::WaitEffect { until, interval_ms, timeout_ms }))
    }

    /// The plugin's `apply` performs this step (the host cannot from a declaration): `reason`
    /// is shown; each change it makes must be one of the step's effects.
    #[cfg(feature = "wit-0-2")]
    pub fn custom(mut self, reason: Text) -> Self {
        self.0.custom = Some(reason);
        self
    }

    #[cfg(not(feature = "wit-0-2"))]
    pub fn service(self, host: &str, service: &str, action: &str) -> Self {
        self.effect(Effect::Service(crate::ServiceEffect { host: host.into(), service: service.into(), action: action.into() }))
    }

    #[cfg(feature = "wit-0-2")]
    pub fn service(self, host: &str, service: &str, action: crate::service::ServiceAction) -> Self {
        self.effect(Effect::Service(crate::ServiceEffect { host: host.into(), service: service.into(), action }))
    }

    #[cfg(not(feature = "wit-0-2"))]
    pub fn exec(self, host: &str, argv: &[&str]) -> Self {
        self.effect(Effect::Exec(crate::ExecEffect { host: host.into(), argv: argv.iter().map(|a| a.to_string()).collect() }))
    }

    #[cfg(feature = "wit-0-2")]
    pub fn exec(self, host: &str, argv: &[&str]) -> Self {
        self.effect(Effect::Exec(crate::ExecEffect {
            host: host.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            stdin: None,
            timeout_ms: None,
            privileged: false,
            ok_status: Vec::new(),
        }))
    }

    /// Start (or stop) each of `services` on `host`, then wait until they all run (are stopped),
    /// at most 60 s: the step's check must say so with [`crate::services_are`].
    #[cfg(feature = "wit-0-2")]
    pub fn services(mut self, host: &str, services: &[String], start: bool) -> Self {
        let action = if start { crate::service::ServiceAction::Start } else { crate::service::ServiceAction::Stop };
        for name in services {
            self = self.service(host, name, action);
        }
        let (list, be) = (services.join(", "), if services.len() == 1 { "is" } else { "are" });
        let until = if start {
            text(&format!("{list} on {host} {be} running"), &format!("{host} の {} が稼働中", services.join("、")))
        } else {
            text(&format!("{list} on {host} {be} stopped"), &format!("{host} の {} が停止", services.join("、")))
        };
        self.wait_until(until, 500, 60_000)
    }

    /// The last exec effect, to finish declaring it (`privileged`, `env`, `stdin`, …).
    #[cfg(feature = "wit-0-2")]
    fn last_exec(&mut self) -> Option<&mut crate::ExecEffect> {
        self.0.effects.iter_mut().rev().find_map(|e| match e {
            Effect::Exec(exec) => Some(exec),
            _ => None,
        })
    }

    /// The last exec effect runs with the host's privilege (the inventory's `become`).
    #[cfg(feature = "wit-0-2")]
    pub fn privileged(mut self) -> Self {
        if let Some(exec) = self.last_exec() {
            exec.privileged = true;
        }
        self
    }

    /// An environment variable of the last exec effect (`EnvValue::DatabasePassword(db)` puts
    /// the inventory's password there: the host shows its name, never the password).
    #[cfg(feature = "wit-0-2")]
    pub fn env(mut self, name: &str, value: crate::ssh::EnvValue) -> Self {
        if let Some(exec) = self.last_exec() {
            exec.env.push((name.to_string(), value));
        }
        self
    }

    /// What the last exec effect reads on its standard input (shown in full at confirmation).
    #[cfg(feature = "wit-0-2")]
    pub fn stdin(mut self, input: &str) -> Self {
        if let Some(exec) = self.last_exec() {
            exec.stdin = Some(input.as_bytes().to_vec());
        }
        self
    }

    /// The last exec effect may take at most this long (never more than the inventory allows).
    #[cfg(feature = "wit-0-2")]
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        if let Some(exec) = self.last_exec() {
            exec.timeout_ms = Some(ms);
        }
        self
    }

    /// Exit statuses of the last exec effect that mean success (instead of only 0).
    #[cfg(feature = "wit-0-2")]
    pub fn ok_status(mut self, statuses: &[i32]) -> Self {
        if let Some(exec) = self.last_exec() {
            exec.ok_status = statuses.to_vec();
        }
        self
    }

    /// The statements of the last SQL effect run one by one, each committed on its own (for
    /// what PostgreSQL refuses inside a transaction, or a session setting a later one needs).
    #[cfg(feature = "wit-0-2")]
    pub fn one_by_one(mut self) -> Self {
        if let Some(Effect::Sql(sql)) = self.0.effects.iter_mut().rev().find(|e| matches!(e, Effect::Sql(_))) {
            sql.transaction = false;
        }
        self
    }

    pub fn file(self, host: &str, path: &str, expected_sha256: &str, new_content: &str) -> Self {
        self.effect(Effect::File(crate::FileEffect {
            host: host.into(),
            path: path.into(),
            expected_sha256: expected_sha256.into(),
            new_content: new_content.into(),
        }))
    }

    /// One effect per item, in order.
    pub fn effects_each<T>(mut self, items: &[T], effect: impl Fn(&T) -> Effect) -> Self {
        self.0.effects.extend(items.iter().map(effect));
        self
    }

    /// Declare something for each item, in order (`|builder, item| builder.sql(…)`).
    pub fn each<T>(self, items: &[T], declare: impl Fn(Self, &T) -> Self) -> Self {
        items.iter().fold(self, declare)
    }

    pub fn group(mut self, group: &str) -> Self {
        self.0.group = group.to_string();
        self
    }

    pub fn idempotent(mut self) -> Self {
        self.0.idempotent = true;
        self
    }

    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.0.data = data.into();
        self
    }

    /// The step's kind, which `check` reads back with [`crate::data::kind_of`].
    pub fn kind<K: serde::Serialize>(self, kind: &K) -> Self {
        self.data(crate::data::typed(kind))
    }

    pub fn build(self) -> Step {
        self.0
    }
}

pub fn table(title: Text, columns: &[&str]) -> TableBuilder {
    TableBuilder(Table { title, columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() })
}

pub struct TableBuilder(Table);

impl TableBuilder {
    pub fn row(mut self, cells: Vec<Cell>) -> Self {
        self.0.rows.push(cells);
        self
    }

    pub fn push(&mut self, cells: Vec<Cell>) {
        self.0.rows.push(cells);
    }

    pub fn build(self) -> Table {
        self.0
    }
}

pub fn plain(s: impl Into<String>) -> Cell {
    Cell::Plain(s.into())
}

pub fn good(s: impl Into<String>) -> Cell {
    Cell::Good(s.into())
}

pub fn warn(s: impl Into<String>) -> Cell {
    Cell::Warn(s.into())
}

pub fn bad(s: impl Into<String>) -> Cell {
    Cell::Bad(s.into())
}
