//! Reading SQL results without ceremony.

use crate::sql::{Rows, Value};

/// A value as the operator would read it (`NULL` for null).
pub fn display(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Boolean(b) => {
            if *b {
                "t".into()
            } else {
                "f".into()
            }
        }
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => t.clone(),
    }
}

pub trait RowsExt {
    /// The first row's value in the named column.
    fn first(&self, column: &str) -> Option<&Value>;
    fn first_text(&self, column: &str) -> Option<String> {
        self.first(column).map(display)
    }
    fn first_bool(&self, column: &str) -> Option<bool> {
        match self.first(column) {
            Some(Value::Boolean(b)) => Some(*b),
            _ => None,
        }
    }
    fn first_int(&self, column: &str) -> Option<i64> {
        match self.first(column) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
}

impl RowsExt for Rows {
    fn first(&self, column: &str) -> Option<&Value> {
        let index = self.columns.iter().position(|c| c.name == column)?;
        self.rows.first().and_then(|row| row.get(index))
    }
}

/// Every row's value in the named column, as the operator would read it (none if no such column).
pub fn texts(rows: &Rows, column: &str) -> Vec<String> {
    let Some(index) = rows.columns.iter().position(|c| c.name == column) else { return Vec::new() };
    rows.rows.iter().filter_map(|row| row.get(index)).map(display).collect()
}
