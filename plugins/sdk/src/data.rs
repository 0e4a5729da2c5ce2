//! A step's `data`: what `apply` and `check` need, written by `plan`. `key=value` lines (values
//! may hold anything but a line break), readable in the journal.

use std::collections::BTreeMap;

use crate::CommandError;

pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}\n", v.replace('\n', " "))).collect()
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
        Self(data.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// A value written by [`encode_list`].
    pub fn list(&self, key: &str) -> Result<Vec<String>, CommandError> {
        Ok(self.get(key)?.split(LIST_SEPARATOR).map(str::to_string).collect())
    }

    pub fn get(&self, key: &str) -> Result<&str, CommandError> {
        self.0.get(key).map(String::as_str).ok_or_else(|| CommandError::Failed(format!("step data has no {key:?}; the plan is from another plugin version")))
    }
}
