//! A step's `data`: what `apply` and `check` need, written by `plan`. `key=value` lines, readable
//! in the journal; a value may hold anything (a line break is written `\n`, a backslash `\\`).

use std::collections::BTreeMap;

use crate::CommandError;

pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\").replace('\n', "\\n"))).collect()
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Several values (e.g. a remote script's arguments) as one step-data value, kept apart by a
/// separator no argument contains, so values with spaces survive the journal.
pub fn encode_list(values: &[String]) -> String {
    values.join(LIST_SEPARATOR)
}

const LIST_SEPARATOR: &str = "\u{1f}";

pub struct StepData(BTreeMap<String, String>);

impl StepData {
    pub fn parse(data: &str) -> Self {
        Self(data.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), unescape(v))).collect())
    }

    /// A value written by [`encode_list`].
    pub fn list(&self, key: &str) -> Result<Vec<String>, CommandError> {
        Ok(self.get(key)?.split(LIST_SEPARATOR).map(str::to_string).collect())
    }

    pub fn get(&self, key: &str) -> Result<&str, CommandError> {
        self.0.get(key).map(String::as_str).ok_or_else(|| CommandError::Failed(format!("step data has no {key:?}; the plan is from another plugin version")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_value_survives_the_journal() {
        let script = "set -eu\nif [ -f \"$1\" ]; then\n  echo 'a\\nb' \\\n  done\nfi\n";
        let list = encode_list(&["sh".into(), "-c".into(), script.into(), "x y".into()]);
        let data = StepData::parse(&encode(&[("argv", &list), ("plain", "p=q")]));
        assert_eq!(data.list("argv").expect("argv"), vec!["sh".to_string(), "-c".into(), script.into(), "x y".into()]);
        assert_eq!(data.get("plain").expect("plain"), "p=q");
    }
}
