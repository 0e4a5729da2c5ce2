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
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use similar::TextDiff;

use super::{Confirmation, Operator, Outcome, Preview, ProbeRun, RunOptions, StepPreview, StepReport, pick};
use crate::capability::{Capabilities, file_edit};
use crate::grants::Capability;
use crate::journal::{Journal, Record, Redactor, RunLog, SCHEMA, StepState, StepStatus};
use crate::lock;
use crate::plugins::Registry;
use crate::sandbox::bindings::host::LogLevel;
use crate::sandbox::bindings::runbook::{ChangePlan, CheckState, CommandError, CommandInfo, CommandKind, Effect, Invocation, Step, Table};
use crate::sandbox::bindings::types::CapabilityError as WitError;
use crate::sandbox::{CallError, Events, LoadedPlugin, Sandbox};
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

/// One run being applied.
struct RunCtx<'r> {
    plugin: &'r LoadedPlugin,
    call: &'r Invocation,
    plan: &'r ChangePlan,
    previews: &'r [StepPreview],
    journal: &'r Journal,
    /// The events every plugin call of the run reports to (its probes are journaled).
    events: Arc<dyn Events>,
    lang: &'r str,
    /// `run`, `resume` or `retry`: written with each intent.
    by: &'r str,
    who: String,
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
    plan: ChangePlan,
    previews: Vec<StepPreview>,
    line: String,
    run: String,
    journal: Arc<Journal>,
    locks: lock::Locks,
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
                Ok(tables) => Outcome::Tables { tables: tables.into_iter().map(|t| self.reveal_table(t)).collect() },
                Err(e) => self.call_failure(&who, e, false, None, None, lang, Vec::new()),
            };
        }
        let trace = Trace::new(self.events);
        let events: Arc<dyn Events> = trace.clone();
        let plan = match self.sandbox.plan(plugin, call, self.caps, &events, lang).await {
            Ok(plan) => plan,
            Err(e) => return self.call_failure(&format!("{who} (planning)"), e, false, None, None, lang, Vec::new()),
        };
        let previews = self.previews(plugin.name(), &plan, lang).await;
        let warnings: Vec<String> = plan.warnings.iter().map(|w| self.reveal(pick(w, lang))).collect();
        let probes = trace.pending();
        self.operator.plan(plugin.name(), &self.reveal(pick(&plan.summary, lang)), &warnings, &previews, &probes);
        if options.dry_run {
            return Outcome::Planned { steps: previews, probes };
        }
        if plan.steps.is_empty() {
            return Outcome::Done { run: None, steps: previews, results: Vec::new(), verification: Vec::new(), message: "nothing to do".into() };
        }
        if let Some(refusal) = self.confirm(options, plan.steps.len(), &who) {
            return refusal;
        }
        let journal = match Journal::create(&self.journal_dir, self.redact.clone()) {
            Ok(journal) => Arc::new(journal),
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
            plan: (&plan).into(),
            previews: previews.clone(),
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
        let _locks = match self.lock(&plan, &journal.run) {
            Ok(locks) => locks,
            Err(message) => {
                let message = format!("{who}: {message}; nothing was changed");
                let _ = journal.end("refused", crate::Exit::Refused.code(), &message);
                return Outcome::Refused { message, run: Some(journal.run.clone()) };
            }
        };
        let ctx = RunCtx { plugin, call, plan: &plan, previews: &previews, journal: &journal, events, lang, by: "run", who, check_first: false };
        let mut states = vec![StepState::NotStarted; plan.steps.len()];
        self.execute(&ctx, &mut states).await
    }

    /// Continue a journaled run from the first step not known to be done.
    pub async fn resume(&self, registry: &Registry, run: &str, options: &RunOptions) -> Outcome {
        let Reopened { log, plugin, call, plan, previews, line, run, journal, locks: _locks } = match self.reopen(registry, run, "resume") {
            Ok(reopened) => reopened,
            Err(outcome) => return outcome,
        };
        let lang = options.lang.as_str();
        let who = format!("resume {run} ({line})");
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
        self.operator.plan(
            plugin.name(),
            &format!("resume {run}: {line} — {done} of {} steps done, {} to go", plan.steps.len(), remaining.len()),
            &[],
            &remaining,
            &[],
        );
        if options.dry_run {
            return Outcome::Planned { steps: remaining, probes: Vec::new() };
        }
        if !remaining.is_empty()
            && let Some(refusal) = self.confirm(options, remaining.len(), &who)
        {
            return refusal;
        }
        let events = self.journaled_events(&journal);
        let ctx =
            RunCtx { plugin: &plugin, call: &call, plan: &plan, previews: &previews, journal: &journal, events, lang, by: "resume", who, check_first: true };
        self.execute(&ctx, &mut states).await
    }

    /// Apply one step of a journaled run again (after fixing what made it fail).
    pub async fn retry(&self, registry: &Registry, run: &str, step_id: &str, options: &RunOptions) -> Outcome {
        let Reopened { log, plugin, call, plan, previews, line, run, journal, locks: _locks } = match self.reopen(registry, run, &format!("retry {step_id}")) {
            Ok(reopened) => reopened,
            Err(outcome) => return outcome,
        };
        let lang = options.lang.as_str();
        let who = format!("retry {run} {step_id} ({line})");
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
        self.operator.plan(plugin.name(), &format!("retry step {step_id} of {run}: {line}"), &[], std::slice::from_ref(&previews[index]), &[]);
        if options.dry_run {
            return Outcome::Planned { steps: vec![previews[index].clone()], probes: Vec::new() };
        }
        if let Some(refusal) = self.confirm(options, 1, &who) {
            return refusal;
        }
        let ctx =
            RunCtx { plugin: &plugin, call: &call, plan: &plan, previews: &previews, journal: &journal, events, lang, by: "retry", who, check_first: false };
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
    fn reopen(&self, registry: &Registry, run: &str, verb: &str) -> Result<Reopened, Outcome> {
        let log = RunLog::read(&self.journal_dir, run).map_err(|e| Outcome::Usage { message: format!("{e:#}") })?;
        let Some((plugin_name, call, plan, previews, line, _)) = log.header() else {
            return Err(Outcome::refused(format!("run {run}: the journal has no plan")));
        };
        let run = log.run.clone();
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
        let (call, plan, previews, line) = (Invocation::from(call), ChangePlan::from(plan), previews.to_vec(), line.to_string());
        let who = format!("{verb} {run} ({line})");
        let journal = Journal::reopen(&self.journal_dir, &run, self.redact.clone()).map_err(|e| Outcome::refused(format!("{who}: {e:#}")))?;
        let journal = Arc::new(journal);
        let locks =
            self.lock(&plan, &run).map_err(|message| Outcome::Refused { message: format!("{who}: {message}; nothing was changed"), run: Some(run.clone()) })?;
        Ok(Reopened { log, plugin, call, plan, previews, line, run, journal, locks })
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

    fn lock(&self, plan: &ChangePlan, run: &str) -> Result<lock::Locks, String> {
        let mut targets = BTreeSet::new();
        for step in &plan.steps {
            targets.insert(step.target.clone());
            for effect in &step.effects {
                match effect {
                    Effect::Sql(e) => targets.insert(e.database.clone()),
                    Effect::File(e) => targets.insert(e.host.clone()),
                    Effect::Service(e) => targets.insert(e.host.clone()),
                    Effect::Exec(e) => targets.insert(e.host.clone()),
                    Effect::Opaque(_) => false,
                };
            }
        }
        lock::acquire(&self.lock_dir, &lock::keys_for(&self.caps.inventory, &targets), run)
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
        match self.sandbox.verify(ctx.plugin, ctx.call, self.caps, &ctx.events, ctx.lang).await {
            Ok(tables) => {
                let message = "every step applied and verified".to_string();
                let _ = ctx.journal.end("done", 0, &message);
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
            return Err(Stop::Failed { message: format!("step {} ran but its result could not be journaled: {e:#}", step.id), step: Some(step.id.clone()) });
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
        let note = match self.sandbox.apply(ctx.plugin, ctx.call, step, self.caps, &ctx.events, lang).await {
            Ok(note) => self.reveal(pick(&note, lang)),
            Err(e) => return self.step_error(e, lang),
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
            let Effect::File(file) = effect else { continue };
            if self.caps.grants.check(plugin, Capability::FileEdit, &file.host, Some(&file.path)).is_err() {
                continue; // the plugin's own write will be refused with the grant message
            }
            match file_edit::read(&self.caps.remote, &file.host, &file.path, true, &self.caps.bounds).await {
                Ok(snapshot) if snapshot.sha256 == file.expected_sha256 => {}
                Ok(snapshot) => {
                    let wanted = self.reveal(&file.new_content);
                    if snapshot.content == wanted {
                        continue; // already has the planned content: the step's check decides
                    }
                    return Some(format!(
                        "{}:{} changed since the plan read it (sha256 {} → {}); the plan is outdated and was not applied blindly — run the command again to plan from the current content",
                        file.host,
                        file.path,
                        short(&file.expected_sha256),
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
                    if changed { format!(". Earlier steps were applied; fix the cause, then {resume}") } else { ". Nothing was changed".into() }
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

enum StepOutcome {
    Done(String),
    Failed(String),
    Unreachable(String),
    Unknown(String),
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
