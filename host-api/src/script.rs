//! The script format of `opsh run FILE` (and of a `-c` sequence): one command per line in shell
//! quoting, blank lines and `#` comments skipped. Read whole before anything runs, so that a
//! typo on line 20 stops the script before line 1 changes anything.

/// One command of a script: its line number (from 1), its text, its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub text: String,
    pub words: Vec<String>,
}

/// A line that cannot be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub number: usize,
    pub message: String,
}

/// The script's commands, in order, or its first malformed line.
pub fn lines(text: &str) -> Result<Vec<Line>, Malformed> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let words = words(trimmed).map_err(|message| Malformed { number, message })?;
        if !words.is_empty() {
            lines.push(Line { number, text: trimmed.to_string(), words });
        }
    }
    Ok(lines)
}

/// Split a command line into words (shell quoting rules).
pub fn words(line: &str) -> Result<Vec<String>, String> {
    shell_words::split(line).map_err(|e| format!("cannot parse the line: {e} (check the quotes)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_keep_their_numbers() {
        let script = "# failover drill\n\notb status\n  pg set-config alpha-app work_mem '8 MB'  \n";
        let lines = lines(script).expect("script");
        assert_eq!(lines.iter().map(|l| l.number).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(lines[1].words, ["pg", "set-config", "alpha-app", "work_mem", "8 MB"]);
        assert_eq!(lines[1].text, "pg set-config alpha-app work_mem '8 MB'");
    }

    #[test]
    fn an_open_quote_names_its_line() {
        let malformed = lines("otb status\notb promote 'dn01\n").expect_err("open quote");
        assert_eq!(malformed.number, 2);
        assert!(malformed.message.contains("check the quotes"), "{malformed:?}");
    }
}
