//! The journal read back after a crash: torn or garbage lines are refused or skipped, never a
//! crash, and what `journal RUN` computes from a journal that was read never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsh_host::journal::RunLog;

fuzz_target!(|text: &str| {
    let Ok(log) = RunLog::parse("fuzz", text, "fuzz.jsonl") else { return };
    let steps = log.header().map_or(0, |h| h.2.steps.len());
    assert_eq!(log.states().len(), steps);
    assert_eq!(log.step_details().len(), steps);
    assert_eq!(log.sent().len(), steps);
    let _ = (log.status(), log.started(), log.end(), log.component());
});
