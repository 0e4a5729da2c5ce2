//! Steps whose effect is one file replaced with planned content (a `.properties` file,
//! `pg_hba.conf`, a replication configuration file): the host writes exactly what the plan
//! showed, refused if the file changed since; checking compares the file with the plan.

use crate::{CheckResult, CheckState, CommandError, Effect, Step, file_edit, text};

/// Done when the file has the planned content, not done while it has the content the plan read,
/// stale when it is anything else.
pub fn check(step: &Step) -> Result<CheckResult, CommandError> {
    let Some(Effect::File(file)) = step.effects.iter().find(|e| matches!(e, Effect::File(_))) else {
        return Err(CommandError::Failed(format!("step {} has no file effect", step.id)));
    };
    let result = |state, detail: &str| CheckResult { state, detail: text(detail, "") };
    Ok(match file_edit::read(&file.host, &file.path) {
        Ok(now) if now.content == file.new_content => result(CheckState::Done, "the file has the planned content"),
        Ok(now) if now.sha256 == file.expected_sha256 => result(CheckState::NotDone, "the file still has the content the plan read"),
        Ok(_) => result(CheckState::Stale, &format!("{} changed since the plan read it", file.path)),
        Err(e) => result(CheckState::Unknown, e.message()),
    })
}
