//! The runbook engine: plan → preview → confirm → lock → journal → apply each step (or a group
//! of steps concurrently) → check it → verify the goal; and `resume` / `retry` of a journaled run.
//!
//! Guarantees, for every plugin:
//! - nothing changes before confirmation (or `--yes`); a dry run changes nothing (the plan phase
//!   is read-only at the capability level);
//! - an `intent` record is on disk before a step's effect starts and a `result` record after it;
//! - a step whose file effects no longer match what the plan read is not applied (stale plan);
//! - after a crash, `resume` asks each unfinished step's `check` before applying it, so a step
//!   that took effect is never applied twice;
//! - a timeout or an aborted step is "outcome unknown", never "failed";
//! - the first failure stops the run; the message says what was changed and how to resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use similar::TextDiff;

use super::{Confirmation, Operator, Outcome, Preview, ProbeRun, RunOptions, StepPreview, StepReport, pick, pick_text};
use super::{effects, saved};
use crate::capability::CapabilityError;
use crate::capability::{Capabilities, file_edit};
use crate::grants::Capability;
use crate::journal::{Journal, Record, Redactor, RunLog, SCHEMA, StepState, StepStatus};
use crate::journal::{SavedFrom, StateMark};
use crate::lock;
use crate::plan::{Effect, Plan, Step};
use crate::plugins::Registry;
use crate::sandbox::bindings::host::LogLevel;
use crate::sandbox::bindings::runbook::{CheckState, CommandError, CommandInfo, CommandKind, Invocation, Table};
use crate::sandbox::bindings::types::CapabilityError as WitError;
use crate::sandbox::{CallError, Events, LoadedPlugin, Sandbox};
use crate::state::StateDb;
use crate::timefmt;

/// Ctrl-C presses during a run: the first stops the run after the current step, the second
/// aborts the current step.
/// When nothing is being applied, a press either ends opsh (scripts, `-c`) or, in the shell,
/// cancels the running read-only command (`cancel_idle`).
#[derive(Clone)]
pub struct Interrupt {
    presses: Arc<tokio::sync::watch::Sender<u32>>,
    applying: Arc<AtomicBool>,
    idle_presses: Arc<tokio::sync::watch::Sender<u64>>,
    cancel_idle: Arc<AtomicBool>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self {
            presses: Arc::new(tokio::sync::watch::channel(0).0),
            applying: Arc::new(AtomicBool::new(false)),
            idle_presses: Arc::new(tokio::sync::watch::channel(0).0),
            cancel_idle: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Interrupt {
    /// In the shell: a press while nothing is applied cancels the command instead of ending opsh.
    pub fn set_cancel_idle(&self, cancel: bool) {
        self.cancel_idle.store(cancel, Ordering::SeqCst);
    }

    pub fn cancels_idle(&self) -> bool {
        self.cancel_idle.load(Ordering::SeqCst)
    }

    pub fn press_idle(&self) {
        self.idle_presses.send_modify(|n| *n += 1);
    }

    /// Resolves at the next press while nothing is applied (subscribe before running the command).
    pub fn idle_pressed(&self) -> impl Future<Output = ()> + use<> {
        let mut receiver = self.idle_presses.subscribe();
        async move {
            let _ = receiver.changed().await;
        }
    }

    /// Count a press; returns how many there were during this run.
    pub fn press(&self) -> u32 {
        self.presses.send_modify(|n| *n += 1);
        *self.presses.borrow()
    }

    pub fn presses(&self) -> u32 {
        *self.presses.borrow()
    }

    /// Whether a run is applying steps now (otherwise Ctrl-C may simply end the process).
    pub fn applying(&self) -> bool {
        self.applying.load(Ordering::SeqCst)
    }

    fn begin(&self) -> ApplyingGuard {
        self.presses.send_replace(0);
        self.applying.store(true, Ordering::SeqCst);
        ApplyingGuard(self.applying.clone())
    }

    async fn second_press(&self) {
        let mut receiver = self.presses.subscribe();
        let _ = receiver.wait_for(|n| *n >= 2).await;
    }
}

struct ApplyingGuard(Arc<AtomicBool>);

impl Drop for ApplyingGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The probes of one command's plugin calls: collected while planning (to show with the plan),
/// journaled as they run once the run has a journal.
struct Trace {
    inner: Arc<dyn Events>,
    pending: std::sync::Mutex<Vec<ProbeRun>>,
    journal: std::sync::Mutex<Option<Arc<Journal>>>,
}

impl Trace {
    fn new(inner: &Arc<dyn Events>) -> Arc<Self> {
        Arc::new(Self { inner: inner.clone(), pending: Default::default(), journal: Default::default() })
    }

    /// The probes run so far and not journaled.
    fn pending(&self) -> Vec<ProbeRun> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on every probe is journaled as it runs; the pending ones first.
    fn attach(&self, journal: &Arc<Journal>) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for probe in pending {
            let _ = journal.append(&probe_record(probe));
        }
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = Some(journal.clone());
    }
}

fn probe_record(probe: ProbeRun) -> Record {
    Record::Probe { at: timefmt::now(), during: probe.during, host: probe.host, command: probe.command }
}

impl Events for Trace {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        self.inner.log(plugin, level, message);
    }

    fn progress(&self, plugin: &str, message: &str, fraction: Option<f32>) {
        self.inner.progress(plugin, message, fraction);
    }

    fn probe(&self, plugin: &str, phase: &str, host: &str, command: &str) {
        self.inner.probe(plugin, phase, host, command);
        let probe = ProbeRun { during: phase.to_string(), host: host.to_string(), command: command.to_string() };
        match self.journal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(journal) => {
                let _ = journal.append(&probe_record(probe));
            }
            None => self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(probe),
        }
    }
}

pub struct Engine<'a> {
    pub sandbox: &'a Sandbox,
    pub caps: &'a Arc<Capabilities>,
    pub events: &'a Arc<dyn Events>,
    pub operator: &'a dyn Operator,
    pub journal_dir: PathBuf,
    pub lock_dir: PathBuf,
    pub redact: Redactor,
    pub interrupt: Interrupt,
    /// At most this many steps of a group run at once.
    pub parallel: usize,
}

/// A confirmed plan about to be journaled and applied.
struct Start<'a> {
    plugin: &'a LoadedPlugin,
    call: &'a Invocation,
    line: &'a str,
    lang: &'a str,
    plan: Plan,
    previews: Vec<StepPreview>,
    trace: Arc<Trace>,
    who: String,
    saved: Option<SavedFrom>,
    /// How long planning took (none for a saved plan: it was made earlier).
    plan_ms: Option<u64>,
}

/// One run being applied.
struct RunCtx<'r> {
    plugin: &'r LoadedPlugin,
    call: &'r Invocation,
    plan: &'r Plan,
    previews: &'r [StepPreview],
    journal: &'r Journal,
    /// The events every plugin call of the run reports to (its probes are journaled).
    events: Arc<dyn Events>,
    lang: &'r str,
    /// `run`, `resume` or `retry`: written with each intent.
    by: &'r str,
    who: String,
    /// Per step: how many attempts earlier processes made, and the names of the commands of its
    /// last attempt whose outcome was never seen (resume, retry; empty for a new run).
    earlier: Vec<(usize, Vec<(String, String)>)>,
    /// Ask each step's check right before applying it (resume): a step found in effect is
    /// skipped, a stale one stops the run. Asked lazily, because a check only means something
    /// once every earlier step is in place.
    check_first: bool,
}

/// A journaled run reopened for resume or retry.
struct Reopened {
    log: RunLog,
    plugin: Arc<LoadedPlugin>,
    call: Invocation,
    plan: Plan,
    line: String,
    run: String,
    journal: Arc<Journal>,
    locks: Held,
}

/// The locks of a run: this data directory's, and the state database's in team mode (held by
/// its session; given back when the run ends, or by the server when the session does).
struct Held {
    _local: lock::Locks,
    _shared: Option<SharedLocks>,
}

struct SharedLocks(Arc<StateDb>);

impl Drop for SharedLocks {
    fn drop(&mut self) {
        self.0.unlock_all();
    }
}

/// Where a change keeps its locks and journal: the state database (team mode) or not, and
/// what its journal says about that.
struct StateChoice {
    db: Option<Arc<StateDb>>,
    mark: Option<StateMark>,
}

/// Why applying stopped early.
enum Stop {
    Failed {
        message: String,
        step: Option<String>,
    },
    Unknown {
        message: String,
        step: Option<String>,
    },
    /// A step ran (it may have taken effect) but its result could not be journaled.
    Unrecorded {
        message: String,
        step: String,
    },
    /// A step no longer fits the live state.
    Stale {
        message: String,
        step: String,
    },
    Interrupted,
}

impl Engine<'_> {
    /// Run a plugin command: tables for a read command, the full runbook for a change.
    pub async fn run(&self, plugin: &LoadedPlugin, command: &CommandInfo, call: &Invocation, line: &str, options: &RunOptions) -> Outcome {
        let lang = options.lang.as_str();
        let who = format!("{} {}", plugin.name(), command.name);
        if command.kind == CommandKind::Read {
            return match self.sandbox.read(plugin, call, self.caps, self.events, lang).await {
                Ok(reading) => Outcome::Tables {
                    tables: reading.tables.into_iter().map(|t| self.reveal_table(t)).collect(),
                    none_answered: reading.none_answered.map(|why| format!("{who}: {why}")),
                },
                Err(e) => self.call_failure(&who, e, false, None, None, lang, Vec::new()),
            };
        }
        let planning = Instant::now();
        let (plan, previews, trace) = match self.make_plan(plugin, call, lang, &who).await {
            Ok(made) => made,
            Err(outcome) => return outcome,
        };
        let plan_ms = Some(u64::try_from(planning.elapsed().as_millis()).unwrap_or(u64::MAX));
        let probes = trace.pending();
        if options.dry_run {
            let (summary, warnings) = (self.reveal(pick_text(&plan.summary, lang)), self.warnings(&plan, lang));
            return Outcome::Planned { summary, warnings, steps: previews, probes };
        }
        self.start(Start { plugin, call, line, lang, plan, previews, trace, who, saved: None, plan_ms }, options).await
    }

    /// `plan COMMAND… --out FILE`: the plan, shown and written to FILE for `apply FILE`.
    pub async fn save_plan(&self, plugin: &LoadedPlugin, command: &CommandInfo, call: &Invocation, line: &str, options: &RunOptions, out: &Path) -> Outcome {
        let (lang, who) = (options.lang.as_str(), format!("{} {}", plugin.name(), command.name));
        if command.kind == CommandKind::Read {
            return Outcome::Usage { message: format!("{line} only reads: it has no plan to save") };
        }
        let (plan, previews, trace) = match self.make_plan(plugin, call, lang, &who).await {
            Ok(made) => made,
            Err(outcome) => return outcome,
        };
        let saved = saved::SavedPlan {
            kind: saved::KIND.into(),
            schema: saved::SCHEMA,
            created: timefmt::now(),
            planned_by: saved::operator(),
            line: line.to_string(),
            plugin: plugin.name().to_string(),
            plugin_version: plugin.info.version.clone(),
            component: format!("sha256:{}", plugin.sha256),
            inventory: self.caps.inventory.source.display().to_string(),
            inventory_sha256: match saved::digest_of(&self.caps.inventory.source) {
                Ok(digest) => digest,
                Err(e) => return Outcome::Failed { message: format!("{who}: {e:#}"), changed: false, step: None, run: None, results: Vec::new() },
            },
            lang: lang.to_string(),
            invocation: call.into(),
            files: saved::planned_files(&plan),
            plan,
            previews: previews.clone(),
            probes: trace.pending(),
        };
        let redact = self.redact.clone();
        match saved.write(out, &|text| redact(text)) {
            Ok(()) => Outcome::Saved {
                file: out.display().to_string(),
                summary: self.reveal(pick_text(&saved.plan.summary, lang)),
                warnings: self.warnings(&saved.plan, lang),
                steps: previews,
                probes: saved.probes,
            },
            Err(e) => Outcome::Failed { message: format!("{who}: {e:#}; nothing was changed"), changed: false, step: None, run: None, results: Vec::new() },
        }
    }

    /// `apply FILE`: exactly the saved plan, if the plugin, the inventory and every file it
    /// edits are as they were when it was made.
    pub async fn apply_saved(&self, registry: &Registry, file: &Path, options: &RunOptions) -> Outcome {
        let saved = match saved::SavedPlan::read(file) {
            Ok(saved) => saved,
            Err(e) => return Outcome::Usage { message: format!("{e:#}") },
        };
        let who = format!("apply {} ({})", file.display(), saved.line);
        let refuse = |why: String| Outcome::refused(format!("{who}: {why}; nothing was changed — make the plan again"));
        let Some(plugin) = registry.find(&saved.plugin) else {
            return refuse(format!("plugin {} is not loaded here", saved.plugin));
        };
        let loaded = format!("sha256:{}", plugin.sha256);
        if loaded != saved.component {
            return refuse(format!("plugin {} changed since the plan was made (planned with {}, loaded is {loaded})", saved.plugin, saved.component));
        }
        if let Err(why) = fits_its_plugin(plugin, &saved.plan).and_then(|()| crate::sandbox::size::plan(&saved.plan)) {
            return refuse(why);
        }
        let inventory = self.caps.inventory.source.display().to_string();
        match saved::digest_of(&self.caps.inventory.source) {
            Ok(digest) if digest == saved.inventory_sha256 && inventory == saved.inventory => {}
            Ok(_) => return refuse(format!("the inventory changed since the plan was made ({} then, {inventory} now)", saved.inventory)),
            Err(e) => return refuse(format!("{e:#}")),
        }
        // What the file says it edits is checked against the plan itself, not its own list.
        for planned in &saved::planned_files(&saved.plan) {
            match file_edit::read(&self.caps.remote, &planned.host, &planned.path, true, &self.caps.bounds).await {
                Ok(now) if now.sha256 == planned.sha256 => {}
                Ok(now) => {
                    return refuse(format!(
                        "{}:{} changed since the plan read it (sha256 {} → {})",
                        planned.host,
                        planned.path,
                        short(&planned.sha256),
                        if now.exists { short(&now.sha256) } else { "no file".into() }
                    ));
                }
                Err(e) => return refuse(format!("cannot read {}:{} to check it: {e}", planned.host, planned.path)),
            }
        }
        let lang = options.lang.as_str();
        let warnings = self.warnings(&saved.plan, lang);
        let summary =
            format!("{} (saved plan {}, made by {} at {})", self.reveal(pick_text(&saved.plan.summary, lang)), file.display(), saved.planned_by, saved.created);
        // What is shown is made from the plan that will run, never taken from the file.
        let previews = self.previews(plugin.name(), &saved.plan, lang).await;
        self.operator.plan(plugin.name(), &summary, &warnings, &previews, &saved.probes);
        if options.dry_run {
            return Outcome::Planned { summary, warnings, steps: previews, probes: saved.probes };
        }
        let call = Invocation::from(&saved.invocation);
        let from = SavedFrom { file: file.display().to_string(), planned_by: saved.planned_by.clone(), planned_at: saved.created.clone() };
        let trace = Trace::new(self.events);
        let start = Start { plugin, call: &call, line: &saved.line, lang, plan: saved.plan, previews, trace, who, saved: Some(from), plan_ms: None };
        self.start(start, options).await
    }

    /// The plan's warnings, and what stays as it is if the run stops after a change.
    fn warnings(&self, plan: &Plan, lang: &str) -> Vec<String> {
        let stopped = plan.if_stopped.iter().map(|t| format!("if the run stops after a change: {}", self.reveal(pick_text(t, lang))));
        plan.warnings.iter().map(|w| self.reveal(pick_text(w, lang))).chain(stopped).collect()
    }

    /// Ask the plugin for its plan; preview it (file diffs read now) and show it.
    async fn make_plan(&self, plugin: &LoadedPlugin, call: &Invocation, lang: &str, who: &str) -> Result<(Plan, Vec<StepPreview>, Arc<Trace>), Outcome> {
        let trace = Trace::new(self.events);
        let events: Arc<dyn Events> = trace.clone();
        let plan = match self.sandbox.plan(plugin, call, self.caps, &events, lang).await {
            Ok(plan) => plan,
            Err(e) => return Err(self.call_failure(&format!("{who} (planning)"), e, false, None, None, lang, Vec::new())),
        };
        let previews = self.previews(plugin.name(), &plan, lang).await;
        let warnings = self.warnings(&plan, lang);
        self.operator.plan(plugin.name(), &self.reveal(pick_text(&plan.summary, lang)), &warnings, &previews, &trace.pending());
        Ok((plan, previews, trace))
    }

    /// From confirmation on: journal, lock, every step, verification.
    async fn start(&self, start: Start<'_>, options: &RunOptions) -> Outcome {
        let Start { plugin, call, line, lang, plan, previews, trace, who, saved, plan_ms } = start;
        let events: Arc<dyn Events> = trace.clone();
        if plan.steps.is_empty() {
            return Outcome::Done { run: None, steps: previews, results: Vec::new(), verification: Vec::new(), message: "nothing to do".into() };
        }
        if let Some(refusal) = self.confirm(options, plan.steps.len(), &who) {
            return refusal;
        }
        let check_first = saved.is_some();
        let state = match self.state(options, &who) {
            Ok(state) => state,
            Err(refusal) => return refusal,
        };
        let journal = match Journal::create(&self.journal_dir, self.redact.clone()) {
            Ok(journal) => Arc::new(match &state.db {
                Some(db) => journal.mirrored(db.clone()),
                None => journal,
            }),
            Err(e) => {
                return Outcome::Failed { message: format!("{who}: {e:#}; nothing was changed"), changed: false, step: None, run: None, results: Vec::new() };
            }
        };
        let record = Record::Run {
            schema: SCHEMA,
            run: journal.run.clone(),
            at: timefmt::now(),
            pid: std::process::id(),
            plugin: plugin.name().to_string(),
            plugin_version: plugin.info.version.clone(),
            line: line.to_string(),
            invocation: call.into(),
            lang: lang.to_string(),
            inventory: self.caps.inventory.source.display().to_string(),
            plan: plan.clone(),
            previews: previews.clone(),
            operator: saved::operator(),
            component: format!("sha256:{}", plugin.sha256),
            saved,
            state: state.mark.clone(),
            plan_ms,
        };
        if let Err(e) = journal.append(&record) {
            return Outcome::Failed {
                message: format!("{who}: {e:#}; nothing was changed"),
                changed: false,
                step: None,
                run: Some(journal.run.clone()),
                results: Vec::new(),
            };
        }
        trace.attach(&journal);
        let _locks = match self.lock(&plan, &journal.run, state.db.as_ref()) {
            Ok(locks) => locks,
            Err(message) => {
                let message = format!("{who}: {message}; nothing was changed");
                let _ = journal.end("refused", crate::Exit::Refused.code(), &message);
                return Outcome::Refused { message, run: Some(journal.run.clone()) };
            }
        };
        // A saved plan's steps are each checked first: one found in effect is skipped, one that no
        // longer fits the live state stops the run.
        let ctx = RunCtx { plugin, call, plan: &plan, previews: &previews, journal: &journal, events, lang, by: "run", who, earlier: Vec::new(), check_first };
        let mut states = vec![StepState::NotStarted; plan.steps.len()];
        self.execute(&ctx, &mut states).await
    }

    /// Continue a journaled run from the first step not known to be done.
    pub async fn resume(&self, registry: &Registry, run: &str, options: &RunOptions) -> Outcome {
        let Reopened { log, plugin, call, plan, line, run, journal, locks: _locks } = match self.reopen(registry, run, "resume", options) {
            Ok(reopened) => reopened,
            Err(outcome) => return outcome,
        };
        let lang = options.lang.as_str();
        let who = format!("resume {run} ({line})");
        // Shown as it would run now (addresses of today's inventory, files as they are).
        let previews = self.previews(plugin.name(), &plan, lang).await;
        let warnings = changed_plugin(&log, &plugin);
        let mut states = log.states();
        if states.iter().all(|s| *s == StepState::Done) && log.status() == "done" {
            return Outcome::Done {
                run: Some(run.clone()),
                steps: previews,
                results: Vec::new(),
                verification: Vec::new(),
                message: format!("run {run} finished already; nothing to resume"),
            };
        }
        let done = states.iter().filter(|s| **s == StepState::Done).count();
        let remaining: Vec<StepPreview> = previews.iter().zip(&states).filter(|(_, s)| **s != StepState::Done).map(|(p, _)| p.clone()).collect();
        let summary = format!("resume {run}: {line} — {done} of {} steps done, {} to go", plan.steps.len(), remaining.len());
        self.operator.plan(plugin.name(), &summary, &warnings, &remaining, &[]);
        if options.dry_run {
            return Outcome::Planned { summary, warnings, steps: remaining, probes: Vec::new() };
        }
        if !remaining.is_empty()
            && let Some(refusal) = self.confirm(options, remaining.len(), &who)
        {
            return refusal;
        }
        let events = self.journaled_events(&journal);
        let ctx = RunCtx {
            plugin: &plugin,
            call: &call,
            plan: &plan,
            previews: &previews,
            journal: &journal,
            events,
            lang,
            by: "resume",
            who,
            earlier: earlier(&log, &plan),
            check_first: true,
        };
        self.execute(&ctx, &mut states).await
    }

    /// Apply one step of a journaled run again (after fixing what made it fail).
    pub async fn retry(&self, registry: &Registry, run: &str, step_id: &str, options: &RunOptions) -> Outcome {
        let Reopened { log, plugin, call, plan, line, run, journal, locks: _locks } = match self.reopen(registry, run, &format!("retry {step_id}"), options) {
            Ok(reopened) => reopened,
            Err(outcome) => return outcome,
        };
        let lang = options.lang.as_str();
        let who = format!("retry {run} {step_id} ({line})");
        let previews = self.previews(plugin.name(), &plan, lang).await;
        let warnings = changed_plugin(&log, &plugin);
        let Some(index) = plan.steps.iter().position(|s| s.id == step_id) else {
            let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
            return Outcome::Usage { message: format!("run {run} has no step {step_id:?}; its steps: {}", ids.join(", ")) };
        };
        let step = &plan.steps[index];
        let events = self.journaled_events(&journal);
        let check = self.sandbox.check(&plugin, &call, step, self.caps, &events, lang).await;
        let (state, detail) = match check {
            Ok(check) => (check.state, self.reveal(pick(&check.detail, lang))),
            Err(e) => (CheckState::Unknown, self.call_error_text(e, lang)),
        };
        let _ = journal.append(&Record::Check { at: timefmt::now(), index, step: step.id.clone(), state: check_name(state).into(), detail: detail.clone() });
        match state {
            CheckState::Done => {
                return Outcome::Done {
                    run: Some(run.clone()),
                    steps: vec![previews[index].clone()],
                    results: Vec::new(),
                    verification: Vec::new(),
                    message: format!("step {step_id} is already in effect ({detail}); continue with `opsh resume {run}`"),
                };
            }
            CheckState::Stale => return Outcome::Refused { message: format!("{who}: the step no longer fits the live state: {detail}"), run: Some(run) },
            CheckState::NotDone | CheckState::Unknown => {}
        }
        let summary = format!("retry step {step_id} of {run}: {line}");
        self.operator.plan(plugin.name(), &summary, &warnings, std::slice::from_ref(&previews[index]), &[]);
        if options.dry_run {
            return Outcome::Planned { summary, warnings, steps: vec![previews[index].clone()], probes: Vec::new() };
        }
        if let Some(refusal) = self.confirm(options, 1, &who) {
            return refusal;
        }
        let ctx = RunCtx {
            plugin: &plugin,
            call: &call,
            plan: &plan,
            previews: &previews,
            journal: &journal,
            events,
            lang,
            by: "retry",
            who,
            earlier: earlier(&log, &plan),
            check_first: false,
        };
        let _applying = self.interrupt.begin();
        let mut reports = Vec::new();
        let changed = log.states().contains(&StepState::Done);
        match self.apply_step(&ctx, index, 1, &mut reports).await {
            Ok(()) => Outcome::Done {
                run: Some(run.clone()),
                steps: vec![previews[index].clone()],
                results: reports,
                verification: Vec::new(),
                message: format!("step {step_id} applied; continue the run with `opsh resume {run}`"),
            },
            Err(stop) => self.stopped(&ctx, stop, changed, reports),
        }
    }

    /// Reopen a journaled run for `resume` / `retry`: its plan, its plugin, its journal (appended
    /// to), and the locks of the topologies it touches.
    fn reopen(&self, registry: &Registry, run: &str, verb: &str, options: &RunOptions) -> Result<Reopened, Outcome> {
        let state = self.state(options, &format!("{verb} {run}"))?;
        // In team mode the state database has the run as every machine wrote it (this
        // machine's copy pushed first: a run journaled before team mode has only that).
        let run = match &state.db {
            Some(db) => {
                if let Ok(path) = crate::journal::run_path(&self.journal_dir, run) {
                    let id = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
                    db.push(&self.journal_dir, &id).map_err(|e| Outcome::refused(format!("{verb} {run}: {e}; nothing was changed")))?;
                }
                self.fetch_run(db, run)?
            }
            None => run.to_string(),
        };
        let log = RunLog::read(&self.journal_dir, &run).map_err(|e| Outcome::Usage { message: format!("{e:#}") })?;
        let Some((_, _, plan, _, line, _)) = log.header() else {
            return Err(Outcome::refused(format!("run {run}: the journal has no plan")));
        };
        // The locks first, then the run as it stands: whatever another opsh did to it before
        // this one held them is read, never overwritten.
        let run = log.run.clone();
        let locks = self
            .lock(plan, &run, state.db.as_ref())
            .map_err(|message| Outcome::Refused { message: format!("{verb} {run} ({line}): {message}; nothing was changed"), run: Some(run.clone()) })?;
        if let Some(db) = &state.db {
            self.fetch_run(db, &run)?;
        }
        let log = RunLog::read(&self.journal_dir, &run).map_err(|e| Outcome::Usage { message: format!("{e:#}") })?;
        let Some((plugin_name, call, plan, previews, line, _)) = log.header() else {
            return Err(Outcome::refused(format!("run {run}: the journal has no plan")));
        };
        let plugin = registry
            .find(plugin_name)
            .cloned()
            .ok_or_else(|| Outcome::refused(format!("run {run}: plugin {plugin_name} is not loaded here; install it and try again")))?;
        if log.status() == "running" {
            return Err(Outcome::Refused {
                message: format!("run {run} is still being applied by another opsh; wait for it or stop it first"),
                run: Some(run),
            });
        }
        let (call, plan, previews, line) = (Invocation::from(call), plan.clone(), previews.to_vec(), line.to_string());
        if previews.len() != plan.steps.len() {
            return Err(Outcome::refused(format!(
                "run {run}: the journal is damaged ({} steps, {} previews); see `journal {run}`",
                plan.steps.len(),
                previews.len()
            )));
        }
        fits_its_plugin(&plugin, &plan).map_err(|why| Outcome::refused(format!("run {run}: {why}")))?;
        // Another machine's plugin may do other things under the same name: a run started
        // elsewhere is continued only by the very component that planned it.
        let here = crate::state::Who::current();
        if let Some((user, machine)) = log.operator().rsplit_once('@')
            && machine != here.machine
            && let Some(planned) = log.component()
            && planned != format!("sha256:{}", plugin.sha256)
        {
            return Err(Outcome::refused(format!(
                "run {run} was started by {user}@{machine} with plugin {plugin_name} {planned}; this machine's {plugin_name} is sha256:{}: install the same plugin here to continue it",
                plugin.sha256
            )));
        }
        let who = format!("{verb} {run} ({line})");
        let journal = Journal::reopen(&self.journal_dir, &run, self.redact.clone()).map_err(|e| Outcome::refused(format!("{who}: {e:#}")))?;
        let journal = Arc::new(match &state.db {
            Some(db) => journal.mirrored(db.clone()),
            None => journal,
        });
        Ok(Reopened { log, plugin, call, plan, line, run, journal, locks })
    }

    /// Events for the plugin calls of a journaled run: its probes go to the journal.
    fn journaled_events(&self, journal: &Arc<Journal>) -> Arc<dyn Events> {
        let trace = Trace::new(self.events);
        trace.attach(journal);
        trace
    }

    fn confirm(&self, options: &RunOptions, steps: usize, who: &str) -> Option<Outcome> {
        let confirmation = if options.yes { Confirmation::Yes } else { self.operator.confirm(steps) };
        match confirmation {
            Confirmation::Yes => None,
            Confirmation::No => Some(Outcome::refused(format!("{who}: not confirmed; nothing was changed"))),
            Confirmation::CannotAsk => Some(Outcome::refused(format!(
                "{who} changes things and there is no terminal to confirm on: add --yes (after reviewing it with --dry-run); nothing was changed"
            ))),
        }
    }

    /// Team mode: connect to the state database (pushing what this machine journaled while
    /// it could not), or refuse the change — unless the operator chose `--local-state`.
    fn state(&self, options: &RunOptions, who: &str) -> Result<StateChoice, Outcome> {
        let Some(state) = &self.caps.inventory.state else { return Ok(StateChoice { db: None, mark: None }) };
        if options.local_state {
            self.events.log(
                "opsh",
                LogLevel::Warn,
                &format!("--local-state: the locks and journal of this change stay on this machine; another opsh using {} will not see it", state.database),
            );
            return Ok(StateChoice { db: None, mark: Some(StateMark { database: state.database.clone(), local_only: true }) });
        }
        let refuse = |why: String| {
            Outcome::refused(format!(
                "{who}: {why}; the change is refused and nothing was changed. Fix the state database, or add --local-state to lock and journal on this machine only (the journal records it)"
            ))
        };
        let db = StateDb::connect(&self.caps.inventory).map_err(refuse)?.ok_or_else(|| refuse("no state database".into()))?;
        db.check_schema().map_err(refuse)?;
        match db.sync(&self.journal_dir) {
            Ok(0) => {}
            Ok(n) => self.events.log("opsh", LogLevel::Info, &format!("pushed {n} record(s) journaled on this machine while {} could not be reached", db.name)),
            Err(e) => return Err(refuse(e)),
        }
        Ok(StateChoice { db: Some(Arc::new(db)), mark: Some(StateMark { database: state.database.clone(), local_only: false }) })
    }

    /// The run `id` names in the state database (any unique prefix or suffix), written to this
    /// machine's journal when that differs: the shared journal is the run's (it was started or
    /// continued elsewhere; what only this machine kept had started no effect).
    fn fetch_run(&self, db: &StateDb, id: &str) -> Result<String, Outcome> {
        let found = db.run(id).map_err(|e| Outcome::refused(format!("{e}; nothing was changed")))?;
        let Some((run, lines)) = found else { return Ok(id.to_string()) };
        let path = self.journal_dir.join(format!("{run}.jsonl"));
        // This machine's copy was pushed first; what still differs is the shared journal's.
        let text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let written = std::fs::create_dir_all(&self.journal_dir)
                .and_then(|()| std::fs::write(path.with_extension("jsonl.part"), text))
                .and_then(|()| std::fs::rename(path.with_extension("jsonl.part"), &path));
            written.map_err(|e| Outcome::refused(format!("cannot copy run {run} from {} into {}: {e}", db.name, path.display())))?;
        }
        Ok(run)
    }

    fn lock(&self, plan: &Plan, run: &str, state: Option<&Arc<StateDb>>) -> Result<Held, String> {
        let mut targets = BTreeSet::new();
        for step in &plan.steps {
            targets.insert(step.target.clone());
            for effect in &step.effects {
                match effect {
                    Effect::Sql { database, .. } => targets.insert(database.clone()),
                    Effect::File { host, .. } | Effect::Service { host, .. } | Effect::Exec { host, .. } => targets.insert(host.clone()),
                    Effect::Opaque(_) | Effect::Wait { .. } => false,
                };
            }
        }
        let keys = lock::keys_for(&self.caps.inventory, &targets);
        let shared = match state {
            Some(db) => {
                db.lock(&keys, run)?;
                Some(SharedLocks(db.clone()))
            }
            None => None,
        };
        Ok(Held { _local: lock::acquire(&self.lock_dir, &keys, run)?, _shared: shared })
    }

    /// Apply every step not yet done, in order; consecutive steps of one group concurrently.
    async fn execute(&self, ctx: &RunCtx<'_>, states: &mut [StepState]) -> Outcome {
        let _applying = self.interrupt.begin();
        let total = ctx.plan.steps.len();
        let mut reports = Vec::new();
        let mut index = 0;
        while index < total {
            let group = &ctx.plan.steps[index].group;
            let end = if group.is_empty() { index + 1 } else { index + ctx.plan.steps[index..].iter().take_while(|s| &s.group == group).count() };
            let mut pending: Vec<usize> = (index..end).filter(|i| states[*i] != StepState::Done).collect();
            if !pending.is_empty() {
                let changed = states.contains(&StepState::Done);
                if self.interrupt.presses() >= 1 {
                    return self.stopped(ctx, Stop::Interrupted, changed, reports);
                }
                if ctx.check_first {
                    let mut still = Vec::with_capacity(pending.len());
                    for i in pending {
                        match self.precheck(ctx, i, states[i], &mut reports).await {
                            Ok(true) => states[i] = StepState::Done,
                            Ok(false) => still.push(i),
                            Err(stop) => return self.stopped(ctx, stop, changed, reports),
                        }
                    }
                    pending = still;
                    if pending.is_empty() {
                        index = end;
                        continue;
                    }
                }
                let result = if pending.len() == 1 {
                    self.apply_step(ctx, pending[0], total, &mut reports).await
                } else {
                    self.apply_group(ctx, group, &pending, total, &mut reports).await
                };
                for report in &reports {
                    if matches!(report.status, StepStatus::Done | StepStatus::Skipped) {
                        states[report.index] = StepState::Done;
                    }
                }
                if let Err(stop) = result {
                    let changed = states.contains(&StepState::Done) || matches!(stop, Stop::Unknown { .. });
                    return self.stopped(ctx, stop, changed, reports);
                }
            }
            index = end;
        }
        let verifying = Instant::now();
        match self.sandbox.verify(ctx.plugin, ctx.call, self.caps, &ctx.events, ctx.lang).await {
            Ok(tables) => {
                let message = "every step applied and verified".to_string();
                let _ = ctx.journal.end_verified("done", 0, &message, u64::try_from(verifying.elapsed().as_millis()).unwrap_or(u64::MAX));
                Outcome::Done {
                    run: Some(ctx.journal.run.clone()),
                    steps: ctx.previews.to_vec(),
                    results: reports,
                    verification: tables.into_iter().map(|t| self.reveal_table(t)).collect(),
                    message,
                }
            }
            Err(e) => {
                let text = self.call_error_text(e, ctx.lang);
                self.stopped(ctx, Stop::Failed { message: format!("every step was applied, but verifying the goal failed: {text}"), step: None }, true, reports)
            }
        }
    }

    /// A step found in effect needs nothing its interrupted attempt still runs on its hosts (a
    /// killed opsh's command goes on there, and one that waits — a slonik waiting for an event
    /// — holds locks against every later step): stopped. The hosts where something was.
    async fn stop_unfinished(&self, ctx: &RunCtx<'_>, index: usize) -> Vec<String> {
        let Some((_, unfinished)) = ctx.earlier.get(index) else { return Vec::new() };
        let mut stopped = Vec::new();
        for (host, name) in unfinished {
            let mut request = crate::capability::exec::stop_request(name);
            request.timeout = Some(std::time::Duration::from_millis(self.caps.inventory.defaults.connect_timeout_ms.max(5_000)));
            if let Ok(out) = self.caps.remote.exec(host, request).await
                && String::from_utf8_lossy(&out.stdout).contains("stopped")
            {
                stopped.push(host.clone());
            }
        }
        stopped
    }

    /// Resume: is this step's effect already in place? `Ok(true)` skips it. A step that was
    /// started before the run stopped and whose check cannot tell is not applied again unless it
    /// is idempotent.
    async fn precheck(&self, ctx: &RunCtx<'_>, index: usize, state: StepState, reports: &mut Vec<StepReport>) -> Result<bool, Stop> {
        let step = &ctx.plan.steps[index];
        let title = &ctx.previews[index].title;
        let (check, detail) = match self.sandbox.check(ctx.plugin, ctx.call, step, self.caps, &ctx.events, ctx.lang).await {
            Ok(check) => (check.state, self.reveal(pick(&check.detail, ctx.lang))),
            Err(e) => (CheckState::Unknown, self.call_error_text(e, ctx.lang)),
        };
        let record = Record::Check { at: timefmt::now(), index, step: step.id.clone(), state: check_name(check).into(), detail: detail.clone() };
        if let Err(e) = ctx.journal.append(&record) {
            return Err(Stop::Failed { message: format!("cannot journal the check of step {}: {e:#}", step.id), step: Some(step.id.clone()) });
        }
        match check {
            CheckState::Done => {
                let detail = match self.stop_unfinished(ctx, index).await {
                    stopped if stopped.is_empty() => detail,
                    stopped => format!("{detail}; what its interrupted attempt still ran was stopped on {}", stopped.join(", ")),
                };
                let _ = ctx.journal.result(index, &step.id, StepStatus::Skipped, &format!("already in effect: {detail}"), 0);
                reports.push(StepReport {
                    index,
                    id: step.id.clone(),
                    title: title.clone(),
                    target: step.target.clone(),
                    status: StepStatus::Skipped,
                    message: format!("already in effect: {detail}"),
                    duration_ms: 0,
                });
                self.operator.step_finished(index, ctx.plan.steps.len(), &ctx.previews[index], &Ok(format!("already in effect ({detail})")));
                Ok(true)
            }
            CheckState::NotDone => Ok(false),
            CheckState::Stale => Err(Stop::Stale {
                message: format!(
                    "step {} ({title}) no longer fits the live state: {detail}. The plan is outdated and was not applied blindly; plan again by running the command anew",
                    step.id
                ),
                step: step.id.clone(),
            }),
            CheckState::Unknown => {
                let started = matches!(state, StepState::InFlight | StepState::Unknown | StepState::Failed);
                if started && !step.idempotent {
                    let run = &ctx.journal.run;
                    return Err(Stop::Unknown {
                        message: format!(
                            "cannot tell whether step {} ({title}) took effect before the run stopped: {detail}. Check it by hand, then `opsh retry {run} {}`",
                            step.id, step.id
                        ),
                        step: Some(step.id.clone()),
                    });
                }
                Ok(false)
            }
        }
    }

    async fn apply_step(&self, ctx: &RunCtx<'_>, index: usize, total: usize, reports: &mut Vec<StepReport>) -> Result<(), Stop> {
        let step = &ctx.plan.steps[index];
        let preview = &ctx.previews[index];
        if let Some(stale) = self.stale_files(ctx.plugin.name(), step).await {
            return Err(Stop::Stale { message: stale, step: step.id.clone() });
        }
        self.operator.step_started(index, total, preview);
        if let Err(e) = ctx.journal.intent(index, &step.id, ctx.by) {
            let message = format!("cannot journal step {} before applying it: {e:#}; it was not applied", step.id);
            self.operator.step_finished(index, total, preview, &Err(message.clone()));
            return Err(Stop::Failed { message, step: Some(step.id.clone()) });
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = self.apply_and_check(ctx, step) => outcome,
            () = self.interrupt.second_press() => StepOutcome::Unknown("aborted by a second Ctrl-C while the step was running".into()),
        };
        self.record(ctx, index, total, step, preview, outcome, started, reports)
    }

    async fn apply_group(&self, ctx: &RunCtx<'_>, group: &str, pending: &[usize], total: usize, reports: &mut Vec<StepReport>) -> Result<(), Stop> {
        for index in pending {
            let step = &ctx.plan.steps[*index];
            if let Some(stale) = self.stale_files(ctx.plugin.name(), step).await {
                return Err(Stop::Stale { message: stale, step: step.id.clone() });
            }
        }
        for index in pending {
            let step = &ctx.plan.steps[*index];
            self.operator.step_started(*index, total, &ctx.previews[*index]);
            if let Err(e) = ctx.journal.intent(*index, &step.id, ctx.by) {
                return Err(Stop::Failed { message: format!("cannot journal step {} before applying it: {e:#}", step.id), step: Some(step.id.clone()) });
            }
        }
        let started = Instant::now();
        let work = futures_util::stream::iter(pending.iter().copied())
            .map(|index| async move { (index, self.apply_and_check(ctx, &ctx.plan.steps[index]).await, started.elapsed()) })
            .buffer_unordered(self.parallel.max(1))
            .collect::<Vec<_>>();
        let finished = tokio::select! {
            finished = work => finished,
            () = self.interrupt.second_press() => pending.iter().map(|i| (*i, StepOutcome::Unknown("aborted by a second Ctrl-C while the group was running".into()), started.elapsed())).collect(),
        };
        let (mut done, mut failed, mut unreachable, mut unknown) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut finished = finished;
        finished.sort_by_key(|(index, ..)| *index);
        for (index, outcome, _) in finished {
            let step = &ctx.plan.steps[index];
            match &outcome {
                StepOutcome::Done(_) => done.push(step.target.clone()),
                StepOutcome::Unreachable(m) => unreachable.push(format!("{} ({m})", step.target)),
                StepOutcome::Failed(m) => failed.push(format!("{} ({m})", step.target)),
                StepOutcome::Unknown(m) => unknown.push(format!("{} ({m})", step.target)),
            }
            let _ = self.record(ctx, index, total, step, &ctx.previews[index], outcome, started, reports);
        }
        if done.len() == pending.len() {
            return Ok(());
        }
        let mut message = format!("group {group}: {} of {} done", done.len(), pending.len());
        for (label, list) in [("failed", &failed), ("unreachable", &unreachable), ("outcome unknown", &unknown)] {
            if !list.is_empty() {
                message.push_str(&format!("; {label}: {}", list.join(", ")));
            }
        }
        if failed.is_empty() && unreachable.is_empty() { Err(Stop::Unknown { message, step: None }) } else { Err(Stop::Failed { message, step: None }) }
    }

    /// Journal and report one step's outcome.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &RunCtx<'_>,
        index: usize,
        total: usize,
        step: &Step,
        preview: &StepPreview,
        outcome: StepOutcome,
        started: Instant,
        reports: &mut Vec<StepReport>,
    ) -> Result<(), Stop> {
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, message) = match &outcome {
            StepOutcome::Done(note) => (StepStatus::Done, note.clone()),
            StepOutcome::Failed(m) | StepOutcome::Unreachable(m) => (StepStatus::Failed, m.clone()),
            StepOutcome::Unknown(m) => (StepStatus::Unknown, m.clone()),
        };
        let journaled = ctx.journal.result(index, &step.id, status, &message, duration_ms);
        reports.push(StepReport {
            index,
            id: step.id.clone(),
            title: preview.title.clone(),
            target: step.target.clone(),
            status,
            message: message.clone(),
            duration_ms,
        });
        let shown = if status == StepStatus::Done { Ok(message.clone()) } else { Err(message.clone()) };
        self.operator.step_finished(index, total, preview, &shown);
        if let Err(e) = journaled {
            let message = format!("step {} ran but its result could not be journaled: {e:#}", step.id);
            return Err(match outcome {
                // It may have changed something: said so, whatever ran before it.
                StepOutcome::Done(_) | StepOutcome::Unknown(_) => Stop::Unrecorded { message, step: step.id.clone() },
                StepOutcome::Failed(_) | StepOutcome::Unreachable(_) => Stop::Failed { message, step: Some(step.id.clone()) },
            });
        }
        match outcome {
            StepOutcome::Done(_) => Ok(()),
            StepOutcome::Failed(m) | StepOutcome::Unreachable(m) => {
                Err(Stop::Failed { message: format!("step {} ({}) failed: {m}", step.id, preview.title), step: Some(step.id.clone()) })
            }
            StepOutcome::Unknown(m) => Err(Stop::Unknown { message: format!("step {} ({}): {m}", step.id, preview.title), step: Some(step.id.clone()) }),
        }
    }

    /// Apply a step, then ask its check whether it took effect.
    async fn apply_and_check(&self, ctx: &RunCtx<'_>, step: &Step) -> StepOutcome {
        let lang = ctx.lang;
        let note = if step.runs == crate::plan::Runner::Host {
            match self.perform(ctx, step).await {
                Ok(note) => note,
                Err(outcome) => return outcome,
            }
        } else {
            match self.sandbox.apply(ctx.plugin, ctx.call, step, self.caps, &ctx.events, lang).await {
                Ok(note) => self.reveal(pick(&note, lang)),
                Err(e) => return self.step_error(e, lang),
            }
        };
        match self.sandbox.check(ctx.plugin, ctx.call, step, self.caps, &ctx.events, lang).await {
            Ok(check) => {
                let detail = self.reveal(pick(&check.detail, lang));
                match check.state {
                    CheckState::Done => StepOutcome::Done(note),
                    CheckState::Unknown => StepOutcome::Done(format!("{note} (its check could not confirm it: {detail})")),
                    CheckState::NotDone => StepOutcome::Failed(format!("it reported success but its check says it did not take effect: {detail}")),
                    CheckState::Stale => StepOutcome::Failed(format!("after it ran, its check says the plan no longer fits the live state: {detail}")),
                }
            }
            Err(e) => StepOutcome::Done(format!("{note} (its check failed: {})", self.call_error_text(e, lang))),
        }
    }

    /// A declared step: the host performs its effects in order, exactly as confirmed; a `wait`
    /// asks the step's check until it says done.
    async fn perform(&self, ctx: &RunCtx<'_>, step: &Step) -> Result<String, StepOutcome> {
        let on_behalf = effects::OnBehalf { plugin: ctx.plugin.name(), declared: &ctx.plugin.declared, caps: self.caps };
        let index = ctx.plan.steps.iter().position(|s| s.id == step.id).unwrap_or_default();
        let mut notes = Vec::new();
        for (position, effect) in step.effects.iter().enumerate() {
            if let Effect::Wait { until, interval_ms, timeout_ms } = effect {
                notes.push(self.wait(ctx, step, &self.reveal(pick_text(until, ctx.lang)), *interval_ms, *timeout_ms).await?);
                continue;
            }
            let performed = match on_behalf.prepare(effect) {
                Ok(Some(mut prepared)) => {
                    let once = match &mut prepared {
                        effects::Prepared::Exec { request, .. } => {
                            request.once = Some(command_name(ctx, index, position));
                            request.once.clone()
                        }
                        _ => None,
                    };
                    // What is sent is journaled before it is sent: it cannot run unrecorded.
                    let record = Record::Performed { at: timefmt::now(), index, step: step.id.clone(), effect: prepared.performed(), once };
                    if let Err(e) = ctx.journal.append(&record) {
                        return Err(StepOutcome::Failed(format!("{e:#}; the effect was not performed")));
                    }
                    on_behalf.run(prepared).await
                }
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match performed {
                Ok(note) if note.is_empty() => {}
                Ok(note) => notes.push(note),
                Err(CapabilityError::Timeout(m)) => return Err(StepOutcome::Unknown(self.reveal(&m))),
                Err(CapabilityError::Unreachable(m)) => {
                    let m = self.reveal(&m);
                    // Not connected: it did not start. Said so in the journal (a resume then
                    // knows this effect never ran).
                    let record = Record::Unsent { at: timefmt::now(), index, step: step.id.clone(), why: m.clone() };
                    if let Err(e) = ctx.journal.append(&record) {
                        return Err(StepOutcome::Failed(format!("{m}; and the journal could not record that it did not start: {e:#}")));
                    }
                    return Err(StepOutcome::Unreachable(format!("not started: {m}")));
                }
                Err(e) => return Err(StepOutcome::Failed(self.reveal(e.message()))),
            }
        }
        Ok(notes.join("; "))
    }

    async fn wait(&self, ctx: &RunCtx<'_>, step: &Step, until: &str, interval_ms: u32, timeout_ms: u32) -> Result<String, StepOutcome> {
        let started = Instant::now();
        // Never longer than an apply call may take (the run holds its locks meanwhile).
        let timeout_ms = u64::from(timeout_ms).min(self.caps.inventory.defaults.apply_timeout_ms);
        let deadline = started + std::time::Duration::from_millis(timeout_ms);
        let interval = std::time::Duration::from_millis(interval_ms.clamp(100, 60_000).into());
        loop {
            let (state, detail) = match self.sandbox.check(ctx.plugin, ctx.call, step, self.caps, &ctx.events, ctx.lang).await {
                Ok(check) => (check.state, self.reveal(pick(&check.detail, ctx.lang))),
                Err(e) => (CheckState::Unknown, self.call_error_text(e, ctx.lang)),
            };
            match state {
                CheckState::Done => return Ok(format!("{until}: after {:.1} s", started.elapsed().as_secs_f32())),
                CheckState::Stale => return Err(StepOutcome::Failed(format!("waiting until {until}: the plan no longer fits the live state: {detail}"))),
                CheckState::NotDone | CheckState::Unknown if Instant::now() + interval > deadline => {
                    return Err(StepOutcome::Failed(format!("{until}: not so after {} s (last check: {detail})", timeout_ms / 1000)));
                }
                CheckState::NotDone | CheckState::Unknown => tokio::time::sleep(interval).await,
            }
        }
    }

    fn step_error(&self, error: CallError, lang: &str) -> StepOutcome {
        match error {
            CallError::Command(CommandError::Capability(WitError::Timeout(m))) => StepOutcome::Unknown(self.reveal(&m)),
            CallError::Command(CommandError::Capability(WitError::Unreachable(m))) => StepOutcome::Unreachable(self.reveal(&m)),
            other => StepOutcome::Failed(self.call_error_text(other, lang)),
        }
    }

    /// A file effect whose file changed since the plan read it: the step must not be applied.
    async fn stale_files(&self, plugin: &str, step: &Step) -> Option<String> {
        for effect in &step.effects {
            let Effect::File { host, path, expected_sha256, new_content } = effect else { continue };
            if self.caps.grants.check(plugin, Capability::FileEdit, host, Some(path)).is_err() {
                continue; // the plugin's own write will be refused with the grant message
            }
            match file_edit::read(&self.caps.remote, host, path, true, &self.caps.bounds).await {
                Ok(snapshot) if snapshot.sha256 == *expected_sha256 => {}
                Ok(snapshot) => {
                    let wanted = self.reveal(new_content);
                    if snapshot.content == wanted {
                        continue; // already has the planned content: the step's check decides
                    }
                    return Some(format!(
                        "{}:{} changed since the plan read it (sha256 {} → {}); the plan is outdated and was not applied blindly — run the command again to plan from the current content",
                        host,
                        path,
                        short(expected_sha256),
                        if snapshot.exists { short(&snapshot.sha256) } else { "no file".into() }
                    ));
                }
                Err(_) => {} // unreachable now: the step itself will report it
            }
        }
        None
    }

    fn stopped(&self, ctx: &RunCtx<'_>, stop: Stop, changed: bool, reports: Vec<StepReport>) -> Outcome {
        let run = ctx.journal.run.clone();
        let resume = format!("resume with: opsh resume {run}");
        let outcome = match stop {
            Stop::Interrupted => Outcome::Failed {
                message: format!(
                    "{}: stopped by Ctrl-C before the next step; {}",
                    ctx.who,
                    if changed { resume } else { format!("nothing was changed; {resume}") }
                ),
                changed,
                step: None,
                run: Some(run),
                results: reports,
            },
            Stop::Failed { message, step } => Outcome::Failed {
                message: format!(
                    "{}: {message}{}",
                    ctx.who,
                    if changed {
                        let stays: String = ctx.plan.if_stopped.iter().map(|t| format!(" {}.", self.reveal(pick_text(t, ctx.lang)))).collect();
                        format!(". Earlier steps were applied;{stays} Fix the cause, then {resume}")
                    } else {
                        ". Nothing was changed".into()
                    }
                ),
                changed,
                step,
                run: Some(run),
                results: reports,
            },
            Stop::Unknown { message, step } => Outcome::Unknown {
                message: format!("{}: {message}. Check the target, then {resume} (it asks the step's check first)", ctx.who),
                step,
                run: Some(run),
                results: reports,
            },
            Stop::Unrecorded { message, step } => Outcome::Failed {
                message: format!("{}: {message}. The step may have taken effect; {resume} (it asks the step's check first)", ctx.who),
                changed: true,
                step: Some(step),
                run: Some(run),
                results: reports,
            },
            Stop::Stale { message, .. } if !changed => Outcome::Refused { message: format!("{}: {message}; nothing was changed", ctx.who), run: Some(run) },
            Stop::Stale { message, step } => {
                Outcome::Failed { message: format!("{}: {message}", ctx.who), changed, step: Some(step), run: Some(run), results: reports }
            }
        };
        let status = match &outcome {
            Outcome::Unknown { .. } => "unknown",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { message, .. } if message.contains("stopped by Ctrl-C") => "interrupted",
            _ => "failed",
        };
        let _ = ctx.journal.end(status, outcome.exit().code(), outcome.message());
        outcome
    }

    fn call_failure(
        &self,
        who: &str,
        error: CallError,
        changed: bool,
        step: Option<String>,
        run: Option<String>,
        lang: &str,
        results: Vec<StepReport>,
    ) -> Outcome {
        let message = format!("{who}: {}", self.call_error_text(error.clone(), lang));
        match error {
            CallError::Command(CommandError::Usage(_)) => Outcome::Usage { message },
            CallError::Command(CommandError::Refused(_)) | CallError::Command(CommandError::Capability(WitError::Denied(_))) => {
                Outcome::Refused { message, run }
            }
            CallError::Command(CommandError::Capability(WitError::Timeout(_))) => Outcome::Unknown { message, step, run, results },
            _ => Outcome::Failed { message, changed, step, run, results },
        }
    }

    fn call_error_text(&self, error: CallError, lang: &str) -> String {
        let text = match error {
            CallError::Crash(crash) => crash.to_string(),
            CallError::Command(CommandError::Usage(m)) | CallError::Command(CommandError::Failed(m)) => m,
            CallError::Command(CommandError::Refused(text)) => pick(&text, lang).to_string(),
            CallError::Command(CommandError::Capability(e)) => match e {
                WitError::Denied(m)
                | WitError::NotFound(m)
                | WitError::Unreachable(m)
                | WitError::Auth(m)
                | WitError::Timeout(m)
                | WitError::ReadOnly(m)
                | WitError::Conflict(m)
                | WitError::Failed(m)
                | WitError::Invalid(m) => m,
            },
        };
        self.reveal(&text)
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
    async fn previews(&self, plugin: &str, plan: &Plan, lang: &str) -> Vec<StepPreview> {
        let mut out = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let mut effects = Vec::new();
            for effect in &step.effects {
                effects.push(match effect {
                    Effect::Sql { database, statements, params, transaction, expect_affected } => Preview::Sql(crate::plan::SqlShown {
                        database: database.clone(),
                        statements: statements.iter().map(|s| self.reveal(s)).collect(),
                        params: params.iter().map(|ps| ps.iter().map(|p| self.reveal(&effects::literal(p))).collect()).collect(),
                        transaction: *transaction,
                        expect_affected: *expect_affected,
                    }),
                    Effect::Service { host, service, action } => {
                        Preview::Service(crate::plan::ServiceShown { host: host.clone(), service: service.clone(), action: action.clone() })
                    }
                    Effect::Exec { host, argv, env, stdin, privileged, ok_status, timeout_ms } => Preview::Exec(crate::plan::ExecShown {
                        host: host.clone(),
                        argv: argv.iter().map(|a| self.reveal(a)).collect(),
                        env: env.iter().map(|(name, value)| effects::env_shown(name, value, &|t| self.reveal(t))).collect(),
                        // Input that is not text is shown as its size and hash, never lossily.
                        stdin: stdin.as_ref().map(|bytes| self.reveal(&effects::input_shown(bytes))),
                        privileged: *privileged,
                        ok_status: ok_status.clone(),
                        timeout_ms: *timeout_ms,
                    }),
                    Effect::Opaque(text) => Preview::Opaque { text: self.reveal(pick_text(text, lang)) },
                    Effect::Wait { until, timeout_ms, .. } => Preview::Wait { until: self.reveal(pick_text(until, lang)), timeout_ms: *timeout_ms },
                    Effect::File { host, path, expected_sha256, new_content } => self.file_preview(plugin, host, path, expected_sha256, new_content).await,
                });
            }
            let (runs, custom) = match &step.runs {
                crate::plan::Runner::Plugin => ("plugin", String::new()),
                crate::plan::Runner::Host => ("host", String::new()),
                crate::plan::Runner::Custom(reason) => ("custom", self.reveal(pick_text(reason, lang))),
            };
            out.push(StepPreview {
                id: step.id.clone(),
                title: self.reveal(pick_text(&step.title, lang)),
                runs: runs.into(),
                custom,
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

enum StepOutcome {
    Done(String),
    Failed(String),
    Unreachable(String),
    Unknown(String),
}

/// A run resumed with another build of its plugin than it was planned with: said, not refused
/// (upgrading opsh changes every bundled plugin's hash; each step's check runs first anyway).
fn changed_plugin(log: &RunLog, plugin: &LoadedPlugin) -> Vec<String> {
    let now = format!("sha256:{}", plugin.sha256);
    match log.component() {
        Some(then) if then != now => vec![format!(
            "plugin {} is another build than the one this run was planned with ({then} then, {now} now); each step's check runs before it",
            plugin.name()
        )],
        _ => Vec::new(),
    }
}

/// A plan from a file (journal, saved plan) is applied only by the kind of plugin that makes
/// such steps: a 0.2 plugin's steps are the host's or custom, never its own unbound apply.
fn fits_its_plugin(plugin: &LoadedPlugin, plan: &Plan) -> Result<(), String> {
    let v1 = plugin.wit_version() == "0.1";
    match plan.steps.iter().find(|s| (s.runs == crate::plan::Runner::Plugin) != v1) {
        Some(step) => Err(format!(
            "step {} was planned for a plugin built against another opsh:plugin version than {} {} (opsh:plugin {}): make the plan again",
            step.id,
            plugin.name(),
            plugin.info.version,
            plugin.wit_version()
        )),
        None => Ok(()),
    }
}

fn check_name(state: CheckState) -> &'static str {
    match state {
        CheckState::Done => "done",
        CheckState::NotDone => "not-done",
        CheckState::Unknown => "unknown",
        CheckState::Stale => "stale",
    }
}

fn short(sha: &str) -> String {
    if sha.is_empty() { "no file".into() } else { sha.chars().take(12).collect() }
}

/// Each step's earlier attempts, from a reopened run's journal.
fn earlier(log: &RunLog, plan: &Plan) -> Vec<(usize, Vec<(String, String)>)> {
    (0..plan.steps.len()).map(|i| (log.attempts(i), log.unfinished_commands(i))).collect()
}

/// The name the command of effect `position` of step `index` runs under on its host: the one its
/// last attempt used when that attempt's outcome was never seen (the command may still run
/// there, or have finished: it is waited for or replayed, never started beside itself), else a
/// new one for this attempt.
fn command_name(ctx: &RunCtx<'_>, index: usize, position: usize) -> String {
    let prefix = format!("{}.s{index}.e{position}.", ctx.journal.run);
    let (attempts, unfinished) = ctx.earlier.get(index).map_or((0, &[][..]), |(n, names)| (*n, names.as_slice()));
    unfinished.iter().map(|(_, name)| name).find(|name| name.starts_with(&prefix)).cloned().unwrap_or_else(|| format!("{prefix}a{}", attempts + 1))
}
