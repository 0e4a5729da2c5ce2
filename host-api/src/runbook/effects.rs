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
use crate::plan::{Effect, EnvSpec, ExecShown, Performed, ServiceShown, SqlParam, SqlShown};
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

    /// Ready one effect to run (a `wait` is the engine's: it polls the step's check): its
    /// capability and grants checked, its address tokens revealed. `None` for a wait.
    pub fn prepare(&self, effect: &Effect) -> CapResult<Option<Prepared>> {
        Ok(Some(match effect {
            Effect::Sql { database, statements, params, transaction, expect_affected } => {
                self.grant(Capability::Sql, database, None)?;
                let mut prepared = Vec::with_capacity(statements.len());
                let mut shown = Vec::with_capacity(params.len());
                for (i, sql) in statements.iter().enumerate() {
                    let declared = params.get(i).map(Vec::as_slice).unwrap_or_default();
                    let mut values = Vec::with_capacity(declared.len());
                    let mut literals = Vec::with_capacity(declared.len());
                    for p in declared {
                        let (value, revealed) = match p {
                            SqlParam::Null => (capability::sql::Value::Null, p.clone()),
                            SqlParam::Bool(b) => (capability::sql::Value::Bool(*b), p.clone()),
                            SqlParam::Int(i) => (capability::sql::Value::Int(*i), p.clone()),
                            SqlParam::Float(f) => (capability::sql::Value::Float(*f), p.clone()),
                            SqlParam::Text(t) => {
                                let text = self.reveal(t)?;
                                (capability::sql::Value::Text(text.clone()), SqlParam::Text(text))
                            }
                        };
                        values.push(value);
                        literals.push(literal(&revealed));
                    }
                    if i < params.len() {
                        shown.push(literals);
                    }
                    prepared.push(capability::sql::Statement { sql: self.reveal(sql)?, params: values });
                }
                Prepared::Sql { database: database.clone(), statements: prepared, params: shown, transaction: *transaction, expect_affected: *expect_affected }
            }
            Effect::Exec { host, argv, env, stdin, timeout_ms, privileged, ok_status } => {
                self.grant(Capability::Ssh, host, None)?;
                let mut request = ExecRequest::new(argv.iter().map(|a| self.reveal(a)).collect::<CapResult<Vec<_>>>()?);
                let mut shown_env = Vec::with_capacity(env.len());
                for (name, value) in env {
                    let value = match value {
                        EnvSpec::Plain(v) => {
                            let v = self.reveal(v)?;
                            shown_env.push(format!("{name}={v}"));
                            EnvValue::Plain(v)
                        }
                        EnvSpec::DatabasePassword(db) => {
                            self.grant(Capability::Sql, db, None)?;
                            let secret = self
                                .caps
                                .inventory
                                .database_password(db)
                                .map_err(|e| CapabilityError::Auth(format!("{e:#}")))?
                                .ok_or_else(|| CapabilityError::NotFound(format!("database {db} has no password in the inventory")))?;
                            shown_env.push(env_shown(name, value, &|t: &str| t.to_string()));
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
                Prepared::Exec { host: host.clone(), request, env: shown_env, timeout_ms: *timeout_ms, ok_status: ok_status.clone() }
            }
            Effect::File { host, path, expected_sha256, new_content } => {
                self.grant(Capability::FileEdit, host, Some(path))?;
                Prepared::File { host: host.clone(), path: path.clone(), expected_sha256: expected_sha256.clone(), content: self.reveal(new_content)? }
            }
            Effect::Service { host, service, action } => {
                self.grant(Capability::Service, host, Some(service))?;
                let action = capability::service::Action::from_name(action)
                    .ok_or_else(|| CapabilityError::Invalid(format!("service action {action:?}: start, stop, restart or reload")))?;
                Prepared::Service { host: host.clone(), service: service.clone(), action }
            }
            Effect::Opaque(_) | Effect::Wait { .. } => return Ok(None),
        }))
    }

    /// Run a prepared effect. Returns what the operator reads of it.
    pub async fn run(&self, prepared: Prepared) -> CapResult<String> {
        match prepared {
            Prepared::Sql { database, statements, transaction, expect_affected, .. } => {
                let session = capability::sql::Session { plugin: self.plugin, read_only: false };
                let affected: u64 = if transaction {
                    let rows = self.caps.sql.transaction_expecting(&database, session, &statements, &self.caps.bounds, false, expect_affected).await?;
                    rows.iter().map(|r| r.affected).sum()
                } else {
                    let mut affected = 0;
                    for (k, statement) in statements.iter().enumerate() {
                        affected += match self.caps.sql.query(&database, session, statement, &self.caps.bounds).await {
                            Ok(rows) => rows.affected,
                            // The earlier ones ran: this step is partly applied, not "not started".
                            Err(CapabilityError::Unreachable(m)) if k > 0 => {
                                return Err(CapabilityError::Timeout(format!(
                                    "{m}; statement(s) 1–{k} of {} had already run on their own: the step is partly applied, its check decides on resume",
                                    statements.len()
                                )));
                            }
                            Err(e) => return Err(e),
                        };
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
            Prepared::Exec { host, request, ok_status, .. } => {
                let program = request.argv.first().cloned().unwrap_or_default();
                let out = self.caps.remote.exec(&host, request).await?;
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
                    // What it said on stderr; a tool that reports on stdout (slonik, cctrl) is
                    // quoted from there, its last lines.
                    let stderr = said(&out.stderr);
                    let why = if stderr.is_empty() {
                        let stdout = said(&out.stdout);
                        let lines: Vec<&str> = stdout.lines().collect();
                        lines[lines.len().saturating_sub(5)..].join("\n")
                    } else {
                        stderr
                    };
                    Err(CapabilityError::Failed(format!("`{program}` on host {host} {status}: {why}")))
                }
            }
            Prepared::File { host, path, expected_sha256, content } => {
                capability::file_edit::keep_secrets(&self.caps.remote, &self.caps.scrubber, &self.caps.bounds, &host, &path, &content).await?;
                let outcome = capability::file_edit::write(&self.caps.remote, &host, &path, &content, Some(&expected_sha256), true).await?;
                Ok(match outcome.backup_path {
                    Some(backup) => format!("{host}:{path} written (previous content kept as {backup})"),
                    None => format!("{host}:{path} written"),
                })
            }
            Prepared::Service { host, service, action } => {
                capability::service::control(&self.caps.remote, &self.caps.inventory, &host, &service, action).await?;
                Ok(format!("{} of {service} on {host}", action.name()))
            }
        }
    }
}

/// An effect ready to run: checked, its tokens revealed.
pub enum Prepared {
    Sql { database: String, statements: Vec<capability::sql::Statement>, params: Vec<Vec<String>>, transaction: bool, expect_affected: Option<u64> },
    Exec { host: String, request: ExecRequest, env: Vec<String>, timeout_ms: Option<u32>, ok_status: Vec<i32> },
    File { host: String, path: String, expected_sha256: String, content: String },
    Service { host: String, service: String, action: capability::service::Action },
}

impl Prepared {
    /// What is about to be sent, for the journal (passwords named, never included).
    pub fn performed(&self) -> Performed {
        match self {
            Prepared::Sql { database, statements, params, transaction, expect_affected } => Performed::Sql(SqlShown {
                database: database.clone(),
                statements: statements.iter().map(|s| s.sql.clone()).collect(),
                params: params.clone(),
                transaction: *transaction,
                expect_affected: *expect_affected,
            }),
            Prepared::Exec { host, request, env, timeout_ms, ok_status } => Performed::Exec(ExecShown {
                host: host.clone(),
                argv: request.argv.clone(),
                env: env.clone(),
                stdin: request.stdin.as_deref().map(input_shown),
                privileged: request.privileged,
                ok_status: ok_status.clone(),
                timeout_ms: *timeout_ms,
            }),
            Prepared::File { host, path, expected_sha256, content } => {
                Performed::File { host: host.clone(), path: path.clone(), expected_sha256: expected_sha256.clone(), sha256: sha256_hex(content.as_bytes()) }
            }
            Prepared::Service { host, service, action } => {
                Performed::Service(ServiceShown { host: host.clone(), service: service.clone(), action: action.name().into() })
            }
        }
    }
}

/// A command's input as the operator reads it: the text, or for input that is not text its size
/// and hash (never lossily).
pub fn input_shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("({} bytes, sha256 {})", bytes.len(), sha256_hex(bytes)),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes)))
}
