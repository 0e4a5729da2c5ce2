//! Running a plugin command: parse the operator's words against the command's self-description,
//! then either `read` (tables) or plan → preview → confirm → apply each step → check it →
//! verify the goal. The host owns this control flow; the plugin only knows its domain.

use crate::Exit;
use crate::sandbox::bindings::runbook::{ArgKind, CommandInfo, Invocation, PluginInfo, Table, Text};

/// Pick the operator's language, falling back to English.
pub fn pick<'a>(text: &'a Text, lang: &str) -> &'a str {
    if lang == "ja" && !text.ja.is_empty() { &text.ja } else { &text.en }
}

/// `pick` for a text of a plan as opsh keeps it.
pub fn pick_text<'a>(text: &'a crate::plan::Text, lang: &str) -> &'a str {
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

/// The options every command line takes (the shell's; they never reach a plugin).
pub const GLOBAL_FLAGS: &[&str] = &["--yes", "--dry-run", "--check", "--local-state", "--output", "--lang", "--inventory"];

/// Find the command the words name and parse its arguments.
pub fn parse_invocation<'a>(info: &'a PluginInfo, words: &[String]) -> Result<(&'a CommandInfo, Invocation), UsageError> {
    let command = find_command(info, words).ok_or_else(|| {
        let known: Vec<String> = info.commands.iter().map(|c| format!("{} {}", info.name, c.name)).collect();
        let typed = words.first().map(String::as_str).unwrap_or("");
        UsageError(if typed.is_empty() {
            format!("{} needs a command: {}", info.name, known.join(", "))
        } else {
            let hint = crate::suggest::closest(typed, info.commands.iter().map(|c| c.name.split_whitespace().next().unwrap_or_default()))
                .map(|c| format!(" — did you mean {} {c}?", info.name))
                .unwrap_or_default();
            format!("{} has no command {typed:?}{hint}; it has: {} (try `help {}`)", info.name, known.join(", "), info.name)
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
                let typed = format!("--{name}");
                let hint = crate::suggest::closest(&typed, options.iter().map(String::as_str).chain(GLOBAL_FLAGS.iter().copied()))
                    .map(|o| format!(" — did you mean {o}?"))
                    .unwrap_or_default();
                UsageError(format!(
                    "{full}: unknown option --{name}{}{hint} (see `help {full}`)",
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
            let arg = positionals.get(next_positional).ok_or_else(|| UsageError(format!("{full}: unexpected argument {word:?} (see `help {full}`)")))?;
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Preview {
    Sql(crate::plan::SqlShown),
    File {
        host: String,
        path: String,
        diff: String,
        stale: bool,
    },
    Service(crate::plan::ServiceShown),
    Exec(crate::plan::ExecShown),
    /// The host asks the step's check until it says done.
    Wait {
        until: String,
        timeout_ms: u32,
    },
    /// Cannot be previewed exactly; the text says what it does.
    Opaque {
        text: String,
    },
}

/// A probe a plugin ran outside `apply`: shown with the plan, kept in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeRun {
    /// The call it ran in: `plan`, `check` or `verify`.
    pub during: String,
    pub host: String,
    /// As the host ran it (addresses revealed), `argv <<< stdin`.
    pub command: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepPreview {
    pub id: String,
    pub title: String,
    /// Who performs it: `host` (exactly these effects), `plugin` (a 0.1 plugin's own apply; the
    /// effects are its preview) or `custom` (a 0.2 plugin's apply, each change bound to these).
    #[serde(default = "plugin_runner", skip_serializing_if = "is_plugin_runner")]
    pub runs: String,
    /// Why a custom step cannot be performed by the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub custom: String,
    pub target: String,
    pub group: String,
    pub effects: Vec<Preview>,
}

fn plugin_runner() -> String {
    "plugin".into()
}

fn is_plugin_runner(runs: &String) -> bool {
    runs == "plugin"
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
    /// The plan to confirm, and the probes the plugin ran to make it.
    fn plan(&self, plugin: &str, summary: &str, warnings: &[String], steps: &[StepPreview], probes: &[ProbeRun]);
    fn confirm(&self, steps: usize) -> Confirmation;
    fn step_started(&self, index: usize, total: usize, step: &StepPreview);
    fn step_finished(&self, index: usize, total: usize, step: &StepPreview, outcome: &Result<String, String>);
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub yes: bool,
    pub dry_run: bool,
    pub lang: String,
    /// Team mode: lock and journal on this machine only, although the inventory names a state
    /// database (`--local-state`; the journal records it).
    pub local_state: bool,
}

/// How one step of a run ended, for the operator and for JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    pub index: usize,
    pub id: String,
    pub title: String,
    pub target: String,
    pub status: crate::journal::StepStatus,
    pub message: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// A read-only command's tables.
    Tables {
        tables: Vec<Table>,
        /// It asked, and no target answered (all unreachable, refusing the login or silent):
        /// the command failed whatever its tables show.
        #[serde(skip_serializing_if = "Option::is_none")]
        none_answered: Option<String>,
    },
    /// `--dry-run`: the plan, nothing changed.
    Planned {
        /// The plan's one line, and its warnings (with what stays if the run stops after a change).
        summary: String,
        warnings: Vec<String>,
        steps: Vec<StepPreview>,
        /// The probes run while planning.
        probes: Vec<ProbeRun>,
    },
    /// `plan … --out FILE`: the plan, written to FILE; nothing changed.
    Saved {
        file: String,
        summary: String,
        warnings: Vec<String>,
        steps: Vec<StepPreview>,
        probes: Vec<ProbeRun>,
    },
    /// Every step applied and verified (or, for `retry`, the one step).
    Done {
        run: Option<String>,
        steps: Vec<StepPreview>,
        results: Vec<StepReport>,
        verification: Vec<Table>,
        message: String,
    },
    /// Nothing was run: the operator's words were wrong.
    Usage {
        message: String,
    },
    /// Not done by decision: not confirmed, not granted, locked, a pre-check said no.
    Refused {
        message: String,
        run: Option<String>,
    },
    Failed {
        message: String,
        changed: bool,
        step: Option<String>,
        run: Option<String>,
        results: Vec<StepReport>,
    },
    /// A timeout or an aborted step: it may or may not have taken effect.
    Unknown {
        message: String,
        step: Option<String>,
        run: Option<String>,
        results: Vec<StepReport>,
    },
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Tables { none_answered: Some(_), .. } => Exit::Failed,
            Self::Tables { .. } | Self::Planned { .. } | Self::Saved { .. } | Self::Done { .. } => Exit::Success,
            Self::Usage { .. } => Exit::Usage,
            Self::Refused { .. } => Exit::Refused,
            Self::Failed { changed: false, .. } => Exit::Failed,
            Self::Failed { changed: true, .. } => Exit::FailedChanged,
            Self::Unknown { .. } => Exit::Unknown,
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::Refused { message: message.into(), run: None }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Done { message, .. }
            | Self::Usage { message }
            | Self::Refused { message, .. }
            | Self::Failed { message, .. }
            | Self::Unknown { message, .. } => message,
            Self::Tables { none_answered: Some(message), .. } => message,
            Self::Tables { .. } | Self::Planned { .. } | Self::Saved { .. } => "",
        }
    }
}

pub mod effects;
pub mod engine;
pub mod saved;
pub use engine::{Engine, Interrupt};
