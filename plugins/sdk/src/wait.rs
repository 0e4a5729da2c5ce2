//! Waiting for a condition on a live system (a promoted node taking writes, a daemon gone, a
//! subscriber caught up) without burning the plugin's CPU budget: sleeps are host time.

use crate::{CommandError, host};

/// Ask `ready` every `interval_ms` until it says yes or `timeout_ms` passed. An `Err` from
/// `ready` counts as "not yet"; the last one is quoted if the wait gives up.
pub fn until(timeout_ms: u32, interval_ms: u32, what: &str, mut ready: impl FnMut() -> Result<bool, String>) -> Result<(), CommandError> {
    let interval = interval_ms.max(10);
    let mut last = String::new();
    for _ in 0..timeout_ms.div_ceil(interval).max(1) {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        host::sleep(interval);
    }
    let seconds = f64::from(timeout_ms) / 1000.0;
    Err(CommandError::Failed(format!(
        "gave up waiting for {what} after {seconds} s{}",
        if last.is_empty() { String::new() } else { format!(" (last error: {last})") }
    )))
}
