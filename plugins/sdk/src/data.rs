//! A step's `data`: what `check` (and a custom step's `apply`) needs, written by `plan`.
//!
//! A plugin declares its kinds of step as one enum and the SDK keeps it in `data` (JSON, readable
//! in the journal); `check` matches on it, so a field that is misspelt or missing is found by the
//! compiler, not at 3 a.m. as "no such key":
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(tag = "kind", rename_all = "kebab-case")]
//! enum Kind { Fence { db: String }, Services { host: String, services: Vec<String>, start: bool } }
//!
//! step("fence-a", title, "a").sql(…).kind(&Kind::Fence { db: "a".into() }).build();
//! match opsh_plugin_sdk::data::kind_of::<Kind>(&step)? { Kind::Fence { db } => …, … }
//! ```
//!
//! [`encode`] / [`StepData`] (`key=value` lines) are the older, untyped form, kept for plugins
//! that still use it.

use std::collections::BTreeMap;

use crate::{CommandError, Step};

/// `data` for a step of kind `kind`.
pub fn typed<K: serde::Serialize>(kind: &K) -> String {
    // A derived Serialize of strings, numbers and lists cannot fail; if one did, the empty data
    // makes `kind_of` refuse the step (its check then cannot tell, and says so).
    serde_json::to_string(kind).unwrap_or_default()
}

/// The kind `plan` gave this step.
pub fn kind_of<K: serde::de::DeserializeOwned>(step: &Step) -> Result<K, CommandError> {
    serde_json::from_str(&step.data).map_err(|e| {
        CommandError::Failed(format!(
            "step {}: its data is not what this build of the plugin writes ({e}); the run was planned by another build — finish it with that build, or check by hand and plan anew",
            step.id
        ))
    })
}

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

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case")]
    enum Kind {
        Fence { db: String },
        Services { host: String, services: Vec<String>, start: bool },
    }

    fn step(data: String) -> Step {
        crate::step("s", crate::text("t", ""), "x").data(data).build()
    }

    #[test]
    fn a_kind_survives_the_journal_and_another_builds_data_is_refused_by_name() {
        let kind = Kind::Services { host: "ta1".into(), services: vec!["dtService".into(), "a b\nc".into()], start: true };
        let data = typed(&kind);
        assert_eq!(kind_of::<Kind>(&step(data.clone())).expect("kind"), kind);
        assert!(data.contains("\"kind\":\"services\""), "{data}");
        let old = kind_of::<Kind>(&step(encode(&[("action", "fence"), ("db", "a")])));
        assert!(matches!(&old, Err(CommandError::Failed(m)) if m.starts_with("step s: its data is not what this build")), "{old:?}");
        let missing = kind_of::<Kind>(&step("{\"kind\":\"fence\"}".into()));
        assert!(matches!(&missing, Err(CommandError::Failed(m)) if m.contains("missing field `db`")), "{missing:?}");
    }

    #[test]
    fn any_value_survives_the_journal() {
        let script = "set -eu\nif [ -f \"$1\" ]; then\n  echo 'a\\nb' \\\n  done\nfi\n";
        let list = encode_list(&["sh".into(), "-c".into(), script.into(), "x y".into()]);
        let data = StepData::parse(&encode(&[("argv", &list), ("plain", "p=q")]));
        assert_eq!(data.list("argv").expect("argv"), vec!["sh".to_string(), "-c".into(), script.into(), "x y".into()]);
        assert_eq!(data.get("plain").expect("plain"), "p=q");
    }
}
