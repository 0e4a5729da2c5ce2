//! The host performs a declared step of an opsh:plugin@0.2.0 plugin from its effects, exactly
//! as the operator confirmed them; and holds a custom step's changing calls to the effects it
//! declared. Each effect passes the same checks as the plugin's own call would (declared
//! capability, grant, address tokens only of hosts the plugin may see) and runs in the plugin's
//! apply session.

use std::sync::Arc;
use std::time::Duration;

use crate::capability::exec::{EnvValue, ExecRequest};
use crate::capability::{self, CapResult, Capabilities, CapabilityError};
use crate::grants::Capability;
use crate::plan::{Effect, EnvSpec, SqlParam};
use crate::sandbox::Declared;

/// A SQL literal of a parameter, for the preview.
pub fn literal(p: &SqlParam) -> String {
    match p {
        SqlParam::Null => "NULL".into(),
        SqlParam::Bool(b) => b.to_string(),
        SqlParam::Int(i) => i.to_string(),
        SqlParam::Float(f) => f.to_string(),
        SqlParam::Text(t) => format!("'{}'", t.replace('\'', "''")),
    }
}

/// An environment variable as the preview shows it: never a password.
pub fn env_shown(name: &str, value: &EnvSpec, reveal: &dyn Fn(&str) -> String) -> String {
    match value {
        EnvSpec::Plain(v) => format!("{name}={}", reveal(v)),
        EnvSpec::DatabasePassword(db) => format!("{name}=(password of database {db})"),
    }
}

/// One plugin's authority, for the host acting on its behalf.
pub struct OnBehalf<'a> {
    pub plugin: &'a str,
    pub declared: &'a Declared,
    pub caps: &'a Arc<Capabilities>,
}

impl OnBehalf<'_> {
    fn grant(&self, capability: Capability, target: &str, detail: Option<&str>) -> CapResult<()> {
        crate::sandbox::ctx::permitted(self.plugin, self.declared, self.caps, capability, target, detail)
    }

    fn reveal(&self, text: &str) -> CapResult<String> {
        crate::sandbox::ctx::reveal_for(self.plugin, self.caps, text)
    }

    /// Perform one effect (a `wait` is the engine's: it polls the step's check). Returns what
    /// the operator reads of it.
    pub async fn perform(&self, effect: &Effect) -> CapResult<String> {
        match effect {
            Effect::Sql { database, statements, params, transaction, expect_affected } => {
                self.grant(Capability::Sql, database, None)?;
                let mut prepared = Vec::with_capacity(statements.len());
                for (i, sql) in statements.iter().enumerate() {
                    let values = params.get(i).map(Vec::as_slice).unwrap_or_default();
                    let values = values
                        .iter()
                        .map(|p| {
                            Ok(match p {
                                SqlParam::Null => capability::sql::Value::Null,
                                SqlParam::Bool(b) => capability::sql::Value::Bool(*b),
                                SqlParam::Int(i) => capability::sql::Value::Int(*i),
                                SqlParam::Float(f) => capability::sql::Value::Float(*f),
                                SqlParam::Text(t) => capability::sql::Value::Text(self.reveal(t)?),
                            })
                        })
                        .collect::<CapResult<Vec<_>>>()?;
                    prepared.push(capability::sql::Statement { sql: self.reveal(sql)?, params: values });
                }
                let session = capability::sql::Session { plugin: self.plugin, read_only: false };
                let affected: u64 = if *transaction {
                    let rows = self.caps.sql.transaction_expecting(database, session, &prepared, &self.caps.bounds, false, *expect_affected).await?;
                    rows.iter().map(|r| r.affected).sum()
                } else {
                    let mut affected = 0;
                    for statement in &prepared {
                        affected += self.caps.sql.query(database, session, statement, &self.caps.bounds).await?.affected;
                    }
                    if let Some(n) = expect_affected.filter(|n| *n != affected) {
                        return Err(CapabilityError::Failed(format!(
                            "database {database}: the statements affected {affected} row(s), the plan expected exactly {n} (each ran on its own: check what changed)"
                        )));
                    }
                    affected
                };
                Ok(format!("{} statement(s) on {database}, {affected} row(s)", statements.len()))
            }
            Effect::Exec { host, argv, env, stdin, timeout_ms, privileged, ok_status } => {
                self.grant(Capability::Ssh, host, None)?;
                let mut request = ExecRequest::new(argv.iter().map(|a| self.reveal(a)).collect::<CapResult<Vec<_>>>()?);
                for (name, value) in env {
                    let value = match value {
                        EnvSpec::Plain(v) => EnvValue::Plain(self.reveal(v)?),
                        EnvSpec::DatabasePassword(db) => {
                            self.grant(Capability::Sql, db, None)?;
                            let secret = self
                                .caps
                                .inventory
                                .database_password(db)
                                .map_err(|e| CapabilityError::Auth(format!("{e:#}")))?
                                .ok_or_else(|| CapabilityError::NotFound(format!("database {db} has no password in the inventory")))?;
                            EnvValue::Secret(secret)
                        }
                    };
                    request.env.push((name.clone(), value));
                }
                request.stdin = match stdin {
                    Some(bytes) => Some(match std::str::from_utf8(bytes) {
                        Ok(text) => self.reveal(text)?.into_bytes(),
                        Err(_) => bytes.clone(),
                    }),
                    None => None,
                };
                let most = Duration::from_millis(self.caps.inventory.defaults.command_timeout_ms);
                request.timeout = Some(timeout_ms.map_or(most, |ms| Duration::from_millis(ms.into()).min(most)));
                request.privileged = *privileged;
                request.max_output = self.caps.bounds.max_output_bytes;
                let program = request.argv.first().cloned().unwrap_or_default();
                let out = self.caps.remote.exec(host, request).await?;
                let ok = match out.status {
                    Some(status) if ok_status.is_empty() => status == 0,
                    Some(status) => ok_status.contains(&status),
                    None => false,
                };
                let said = |bytes: &[u8]| self.caps.scrubber.scrub(String::from_utf8_lossy(bytes).trim()).into_owned();
                if ok {
                    let last = said(&out.stdout).lines().last().unwrap_or_default().to_string();
                    Ok(if last.is_empty() { format!("`{program}` on {host}: ok") } else { format!("`{program}` on {host}: {last}") })
                } else {
                    let status = out.status.map_or("killed by a signal".to_string(), |s| format!("exited {s}"));
                    Err(CapabilityError::Failed(format!("`{program}` on host {host} {status}: {}", said(&out.stderr))))
                }
            }
            Effect::File { host, path, expected_sha256, new_content } => {
                self.grant(Capability::FileEdit, host, Some(path))?;
                let content = self.reveal(new_content)?;
                capability::file_edit::keep_secrets(&self.caps.remote, &self.caps.scrubber, &self.caps.bounds, host, path, &content).await?;
                let outcome = capability::file_edit::write(&self.caps.remote, host, path, &content, Some(expected_sha256), true).await?;
                Ok(match outcome.backup_path {
                    Some(backup) => format!("{host}:{path} written (previous content kept as {backup})"),
                    None => format!("{host}:{path} written"),
                })
            }
            Effect::Service { host, service, action } => {
                self.grant(Capability::Service, host, Some(service))?;
                let action = capability::service::Action::from_name(action)
                    .ok_or_else(|| CapabilityError::Invalid(format!("service action {action:?}: start, stop, restart or reload")))?;
                capability::service::control(&self.caps.remote, &self.caps.inventory, host, service, action).await?;
                Ok(format!("{} of {service} on {host}", action.name()))
            }
            Effect::Opaque(_) | Effect::Wait { .. } => Ok(String::new()),
        }
    }
}
