//! The console: everything opsh prints goes through here, so that known secrets are redacted
//! from every line (defence in depth: they should never reach output in the first place),
//! colours follow NO_COLOR and the terminal, and results (stdout) stay apart from progress and
//! messages (stderr).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use nu_ansi_term::{Color, Style};
use opsh_host::runbook::{Confirmation, Operator, Preview, ProbeRun, StepPreview};
use opsh_host::sandbox::Events;
use opsh_host::sandbox::bindings::host::LogLevel;
use opsh_host::scrub::Scrubber;
use serde_json::{Value, json};

use crate::OutputFormat;
use crate::term::{Ink, one_line};

pub struct Console {
    /// Known secrets, as they are and encoded.
    scrubber: Scrubber,
    /// Every line goes through it: plugin text made visible, opsh's colours kept.
    ink: Ink,
    pub color_out: bool,
    pub color_err: bool,
    interactive: bool,
    output: Mutex<OutputFormat>,
    lang: Mutex<String>,
    /// Spinners of the steps running now (terminal only).
    bars: Mutex<Option<(MultiProgress, HashMap<usize, ProgressBar>)>>,
    /// JSON documents printed so far, and the last error message: a command that failed
    /// without a document of its own gets one made of its error (`Session::run_words`).
    documents: AtomicUsize,
    last_error: Mutex<String>,
}

impl Console {
    pub fn new(output: OutputFormat, scrubber: Scrubber) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            scrubber,
            ink: Ink::new(),
            color_out: !no_color && std::io::stdout().is_terminal(),
            color_err: !no_color && std::io::stderr().is_terminal(),
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
            output: Mutex::new(output),
            lang: Mutex::new("en".into()),
            bars: Mutex::new(None),
            documents: AtomicUsize::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    pub fn set_lang(&self, lang: &str) {
        *self.lang.lock().unwrap_or_else(|p| p.into_inner()) = lang.to_string();
    }

    pub fn set_output(&self, output: OutputFormat) {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = output;
    }

    fn json(&self) -> bool {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) == OutputFormat::Json
    }

    pub fn redact(&self, text: &str) -> String {
        self.scrubber.scrub(text).into_owned()
    }

    /// A result line (stdout).
    pub fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", self.ink.line(&self.redact(text)));
    }

    /// A JSON document (stdout): the exact strings, escaped so that a terminal shows them inert.
    /// Every document says its `schema`, and its `exit` (0 unless the caller said otherwise).
    pub fn out_json(&self, mut document: Value) {
        if let Value::Object(map) = &mut document {
            map.entry("schema").or_insert(json!(crate::render::JSON_SCHEMA));
            map.entry("exit").or_insert(json!(0));
        }
        self.documents.fetch_add(1, Ordering::SeqCst);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", self.ink.json(&self.redact(&document.to_string())));
    }

    /// How many JSON documents were printed so far.
    pub fn documents(&self) -> usize {
        self.documents.load(Ordering::SeqCst)
    }

    /// Forget the last error message (a new command line starts).
    pub fn forget_error(&self) {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The last error message printed (empty if none).
    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A message line (stderr), above the step spinners when there are any.
    pub fn note(&self, text: &str) {
        let text = self.ink.line(&self.redact(text));
        if let Some((multi, _)) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = multi.println(&text);
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{text}");
    }

    pub fn paint_err(&self, style: Style, text: &str) -> String {
        if self.color_err { self.ink.paint(style, text) } else { text.to_string() }
    }

    pub fn paint_out(&self, style: Style, text: &str) -> String {
        if self.color_out { self.ink.paint(style, text) } else { text.to_string() }
    }

    pub fn error(&self, text: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = self.redact(text);
        self.note(&format!("{} {text}", self.paint_err(Color::Red.bold(), "error:")));
    }

    pub fn warn(&self, text: &str) {
        self.note(&format!("{} {text}", self.paint_err(Color::Yellow.bold(), "warning:")));
    }

    /// The plan, as the operator reads it before confirming. Plugin text that should be one line
    /// (summary, warnings, titles, ids) shows its newlines as `\n`; a statement of several lines
    /// keeps them, each continuation line indented under its `sql` line and marked `|`, so no
    /// text inside a step can pass for another step.
    pub fn plan_text(
        &self,
        summary: &str,
        warnings: &[String],
        steps: &[StepPreview],
        probes: &[ProbeRun],
        paint: &dyn Fn(Style, &str) -> String,
    ) -> Vec<String> {
        let mut lines = vec![paint(Style::new().bold(), &format!("Plan: {}", one_line(summary)))];
        if steps.iter().any(|s| s.runs == "plugin") {
            lines.push(paint(
                Color::DarkGray.normal(),
                "  (a plugin built for opsh:plugin 0.1: it applies its steps itself; what it changes is not bound to this preview)",
            ));
        }
        for warning in warnings {
            lines.push(format!("  {} {}", paint(Color::Yellow.bold(), "warning:"), one_line(warning)));
        }
        if steps.is_empty() {
            lines.push("  (nothing to do: already in the wanted state)".into());
        }
        for (i, step) in steps.iter().enumerate() {
            let group = if step.group.is_empty() { String::new() } else { format!(" [group {}]", one_line(&step.group)) };
            lines.push(format!(
                "  {}. {} {}{group}",
                i + 1,
                paint(Style::new().bold(), &one_line(&step.title)),
                paint(Color::DarkGray.normal(), &format!("({}, on {})", one_line(&step.id), one_line(&step.target)))
            ));
            if step.runs == "custom" {
                lines.push(format!(
                    "       {} {}",
                    paint(Color::Yellow.normal(), "not previewable, applied by the plugin (each change must be one below):"),
                    one_line(&step.custom)
                ));
            }
            for effect in &step.effects {
                match effect {
                    Preview::Sql(opsh_host::plan::SqlShown { database, statements, params, transaction, expect_affected }) => {
                        if *transaction && statements.len() > 1 {
                            lines.push(format!("       sql {database}: in one transaction:"));
                        }
                        for (i, statement) in statements.iter().enumerate() {
                            let mut statement_lines = statement.lines();
                            lines.push(format!("       sql {database}: {}", statement_lines.next().unwrap_or_default()));
                            lines.extend(statement_lines.map(|line| format!("         | {line}")));
                            if let Some(values) = params.get(i).filter(|v| !v.is_empty()) {
                                let bound: Vec<String> = values.iter().enumerate().map(|(n, v)| format!("${} = {}", n + 1, one_line(v))).collect();
                                lines.push(format!("         | with {}", bound.join(", ")));
                            }
                        }
                        if let Some(n) = expect_affected {
                            lines.push(format!("         | exactly {n} row(s), else {}", if *transaction { "rolled back" } else { "the step fails" }));
                        }
                    }
                    Preview::Service(opsh_host::plan::ServiceShown { host, service, action }) => {
                        lines.push(format!("       service {host}: {action} {service}"))
                    }
                    Preview::Exec(opsh_host::plan::ExecShown { host, argv, env, stdin, privileged, ok_status, timeout_ms }) => {
                        let env = env.iter().map(|e| format!("{} ", one_line(e))).collect::<String>();
                        let mut how: Vec<String> = Vec::new();
                        if *privileged {
                            how.push("privileged".into());
                        }
                        if !ok_status.is_empty() {
                            how.push(format!("success: exit {}", ok_status.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ")));
                        }
                        if let Some(ms) = timeout_ms {
                            how.push(format!("at most {} s", ms / 1000));
                        }
                        let how = if how.is_empty() { String::new() } else { format!(" ({})", how.join(", ")) };
                        // A script in an argument keeps its lines, each marked as the statement's are.
                        let command = shell_words::join(argv);
                        let mut command_lines = command.lines();
                        lines.push(format!("       run on {host}{how}: {env}{}", command_lines.next().unwrap_or_default()));
                        lines.extend(command_lines.map(|line| format!("         | {line}")));
                        if let Some(input) = stdin {
                            let mut input_lines = input.lines();
                            lines.push(format!("         | input: {}", input_lines.next().unwrap_or_default()));
                            lines.extend(input_lines.map(|line| format!("         | {line}")));
                        }
                    }
                    Preview::Wait { until, timeout_ms } => lines.push(format!("       wait until {} (at most {} s)", one_line(until), timeout_ms / 1000)),
                    Preview::Opaque { text } => {
                        lines.push(format!("       {} {}", paint(Color::Yellow.normal(), "(cannot be previewed exactly)"), one_line(text)))
                    }
                    Preview::File { host, path, diff, stale } => {
                        lines.push(format!("       edit {host}:{path}"));
                        if *stale {
                            lines.push(format!("       {}", paint(Color::Red.bold(), "the file changed since the plan read it: applying will be refused")));
                        }
                        for line in diff.lines() {
                            let styled = if line.starts_with('+') && !line.starts_with("+++") {
                                paint(Color::Green.normal(), line)
                            } else if line.starts_with('-') && !line.starts_with("---") {
                                paint(Color::Red.normal(), line)
                            } else {
                                line.to_string()
                            };
                            lines.push(format!("         {styled}"));
                        }
                    }
                }
            }
        }
        if !probes.is_empty() {
            lines.push(paint(Color::DarkGray.normal(), &format!("  Read while planning ({} approved probe(s)):", probes.len())));
            for probe in probes {
                lines.push(paint(Color::DarkGray.normal(), &format!("     on {}: {}", probe.host, one_line(&probe.command))));
            }
        }
        lines
    }
}

impl Operator for Console {
    fn plan(&self, _plugin: &str, summary: &str, warnings: &[String], steps: &[StepPreview], probes: &[ProbeRun]) {
        if self.json() {
            return;
        }
        let paint = |style: Style, text: &str| self.paint_out(style, text);
        for line in self.plan_text(summary, warnings, steps, probes, &paint) {
            self.out(&line);
        }
    }

    fn confirm(&self, steps: usize) -> Confirmation {
        if !self.interactive {
            return Confirmation::CannotAsk;
        }
        let ja = self.lang.lock().map(|l| *l == "ja").unwrap_or(false);
        let question = if ja { format!("{steps} 個のステップを実行しますか? [y/N] ") } else { format!("Apply these {steps} step(s)? [y/N] ") };
        eprint!("{}", self.ink.line(&self.paint_err(Style::new().bold(), &question)));
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(_) if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") => Confirmation::Yes,
            _ => Confirmation::No,
        }
    }

    fn step_started(&self, index: usize, total: usize, step: &StepPreview) {
        let label = format!("[{}/{total}] {} ({})", index + 1, one_line(&step.title), step.target);
        if !self.color_err || !std::io::stderr().is_terminal() {
            self.note(&format!("  {label} …"));
            return;
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let (multi, map) = bars.get_or_insert_with(|| (MultiProgress::new(), HashMap::new()));
        let bar = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("  {spinner:.cyan} {msg} {elapsed:.dim}") {
            bar.set_style(style);
        }
        bar.set_message(self.ink.line(&self.redact(&label)));
        bar.enable_steady_tick(Duration::from_millis(100));
        map.insert(index, bar);
    }

    fn step_finished(&self, index: usize, total: usize, step: &StepPreview, outcome: &Result<String, String>) {
        let line = match outcome {
            Ok(note) => format!("{} [{}/{total}] {} — {}", self.paint_err(Color::Green.bold(), "done"), index + 1, one_line(&step.title), one_line(note)),
            Err(message) => {
                format!("{} [{}/{total}] {} — {}", self.paint_err(Color::Red.bold(), "FAILED"), index + 1, one_line(&step.title), one_line(message))
            }
        };
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.as_mut().and_then(|(_, map)| map.remove(&index));
        match bar {
            Some(bar) => {
                if let Ok(style) = ProgressStyle::with_template("  {msg}") {
                    bar.set_style(style);
                }
                bar.finish_with_message(self.ink.line(&self.redact(&line)));
                if bars.as_ref().is_some_and(|(_, map)| map.is_empty()) {
                    *bars = None;
                }
            }
            None => {
                drop(bars);
                self.note(&format!("  {line}"));
            }
        }
    }
}

impl Events for Console {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Debug if std::env::var_os("OPSH_DEBUG").is_none() => {}
            LogLevel::Error => self.error(&format!("[{plugin}] {}", one_line(message))),
            LogLevel::Warn => self.warn(&format!("[{plugin}] {}", one_line(message))),
            _ => self.note(&format!("[{plugin}] {}", one_line(message))),
        }
    }

    fn progress(&self, plugin: &str, message: &str, fraction: Option<f32>) {
        let percent = fraction.map(|f| format!(" {:>3.0}%", f * 100.0)).unwrap_or_default();
        self.note(&self.paint_err(Color::DarkGray.normal(), &format!("  … [{plugin}]{percent} {}", one_line(message))));
    }

    /// Plans list their probes (and the journal keeps them); other calls' probes are shown
    /// as they run with OPSH_DEBUG.
    fn probe(&self, plugin: &str, phase: &str, host: &str, command: &str) {
        if std::env::var_os("OPSH_DEBUG").is_some() {
            self.note(&self.paint_err(Color::DarkGray.normal(), &format!("  · [{plugin}] {phase} probe on {host}: {}", one_line(command))));
        }
    }
}
