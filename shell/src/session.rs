//! One opsh process: the inventory, the capabilities, the sandbox and the plugins, and the
//! dispatch of a command line to a built-in or a plugin command.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use opsh_host::Exit;
use opsh_host::capability::Capabilities;
use opsh_host::inventory::Inventory;
use opsh_host::journal::Redactor;
use opsh_host::paths::Paths;
use opsh_host::plugins::{Bundled, Registry, Wanted};
use opsh_host::runbook::{self, Engine, Interrupt, Outcome, RunOptions};
use opsh_host::sandbox::bindings::runbook::{CommandInfo, Completion, Invocation};
use opsh_host::sandbox::{Events, Limits, LoadedPlugin, Sandbox};

use crate::OutputFormat;
use crate::operator::Console;
use crate::render;

/// Words of opsh itself that are no `BUILTINS` line: the CLI's subcommands and aliases, and the
/// built-in host.
const RESERVED_WORDS: &[&str] = &["quit", "run", "status", "local", "opsh", "completions", "__complete", "__man"];

pub const BUILTINS: &[(&str, &str)] = &[
    ("help", "help [PLUGIN [COMMAND]] — commands, their arguments and examples"),
    ("plan", "plan COMMAND… [--out FILE] — the plan of a change, nothing changed; with --out, saved for `apply FILE`"),
    ("apply", "apply FILE — apply exactly the plan saved in FILE (refused if the plugin, inventory or a planned file changed)"),
    ("journal", "journal [--since YYYY-MM-DD] [RUN] — the runs of changes (every operator's in team mode), or one run step by step"),
    ("resume", "resume RUN — continue a run from the first step not known to be done"),
    ("retry", "retry RUN STEP — apply one failed step again"),
    ("state", "state init — create or migrate opsh's schema in the inventory's [state] database (team mode)"),
    ("doctor", "doctor [TOPOLOGY|HOST|DATABASE…] — before a failover: ssh, sudo, logins, TLS, versions, and every tool and privilege the plugins need"),
    ("plugins", "plugins — the loaded plugins, their versions and capabilities"),
    (
        "inventory",
        "inventory [import pgxc_ctl|ansible|ssh-config FILE] — hosts, databases, topologies and grants (never secrets); import prints a TOML inventory from a cluster's own description",
    ),
    ("exit", "exit — leave the shell"),
];

/// Options that a command line may set for itself (`--yes`, `--dry-run`, `--output`, `--lang`).
#[derive(Debug, Clone)]
pub struct LineOptions {
    pub yes: bool,
    pub dry_run: bool,
    /// A read command fails (exit 6) when anything it shows is a problem.
    pub check: bool,
    pub output: OutputFormat,
    pub lang: String,
    /// Team mode: this change locks and journals on this machine only.
    pub local_state: bool,
}

pub struct Session {
    pub paths: Paths,
    pub caps: Arc<Capabilities>,
    pub sandbox: Sandbox,
    pub registry: Registry,
    pub defaults: LineOptions,
    pub console: Arc<Console>,
    pub interrupt: Interrupt,
    events: Arc<dyn Events>,
    /// What this process changed so far, one line per run that changed (or may have changed)
    /// something: a script that fails later says so, and exits 3.
    changes: std::sync::Mutex<Vec<String>>,
}

/// A command line, checked and ready to run.
pub enum Prepared {
    Builtin(String, Vec<String>),
    Plugin {
        plugin: Arc<LoadedPlugin>,
        command: opsh_host::sandbox::bindings::runbook::CommandInfo,
        call: opsh_host::sandbox::bindings::runbook::Invocation,
        /// The command line as typed (for the journal).
        line: String,
        /// `plan … --out FILE`: save the plan there instead of applying it.
        save_to: Option<std::path::PathBuf>,
    },
    Exit,
}

impl Session {
    pub async fn start(inventory_path: Option<&Path>, bundled: &[Bundled], wanted: Wanted<'_>, defaults: LineOptions) -> Result<Self> {
        let paths = Paths::from_env()?;
        let inventory = match inventory_path {
            Some(path) => Inventory::load(path)?,
            None if paths.default_inventory().exists() => Inventory::load(&paths.default_inventory())?,
            None => Inventory::empty(),
        };
        for dir in [&paths.data_dir, &paths.cache_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let control_dir = paths.data_dir.join("ssh");
        create_private_dir(&control_dir)?;
        let caps = Arc::new(Capabilities::new(Arc::new(inventory), control_dir));
        let console = Arc::new(Console::new(defaults.output, caps.scrubber.clone()));
        let events: Arc<dyn Events> = console.clone();
        let sandbox = Sandbox::new(paths.component_cache_dir(), Limits::from_env())?;
        let reserved: Vec<&str> = BUILTINS.iter().map(|(name, _)| *name).chain(RESERVED_WORDS.iter().copied()).collect();
        let registry = Registry::load(&sandbox, bundled, wanted, &paths.plugin_dir(), &reserved, &caps, &events).await;
        for problem in &registry.problems {
            console.warn(&format!("plugin not loaded: {problem}"));
        }
        Ok(Self { paths, caps, sandbox, registry, defaults, console, interrupt: Interrupt::default(), events, changes: Default::default() })
    }

    pub async fn shutdown(&self) {
        self.caps.shutdown().await;
    }

    /// How many changes this process has made so far (see [`Session::changes_since`]).
    pub fn change_count(&self) -> usize {
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The changes made after the first `count`.
    pub fn changes_since(&self, count: usize) -> Vec<String> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).get(count..).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// Split a line into words (shell quoting rules).
    pub fn split(line: &str) -> Result<Vec<String>, String> {
        opsh_host::script::words(line)
    }

    pub async fn run_line(&self, line: &str) -> Exit {
        match Self::split(line) {
            Ok(words) if words.is_empty() => Exit::Success,
            Ok(words) => self.run_words(words).await,
            Err(e) => {
                self.console.error(&e);
                if self.defaults.output == OutputFormat::Json {
                    self.console.out_json(render::error_document(Exit::Usage, &e));
                }
                Exit::Usage
            }
        }
    }

    /// Run one command line. With `--output json`, a command that failed without printing a
    /// document (a usage error, a built-in's error) prints one made of its error message.
    pub async fn run_words(&self, words: Vec<String>) -> Exit {
        let json = self.line_options(words.clone()).map_or(self.defaults.output, |(_, o)| o.output) == OutputFormat::Json;
        let printed = self.console.documents();
        self.console.forget_error();
        let exit = match self.prepare(words) {
            Ok((prepared, options)) => {
                // Said when the line runs (a script's lines are all prepared first, to check them).
                if let Prepared::Plugin { plugin, command, call, .. } = &prepared {
                    for warning in self.misspelt(plugin.name(), command, call) {
                        self.console.warn(&warning);
                    }
                }
                self.execute(prepared, &options).await
            }
            Err(e) => {
                self.console.error(&e);
                Exit::Usage
            }
        };
        if json && exit != Exit::Success && self.console.documents() == printed {
            self.console.out_json(render::error_document(exit, &self.console.last_error()));
        }
        exit
    }

    /// Check a command line without running anything: built-in or plugin command, arguments.
    pub fn prepare(&self, words: Vec<String>) -> Result<(Prepared, LineOptions), String> {
        let (words, options) = self.line_options(words)?;
        let Some(first) = words.first() else { return Err("empty command".into()) };
        let prepared = match first.as_str() {
            "exit" | "quit" => Prepared::Exit,
            "plan" => {
                let mut rest = Vec::with_capacity(words.len());
                let mut save_to = None;
                let mut iter = words[1..].iter();
                while let Some(word) = iter.next() {
                    match (word.as_str(), word.strip_prefix("--out=")) {
                        ("--out", _) => save_to = Some(iter.next().ok_or("plan: --out needs a file name")?.into()),
                        (_, Some(file)) => save_to = Some(file.into()),
                        _ => rest.push(word.clone()),
                    }
                }
                let (mut prepared, mut options) = self.prepare(rest)?;
                let Prepared::Plugin { save_to: to, .. } = &mut prepared else {
                    return Err("plan: give a plugin command, e.g. `plan pg set-config alpha-app work_mem 8MB` (add --out FILE to save it)".into());
                };
                *to = save_to;
                options.dry_run = true;
                return Ok((prepared, options));
            }
            "apply" => match &words[1..] {
                [_file] => Prepared::Builtin(first.clone(), words[1..].to_vec()),
                _ => return Err("usage: apply FILE (a plan saved with `plan COMMAND… --out FILE`)".into()),
            },
            "inventory" => match &words[1..] {
                [] => Prepared::Builtin(first.clone(), Vec::new()),
                [import, format, _file] if import == "import" && opsh_host::import::FORMATS.contains(&format.as_str()) => {
                    Prepared::Builtin(first.clone(), words[1..].to_vec())
                }
                _ => {
                    return Err(format!(
                        "usage: inventory (shows it), or inventory import FORMAT FILE (prints a TOML inventory; FORMAT: {})",
                        opsh_host::import::FORMATS.join(", ")
                    ));
                }
            },
            "help" | "plugins" | "journal" => Prepared::Builtin(first.clone(), words[1..].to_vec()),
            "doctor" => {
                opsh_host::doctor::Scope::of(&self.caps.inventory, &words[1..])?;
                Prepared::Builtin(first.clone(), words[1..].to_vec())
            }
            "state" => match &words[1..] {
                [init] if init == "init" => Prepared::Builtin(first.clone(), words[1..].to_vec()),
                _ => return Err("usage: state init (creates or migrates opsh's schema in the [state] database)".into()),
            },
            "resume" => match &words[1..] {
                [_run] => Prepared::Builtin(first.clone(), words[1..].to_vec()),
                _ => return Err("usage: resume RUN (`journal` lists the runs)".into()),
            },
            "retry" => match &words[1..] {
                [_run, _step] => Prepared::Builtin(first.clone(), words[1..].to_vec()),
                _ => return Err("usage: retry RUN STEP (`journal RUN` lists its steps)".into()),
            },
            name => {
                let plugin = self.registry.find(name).ok_or_else(|| {
                    let mut known: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
                    known.extend(self.registry.plugins.iter().map(|p| p.name()));
                    if name.starts_with('-') {
                        let hint = opsh_host::suggest::closest(name, runbook::GLOBAL_FLAGS.iter().copied())
                            .map(|f| format!(" — did you mean {f}?"))
                            .unwrap_or_default();
                        return format!("unknown option {name}{hint} (`opsh --help` lists the options)");
                    }
                    let hint = opsh_host::suggest::closest(name, known.iter().copied()).map(|c| format!(" — did you mean {c}?")).unwrap_or_default();
                    format!("unknown command {name:?}{hint}; known: {} (try `help`)", known.join(", "))
                })?;
                let (command, call) = runbook::parse_invocation(&plugin.info, &words[1..]).map_err(|e| e.0)?;
                Prepared::Plugin { plugin: plugin.clone(), command: command.clone(), call, line: shell_words::join(&words), save_to: None }
            }
        };
        Ok((prepared, options))
    }

    /// An argument naming an inventory host, database or topology (or one of a plugin's
    /// inventory-read choices, `@otb-node`) with a name the inventory does not have but has one
    /// close to: "did you mean". The plugin still decides (it refuses what it cannot find).
    fn misspelt(&self, plugin: &str, command: &CommandInfo, call: &Invocation) -> Vec<String> {
        let inventory = &self.caps.inventory;
        let mut out = Vec::new();
        for arg in &command.args {
            let (what, names): (&str, Vec<String>) = match &arg.completion {
                Completion::Host => ("host", inventory.hosts.keys().cloned().chain([opsh_host::inventory::LOCAL_HOST.to_string()]).collect()),
                Completion::Database => ("database", inventory.databases.keys().cloned().collect()),
                Completion::Topology => ("topology", inventory.topologies.keys().cloned().collect()),
                Completion::Choices(choices) if choices.iter().any(|c| c.starts_with('@')) => {
                    (arg.name.as_str(), choices.iter().flat_map(|c| inventory.completion_words(plugin, c)).collect())
                }
                _ => continue,
            };
            for value in call.args.iter().filter(|(n, _)| *n == arg.name).flat_map(|(_, v)| v) {
                if names.iter().any(|n| n == value) {
                    continue;
                }
                if let Some(close) = opsh_host::suggest::closest(value, names.iter().map(String::as_str)) {
                    out.push(format!("{what} {value:?} is not in the inventory ({}) — did you mean {close}?", inventory.source.display()));
                }
            }
        }
        out
    }

    pub fn line_options(&self, words: Vec<String>) -> Result<(Vec<String>, LineOptions), String> {
        let mut options = self.defaults.clone();
        let mut rest = Vec::with_capacity(words.len());
        let mut iter = words.into_iter();
        while let Some(word) = iter.next() {
            match word.as_str() {
                "--yes" | "-y" => options.yes = true,
                "--dry-run" => options.dry_run = true,
                "--check" => options.check = true,
                "--local-state" => options.local_state = true,
                "--inventory" => return Err("--inventory applies to the whole session: give it when starting opsh (`opsh --inventory PATH …`)".into()),
                "--output" | "--lang" => {
                    let value = iter.next().ok_or_else(|| format!("{word} needs a value"))?;
                    set_option(&mut options, &word, &value)?;
                }
                _ => match word.split_once('=') {
                    Some((key @ ("--output" | "--lang"), value)) => set_option(&mut options, key, value)?,
                    Some(("--inventory", _)) => {
                        return Err("--inventory applies to the whole session: give it when starting opsh (`opsh --inventory PATH …`)".into());
                    }
                    _ => rest.push(word),
                },
            }
        }
        Ok((rest, options))
    }

    fn engine(&self) -> Engine<'_> {
        let console = self.console.clone();
        let redact: Redactor = Arc::new(move |text: &str| console.redact(text));
        Engine {
            sandbox: &self.sandbox,
            caps: &self.caps,
            events: &self.events,
            operator: self.console.as_ref(),
            journal_dir: self.paths.journal_dir(),
            lock_dir: self.paths.lock_dir(),
            redact,
            interrupt: self.interrupt.clone(),
            parallel: self.caps.inventory.defaults.parallel,
        }
    }

    pub async fn execute(&self, prepared: Prepared, options: &LineOptions) -> Exit {
        self.console.set_lang(&options.lang);
        self.console.set_output(options.output);
        let run_options = RunOptions { yes: options.yes, dry_run: options.dry_run, lang: options.lang.clone(), local_state: options.local_state };
        let outcome: Outcome = match prepared {
            Prepared::Exit => return Exit::Success,
            Prepared::Builtin(name, args) if name == "resume" => self.engine().resume(&self.registry, &args[0], &run_options).await,
            Prepared::Builtin(name, args) if name == "retry" => self.engine().retry(&self.registry, &args[0], &args[1], &run_options).await,
            Prepared::Builtin(name, args) if name == "doctor" => return self.doctor(&args, options).await,
            Prepared::Builtin(name, args) if name == "apply" => self.engine().apply_saved(&self.registry, std::path::Path::new(&args[0]), &run_options).await,
            Prepared::Plugin { plugin, command, call, line, save_to: Some(file) } => {
                self.engine().save_plan(&plugin, &command, &call, &line, &run_options, &file).await
            }
            Prepared::Builtin(name, args) => return self.builtin(&name, &args, options),
            Prepared::Plugin { plugin, command, call, line, save_to: None } => {
                if options.check && command.kind != opsh_host::sandbox::bindings::runbook::CommandKind::Read {
                    self.console.error(&format!("--check applies to read commands (e.g. `{} status --check`); {line} changes things", plugin.name()));
                    return Exit::Usage;
                }
                self.engine().run(&plugin, &command, &call, &line, &run_options).await
            }
        };
        let changed = match &outcome {
            Outcome::Done { run: Some(run), results, .. } if !results.is_empty() => Some(format!("run {run} changed what it planned")),
            Outcome::Failed { changed: true, run, .. } => Some(format!("run {} changed part of what it planned", run.as_deref().unwrap_or("?"))),
            Outcome::Unknown { run, .. } => Some(format!("run {} may have changed something (outcome unknown)", run.as_deref().unwrap_or("?"))),
            _ => None,
        };
        if let Some(changed) = changed {
            self.changes.lock().unwrap_or_else(|p| p.into_inner()).push(changed);
        }
        let problems = if options.check { render::problems(&outcome, &options.lang) } else { Vec::new() };
        let exit = if problems.is_empty() { outcome.exit() } else { Exit::CheckFailed };
        render::outcome(&self.console, options, &outcome, exit);
        if !problems.is_empty() && options.output == OutputFormat::Text {
            self.console.error(&format!("check failed: {} problem(s): {}", problems.len(), problems.join("; ")));
        }
        exit
    }

    fn builtin(&self, name: &str, args: &[String], options: &LineOptions) -> Exit {
        match name {
            "journal" => self.journal(args, options),
            "state" => self.state_init(options),
            "help" => render::help(&self.console, self, args, options),
            "plugins" => {
                render::plugins(&self.console, &self.registry, &self.caps.inventory, options);
                Exit::Success
            }
            "inventory" if !args.is_empty() => self.import(&args[1], &args[2], options),
            "inventory" => {
                render::inventory(&self.console, &self.caps.inventory, options);
                Exit::Success
            }
            _ => Exit::Usage,
        }
    }
}

impl Session {
    /// `doctor`: ask the plugins what they need, then check it and every host and database in
    /// scope at once.
    async fn doctor(&self, args: &[String], options: &LineOptions) -> Exit {
        use futures_util::FutureExt;
        use opsh_host::doctor;
        let scope = match doctor::Scope::of(&self.caps.inventory, args) {
            Ok(scope) => scope,
            Err(e) => {
                self.console.error(&e);
                return Exit::Usage;
            }
        };
        if scope.hosts.is_empty() && scope.databases.is_empty() {
            self.console
                .error(&format!("doctor: the inventory ({}) names no host or database; give one with --inventory PATH", self.caps.inventory.source.display()));
            return Exit::Failed;
        }
        let started = std::time::Instant::now();
        let run_options = RunOptions { yes: false, dry_run: true, lang: options.lang.clone(), local_state: options.local_state };
        let engine = self.engine();
        // The plugins are asked what they need while every host and database is reached.
        let asked = doctor::requirements(&engine, &self.registry, &run_options).shared();
        let needs = asked.clone().map(|(needs, _)| needs);
        let (examined, (_, mut checks)) = tokio::join!(doctor::examine(&self.caps, &scope, needs), asked);
        checks.extend(examined);
        let exit = if checks.iter().any(|c| c.verdict == doctor::Verdict::Failed) { Exit::CheckFailed } else { Exit::Success };
        render::doctor(&self.console, options, &checks, started.elapsed(), exit);
        exit
    }

    /// `inventory import FORMAT FILE`: a TOML inventory on stdout, what to check on stderr.
    fn import(&self, format: &str, file: &str, options: &LineOptions) -> Exit {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                self.console.error(&format!("inventory import: cannot read {file}: {e}"));
                return Exit::Failed;
            }
        };
        match opsh_host::import::import(format, &text, file) {
            Ok(imported) => {
                if options.output == OutputFormat::Json {
                    let doc = serde_json::json!({ "toml": imported.toml, "warnings": imported.warnings });
                    self.console.out_json(doc);
                } else {
                    print!("{}", imported.toml);
                    for warning in &imported.warnings {
                        self.console.warn(warning);
                    }
                }
                Exit::Success
            }
            Err(e) => {
                self.console.error(&format!("inventory import {format} {file}: {e}"));
                Exit::Usage
            }
        }
    }

    /// `journal`: this machine's runs, or in team mode every operator's from the state
    /// database (after pushing what this machine journaled while it could not reach it).
    fn journal(&self, args: &[String], options: &LineOptions) -> Exit {
        let dir = self.paths.journal_dir();
        if self.caps.inventory.state.is_none() || options.local_state {
            return render::journal(&self.console, &render::JournalSource::Local(&dir), args, options);
        }
        let db = match self.state_db() {
            Ok(db) => db,
            Err(e) => {
                self.console.error(&format!("journal: {e}; add --local-state to read this machine's journal only"));
                return Exit::Failed;
            }
        };
        if let Err(e) = db.check_schema().and_then(|()| db.sync(&dir)) {
            self.console.error(&format!("journal: {e}; add --local-state to read this machine's journal only"));
            return Exit::Failed;
        }
        render::journal(&self.console, &render::JournalSource::Shared(&db), args, options)
    }

    fn state_db(&self) -> Result<opsh_host::state::StateDb, String> {
        opsh_host::state::StateDb::connect(&self.caps.inventory)?.ok_or_else(|| {
            format!(
                "the inventory ({}) has no [state] section: add `[state]` with `database = \"NAME\"` (see README: Team mode)",
                self.caps.inventory.source.display()
            )
        })
    }

    /// `state init`: create opsh's schema in the state database, or migrate it.
    fn state_init(&self, options: &LineOptions) -> Exit {
        if self.caps.inventory.state.is_none() {
            self.console.error(&self.state_db().err().unwrap_or_default());
            return Exit::Usage;
        }
        let db = match self.state_db() {
            Ok(db) => db,
            Err(e) => {
                self.console.error(&format!("state init: {e}"));
                return Exit::Failed;
            }
        };
        match db.init() {
            Ok((before, now)) => {
                let said = match before {
                    0 => format!("state database {}: opsh schema version {now} created", db.name),
                    b if b == now => format!("state database {}: opsh schema version {now} is already there; nothing to do", db.name),
                    b => format!("state database {}: opsh schema migrated from version {b} to {now}", db.name),
                };
                if options.output == OutputFormat::Json {
                    self.console.out_json(serde_json::json!({ "database": db.name, "version": now, "was": before }));
                } else {
                    self.console.out(&said);
                }
                Exit::Success
            }
            Err(e) if e.contains("newer than this opsh") => {
                self.console.error(&format!("state init: {e}"));
                Exit::Refused
            }
            Err(e) => {
                self.console.error(&format!("state init: {e}"));
                Exit::Failed
            }
        }
    }
}

fn set_option(options: &mut LineOptions, key: &str, value: &str) -> Result<(), String> {
    match (key, value) {
        ("--output", "json") => options.output = OutputFormat::Json,
        ("--output", "text") => options.output = OutputFormat::Text,
        ("--lang", "en" | "ja") => options.lang = value.to_string(),
        ("--output", _) => return Err(format!("--output takes text or json, not {value:?}")),
        _ => return Err(format!("--lang takes en or ja, not {value:?}")),
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("cannot restrict {}", dir.display()))?;
    Ok(())
}
