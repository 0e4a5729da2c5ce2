//! Access to the arguments the host parsed against the command's self-description.

use crate::{CommandError, Invocation};

pub struct Args<'a>(pub &'a Invocation);

impl<'a> Args<'a> {
    pub fn values(&self, name: &str) -> &'a [String] {
        self.0.args.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.values(name).first().map(String::as_str)
    }

    /// A required argument (the host already enforces `required`; this is for the types).
    pub fn required(&self, name: &str) -> Result<&'a str, CommandError> {
        self.get(name).ok_or_else(|| CommandError::Usage(format!("{} needs {}", self.0.command, name.to_uppercase())))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CommandError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| CommandError::Usage(format!("{}: --{name} must be a number, not {text:?}", self.0.command))),
        }
    }
}
