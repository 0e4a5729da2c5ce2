//! The interactive shell (rustyline): completion of commands, arguments and inventory names,
//! history in the data directory, hints from history, coloured prompt.

use std::borrow::Cow;

use nu_ansi_term::{Color, Style};
use opsh_host::Exit;
use opsh_host::inventory::Inventory;
use opsh_host::sandbox::bindings::runbook::{ArgKind, Completion, PluginInfo};
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hinter, HistoryHinter};
use rustyline::history::{FileHistory, History};
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::session::{BUILTINS, Session};

const LINE_FLAGS: &[&str] = &["--dry-run", "--yes", "--check", "--output", "--lang", "--local-state"];

struct OpshHelper {
    plugins: Vec<PluginInfo>,
    inventory: std::sync::Arc<Inventory>,
    journal_dir: std::path::PathBuf,
    hosts: Vec<String>,
    databases: Vec<String>,
    topologies: Vec<String>,
    hinter: HistoryHinter,
    color: bool,
}

impl OpshHelper {
    fn new(session: &Session, color: bool) -> Self {
        let inventory: &Inventory = &session.caps.inventory;
        Self {
            plugins: session.registry.plugins.iter().map(|p| p.info.clone()).collect(),
            inventory: session.caps.inventory.clone(),
            journal_dir: session.paths.journal_dir(),
            hosts: inventory.hosts.keys().cloned().chain(["local".to_string()]).collect(),
            databases: inventory.databases.keys().cloned().collect(),
            topologies: inventory.topologies.keys().cloned().collect(),
            hinter: HistoryHinter::new(),
            color,
        }
    }

    /// Candidates for the word being typed, given the words before it.
    fn candidates(&self, before: &[String]) -> Vec<String> {
        let Some(first) = before.first() else {
            let mut names: Vec<String> = BUILTINS.iter().map(|(n, _)| n.to_string()).collect();
            names.extend(self.plugins.iter().map(|p| p.name.clone()));
            names.sort();
            return names;
        };
        if first == "doctor" {
            return self.topologies.iter().chain(self.hosts.iter().filter(|h| *h != "local")).chain(&self.databases).cloned().collect();
        }
        if matches!(first.as_str(), "journal" | "resume" | "retry") {
            return match before.len() {
                1 => self.run_ids(),
                2 if first == "retry" => opsh_host::journal::RunLog::read(&self.journal_dir, &before[1])
                    .ok()
                    .and_then(|log| log.header().map(|h| h.2.steps.iter().map(|s| s.id.clone()).collect()))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
        }
        if first == "plan" {
            return self.candidates(&before[1..]);
        }
        if first == "help" {
            return match before.len() {
                1 => self.plugins.iter().map(|p| p.name.clone()).collect(),
                _ => self.plugins.iter().find(|p| p.name == before[1]).map(|p| p.commands.iter().map(|c| c.name.clone()).collect()).unwrap_or_default(),
            };
        }
        let Some(plugin) = self.plugins.iter().find(|p| &p.name == first) else { return Vec::new() };
        let typed = &before[1..];
        let Some(command) = opsh_host::runbook::find_command(plugin, typed) else {
            // Still typing the command name: offer the next word of every matching command.
            return plugin
                .commands
                .iter()
                .filter_map(|c| {
                    let name: Vec<&str> = c.name.split_whitespace().collect();
                    (typed.len() < name.len() && name.iter().zip(typed).all(|(a, b)| a == b)).then(|| name[typed.len()].to_string())
                })
                .collect();
        };
        let args = &typed[command.name.split_whitespace().count()..];
        // After an option that takes a value: complete that value.
        if let Some(last) = args.last().and_then(|w| w.strip_prefix("--")) {
            if let Some(arg) = command.args.iter().find(|a| a.name == last && a.kind == ArgKind::Option) {
                return self.complete_kind(&plugin.name, &arg.completion);
            }
            if last == "output" {
                return vec!["text".into(), "json".into()];
            }
            if last == "lang" {
                return vec!["en".into(), "ja".into()];
            }
        }
        let positionals_given = args.iter().filter(|w| !w.starts_with("--")).count();
        let mut out: Vec<String> = command
            .args
            .iter()
            .filter(|a| a.kind == ArgKind::Positional)
            .nth(positionals_given)
            .map(|a| self.complete_kind(&plugin.name, &a.completion))
            .unwrap_or_default();
        out.extend(command.args.iter().filter(|a| a.kind != ArgKind::Positional).map(|a| format!("--{}", a.name)));
        out.extend(LINE_FLAGS.iter().map(|f| f.to_string()));
        out
    }

    /// Run ids in the journal, newest first.
    fn run_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.journal_dir)
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string)).collect())
            .unwrap_or_default();
        ids.sort_by(|a, b| b.cmp(a));
        ids
    }

    /// The inventory's names for an argument; a plugin's `@…` choices read from the inventory.
    fn complete_kind(&self, plugin: &str, completion: &Completion) -> Vec<String> {
        match completion {
            Completion::None => Vec::new(),
            Completion::Host => self.hosts.clone(),
            Completion::Database => self.databases.clone(),
            Completion::Topology => self.topologies.clone(),
            Completion::Choices(choices) => choices.iter().flat_map(|c| self.inventory.completion_words(plugin, c)).collect(),
        }
    }
}

/// `opsh __complete WORD…`: the candidates for the last word (being typed; may be empty) after
/// the others — the shell's own completion, for bash, zsh and fish (`opsh completions SHELL`).
pub fn complete_words(session: &Session, words: &[String]) -> Vec<String> {
    let helper = OpshHelper::new(session, false);
    let (partial, before) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", words),
    };
    let mut seen = std::collections::HashSet::new();
    helper.candidates(before).into_iter().filter(|c| c.starts_with(partial) && seen.insert(c.clone())).collect()
}

/// The completion script for `shell`: each asks `opsh __complete` for the words typed so far.
pub fn completion_script(shell: &str) -> Option<&'static str> {
    match shell {
        "bash" => Some(
            r#"# opsh completion for bash: eval "$(opsh completions bash)" or put it in /etc/bash_completion.d/opsh
_opsh() {
    local IFS=$'
'
    COMPREPLY=($(opsh __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _opsh opsh
"#,
        ),
        "zsh" => Some(
            r#"#compdef opsh
# opsh completion for zsh: put it as _opsh on your $fpath, or: source <(opsh completions zsh)
_opsh() {
    local -a candidates
    candidates=("${(@f)$(opsh __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    compadd -a candidates
}
if [ "$funcstack[1]" = "_opsh" ]; then _opsh "$@"; else compdef _opsh opsh; fi
"#,
        ),
        "fish" => Some(
            r#"# opsh completion for fish: opsh completions fish > ~/.config/fish/completions/opsh.fish
complete -c opsh -f -a '(opsh __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
"#,
        ),
        _ => None,
    }
}

impl Completer for OpshHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let before: Vec<String> = shell_words::split(&head[..start]).unwrap_or_default();
        let partial = &head[start..];
        let candidates = self.candidates(&before);
        // In the candidates' own order (newest run first), each once.
        let mut seen = std::collections::HashSet::new();
        let mut matching: Vec<String> = candidates.iter().filter(|c| c.starts_with(partial) && seen.insert(c.as_str())).cloned().collect();
        if matching.is_empty() && !partial.is_empty() && before.len() == 1 && matches!(before[0].as_str(), "journal" | "resume" | "retry") {
            // A run id by the end of it (its random suffix), when only one ends so.
            let ending: Vec<&String> = candidates.iter().filter(|c| c.ends_with(partial)).collect();
            if let [one] = ending.as_slice() {
                matching.push(one.to_string());
            }
        }
        let matches = matching.into_iter().map(|c| Pair { display: c.clone(), replacement: format!("{c} ") }).collect();
        Ok((start, matches))
    }
}

impl Hinter for OpshHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, ctx: &Context<'_>) -> Option<String> {
        self.hinter.hint(line, pos, ctx)
    }
}

impl Highlighter for OpshHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color { Cow::Owned(Color::DarkGray.paint(hint).to_string()) } else { Cow::Borrowed(hint) }
    }
}

impl Validator for OpshHelper {}
impl Helper for OpshHelper {}

pub async fn run(session: &Session) -> Exit {
    // Tab completes the common prefix, a second Tab lists every candidate (as bash and psql do).
    let config = Config::builder().auto_add_history(true).completion_type(CompletionType::List).max_history_size(5_000).map(|b| b.build()).unwrap_or_default();
    let mut editor: Editor<OpshHelper, FileHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            session.console.error(&format!("cannot open the shell: {e}"));
            return Exit::Failed;
        }
    };
    editor.set_helper(Some(OpshHelper::new(session, session.console.color_err)));
    let history = session.paths.history_file();
    let _ = editor.load_history(&history);
    let source = session.caps.inventory.source.display().to_string();
    session.console.note(&format!(
        "opsh {} — {} plugin(s), inventory {}. `help` lists commands; Tab completes; Ctrl-D leaves.",
        env!("CARGO_PKG_VERSION"),
        session.registry.plugins.len(),
        if source.is_empty() { "(none)".to_string() } else { source }
    ));
    session.interrupt.set_cancel_idle(true);
    let prompt = if session.console.color_err { Style::new().bold().fg(Color::Cyan).paint("opsh> ").to_string() } else { "opsh> ".to_string() };
    loop {
        match editor.readline(&prompt) {
            Ok(line) => {
                let words = match Session::split(&line) {
                    Ok(words) => words,
                    Err(e) => {
                        session.console.error(&e);
                        continue;
                    }
                };
                if matches!(words.first().map(String::as_str), Some("exit" | "quit")) {
                    break;
                }
                if words.is_empty() {
                    continue;
                }
                // Ctrl-C while a command only reads (or plans) cancels it and the shell goes on;
                // while steps are applied, the runbook engine handles it (stop after the step).
                let cancelled = session.interrupt.idle_pressed();
                let exit = tokio::select! {
                    exit = session.run_words(words) => exit,
                    () = cancelled => {
                        session.console.note("cancelled (nothing was being changed)");
                        Exit::Failed
                    }
                };
                if exit != Exit::Success {
                    session.console.note(&session.console.paint_err(Color::DarkGray.normal(), &format!("(exit {})", exit.code())));
                }
                let _ = editor.history_mut().save(&history);
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => {
                session.console.error(&format!("reading input: {e}"));
                break;
            }
        }
    }
    let _ = editor.save_history(&history);
    Exit::Success
}
