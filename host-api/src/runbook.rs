//! Running a plugin command: parse the operator's words against the command's self-description,
//! then either `read` (tables) or plan → preview → confirm → apply each step → check it →
//! verify the goal. The host owns this control flow; the plugin only knows its domain.

use std::sync::Arc;

use similar::TextDiff;

use crate::Exit;
use crate::capability::{Capabilities, file_edit};
use crate::grants::Capability;
use crate::sandbox::bindings::runbook::{
    ArgKind, ChangePlan, CheckState, CommandError, CommandInfo, CommandKind, Effect, Invocation, PluginInfo, Step, Table, Text,
};
use crate::sandbox::{CallError, Events, LoadedPlugin, Sandbox};

/// Pick the operator's language, falling back to English.
pub fn pick<'a>(text: &'a Text, lang: &str) -> &'a str {
    if lang == "ja" && !text.ja.is_empty() { &text.ja } else { &text.en }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The command the words start with (the longest matching command name, since names may have
/// several words: `promote`, `promote tenant`).
pub fn find_command<'a>(info: &'a PluginInfo, words: &[String]) -> Option<&'a CommandInfo> {
    info.commands
        .iter()
        .filter(|c| {
            let name: Vec<&str> = c.name.split_whitespace().collect();
            words.len() >= name.len() && name.iter().zip(words).all(|(a, b)| a == b)
        })
        .max_by_key(|c| c.name.split_whitespace().count())
}

/// Find the command the words name and parse its arguments.
pub fn parse_invocation<'a>(info: &'a PluginInfo, words: &[String]) -> Result<(&'a CommandInfo, Invocation), UsageError> {
    let command = find_command(info, words)
        .ok_or_else(|| {
            let known: Vec<String> = info.commands.iter().map(|c| format!("{} {}", info.name, c.name)).collect();
            let typed = words.first().map(String::as_str).unwrap_or("");
            UsageError(if typed.is_empty() {
                format!("{} needs a command: {}", info.name, known.join(", "))
            } else {
                format!("{} has no command {typed:?}; it has: {} (try `help {}`)", info.name, known.join(", "), info.name)
            })
        })?;
    let rest = &words[command.name.split_whitespace().count()..];
    let full = format!("{} {}", info.name, command.name);
    let mut args: Vec<(String, Vec<String>)> = Vec::new();
    let mut push = |name: &str, value: String| match args.iter_mut().find(|(n, _)| n == name) {
        Some((_, values)) => values.push(value),
        None => args.push((name.to_string(), vec![value])),
    };
    let positionals: Vec<_> = command.args.iter().filter(|a| a.kind == ArgKind::Positional).collect();
    let mut next_positional = 0;
    let mut i = 0;
    while i < rest.len() {
        let word = &rest[i];
        if let Some(option) = word.strip_prefix("--") {
            let (name, inline) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (option, None),
            };
            let arg = command.args.iter().find(|a| a.name == name && a.kind != ArgKind::Positional).ok_or_else(|| {
                let options: Vec<String> = command.args.iter().filter(|a| a.kind != ArgKind::Positional).map(|a| format!("--{}", a.name)).collect();
                UsageError(format!(
                    "{full}: unknown option --{name}{} (see `help {full}`)",
                    if options.is_empty() { "; it takes none".to_string() } else { format!("; it takes {}", options.join(", ")) }
                ))
            })?;
            match arg.kind {
                ArgKind::Flag => {
                    if inline.is_some() {
                        return Err(UsageError(format!("{full}: --{name} takes no value")));
                    }
                    push(name, "true".into());
                }
                _ => {
                    let value = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            rest.get(i).cloned().ok_or_else(|| UsageError(format!("{full}: --{name} needs a value")))?
                        }
                    };
                    push(name, value);
                }
            }
        } else {
            let arg = positionals.get(next_positional).ok_or_else(|| {
                UsageError(format!("{full}: unexpected argument {word:?} (see `help {full}`)"))
            })?;
            push(&arg.name, word.clone());
            next_positional += 1;
        }
        i += 1;
    }
    for arg in &command.args {
        if arg.required && !args.iter().any(|(n, _)| n == &arg.name) {
            let shown = if arg.kind == ArgKind::Positional { arg.name.to_uppercase() } else { format!("--{}", arg.name) };
            return Err(UsageError(format!("{full}: {shown} is required (see `help {full}`)")));
        }
    }
    Ok((command, Invocation { command: command.name.clone(), args }))
}

/// What the host can show of one effect before it happens.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Preview {
    Sql { database: String, statements: Vec<String> },
    File { host: String, path: String, diff: String, stale: bool },
    Service { host: String, service: String, action: String },
    Exec { host: String, argv: Vec<String> },
    /// Cannot be previewed exactly; the text says what it does.
    Opaque { text: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepPreview {
    pub id: String,
    pub title: String,
    pub target: String,
    pub group: String,
    pub effects: Vec<Preview>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Yes,
    No,
    /// No terminal to ask on, and no `--yes`.
    CannotAsk,
}

/// The shell's side of a run: showing, asking, reporting progress.
pub trait Operator: Send + Sync {
    fn plan(&self, plugin: &str, summary: &str, warnings: &[String], steps: &[StepPreview]);
    fn confirm(&self, steps: usize) -> Confirmation;
    fn step_started(&self, index: usize, total: usize, step: &StepPreview);
    fn step_finished(&self, index: usize, total: usize, step: &StepPreview, outcome: &Result<String, String>);
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub yes: bool,
    pub dry_run: bool,
    pub lang: String,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// A read-only command's tables.
    Tables { tables: Vec<Table> },
    /// `--dry-run`: the plan, nothing changed.
    Planned { steps: Vec<StepPreview> },
    /// Every step applied and verified.
    Done { steps: Vec<StepPreview>, verification: Vec<Table> },
    /// Nothing was run: the operator's words were wrong.
    Usage { message: String },
    /// Not done by decision: not confirmed, not granted, a pre-check said no.
    Refused { message: String },
    Failed { message: String, changed: bool, step: Option<String> },
    /// A timeout: the step may or may not have taken effect.
    Unknown { message: String, step: Option<String> },
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Tables { .. } | Self::Planned { .. } | Self::Done { .. } => Exit::Success,
            Self::Usage { .. } => Exit::Usage,
            Self::Refused { .. } => Exit::Refused,
            Self::Failed { changed: false, .. } => Exit::Failed,
            Self::Failed { changed: true, .. } => Exit::FailedChanged,
            Self::Unknown { .. } => Exit::Unknown,
        }
    }
}

pub struct Runner<'a> {
    pub sandbox: &'a Sandbox,
    pub caps: &'a Arc<Capabilities>,
    pub events: &'a Arc<dyn Events>,
    pub operator: &'a dyn Operator,
}

impl Runner<'_> {
    pub async fn run(&self, plugin: &LoadedPlugin, command: &CommandInfo, call: &Invocation, options: &RunOptions) -> Outcome {
        let lang = options.lang.as_str();
        let who = format!("{} {}", plugin.name(), command.name);
        if command.kind == CommandKind::Read {
            return match self.sandbox.read(plugin, call, self.caps, self.events, lang).await {
                Ok(tables) => Outcome::Tables { tables: tables.into_iter().map(|t| self.reveal_table(t)).collect() },
                Err(e) => self.failure(&who, e, false, None, lang),
            };
        }
        let plan = match self.sandbox.plan(plugin, call, self.caps, self.events, lang).await {
            Ok(plan) => plan,
            Err(e) => return self.failure(&format!("{who} (planning)"), e, false, None, lang),
        };
        let previews = self.previews(plugin.name(), &plan, lang).await;
        let warnings: Vec<String> = plan.warnings.iter().map(|w| self.reveal(pick(w, lang))).collect();
        self.operator.plan(plugin.name(), &self.reveal(pick(&plan.summary, lang)), &warnings, &previews);
        if options.dry_run {
            return Outcome::Planned { steps: previews };
        }
        if plan.steps.is_empty() {
            return Outcome::Done { steps: previews, verification: Vec::new() };
        }
        let confirmation = if options.yes { Confirmation::Yes } else { self.operator.confirm(plan.steps.len()) };
        match confirmation {
            Confirmation::Yes => {}
            Confirmation::No => return Outcome::Refused { message: format!("{who}: not confirmed; nothing was changed") },
            Confirmation::CannotAsk => {
                return Outcome::Refused {
                    message: format!("{who} changes things and there is no terminal to confirm on: add --yes (after reviewing it with --dry-run); nothing was changed"),
                };
            }
        }
        let total = plan.steps.len();
        for (index, (step, preview)) in plan.steps.iter().zip(&previews).enumerate() {
            self.operator.step_started(index, total, preview);
            let changed_before = index > 0;
            let applied = self.sandbox.apply(plugin, call, step, self.caps, self.events, lang).await;
            let result = match applied {
                Ok(note) => self.confirm_step(plugin, call, step, lang).await.map(|()| self.reveal(pick(&note, lang))),
                Err(e) => Err(e),
            };
            match result {
                Ok(note) => self.operator.step_finished(index, total, preview, &Ok(note)),
                Err(e) => {
                    let outcome = self.failure(&format!("{who}, step {} ({})", step.id, preview.title), e, changed_before, Some(step.id.clone()), lang);
                    let message = match &outcome {
                        Outcome::Failed { message, .. } | Outcome::Unknown { message, .. } | Outcome::Refused { message } | Outcome::Usage { message } => message.clone(),
                        _ => String::new(),
                    };
                    self.operator.step_finished(index, total, preview, &Err(message));
                    // A step that failed may have changed something itself (e.g. half a script):
                    // any failure once apply has begun counts as "changed" unless it was the first
                    // step and the plugin reports a clean refusal.
                    return match outcome {
                        Outcome::Failed { message, changed, step } => Outcome::Failed { message, changed: changed || index > 0, step },
                        other => other,
                    };
                }
            }
        }
        match self.sandbox.verify(plugin, call, self.caps, self.events, lang).await {
            Ok(tables) => Outcome::Done { steps: previews, verification: tables.into_iter().map(|t| self.reveal_table(t)).collect() },
            Err(e) => self.failure(&format!("{who} (verifying the result)"), e, true, None, lang),
        }
    }

    /// After a step's apply returned, ask the plugin's own check whether it took effect.
    async fn confirm_step(&self, plugin: &LoadedPlugin, call: &Invocation, step: &Step, lang: &str) -> Result<(), CallError> {
        let check = self.sandbox.check(plugin, call, step, self.caps, self.events, lang).await?;
        match check.state {
            CheckState::Done | CheckState::Unknown => Ok(()),
            CheckState::NotDone => Err(CallError::Command(CommandError::Failed(format!(
                "the step reported success but its check says it did not take effect: {}",
                pick(&check.detail, lang)
            )))),
            CheckState::Stale => Err(CallError::Command(CommandError::Failed(format!(
                "after the step, its check says the plan no longer fits the live state: {}",
                pick(&check.detail, lang)
            )))),
        }
    }

    fn failure(&self, who: &str, error: CallError, changed: bool, step: Option<String>, lang: &str) -> Outcome {
        use crate::sandbox::bindings::types::CapabilityError as E;
        let reveal = |m: &str| self.reveal(m);
        match error {
            CallError::Crash(crash) => Outcome::Failed { message: format!("{who}: {crash}"), changed, step },
            CallError::Command(CommandError::Usage(m)) => Outcome::Usage { message: format!("{who}: {}", reveal(&m)) },
            CallError::Command(CommandError::Refused(text)) => Outcome::Refused { message: format!("{who}: {}", reveal(pick(&text, lang))) },
            CallError::Command(CommandError::Failed(m)) => Outcome::Failed { message: format!("{who}: {}", reveal(&m)), changed, step },
            CallError::Command(CommandError::Capability(e)) => match e {
                E::Timeout(m) => Outcome::Unknown { message: format!("{who}: {}", reveal(&m)), step },
                E::Denied(m) => Outcome::Refused { message: format!("{who}: {}", reveal(&m)) },
                E::NotFound(m) | E::Unreachable(m) | E::Auth(m) | E::ReadOnly(m) | E::Conflict(m) | E::Failed(m) | E::Invalid(m) => {
                    Outcome::Failed { message: format!("{who}: {}", reveal(&m)), changed, step }
                }
            },
        }
    }

    fn reveal(&self, text: &str) -> String {
        self.caps.addresses.reveal_lossy(text)
    }

    fn reveal_table(&self, mut table: Table) -> Table {
        use crate::sandbox::bindings::runbook::Cell;
        for row in &mut table.rows {
            for cell in row.iter_mut() {
                let (Cell::Plain(text) | Cell::Good(text) | Cell::Warn(text) | Cell::Bad(text)) = cell;
                *text = self.caps.addresses.reveal_lossy(text);
            }
        }
        table
    }

    /// Render every effect of the plan for the operator, with real addresses, and each file edit
    /// as a unified diff against the file's current content.
    async fn previews(&self, plugin: &str, plan: &ChangePlan, lang: &str) -> Vec<StepPreview> {
        let mut out = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let mut effects = Vec::new();
            for effect in &step.effects {
                effects.push(match effect {
                    Effect::Sql(e) => Preview::Sql { database: e.database.clone(), statements: e.statements.iter().map(|s| self.reveal(s)).collect() },
                    Effect::Service(e) => Preview::Service { host: e.host.clone(), service: e.service.clone(), action: e.action.clone() },
                    Effect::Exec(e) => Preview::Exec { host: e.host.clone(), argv: e.argv.iter().map(|a| self.reveal(a)).collect() },
                    Effect::Opaque(text) => Preview::Opaque { text: self.reveal(pick(text, lang)) },
                    Effect::File(e) => self.file_preview(plugin, &e.host, &e.path, &e.expected_sha256, &e.new_content).await,
                });
            }
            out.push(StepPreview {
                id: step.id.clone(),
                title: self.reveal(pick(&step.title, lang)),
                target: step.target.clone(),
                group: step.group.clone(),
                effects,
            });
        }
        out
    }

    async fn file_preview(&self, plugin: &str, host: &str, path: &str, expected: &str, new_content: &str) -> Preview {
        let new_content = self.reveal(new_content);
        let (current, stale) = match self.caps.grants.check(plugin, Capability::FileEdit, host, Some(path)) {
            Err(denied) => return Preview::Opaque { text: format!("edit {path} on {host}: cannot preview: {denied}") },
            Ok(()) => match file_edit::read(&self.caps.remote, host, path, true, &self.caps.bounds).await {
                Ok(snapshot) => {
                    let stale = snapshot.sha256 != expected;
                    (snapshot.content, stale)
                }
                Err(e) => return Preview::Opaque { text: format!("edit {path} on {host}: cannot read the current content to preview ({e})") },
            },
        };
        let diff = TextDiff::from_lines(&current, &new_content)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{host}:{path} (current)"), &format!("{host}:{path} (planned)"))
            .to_string();
        Preview::File { host: host.to_string(), path: path.to_string(), diff, stale }
    }
}
