//! `opsh run FILE`: the same commands as the shell, one per line, `#` comments. Every line is
//! checked first (parse, command, arguments), so a typo on line 20 stops the script before line
//! 1 changes anything; then lines run in order and the first failure stops the script with its
//! exit code and `FILE:LINE` in the message.

use std::path::Path;

use opsh_host::Exit;

use crate::session::Session;

pub async fn run_file(session: &Session, path: &Path) -> Exit {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            session.console.error(&format!("cannot read script {}: {e}", path.display()));
            return Exit::Usage;
        }
    };
    let parsed = opsh_host::script::lines(&text).map_err(|m| (m.number, m.message)).and_then(|lines| {
        lines.into_iter().map(|line| session.prepare(line.words).map(|_| (line.number, line.text)).map_err(|e| (line.number, e))).collect::<Result<Vec<_>, _>>()
    });
    let lines = match parsed {
        Ok(lines) => lines,
        Err((number, e)) => {
            session.console.error(&format!("{}:{number}: {e}", path.display()));
            session.console.note("the script was not run: nothing was changed");
            return Exit::Usage;
        }
    };
    // What each line changed, to say so (and exit 3) if a later one fails.
    let mut changed: Vec<String> = Vec::new();
    for (number, line) in lines {
        if matches!(line.as_str(), "exit" | "quit") {
            return Exit::Success;
        }
        session.console.note(&format!("{}:{number}: {line}", path.display()));
        let before = session.change_count();
        let exit = session.run_line(&line).await;
        if exit != Exit::Success {
            let earlier = changed.join("; ");
            // A failure after earlier lines changed something is "changed, then failed"; an
            // unknown outcome stays unknown.
            let exit = if changed.is_empty() || matches!(exit, Exit::FailedChanged | Exit::Unknown) { exit } else { Exit::FailedChanged };
            session.console.error(&format!("{}:{number}: stopped here (exit {}); the lines after it were not run", path.display(), exit.code()));
            if !changed.is_empty() {
                session.console.error(&format!("earlier lines changed things: {earlier} (see `opsh journal RUN`)"));
            }
            return exit;
        }
        changed.extend(session.changes_since(before).into_iter().map(|c| format!("line {number}: {c}")));
    }
    Exit::Success
}
