//! Rendering results as aligned text tables or JSON (one JSON document per command on stdout).

use nu_ansi_term::{Color, Style};
use opsh_host::Exit;
use opsh_host::inventory::{Inventory, PasswordSource, ServiceManager};
use opsh_host::journal::Record;
use opsh_host::plugins::Registry;
use opsh_host::runbook::{Outcome, pick};
use opsh_host::sandbox::Origin;
use opsh_host::sandbox::bindings::runbook::{ArgKind, Cell, CommandKind, Table};
use serde_json::{Value, json};
use unicode_width::UnicodeWidthStr;

use crate::OutputFormat;
use crate::operator::Console;
use crate::session::{BUILTINS, LineOptions, Session};
use crate::term::one_line;

/// A table that is not a plugin's (built-ins), in the same shape.
pub struct Grid {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<(String, Option<Color>)>>,
}

impl Grid {
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| (c, None)).collect());
    }

    fn from_table(table: &Table, lang: &str) -> Self {
        Self {
            title: pick(&table.title, lang).to_string(),
            columns: table.columns.clone(),
            rows: table
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|cell| match cell {
                            Cell::Plain(t) => (t.clone(), None),
                            Cell::Good(t) => (t.clone(), Some(Color::Green)),
                            Cell::Warn(t) => (t.clone(), Some(Color::Yellow)),
                            Cell::Bad(t) => (t.clone(), Some(Color::Red)),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// The table as JSON: each cell's text and style and its `value` as read by [`typed`]; and
    /// each row as a record keyed by its columns' names (`snake_case`) holding those values.
    fn to_json(&self) -> Value {
        let keys: Vec<String> = self.columns.iter().map(|c| key(c)).collect();
        json!({
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows.iter().map(|row| row.iter().map(|(text, color)| json!({
                "text": text,
                "style": match color { Some(Color::Green) => "good", Some(Color::Yellow) => "warn", Some(Color::Red) => "bad", _ => "plain" },
                "value": typed(text),
            })).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "records": self.rows.iter().map(|row| {
                Value::Object(keys.iter().zip(row).map(|(k, (text, _))| (k.clone(), typed(text))).collect())
            }).collect::<Vec<_>>(),
        })
    }

    /// The table as lines: every cell made visible first (plugin text may hold control
    /// characters), so that the widths are those the terminal shows.
    ///
    /// When a table would be wider than 120 columns, a long cell (an error message, mostly) in
    /// any column but the last is shown as a note mark, `[1]`, and listed in full under the
    /// table. The last column runs on at the end of its line and misaligns nothing.
    fn print(&self, console: &Console) {
        let shown = |text: &str| one_line(&text.replace('\n', " ⏎ "));
        let columns: Vec<String> = self.columns.iter().map(|c| shown(c)).collect();
        let natural: usize = (0..columns.len())
            .map(|i| self.rows.iter().filter_map(|r| r.get(i)).map(|(t, _)| shown(t).width()).chain([columns[i].width()]).max().unwrap_or(0) + 2)
            .sum();
        let squeeze = natural > MAX_TABLE_WIDTH;
        let mut notes: Vec<String> = Vec::new();
        let rows: Vec<Vec<(String, Option<Color>)>> = self
            .rows
            .iter()
            .map(|row| {
                let last = row.len().saturating_sub(1);
                row.iter()
                    .enumerate()
                    .map(|(i, (text, color))| {
                        let text = shown(text);
                        if !squeeze || i == last || text.width() <= MAX_CELL_WIDTH {
                            return (text, *color);
                        }
                        // The cell keeps its first words (`cannot tell: …` keeps `cannot tell`).
                        let head: String = match text.split_once(": ") {
                            Some((head, _)) if head.width() <= MAX_HEAD_WIDTH => head.to_string(),
                            _ => format!("{}…", text.chars().take(MAX_HEAD_WIDTH).collect::<String>()),
                        };
                        let mark = match notes.iter().position(|n| *n == text) {
                            Some(i) => i + 1,
                            None => {
                                notes.push(text);
                                notes.len()
                            }
                        };
                        (format!("{head} [{mark}]"), *color)
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> =
            (0..columns.len()).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|(t, _)| t.width()).chain([columns[i].width()]).max().unwrap_or(0)).collect();
        if !self.title.is_empty() {
            console.out(&console.paint_out(Style::new().bold(), &shown(&self.title)));
        }
        let header: Vec<String> = columns.iter().zip(&widths).map(|(c, w)| pad(c, *w)).collect();
        console.out(&console.paint_out(Style::new().underline(), header.join("  ").trim_end()));
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|((text, color), w)| {
                    let padded = pad(text, *w);
                    match color {
                        Some(color) => console.paint_out(color.normal(), &padded),
                        None => padded,
                    }
                })
                .collect();
            console.out(cells.join("  ").trim_end());
        }
        for (i, note) in notes.iter().enumerate() {
            console.out(&format!("  [{}] {note}", i + 1));
        }
    }
}

/// A column's name as a JSON key: `pending restart` → `pending_restart`.
fn key(column: &str) -> String {
    let mut out = String::new();
    for c in column.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// A cell's text as a value: a whole number as a number, a size as PostgreSQL's `pg_size_pretty`
/// writes it (`8192 bytes`, `16 kB`) as bytes, `true`/`false` as a boolean, an empty cell, `?`
/// or `-` (not known) as null; anything else — a decimal, a version — stays its text.
pub fn typed(text: &str) -> Value {
    let t = text.trim();
    match t {
        "" | "?" | "-" => return Value::Null,
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    // Whole numbers only, written as a number is (no leading zero, no plus): `15.10` is a
    // version, not 15.1, and stays text.
    let number = |n: &str| -> Option<Value> {
        let digits = n.strip_prefix('-').unwrap_or(n);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        n.parse::<i64>().ok().map(|i| json!(i))
    };
    if let Some(n) = number(t) {
        return n;
    }
    if let Some((n, unit)) = t.split_once(' ') {
        let scale: Option<u64> = match unit {
            "bytes" | "B" => Some(1),
            "kB" => Some(1 << 10),
            "MB" => Some(1 << 20),
            "GB" => Some(1 << 30),
            "TB" => Some(1 << 40),
            _ => None,
        };
        if let (Some(scale), Some(n)) = (scale, number(n).and_then(|v| v.as_u64())) {
            return json!(n.saturating_mul(scale));
        }
    }
    Value::String(text.to_string())
}

/// A table wider than this shows its long cells (wider than `MAX_CELL_WIDTH`) as notes.
const MAX_TABLE_WIDTH: usize = 120;
const MAX_CELL_WIDTH: usize = 48;
/// What such a cell keeps in place: its words up to the first `: `, or this many characters.
const MAX_HEAD_WIDTH: usize = 32;

fn pad(text: &str, width: usize) -> String {
    format!("{text}{}", " ".repeat(width.saturating_sub(text.width())))
}

pub fn grids(console: &Console, options: &LineOptions, grids: &[Grid], extra: Value) {
    if options.output == OutputFormat::Json {
        let mut doc = json!({ "tables": grids.iter().map(Grid::to_json).collect::<Vec<_>>() });
        if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
            doc.extend(extra);
        }
        console.out_json(doc);
    } else {
        for (i, grid) in grids.iter().enumerate() {
            if i > 0 {
                console.out("");
            }
            grid.print(console);
        }
    }
}

/// Version of every JSON document opsh prints (see the README and `docs/opsh-output.schema.json`).
pub const JSON_SCHEMA: u32 = 2;

/// The document of a command that failed before it could make one of its own (a usage error, an
/// inventory that does not load): what `Outcome::Usage` and its kin print.
pub fn error_document(exit: Exit, message: &str) -> Value {
    let outcome = match exit {
        Exit::Usage => "usage",
        Exit::Refused => "refused",
        Exit::Unknown => "unknown",
        Exit::CheckFailed => "check-failed",
        _ => "failed",
    };
    json!({ "outcome": outcome, "exit": exit.code(), "message": message })
}

/// `--check`: every cell a read command shows as a problem (style bad), with its row's first
/// cell for context.
pub fn problems(outcome: &Outcome, lang: &str) -> Vec<String> {
    let Outcome::Tables { tables, .. } = outcome else { return Vec::new() };
    let mut found = Vec::new();
    for table in tables {
        let title = pick(&table.title, lang);
        for row in &table.rows {
            let first = row.first().map(cell_text).unwrap_or_default();
            for (i, cell) in row.iter().enumerate() {
                if let Cell::Bad(text) = cell {
                    found.push(if i == 0 { format!("{title}: {text}") } else { format!("{title}: {first}: {text}") });
                }
            }
        }
    }
    found
}

fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Plain(t) | Cell::Good(t) | Cell::Warn(t) | Cell::Bad(t) => t.clone(),
    }
}

pub fn outcome(console: &Console, options: &LineOptions, outcome: &Outcome, exit: Exit) {
    let lang = options.lang.as_str();
    if options.output == OutputFormat::Json {
        let mut doc = serde_json::to_value(outcome).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut doc {
            let tables = match outcome {
                Outcome::Tables { tables, .. } => Some(tables),
                Outcome::Done { verification, .. } => Some(verification),
                _ => None,
            };
            if let Some(tables) = tables {
                let key = if matches!(outcome, Outcome::Tables { .. }) { "tables" } else { "verification" };
                map.insert(key.into(), Value::Array(tables.iter().map(|t| Grid::from_table(t, lang).to_json()).collect()));
            }
            map.insert("exit".into(), json!(exit.code()));
        }
        console.out_json(doc);
        return;
    }
    match outcome {
        Outcome::Tables { tables, none_answered } => {
            for (i, table) in tables.iter().enumerate() {
                if i > 0 {
                    console.out("");
                }
                Grid::from_table(table, lang).print(console);
            }
            if let Some(message) = none_answered {
                console.error(message);
            }
        }
        Outcome::Planned { .. } => console.note("dry run: nothing was changed"),
        Outcome::Saved { file, steps, .. } => {
            console.note(&format!("plan saved to {file} ({} step(s)); nothing was changed. Review it, then: opsh apply {file}", steps.len()))
        }
        Outcome::Done { verification, message, run, .. } => {
            for table in verification {
                Grid::from_table(table, lang).print(console);
            }
            let run = run.as_ref().map(|r| format!(" (run {r})")).unwrap_or_default();
            console.note(&console.paint_err(Color::Green.bold(), &format!("done: {message}{run}")));
        }
        Outcome::Usage { message } | Outcome::Refused { message, .. } => console.error(message),
        Outcome::Failed { message, changed, .. } => {
            console.error(message);
            if !changed {
                console.note("nothing was changed");
            }
        }
        Outcome::Unknown { message, .. } => {
            console.error(message);
            console.note("outcome unknown: check the target before going on");
        }
    }
}

/// `doctor`: one table of every check, then each failure with what to do (never inside a cell,
/// so the table stays narrow).
pub fn doctor(console: &Console, options: &LineOptions, checks: &[opsh_host::doctor::Check], took: std::time::Duration, exit: Exit) {
    use opsh_host::doctor::Verdict;
    let verdict = |v: Verdict| match v {
        Verdict::Ok => "ok",
        Verdict::Failed => "failed",
        Verdict::Skipped => "skipped",
    };
    let failed: Vec<&opsh_host::doctor::Check> = checks.iter().filter(|c| c.verdict == Verdict::Failed).collect();
    if options.output == OutputFormat::Json {
        let rows: Vec<Value> =
            checks.iter().map(|c| json!({ "target": c.target, "check": c.check, "result": verdict(c.verdict), "detail": c.detail, "fix": c.fix })).collect();
        console.out_json(json!({ "exit": exit.code(), "checks": rows, "failed": failed.len(), "took_ms": took.as_millis() as u64 }));
        return;
    }
    let mut grid = Grid::new("Doctor", &["target", "check", "result", "detail"]);
    for c in checks {
        let color = match c.verdict {
            Verdict::Ok => Color::Green,
            Verdict::Failed => Color::Red,
            Verdict::Skipped => Color::Yellow,
        };
        grid.rows.push(vec![(c.target.clone(), None), (c.check.clone(), None), (verdict(c.verdict).to_string(), Some(color)), (c.detail.clone(), None)]);
    }
    grid.print(console);
    console.out("");
    if failed.is_empty() {
        console.note(&console.paint_err(Color::Green.bold(), &format!("doctor: all {} checks passed in {:.1} s", checks.len(), took.as_secs_f32())));
        return;
    }
    for c in &failed {
        console.error(&format!("{} {}: {}", c.target, c.check, c.fix));
    }
    console.note(&format!("doctor: {} of {} checks failed ({:.1} s)", failed.len(), checks.len(), took.as_secs_f32()));
}

/// What of a step reached its target: `1 of 2` effects sent by the host, `nothing` for a step
/// that never started its command, `by plugin` when the plugin applied it (the host cannot tell).
fn sent_cell(state: opsh_host::journal::StepState, sent: Option<(usize, usize)>) -> String {
    use opsh_host::journal::StepState;
    match (state, sent) {
        (StepState::NotStarted, _) => String::new(),
        (_, None) => "by plugin".into(),
        (_, Some((0, of))) if of > 0 => "nothing".into(),
        (_, Some((n, of))) => format!("{n} of {of}"),
    }
}

/// `journal`: the runs, newest last; `journal RUN`: one run step by step.
/// Where `journal` reads the runs: this machine's journal, or the team's state database.
pub enum JournalSource<'a> {
    Local(&'a std::path::Path),
    Shared(&'a opsh_host::state::StateDb),
}

impl JournalSource<'_> {
    /// The runs, and the ones that could not be read (why).
    fn list(&self, since: Option<&str>) -> Result<(Vec<opsh_host::journal::Audited>, Vec<String>), String> {
        use opsh_host::journal::{Audited, RunLog};
        match self {
            Self::Local(dir) => {
                Ok((RunLog::list(dir).into_iter().map(Audited::local).filter(|a| since.is_none_or(|day| a.touched_since(day))).collect(), Vec::new()))
            }
            Self::Shared(db) => db.audited(since),
        }
    }

    fn read(&self, run: &str) -> Result<opsh_host::journal::Audited, String> {
        use opsh_host::journal::{Audited, RunLog};
        match self {
            Self::Local(dir) => RunLog::read(dir, run).map(Audited::local).map_err(|e| format!("{e:#}")),
            Self::Shared(db) => db.audited_run(run)?.ok_or_else(|| format!("no run {run:?} in the state database {}; `journal` lists the runs", db.name)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::Shared(db) => format!("the state database {}", db.name),
        }
    }
}

/// `journal [--since YYYY-MM-DD] [RUN]`.
pub fn journal(console: &Console, source: &JournalSource, args: &[String], options: &LineOptions) -> Exit {
    use opsh_host::journal::StepState;
    let mut since = None;
    let mut rest = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--since" => match words.next() {
                Some(day) if is_day(day) => since = Some(day.clone()),
                other => {
                    console.error(&format!("journal --since takes a day as YYYY-MM-DD, not {:?}", other.map_or("", |d| d.as_str())));
                    return Exit::Usage;
                }
            },
            _ => rest.push(word.clone()),
        }
    }
    match rest.as_slice() {
        [] => {
            let (runs, damaged) = match source.list(since.as_deref()) {
                Ok(listed) => listed,
                Err(e) => {
                    console.error(&format!("journal: {e}"));
                    return Exit::Failed;
                }
            };
            for why in &damaged {
                console.warn(&format!("journal: not shown: {why}"));
            }
            if options.output == OutputFormat::Json {
                let runs: Vec<Value> = runs
                    .iter()
                    .map(|audited| {
                        let log = &audited.log;
                        let states = log.states();
                        json!({
                            "run": log.run,
                            "started": log.started(),
                            "line": log.header().map(|h| h.4).unwrap_or_default(),
                            "status": log.status(),
                            "steps_done": states.iter().filter(|s| **s == StepState::Done).count(),
                            "steps": states.len(),
                            "operator": log.operator(),
                            "operators": audited.operators(),
                        })
                    })
                    .collect();
                console.out_json(json!({ "source": source.describe(), "runs": runs }));
                return Exit::Success;
            }
            let mut grid = Grid::new("Runs", &["run", "started", "command", "status", "steps done", "by"]);
            for audited in &runs {
                let log = &audited.log;
                let states = log.states();
                let status = log.status();
                let color = match status.as_str() {
                    "done" => Some(Color::Green),
                    "running" => None,
                    "refused" => Some(Color::Yellow),
                    _ => Some(Color::Red),
                };
                grid.rows.push(vec![
                    (log.run.clone(), None),
                    (log.started().to_string(), None),
                    (log.header().map(|h| h.4.to_string()).unwrap_or_default(), None),
                    (status, color),
                    (format!("{}/{}", states.iter().filter(|s| **s == StepState::Done).count(), states.len()), None),
                    (audited.operators().join(", "), None),
                ]);
            }
            if runs.is_empty() {
                console.note(&format!("no runs yet in {}", source.describe()));
            }
            grid.print(console);
            Exit::Success
        }
        [run] => {
            let audited = match source.read(run) {
                Ok(audited) => audited,
                Err(e) => {
                    console.error(&e);
                    return Exit::Usage;
                }
            };
            let log = &audited.log;
            let Some((plugin, _, plan, previews, line, _)) = log.header() else { return Exit::Failed };
            let states = log.states();
            let details = log.step_details();
            let sent = log.sent();
            if options.output == OutputFormat::Json {
                let steps: Vec<Value> = plan
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, step)| {
                        json!({
                            "index": i, "id": step.id, "title": previews.get(i).map(|p| p.title.clone()).unwrap_or_default(),
                            "target": step.target, "state": states[i], "message": details[i].0, "duration_ms": details[i].1,
                            "sent": sent.get(i).copied().flatten().map(|(n, of)| json!({ "effects": n, "of": of })),
                            "effects": previews.get(i).map(|p| serde_json::to_value(&p.effects).unwrap_or(Value::Null)).unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                let records: Vec<Value> = log
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, record)| {
                        let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
                        if let Some(object) = value.as_object_mut() {
                            object.insert("by".into(), json!(audited.by.get(i).cloned().unwrap_or_default()));
                            if let Some(stored) = audited.stored.get(i) {
                                object.insert("stored".into(), json!(stored));
                            }
                        }
                        value
                    })
                    .collect();
                let (plan_ms, verify_ms) = log.timings();
                console.out_json(json!({
                    "source": source.describe(), "run": log.run, "plugin": plugin, "line": line, "status": log.status(), "started": log.started(),
                    "operators": audited.operators(), "plan_ms": plan_ms, "verify_ms": verify_ms, "steps": steps, "records": records,
                }));
                return Exit::Success;
            }
            console.out(&console.paint_out(Style::new().bold(), &format!("run {} — {line}", log.run)));
            console.out(&format!("started {} · status {} · by {}", log.started(), log.status(), audited.operators().join(", ")));
            if let Some((_, _, message)) = log.end()
                && !message.is_empty()
            {
                console.out(&format!("last message: {message}"));
            }
            let duration = |ms: u64| if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) };
            let (plan_ms, verify_ms) = log.timings();
            let steps_ms: u64 = details.iter().map(|(_, ms)| *ms).sum();
            let mut timings = vec![format!("steps {} (each below; a group's steps overlap)", duration(steps_ms))];
            if let Some(ms) = plan_ms {
                timings.insert(0, format!("plan {}", duration(ms)));
            }
            if let Some(ms) = verify_ms {
                timings.push(format!("verify {}", duration(ms)));
            }
            console.out(&format!("time: {}", timings.join(" · ")));
            console.out("");
            let mut grid = Grid::new("Steps", &["#", "step", "title", "target", "state", "sent", "time", "message"]);
            for (i, step) in plan.steps.iter().enumerate() {
                let (state, color) = match states[i] {
                    StepState::Done => ("done", Some(Color::Green)),
                    StepState::NotStarted => ("not started", None),
                    StepState::InFlight => ("in flight", Some(Color::Yellow)),
                    StepState::Unknown => ("unknown", Some(Color::Yellow)),
                    StepState::Failed => ("failed", Some(Color::Red)),
                };
                grid.rows.push(vec![
                    ((i + 1).to_string(), None),
                    (step.id.clone(), None),
                    (previews.get(i).map(|p| p.title.clone()).unwrap_or_default(), None),
                    (step.target.clone(), None),
                    (state.to_string(), color),
                    (sent_cell(states[i], sent.get(i).copied().flatten()), None),
                    (
                        match details[i].1 {
                            0 => String::new(),
                            ms => duration(ms),
                        },
                        None,
                    ),
                    (details[i].0.clone(), None),
                ]);
            }
            grid.print(console);
            let probes: Vec<Vec<String>> = log
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::Probe { at, during, host, command } => Some(vec![at.clone(), during.clone(), host.clone(), command.clone()]),
                    _ => None,
                })
                .collect();
            if !probes.is_empty() {
                console.out("");
                let mut grid = Grid::new("Probes (commands run while nothing could change)", &["at", "during", "host", "command"]);
                for row in probes {
                    grid.row(row);
                }
                grid.print(console);
            }
            let performed: Vec<Vec<String>> = log
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::Performed { at, index, effect, .. } => Some(vec![at.clone(), (index + 1).to_string(), effect.summary()]),
                    _ => None,
                })
                .collect();
            if !performed.is_empty() {
                console.out("");
                let mut grid = Grid::new("Performed by the host (as sent)", &["at", "#", "effect"]);
                for row in performed {
                    grid.row(row);
                }
                grid.print(console);
            }
            let diffs: Vec<String> = previews
                .iter()
                .flat_map(|p| p.effects.iter())
                .filter_map(|e| match e {
                    opsh_host::runbook::Preview::File { diff, .. } => Some(diff.clone()),
                    _ => None,
                })
                .collect();
            if !diffs.is_empty() {
                console.out("");
                console.out(&console.paint_out(Style::new().bold(), "File edits"));
                for diff in diffs {
                    console.out(diff.trim_end());
                }
            }
            Exit::Success
        }
        _ => {
            console.error("usage: journal [--since YYYY-MM-DD] [RUN]");
            Exit::Usage
        }
    }
}

fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

pub fn help(console: &Console, session: &Session, args: &[String], options: &LineOptions) -> Exit {
    let lang = options.lang.as_str();
    match args {
        [] => {
            let mut builtins = Grid::new("Built-in commands", &["command", "what it does"]);
            for (name, text) in BUILTINS {
                builtins.row(vec![name.to_string(), text.to_string()]);
            }
            let mut plugins = Grid::new("Plugin commands", &["command", "kind", "what it does"]);
            for plugin in &session.registry.plugins {
                for command in &plugin.info.commands {
                    plugins.row(vec![format!("{} {}", plugin.name(), command.name), kind(command.kind).into(), pick(&command.summary, lang).into()]);
                }
            }
            grids(console, options, &[builtins, plugins], json!({}));
            if options.output == OutputFormat::Text {
                console.out("");
                console.out("Flags on any command: --dry-run, --yes, --output text|json, --lang en|ja, --local-state (team mode).  `help PLUGIN COMMAND` for arguments and examples.");
            }
            Exit::Success
        }
        [name, rest @ ..] => {
            let Some(plugin) = session.registry.find(name) else {
                if let Some((_, text)) = BUILTINS.iter().find(|(n, _)| n == name) {
                    if options.output == OutputFormat::Json {
                        console.out_json(json!({ "builtin": name, "usage": text }));
                    } else {
                        console.out(text);
                    }
                    return Exit::Success;
                }
                console.error(&format!("help: no plugin or command {name:?} (try `help`)"));
                return Exit::Usage;
            };
            let wanted = rest.join(" ");
            let commands: Vec<_> = plugin.info.commands.iter().filter(|c| wanted.is_empty() || c.name == wanted).collect();
            if commands.is_empty() {
                console.error(&format!("help: {name} has no command {wanted:?} (try `help {name}`)"));
                return Exit::Usage;
            }
            if options.output == OutputFormat::Json {
                console.out_json(json!({ "plugin": plugin.name(), "commands": commands }));
                return Exit::Success;
            }
            console.out(&console.paint_out(Style::new().bold(), &format!("{} {} — {}", plugin.name(), plugin.info.version, pick(&plugin.info.summary, lang))));
            for command in commands {
                let usage: Vec<String> = command
                    .args
                    .iter()
                    .map(|a| match (a.kind, a.required) {
                        (ArgKind::Positional, _) => a.name.to_uppercase(),
                        (ArgKind::Option, true) => format!("--{} VALUE", a.name),
                        (ArgKind::Option, false) => format!("[--{} VALUE]", a.name),
                        (ArgKind::Flag, _) => format!("[--{}]", a.name),
                    })
                    .collect();
                console.out("");
                console.out(&console.paint_out(Style::new().bold(), format!("{} {} {}", plugin.name(), command.name, usage.join(" ")).trim_end()));
                console.out(&format!("  {} ({})", pick(&command.help, lang), kind(command.kind)));
                for arg in &command.args {
                    console.out(&format!("    {:<16} {}", arg.name, pick(&arg.help, lang)));
                }
                for example in &command.examples {
                    console.out(&format!("  e.g. {}   # {}", example.command, pick(&example.description, lang)));
                }
            }
            Exit::Success
        }
    }
}

fn kind(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Read => "read-only",
        CommandKind::Change => "changes things",
    }
}

pub fn plugins(console: &Console, registry: &Registry, inventory: &Inventory, options: &LineOptions) {
    let mut grid = Grid::new("Plugins", &["name", "version", "api", "from", "component", "commands", "capabilities"]);
    for plugin in &registry.plugins {
        grid.row(vec![
            plugin.name().into(),
            plugin.info.version.clone(),
            format!("opsh:plugin {}", plugin.wit_version()),
            match &plugin.origin {
                Origin::Bundled => "bundled".into(),
                Origin::File(path) => path.display().to_string(),
            },
            format!("sha256:{}", plugin.sha256),
            plugin.info.commands.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", "),
            plugin.declared.capability_names().join(", "),
        ]);
    }
    let mut grids_out = vec![grid];
    let mut probes = Grid::new("Declared probes (granted with a topology that names the plugin)", &["plugin", "probe"]);
    for plugin in &registry.plugins {
        for probe in &plugin.declared.probes {
            probes.row(vec![plugin.name().into(), probe.to_string()]);
        }
    }
    if !probes.rows.is_empty() {
        grids_out.push(probes);
    }
    if !registry.problems.is_empty() {
        let mut problems = Grid::new("Not loaded", &["problem"]);
        for problem in &registry.problems {
            problems.row(vec![problem.clone()]);
        }
        grids_out.push(problems);
    }
    grids(console, options, &grids_out, json!({}));
    warn_plan_users(console, inventory);
}

/// PostgreSQL keeps a plan read-only for a login without superuser; a superuser is held by
/// opsh's own checks alone. Said wherever the operator looks at what plugins may do.
fn warn_plan_users(console: &Console, inventory: &Inventory) {
    let without: Vec<&str> = inventory.databases.iter().filter(|(_, db)| db.plan_user.is_none()).map(|(name, _)| name.as_str()).collect();
    if !without.is_empty() {
        console.warn(&format!(
            "no plan-user for {}: plugins plan there as the login itself; if it is a superuser, PostgreSQL cannot stop a side effect while planning (opsh's own checks still screen every statement). Set plan-user to a role without superuser in {}",
            without.join(", "),
            inventory.source.display()
        ));
    }
}

pub fn inventory(console: &Console, inventory: &Inventory, options: &LineOptions) {
    let mut hosts = Grid::new("Hosts", &["name", "address", "ssh", "service manager", "become"]);
    for (name, host) in &inventory.hosts {
        let ssh = format!("{}{}", host.ssh.clone().unwrap_or_else(|| host.address.clone()), host.ssh_port.map(|p| format!(" port {p}")).unwrap_or_default());
        let manager = match &host.service_manager {
            ServiceManager::Named(name) => format!("{name:?}").to_lowercase(),
            ServiceManager::Command { command } => format!("command: {command}"),
            ServiceManager::Unset => "-".into(),
        };
        hosts.row(vec![name.clone(), host.address.clone(), ssh, manager, format!("{:?}", host.escalation).to_lowercase()]);
    }
    let mut databases = Grid::new("Databases", &["name", "host", "port", "dbname", "user", "password from", "sslmode", "plans as"]);
    for (name, db) in &inventory.databases {
        // Where the password comes from, never the password.
        let source = match &db.password {
            Some(PasswordSource::Env { env }) => format!("env ${env}"),
            Some(PasswordSource::File { file }) => format!("file {}", file.display()),
            Some(PasswordSource::Pgpass { pgpass: true }) | None => ".pgpass".into(),
            Some(PasswordSource::Pgpass { pgpass: false }) => "none".into(),
        };
        // Without a plan-user, a superuser login is stopped during planning by opsh's checks alone.
        let plans_as = match &db.plan_user {
            Some(user) => format!("plan-user {user}"),
            None => format!("{} (no plan-user: if it is a superuser, PostgreSQL cannot stop its side effects while planning)", db.user),
        };
        databases.row(vec![name.clone(), db.host.clone(), db.port.to_string(), db.dbname.clone(), db.user.clone(), source, db.sslmode.name().into(), plans_as]);
    }
    let mut topologies = Grid::new("Topologies", &["name", "plugin", "members"]);
    for (name, topology) in &inventory.topologies {
        let members: Vec<String> = topology.members.iter().map(|(role, names)| format!("{role}: {}", names.join(", "))).collect();
        topologies.row(vec![name.clone(), topology.plugin.clone().unwrap_or_else(|| "-".into()), members.join("; ")]);
    }
    let mut grants = Grid::new("Grants", &["plugin", "sql", "ssh", "file-edit", "service", "probes"]);
    for (plugin, grant) in &inventory.grants {
        grants.row(vec![
            plugin.clone(),
            grant.sql.join(", "),
            grant.ssh.join(", "),
            grant.file_edit.join(", "),
            grant.service.join(", "),
            grant.probes.join(" | "),
        ]);
    }
    let source = inventory.source.display().to_string();
    if options.output == OutputFormat::Text {
        console.out(&format!("Inventory: {}", if source.is_empty() { "(none: give one with --inventory PATH)".to_string() } else { source.clone() }));
        console.out("");
    }
    grids(console, options, &[hosts, databases, topologies, grants], json!({ "source": source }));
    warn_plan_users(console, inventory);
}

#[cfg(test)]
mod tests {
    use super::{key, typed};
    use serde_json::json;

    #[test]
    fn cells_are_read_as_values_only_when_the_whole_text_is_one() {
        for (text, want) in [
            ("42", json!(42)),
            ("-3", json!(-3)),
            ("0.25", json!("0.25")),
            ("15.10", json!("15.10")),
            ("007", json!("007")),
            ("16 kB", json!(16384)),
            ("8192 bytes", json!(8192)),
            ("2 GB", json!(2147483648u64)),
            ("1.5 GB", json!("1.5 GB")),
            ("0 B", json!(0)),
            ("true", json!(true)),
            ("?", json!(null)),
            ("", json!(null)),
            ("15.4", json!("15.4")),
            ("15.4 (Debian)", json!("15.4 (Debian)")),
            ("2 standby(s) streaming", json!("2 standby(s) streaming")),
            ("10.0.0.1", json!("10.0.0.1")),
            ("1-2", json!("1-2")),
            ("-1 kB", json!("-1 kB")),
            ("5.", json!("5.")),
        ] {
            assert_eq!(typed(text), want, "{text:?}");
        }
    }

    #[test]
    fn column_names_become_snake_case_keys() {
        assert_eq!(key("pending restart"), "pending_restart");
        assert_eq!(key("What it does"), "what_it_does");
        assert_eq!(key(" lag (bytes) "), "lag_bytes");
    }
}
