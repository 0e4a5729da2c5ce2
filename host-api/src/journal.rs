//! The journal: one JSON Lines file per run, `DATA/journal/RUN.jsonl`. Before each effect the
//! engine appends an `intent` record and after it a `result` record, each flushed to disk
//! (fsync) before going on, so a crash — `kill -9` included — leaves a journal that says exactly
//! what was done, what was in flight, and what was not started. Every text is passed through
//! the redactor (known passwords) before it is written; plugins never see secrets anyway.
//!
//! Schema (version 1): every line is one object with `"record"` = `run` | `intent` | `result` |
//! `check` | `end`; see the README ("JSON output and journal").

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::plan::{Invocation, Plan};
use crate::runbook::StepPreview;
use crate::timefmt;

pub const SCHEMA: u32 = 1;

/// Removes secrets from text before it is written or shown.
pub type Redactor = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Applied and its check confirmed it.
    Done,
    /// Applied or attempted; it did not take effect (or its check says so).
    Failed,
    /// A timeout or an aborted step: it may or may not have taken effect.
    Unknown,
    /// Not applied because its check said it was already in effect.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Run {
        schema: u32,
        run: String,
        at: String,
        pid: u32,
        plugin: String,
        plugin_version: String,
        /// The command line as typed (`otb promote dn01`).
        line: String,
        invocation: Invocation,
        lang: String,
        inventory: String,
        /// The plan as the plugin made it (addresses as tokens; no secrets).
        plan: Plan,
        /// What the operator was shown: SQL, diffs, commands (addresses revealed).
        previews: Vec<StepPreview>,
        /// `user@host` who applied it (absent in journals of earlier opsh).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        operator: String,
        /// `sha256:HEX` of the plugin's component (absent in journals of earlier opsh).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        component: String,
        /// The saved plan it applies (`apply FILE`), and who made that.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saved: Option<SavedFrom>,
        /// Team mode: the state database the run is journaled and locked in, or that it ran
        /// with this machine's locks and journal only (`--local-state`) although the inventory
        /// names one. Absent without `[state]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<StateMark>,
        /// How long planning took: the plugin's plan call (its pre-checks) and the previews
        /// (absent for a saved plan applied later, and in journals of earlier opsh).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_ms: Option<u64>,
    },
    Intent {
        at: String,
        index: usize,
        step: String,
        /// `run`, or `resume` / `retry` when the step was applied from a later process.
        by: String,
        /// The process applying the step (a resume runs in another process than the run).
        #[serde(default)]
        pid: u32,
        /// `user@machine` of that process (absent in journals of earlier opsh).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        operator: String,
    },
    Result {
        at: String,
        index: usize,
        step: String,
        status: StepStatus,
        message: String,
        duration_ms: u64,
    },
    Check {
        at: String,
        index: usize,
        step: String,
        state: String,
        detail: String,
    },
    End {
        at: String,
        status: String,
        exit: i32,
        message: String,
        /// How long verifying the goal took (absent when the run did not get that far).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verify_ms: Option<u64>,
    },
    /// An effect of a declared step as the host sent it, written right before it is sent.
    Performed {
        at: String,
        index: usize,
        step: String,
        effect: crate::plan::Performed,
        /// The name its command runs under on its host, at most once (absent for other effects
        /// and in journals of earlier opsh): a resume of an attempt whose outcome was never seen
        /// sends it under the same name, so it waits for or replays that attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        once: Option<String>,
    },
    /// The effect journaled just before as `performed` never reached its target: the
    /// connection could not be made, so its command did not start.
    Unsent {
        at: String,
        index: usize,
        step: String,
        why: String,
    },
    /// A command run as a probe outside `apply` (while planning, checking or verifying).
    Probe {
        at: String,
        during: String,
        host: String,
        command: String,
    },
}

/// The saved plan a run applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFrom {
    pub file: String,
    pub planned_by: String,
    pub planned_at: String,
}

/// Where a team-mode run keeps its locks and journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMark {
    /// The inventory's name of the state database.
    pub database: String,
    /// The operator chose this machine's locks and journal only (`--local-state`).
    #[serde(default)]
    pub local_only: bool,
}

/// A second home for the journal's records (team mode's state database). A record goes there
/// right after the local file has it; an error from it is the append's error, so the engine
/// stops before the effect the record announces.
pub trait Mirror: Send + Sync {
    /// Record line number `seq` (from 0) of run `run`.
    fn record(&self, run: &str, seq: u32, line: &str) -> Result<()>;
    /// What to call it in messages.
    fn name(&self) -> &str;
}

/// Where a step stands according to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    NotStarted,
    /// An intent without a result: the process died or was aborted during the step.
    InFlight,
    Done,
    Failed,
    Unknown,
}

pub struct Journal {
    pub run: String,
    pub path: PathBuf,
    /// The file, and how many records it holds.
    file: Mutex<(File, u32)>,
    redact: Redactor,
    mirror: Option<Arc<dyn Mirror>>,
}

impl Journal {
    /// A new run: `RUN` = time + random suffix, e.g. `20261123-172501-3fa9`.
    pub fn create(dir: &Path, redact: Redactor) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the journal directory {}", dir.display()))?;
        let stamp = timefmt::compact(SystemTime::now());
        for attempt in 0..100u32 {
            let suffix = random_suffix(attempt);
            let run = format!("{stamp}-{suffix}");
            let path = dir.join(format!("{run}.jsonl"));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    sync_dir(dir);
                    return Ok(Self { run, path, file: Mutex::new((file, 0)), redact, mirror: None });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create journal {}", path.display())),
            }
        }
        bail!("cannot find a free run id in {}", dir.display())
    }

    /// Continue writing an existing run's journal (resume, retry). A torn last record (the
    /// process died while writing it) is cut off first: it was never complete, so what it would
    /// have announced never started — and a record appended after it must not run into it.
    pub fn reopen(dir: &Path, run: &str, redact: Redactor) -> Result<Self> {
        let path = run_path(dir, run)?;
        let text = std::fs::read(&path).with_context(|| format!("cannot read journal {}", path.display()))?;
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new().append(true).open(&path).with_context(|| format!("cannot open journal {}", path.display()))?;
        if complete < text.len() {
            file.set_len(complete as u64)
                .and_then(|()| file.sync_data())
                .with_context(|| format!("cannot cut the torn last record off journal {}", path.display()))?;
        }
        let records = text[..complete].iter().filter(|b| **b == b'\n').count() as u32;
        Ok(Self { run: run.to_string(), path, file: Mutex::new((file, records)), redact, mirror: None })
    }

    /// Every record appended from now on also goes to `mirror` (team mode).
    pub fn mirrored(mut self, mirror: Arc<dyn Mirror>) -> Self {
        self.mirror = Some(mirror);
        self
    }

    /// Append one record and flush it to disk before returning. A record that could not be
    /// written whole (the disk is full) is taken back, so the journal stays readable.
    pub fn append(&self, record: &Record) -> Result<()> {
        let line = serde_json::to_string(record).context("encoding a journal record")?;
        let mut line = (self.redact)(&line);
        line.push('\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (file, records) = &mut *guard;
        let before = file.metadata().map(|m| m.len());
        let written = file.write_all(line.as_bytes()).and_then(|()| file.sync_data());
        if written.is_err()
            && let Ok(len) = before
        {
            let _ = file.set_len(len);
        }
        written.with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        let seq = *records;
        *records += 1;
        match &self.mirror {
            Some(mirror) => mirror
                .record(&self.run, seq, line.trim_end())
                .with_context(|| format!("the record is in {} only (it is pushed to {} on the next contact)", self.path.display(), mirror.name())),
            None => Ok(()),
        }
    }

    pub fn intent(&self, index: usize, step: &str, by: &str) -> Result<()> {
        self.append(&Record::Intent {
            at: timefmt::now(),
            index,
            step: step.to_string(),
            by: by.to_string(),
            pid: std::process::id(),
            operator: crate::state::Who::current().operator(),
        })
    }

    pub fn result(&self, index: usize, step: &str, status: StepStatus, message: &str, duration_ms: u64) -> Result<()> {
        self.append(&Record::Result { at: timefmt::now(), index, step: step.to_string(), status, message: message.to_string(), duration_ms })
    }

    pub fn end(&self, status: &str, exit: i32, message: &str) -> Result<()> {
        self.append(&Record::End { at: timefmt::now(), status: status.to_string(), exit, message: message.to_string(), verify_ms: None })
    }

    /// The end of a run that verified its goal, and how long that took.
    pub fn end_verified(&self, status: &str, exit: i32, message: &str, verify_ms: u64) -> Result<()> {
        self.append(&Record::End { at: timefmt::now(), status: status.to_string(), exit, message: message.to_string(), verify_ms: Some(verify_ms) })
    }
}

fn random_suffix(attempt: u32) -> String {
    let mut bytes = [0u8; 2];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        bytes = ((nanos ^ attempt ^ std::process::id()) as u16).to_be_bytes();
    }
    hex::encode(bytes)
}

fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// The journal file of a run (a unique prefix of the id is enough).
pub fn run_path(dir: &Path, run: &str) -> Result<PathBuf> {
    let exact = dir.join(format!("{run}.jsonl"));
    if exact.exists() {
        return Ok(exact);
    }
    let matches: Vec<PathBuf> = list_files(dir).into_iter().filter(|p| file_run_id(p).is_some_and(|id| id.starts_with(run))).collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().unwrap_or(exact)),
        0 => bail!("no run {run:?} in the journal ({}); `journal` lists the runs", dir.display()),
        n => bail!("{n} runs start with {run:?}; give more of the id"),
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn file_run_id(path: &Path) -> Option<String> {
    path.file_stem().map(|s| s.to_string_lossy().to_string())
}

/// A run with who wrote each of its records (`user@machine`, one per record): from the state
/// database's columns in team mode, else from the run's and its intents' `operator`.
#[derive(Debug, Clone)]
pub struct Audited {
    pub log: RunLog,
    pub by: Vec<String>,
    /// When each record reached the state database (empty for a local journal).
    pub stored: Vec<String>,
}

impl Audited {
    pub fn local(log: RunLog) -> Self {
        let mut current = String::new();
        let by = log
            .records
            .iter()
            .map(|record| {
                match record {
                    Record::Run { operator, .. } | Record::Intent { operator, .. } if !operator.is_empty() => current = operator.clone(),
                    _ => {}
                }
                current.clone()
            })
            .collect();
        Self { log, by, stored: Vec::new() }
    }

    /// Everyone who wrote part of the run, in order of first appearance.
    pub fn operators(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for who in &self.by {
            if !who.is_empty() && !seen.contains(&who.as_str()) {
                seen.push(who);
            }
        }
        seen
    }

    /// Whether any record was written on or after `day` (`YYYY-MM-DD`).
    pub fn touched_since(&self, day: &str) -> bool {
        self.log.records.iter().any(|r| record_at(r) >= day)
    }
}

/// When a record was written, as its `at` says.
pub fn record_at(record: &Record) -> &str {
    match record {
        Record::Run { at, .. }
        | Record::Intent { at, .. }
        | Record::Result { at, .. }
        | Record::Check { at, .. }
        | Record::End { at, .. }
        | Record::Performed { at, .. }
        | Record::Unsent { at, .. }
        | Record::Probe { at, .. } => at,
    }
}

/// A run as read back from its journal.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub run: String,
    pub records: Vec<Record>,
    /// Whether the process applying it is alive, when something better than this machine's
    /// process table knows (the state database's locks).
    pub live: Option<bool>,
}

impl RunLog {
    /// Read a run's records. A torn last line (the process died while writing it) is ignored:
    /// the effect it would have announced had not started, because records are written first.
    pub fn read(dir: &Path, run: &str) -> Result<Self> {
        let path = run_path(dir, run)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read journal {}", path.display()))?;
        Self::parse(&file_run_id(&path).unwrap_or_else(|| run.to_string()), &text, &path.display().to_string())
    }

    /// A run's records from the journal's text (`source` names it in errors).
    pub fn parse(run: &str, text: &str, source: &str) -> Result<Self> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Record>(line) {
                Ok(record) => records.push(record),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => bail!("journal {source} line {} is damaged: {e}", i + 1),
            }
        }
        if !matches!(records.first(), Some(Record::Run { .. })) {
            bail!("journal {source} does not start with a run record");
        }
        Ok(Self { run: run.to_string(), records, live: None })
    }

    pub fn list(dir: &Path) -> Vec<RunLog> {
        list_files(dir).iter().filter_map(|p| file_run_id(p)).filter_map(|id| Self::read(dir, &id).ok()).collect()
    }

    /// The state database the run was journaled for (team mode), if any.
    pub fn state_database(&self) -> Option<&str> {
        match self.records.first() {
            Some(Record::Run { state: Some(mark), .. }) => Some(&mark.database),
            _ => None,
        }
    }

    /// Team mode, but kept on this machine only (`--local-state`).
    pub fn local_only(&self) -> bool {
        matches!(self.records.first(), Some(Record::Run { state: Some(mark), .. }) if mark.local_only)
    }

    /// `user@machine` who started the run (empty in journals of earlier opsh).
    pub fn operator(&self) -> &str {
        match self.records.first() {
            Some(Record::Run { operator, .. }) => operator,
            _ => "",
        }
    }

    /// The component the run was planned with, when the journal says.
    pub fn component(&self) -> Option<&str> {
        match self.records.first() {
            Some(Record::Run { component, .. }) if !component.is_empty() => Some(component),
            _ => None,
        }
    }

    pub fn header(&self) -> Option<(&str, &Invocation, &Plan, &[StepPreview], &str, &str)> {
        match self.records.first() {
            Some(Record::Run { plugin, invocation, plan, previews, line, lang, .. }) => Some((plugin, invocation, plan, previews, line, lang)),
            _ => None,
        }
    }

    pub fn started(&self) -> &str {
        match self.records.first() {
            Some(Record::Run { at, .. }) => at,
            _ => "",
        }
    }

    pub fn end(&self) -> Option<(&str, i32, &str)> {
        self.records.iter().rev().find_map(|r| match r {
            Record::End { status, exit, message, .. } => Some((status.as_str(), *exit, message.as_str())),
            _ => None,
        })
    }

    /// How long planning and verifying took, where the journal says: (plan, verify) in ms.
    pub fn timings(&self) -> (Option<u64>, Option<u64>) {
        let plan = match self.records.first() {
            Some(Record::Run { plan_ms, .. }) => *plan_ms,
            _ => None,
        };
        let verify = self.records.iter().rev().find_map(|r| match r {
            Record::End { verify_ms, .. } => Some(*verify_ms),
            _ => None,
        });
        (plan, verify.flatten())
    }

    /// Each step's state, by the last record about it (a later `resume` overrides an earlier end).
    pub fn states(&self) -> Vec<StepState> {
        let steps = self.header().map_or(0, |h| h.2.steps.len());
        let mut states = vec![StepState::NotStarted; steps];
        for record in &self.records {
            match record {
                Record::Intent { index, .. } if *index < steps => states[*index] = StepState::InFlight,
                Record::Result { index, status, .. } if *index < steps => {
                    states[*index] = match status {
                        StepStatus::Done | StepStatus::Skipped => StepState::Done,
                        StepStatus::Failed => StepState::Failed,
                        StepStatus::Unknown => StepState::Unknown,
                    }
                }
                Record::Check { index, state, .. } if *index < steps && state == "done" => states[*index] = StepState::Done,
                _ => {}
            }
        }
        states
    }

    /// Per step: the last result's message and the total time spent applying it.
    pub fn step_details(&self) -> Vec<(String, u64)> {
        let steps = self.header().map_or(0, |h| h.2.steps.len());
        let mut details = vec![(String::new(), 0u64); steps];
        for record in &self.records {
            match record {
                Record::Result { index, message, duration_ms, .. } if *index < steps => {
                    details[*index].0 = message.clone();
                    details[*index].1 = details[*index].1.saturating_add(*duration_ms);
                }
                Record::Check { index, detail, state, .. } if *index < steps => details[*index].0 = format!("check: {state} — {detail}"),
                _ => {}
            }
        }
        details
    }

    /// How many times step `index` was started (intent records).
    pub fn attempts(&self, index: usize) -> usize {
        self.records.iter().filter(|r| matches!(r, Record::Intent { index: i, .. } if *i == index)).count()
    }

    /// The hosts and names of the commands step `index`'s last attempt sent when that attempt's outcome
    /// was never seen (no result, or `unknown`: opsh was killed, the connection broke, it timed
    /// out): they may still run, or have finished, on their hosts.
    pub fn unfinished_commands(&self, index: usize) -> Vec<(String, String)> {
        let Some(last) = self.records.iter().rposition(|r| matches!(r, Record::Intent { index: i, .. } if *i == index)) else { return Vec::new() };
        let after = &self.records[last + 1..];
        let seen = after.iter().any(|r| matches!(r, Record::Result { index: i, status, .. } if *i == index && *status != StepStatus::Unknown));
        if seen {
            return Vec::new();
        }
        after
            .iter()
            .filter_map(|r| match r {
                Record::Performed { index: i, once: Some(name), effect: crate::plan::Performed::Exec(exec), .. } if *i == index => {
                    Some((exec.host.clone(), name.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// For each step, what of it reached its target in its last attempt: `None` for a step the
    /// plugin applies itself (the host cannot tell), else how many of its effects the host sent
    /// and how many it has (waits and previews are not sent). A failed step with `0 of N` never
    /// started its command.
    pub fn sent(&self) -> Vec<Option<(usize, usize)>> {
        let Some(plan) = self.header().map(|h| h.2) else { return Vec::new() };
        let mut sent: Vec<Option<(usize, usize)>> = plan
            .steps
            .iter()
            .map(|step| {
                let sendable = step.effects.iter().filter(|e| !matches!(e, crate::plan::Effect::Wait { .. } | crate::plan::Effect::Opaque(_))).count();
                (step.runs == crate::plan::Runner::Host).then_some((0, sendable))
            })
            .collect();
        for record in &self.records {
            match record {
                Record::Intent { index, .. } => {
                    if let Some(Some((n, _))) = sent.get_mut(*index) {
                        *n = 0;
                    }
                }
                Record::Performed { index, .. } => {
                    if let Some(Some((n, _))) = sent.get_mut(*index) {
                        *n += 1;
                    }
                }
                Record::Unsent { index, .. } => {
                    if let Some(Some((n, _))) = sent.get_mut(*index) {
                        *n = n.saturating_sub(1);
                    }
                }
                _ => {}
            }
        }
        sent
    }

    /// `done`, `failed`, `unknown`, `interrupted`, `refused`, or `running` / `died` when there is
    /// no end record (told apart by whether the run's process is still alive).
    pub fn status(&self) -> String {
        let last_end = self.records.iter().rposition(|r| matches!(r, Record::End { .. }));
        let last_activity = self.records.iter().rposition(|r| matches!(r, Record::Intent { .. } | Record::Result { .. } | Record::Check { .. }));
        match (last_end, last_activity) {
            (Some(end), Some(activity)) if activity > end => self.liveness(),
            (Some(_), _) => self.end().map(|(s, _, _)| s.to_string()).unwrap_or_default(),
            (None, _) => self.liveness(),
        }
    }

    /// No end record after the last activity: is the process that wrote the last intent (or
    /// started the run) still alive?
    fn liveness(&self) -> String {
        if let Some(live) = self.live {
            return if live { "running" } else { "died" }.into();
        }
        let (pid, operator) = self
            .records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::Intent { pid, operator, .. } if *pid != 0 => Some((*pid, operator.as_str())),
                Record::Run { pid, operator, .. } => Some((*pid, operator.as_str())),
                _ => None,
            })
            .unwrap_or((0, ""));
        // A pid means something only on the machine that wrote it.
        let here = operator.is_empty() || operator.rsplit_once('@').is_some_and(|(_, machine)| machine == crate::state::Who::current().machine);
        if here && pid != 0 && pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() { "running".into() } else { "died".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Step, Text};

    fn plan(n: usize) -> Plan {
        let text = || Text { en: "t".into(), ja: String::new() };
        Plan {
            summary: text(),
            warnings: vec![],
            if_stopped: vec![],
            steps: (0..n)
                .map(|i| Step {
                    id: format!("s{i}"),
                    title: text(),
                    target: "x".into(),
                    effects: vec![],
                    group: String::new(),
                    idempotent: false,
                    data: String::new(),
                    runs: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn states_survive_a_torn_last_line_and_secrets_are_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let redact: Redactor = Arc::new(|s: &str| s.replace("hunter2", "********"));
        let journal = Journal::create(dir.path(), redact).expect("create");
        journal
            .append(&Record::Run {
                schema: SCHEMA,
                run: journal.run.clone(),
                at: timefmt::now(),
                pid: std::process::id(),
                plugin: "p".into(),
                plugin_version: "1".into(),
                line: "p go".into(),
                invocation: Invocation { command: "go".into(), args: vec![] },
                lang: "en".into(),
                inventory: "i".into(),
                plan: plan(3),
                previews: vec![],
                operator: "me@here".into(),
                component: String::new(),
                saved: None,
                state: None,
                plan_ms: Some(12),
            })
            .expect("run");
        journal.intent(0, "s0", "run").expect("intent");
        journal.result(0, "s0", StepStatus::Done, "ok with hunter2", 5).expect("result");
        journal.intent(1, "s1", "run").expect("intent");
        std::fs::OpenOptions::new().append(true).open(&journal.path).and_then(|mut f| f.write_all(b"{\"record\":\"res")).expect("tear");
        let log = RunLog::read(dir.path(), &journal.run[..12]).expect("read by prefix");
        assert_eq!(log.states(), vec![StepState::Done, StepState::InFlight, StepState::NotStarted]);
        let text = std::fs::read_to_string(&journal.path).expect("text");
        assert!(!text.contains("hunter2") && text.contains("ok with ********"));

        // A resume of that run: the torn record is cut off, and what it writes is readable.
        let resumed = Journal::reopen(dir.path(), &journal.run, Arc::new(|s: &str| s.to_string())).expect("reopen");
        resumed.result(1, "s1", StepStatus::Done, "ok", 5).expect("result");
        let log = RunLog::read(dir.path(), &journal.run).expect("read after the resume wrote");
        assert_eq!(log.states(), vec![StepState::Done, StepState::Done, StepState::NotStarted]);
    }
}
