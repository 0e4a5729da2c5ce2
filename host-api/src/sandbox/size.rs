//! Bounds on what a plugin hands back from a call (tables, a plan, a step's note): the host
//! renders, journals and serialises these, so a result too large to show is refused with a
//! message instead of taking the operator's machine's memory. (While it is read out of the
//! guest, a result is bounded by the guest's own memory limit.)

use super::bindings::runbook::{Cell, CommandError, Table, Text};
use super::bindings::types::CapabilityError;
use crate::plan::{Effect, Plan};

/// Rows over all tables of one result.
pub const MAX_ROWS: usize = 100_000;
/// Cells over all tables of one result.
pub const MAX_CELLS: usize = 1_000_000;
/// Text over all of one result (tables), or all of one plan (whose file effects carry whole
/// files).
pub const MAX_TABLE_BYTES: usize = 32 << 20;
pub const MAX_PLAN_BYTES: usize = 64 << 20;
pub const MAX_STEPS: usize = 2_000;

fn text_len(text: &Text) -> usize {
    text.en.len() + text.ja.len()
}

fn cell_len(cell: &Cell) -> usize {
    match cell {
        Cell::Plain(s) | Cell::Good(s) | Cell::Warn(s) | Cell::Bad(s) => s.len(),
    }
}

pub fn tables(tables: &[Table]) -> Result<(), String> {
    let rows: usize = tables.iter().map(|t| t.rows.len()).sum();
    let cells: usize = tables.iter().flat_map(|t| &t.rows).map(Vec::len).sum();
    let bytes: usize = tables
        .iter()
        .map(|t| text_len(&t.title) + t.columns.iter().map(String::len).sum::<usize>() + t.rows.iter().flatten().map(cell_len).sum::<usize>())
        .sum();
    if rows > MAX_ROWS || cells > MAX_CELLS || bytes > MAX_TABLE_BYTES {
        return Err(format!(
            "it returned {rows} rows, {cells} cells, {} MiB of text in one result; opsh takes at most {MAX_ROWS} rows, {MAX_CELLS} cells and {} MiB (ask it for less, e.g. one member at a time)",
            bytes >> 20,
            MAX_TABLE_BYTES >> 20
        ));
    }
    Ok(())
}

pub fn plan(plan: &Plan) -> Result<(), String> {
    let text = |t: &crate::plan::Text| t.en.len() + t.ja.len();
    // Close enough: what the plan's JSON in the journal and on screen will hold.
    let effect_len = |e: &Effect| match e {
        Effect::Sql { database, statements, params, .. } => {
            database.len() + statements.iter().map(String::len).sum::<usize>() + params.iter().flatten().map(|p| format!("{p:?}").len()).sum::<usize>()
        }
        Effect::File { host, path, expected_sha256, new_content } => host.len() + path.len() + expected_sha256.len() + new_content.len(),
        Effect::Service { host, service, action } => host.len() + service.len() + action.len(),
        Effect::Exec { host, argv, env, stdin, ok_status, .. } => {
            let env: usize = env
                .iter()
                .map(|(name, value)| {
                    name.len()
                        + match value {
                            crate::plan::EnvSpec::Plain(v) | crate::plan::EnvSpec::DatabasePassword(v) => v.len(),
                        }
                })
                .sum();
            host.len() + argv.iter().map(String::len).sum::<usize>() + env + stdin.as_ref().map_or(0, Vec::len) + ok_status.len() * 4
        }
        Effect::Opaque(t) => text(t),
        Effect::Wait { until, .. } => text(until),
    };
    let bytes = text(&plan.summary)
        + plan.warnings.iter().map(text).sum::<usize>()
        + plan
            .steps
            .iter()
            .map(|s| s.id.len() + text(&s.title) + s.target.len() + s.group.len() + s.data.len() + s.effects.iter().map(effect_len).sum::<usize>())
            .sum::<usize>();
    if plan.steps.len() > MAX_STEPS || bytes > MAX_PLAN_BYTES {
        return Err(format!(
            "it returned a plan of {} steps and {} MiB; opsh takes at most {MAX_STEPS} steps and {} MiB",
            plan.steps.len(),
            bytes >> 20,
            MAX_PLAN_BYTES >> 20
        ));
    }
    Ok(())
}

/// A step's note or a check's detail: one message.
pub fn note(text: &Text) -> Result<(), String> {
    if text_len(text) > 1 << 20 {
        return Err(format!("it returned a message of {} KiB; opsh takes at most 1024 KiB", text_len(text) >> 10));
    }
    Ok(())
}

/// The longest error message kept whole; longer ones are cut, saying so.
const MAX_MESSAGE: usize = 64 << 10;

fn cut(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let more = message.len() - MAX_MESSAGE;
        let mut at = MAX_MESSAGE;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push_str(&format!(" … ({more} more bytes not shown)"));
    }
    message
}

/// A plugin's error, its messages cut to a length a terminal and a journal can take.
pub fn error(error: CommandError) -> CommandError {
    let text = |t: Text| Text { en: cut(t.en), ja: cut(t.ja) };
    match error {
        CommandError::Usage(m) => CommandError::Usage(cut(m)),
        CommandError::Failed(m) => CommandError::Failed(cut(m)),
        CommandError::Refused(t) => CommandError::Refused(text(t)),
        CommandError::Capability(c) => CommandError::Capability(match c {
            CapabilityError::Denied(m) => CapabilityError::Denied(cut(m)),
            CapabilityError::NotFound(m) => CapabilityError::NotFound(cut(m)),
            CapabilityError::Unreachable(m) => CapabilityError::Unreachable(cut(m)),
            CapabilityError::Auth(m) => CapabilityError::Auth(cut(m)),
            CapabilityError::Timeout(m) => CapabilityError::Timeout(cut(m)),
            CapabilityError::ReadOnly(m) => CapabilityError::ReadOnly(cut(m)),
            CapabilityError::Conflict(m) => CapabilityError::Conflict(cut(m)),
            CapabilityError::Failed(m) => CapabilityError::Failed(cut(m)),
            CapabilityError::Invalid(m) => CapabilityError::Invalid(cut(m)),
        }),
    }
}
