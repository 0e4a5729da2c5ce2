//! Running commands on inventory hosts: over the system `ssh` with one multiplexed master per
//! host (the `openssh` crate, so `~/.ssh/config`, the agent and `known_hosts` apply; host keys
//! are checked strictly), or as a local process for the built-in host `local`.
//!
//! This is the driver under the `ssh` capability and under file-edit and service, which are
//! shell scripts run through it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{CapResult, CapabilityError};
use crate::inventory::{Become, Inventory, LOCAL_HOST, Secret};

pub enum EnvValue {
    Plain(String),
    /// Handed to the command on its standard input, read into the variable by a wrapper shell:
    /// never on a command line (visible in `ps`), in a log or in the journal.
    Secret(Secret),
}

pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    pub privileged: bool,
    /// Output beyond this many bytes per stream is dropped (and `truncated` set).
    pub max_output: usize,
    /// The name of this command in a journaled run (run, step, effect, attempt): it then runs
    /// at most once on its host under that name, see [`ONCE`].
    pub once: Option<String>,
}

impl ExecRequest {
    pub fn new(argv: Vec<String>) -> Self {
        Self { argv, env: Vec::new(), stdin: None, timeout: None, privileged: false, max_output: 8 << 20, once: None }
    }
}

#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

type SessionSlot = Arc<Mutex<Option<Arc<Session>>>>;

pub struct Remote {
    inventory: Arc<Inventory>,
    control_dir: PathBuf,
    sessions: std::sync::Mutex<HashMap<String, SessionSlot>>,
    /// Each host's last failed connect, and when it ended: a caller that waited for the slot
    /// while that attempt ran takes its outcome instead of spending another connect timeout.
    failed: std::sync::Mutex<HashMap<String, (std::time::Instant, CapabilityError)>>,
    /// Each host's commands in flight: at most `PER_HOST` at once over its one connection.
    running: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// Commands one host runs at once over its multiplexed connection. sshd refuses a connection's
/// session past its `MaxSessions` (10 by default), and ssh then exits 255 as if the connection
/// had gone: staying below it keeps a burst of reads (`gather`, a group of steps) from looking
/// like an outage.
pub const PER_HOST: usize = 8;

impl Remote {
    pub fn new(inventory: Arc<Inventory>, control_dir: PathBuf) -> Self {
        Self { inventory, control_dir, sessions: Default::default(), failed: Default::default(), running: Default::default() }
    }

    /// Run `request` on `host` and wait for it (bounded by its timeout or the inventory default).
    pub async fn exec(&self, host: &str, request: ExecRequest) -> CapResult<ExecOutput> {
        let first = request.argv.first().cloned().unwrap_or_default();
        if first.is_empty() {
            return Err(CapabilityError::Invalid(format!("command on host {host}: empty argv")));
        }
        let escalation = if host == LOCAL_HOST {
            Become::None
        } else {
            self.inventory
                .host(host)
                .ok_or_else(|| CapabilityError::NotFound(format!("host {host} is not in the inventory ({})", self.inventory.source.display())))?
                .escalation
        };
        let timeout = request.timeout.unwrap_or(Duration::from_millis(self.inventory.defaults.command_timeout_ms));
        let (argv, stdin) = wrap_command(&request, escalation)?;
        let max = request.max_output;
        // Waiting for a turn is not running: the command's timeout starts when it does.
        let _turn = if host == LOCAL_HOST {
            None
        } else {
            let turns = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(host.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_HOST)))
                .clone();
            Some(turns.acquire_owned().await.map_err(|_| CapabilityError::Failed(format!("host {host}: opsh is shutting down")))?)
        };
        let run = async { if host == LOCAL_HOST { run_local(&argv, stdin, max).await } else { self.run_remote(host, &argv, stdin, max).await } };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(CapabilityError::Timeout(format!(
                "`{first}` on host {host} did not finish within {} s: outcome unknown — check on {host} whether it took effect before retrying",
                timeout.as_secs_f32()
            ))),
        }
    }

    async fn run_remote(&self, host: &str, argv: &[String], stdin: Vec<u8>, max: usize) -> CapResult<ExecOutput> {
        // A cached master may have died (host rebooted, network cut): the command cannot have
        // started then, so evict it and try once more with a fresh connection.
        for attempt in 0..2 {
            let session = self.session(host).await?;
            let mut child = mux_client(&session, argv)
                .spawn()
                .map_err(|e| CapabilityError::Failed(format!("cannot start ssh for `{}` on host {host}: {e}; is OpenSSH's client installed?", argv[0])))?;
            let (_, out, err) = tokio::join!(feed(child.stdin.take(), stdin.clone()), collect(child.stdout.take(), max), collect(child.stderr.take(), max));
            let waited = child.wait().await;
            let (stdout, t1) = out.map_err(|e| CapabilityError::Failed(format!("reading output of `{}` on host {host}: {e}", argv[0])))?;
            let (stderr, t2) = err.map_err(|e| CapabilityError::Failed(format!("reading errors of `{}` on host {host}: {e}", argv[0])))?;
            let status = match waited.map(|s| s.code()) {
                // ssh itself exited 255: its master was gone before the command started (ssh
                // then tries a host named "none"), the connection broke while it ran, or the
                // remote command exited 255.
                Ok(Some(255)) => {
                    if never_started(&stderr) {
                        self.evict(host).await;
                        if attempt == 0 {
                            continue;
                        }
                        return Err(CapabilityError::Unreachable(format!(
                            "host {host}: `{}` was not started: no ssh connection (tried twice); check that {host} is up",
                            argv[0]
                        )));
                    }
                    if !session_alive(&session).await {
                        self.evict(host).await;
                        return Err(CapabilityError::Timeout(format!(
                            "the ssh connection to host {host} broke while `{}` ran: outcome unknown — check on {host} whether it took effect before retrying",
                            argv[0]
                        )));
                    }
                    Some(255)
                }
                Ok(code) => code,
                Err(e) => return Err(CapabilityError::Failed(format!("waiting for `{}` on host {host}: {e}", argv[0]))),
            };
            return Ok(ExecOutput { status, stdout, stderr, truncated: t1 || t2 });
        }
        Err(CapabilityError::Unreachable(format!("host {host}: the ssh connection broke twice; check that {host} is up")))
    }

    async fn slot(&self, host: &str) -> SessionSlot {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.entry(host.to_string()).or_default().clone()
    }

    async fn evict(&self, host: &str) {
        let slot = self.slot(host).await;
        let old = slot.lock().await.take();
        close(old).await;
    }

    /// The host's multiplexed master, connected on first use. One that died since (the host
    /// froze and ssh's keep-alive gave up, or it rebooted) is found by the command that cannot
    /// start on it (see `run_remote`), which replaces it: no check costs every command a round
    /// trip.
    async fn session(&self, host: &str) -> CapResult<Arc<Session>> {
        self.session_asked_at(host, std::time::Instant::now()).await
    }

    /// [`Remote::session`] for a caller that began waiting for the host at `asked`.
    async fn session_asked_at(&self, host: &str, asked: std::time::Instant) -> CapResult<Arc<Session>> {
        let slot = self.slot(host).await;
        let mut guard = slot.lock().await;
        if let Some(session) = guard.as_ref() {
            return Ok(session.clone());
        }
        // Another caller's connect that ended while this one waited for the slot: its answer is
        // this one's too (never an older failure: a host may have come back since).
        if let Some((ended, error)) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).get(host)
            && *ended >= asked
        {
            return Err(error.clone());
        }
        let result = self.connect(host).await;
        match &result {
            Ok(session) => *guard = Some(session.clone()),
            Err(e) => {
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), (std::time::Instant::now(), e.clone()));
            }
        }
        result
    }

    async fn connect(&self, host: &str) -> CapResult<Arc<Session>> {
        let entry = self
            .inventory
            .host(host)
            .ok_or_else(|| CapabilityError::NotFound(format!("host {host} is not in the inventory ({})", self.inventory.source.display())))?;
        std::fs::create_dir_all(&self.control_dir)
            .map_err(|e| CapabilityError::Failed(format!("cannot create the ssh control directory {}: {e}", self.control_dir.display())))?;
        let connect_timeout = Duration::from_millis(self.inventory.defaults.connect_timeout_ms);
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Strict)
            .connect_timeout(connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(&self.control_dir);
        if let Some(config) = &self.inventory.ssh.config {
            builder.config_file(config);
        }
        if let Some(port) = entry.ssh_port {
            builder.port(port);
        }
        if let Some(key) = &entry.identity_file {
            builder.keyfile(key);
        }
        if let Some(known_hosts) = &entry.known_hosts {
            builder.user_known_hosts_file(known_hosts);
        }
        let destination = entry.ssh.clone().unwrap_or_else(|| entry.address.clone());
        // ssh's ConnectTimeout covers the TCP connect; a host that accepts but never answers
        // (hung, frozen) is caught by this outer bound.
        let session = match tokio::time::timeout(connect_timeout + Duration::from_secs(2), builder.connect(&destination)).await {
            Ok(Ok(session)) => Arc::new(session),
            Ok(Err(e)) => return Err(classify_ssh_error(host, e)),
            Err(_) => {
                return Err(CapabilityError::Unreachable(format!(
                    "host {host}: no ssh answer within {} s; check that the host is up and reachable",
                    connect_timeout.as_secs()
                )));
            }
        };
        Ok(session)
    }

    /// Make sure the host answers now, within the connect timeout: a master kept from an
    /// earlier command must run `true` there (one whose host froze never does, and is closed);
    /// otherwise a master is connected. Nothing but `true` runs on the host.
    pub async fn reach(&self, host: &str) -> CapResult<()> {
        let connect_timeout = Duration::from_millis(self.inventory.defaults.connect_timeout_ms);
        let asked = std::time::Instant::now();
        let cached = self.slot(host).await.lock().await.clone();
        if let Some(session) = cached {
            let mut child = mux_client(&session, &["true".to_string()])
                .spawn()
                .map_err(|e| CapabilityError::Failed(format!("cannot start ssh for host {host}: {e}; is OpenSSH's client installed?")))?;
            drop(child.stdin.take());
            match tokio::time::timeout(connect_timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => return Ok(()),
                Ok(_) => self.evict(host).await,
                Err(_) => {
                    self.evict(host).await;
                    return Err(CapabilityError::Unreachable(format!(
                        "host {host}: its ssh connection did not answer within {} s; check that the host is up and reachable",
                        connect_timeout.as_secs_f32()
                    )));
                }
            }
        }
        self.session_asked_at(host, asked).await.map(|_| ())
    }

    pub async fn close_all(&self) {
        let slots: Vec<SessionSlot> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.drain().map(|(_, slot)| slot).collect()
        };
        for slot in slots {
            let session = slot.lock().await.take();
            close(session).await;
        }
    }
}

/// A client of the host's multiplexed master running `argv` there (what `openssh` would run, but
/// in a process group of its own: the operator's Ctrl-C reaches opsh, which decides what it
/// means, never the command — a step is finished or aborted by opsh, not killed under it).
/// `-p 9` (discard) keeps ssh from making a new connection if the master is gone.
fn mux_client(session: &Session, argv: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ssh");
    command.arg("-S").arg(session.control_socket()).args(["-o", "BatchMode=yes", "-T", "-p", "9", "none", "--"]);
    // The remote side runs the words through its shell: each is quoted as one word.
    command.args(argv.iter().map(|a| shell_words::quote(a).into_owned()));
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
    command
}

/// Does the multiplexed master still answer (`ssh -O check`, a local round trip)?
async fn session_alive(session: &Session) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(5), session.check()).await, Ok(Ok(())))
}

/// Close a master we no longer use (bounded: a dead one must not hold the caller).
async fn close(session: Option<Arc<Session>>) {
    if let Some(old) = session.and_then(|s| Arc::try_unwrap(s).ok()) {
        let _ = tokio::time::timeout(Duration::from_secs(2), old.close()).await;
    }
}

/// ssh's own words when it could not use the control master, so it never ran the command:
/// without a master it falls back to connecting to the placeholder host `none`.
fn never_started(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    ["Could not resolve hostname none", "Control socket connect(", "mux_client_request_session", "port 9: Connection refused"].iter().any(|m| text.contains(m))
}

/// Put environment variables and privilege escalation around the argv. Secrets go first on
/// standard input, one line each, and are read by the wrapper shell into their variables; a
/// secret's line that arrived without its line break runs nothing (exit 125, as below).
/// Runs a command on its input only once all of it has arrived: an opsh killed while it sends
/// (kill -9, a cut network) ends the input early, and a command that read half of its input —
/// a slonik script, a file's new content — would do half of what was planned. A short input runs
/// nothing (exit 125).
const WHOLE_INPUT: &str = r#"n=$1; shift
t=$(mktemp) || { echo "opsh: no temp file for the command's input; it was not run" >&2; exit 125; }
trap 'rm -f -- "$t"' EXIT
head -c "$n" > "$t"
if [ "$(wc -c < "$t")" -ne "$n" ]; then echo "opsh: the command's input arrived incomplete; it was not run" >&2; exit 125; fi
"$@" < "$t""#;

/// Runs a step's command at most once under its name. A killed opsh's remote command goes on
/// (ssh without a pty sends it no hangup), and the resumed run would start it a second time
/// beside it — av-setup twice at once, a promote sent to a server already promoted. The first
/// attempt claims a marker directory on the host (`~/.cache/opsh/once/NAME`, or under /tmp when
/// the home is not writable) and leaves its exit status there; a later attempt under the same
/// name waits while the first still runs, then replays its exit status and output instead of
/// running the command again. One whose first attempt died unfinished (no exit status) runs
/// again, and so does one whose input arrived incomplete (the input guard ran nothing: exit 125
/// with its `…; it was not run` line). The command's output goes to the marker first, so an opsh that went away cannot
/// kill it with SIGPIPE, and stays there only when it could not be delivered. Markers older
/// than 30 days go.
const ONCE: &str = r#"name=$1; shift
umask 077
d=${HOME:-/nonexistent}/.cache/opsh/once
mkdir -p "$d" 2>/dev/null || { d=/tmp/opsh-once-$(id -u); mkdir -p "$d" 2>/dev/null; } || { echo "opsh: no directory for the command's marker (~/.cache/opsh/once or /tmp); it was not run" >&2; exit 125; }
find "$d" -mindepth 1 -maxdepth 1 -mtime +30 -exec rm -rf {} + 2>/dev/null
m=$d/$name
if ! mkdir "$m" 2>/dev/null; then
  [ -f "$m/pid" ] || sleep 1
  while [ ! -f "$m/rc" ] && [ -f "$m/pid" ] && kill -0 "$(cat "$m/pid")" 2>/dev/null; do sleep 1; done
  if [ -f "$m/rc" ]; then
    rc=$(cat "$m/rc")
    trap '' PIPE
    cat "$m/out" 2>/dev/null; cat "$m/err" >&2 2>/dev/null
    rm -f "$m/out" "$m/err"
    echo "opsh: not run again: an earlier, interrupted attempt of this step ran it to the end (exit $rc)"
    [ "$rc" = 0 ] || echo "opsh: not run again: an earlier, interrupted attempt of this step ran it to the end (exit $rc)" >&2
    exit "$rc"
  fi
  rm -rf "$m"
  mkdir "$m" || { echo "opsh: cannot claim the command's marker $m; it was not run" >&2; exit 125; }
fi
echo $$ > "$m/pid"
# Its own process group (setsid, util-linux), so that a later attempt can stop all of it.
exec 3<&0
if command -v setsid >/dev/null 2>&1; then setsid "$@" <&3 3<&- > "$m/out" 2> "$m/err" & else "$@" <&3 3<&- > "$m/out" 2> "$m/err" & fi
echo $! > "$m/group"
wait $!
rc=$?
# The input guard (or a marker it could not make) ran nothing: not an attempt, the next one runs it.
if [ "$rc" = 125 ] && tail -n 1 "$m/err" 2>/dev/null | grep -q '^opsh: .*; it was not run$'; then
  trap '' PIPE
  cat "$m/err" >&2
  rm -rf "$m"
  exit 125
fi
echo "$rc" > "$m/rc.new" && mv "$m/rc.new" "$m/rc"
trap '' PIPE
if cat "$m/out" && cat "$m/err" >&2; then rm -f "$m/out" "$m/err"; fi
exit "$rc""#;

/// Stops what still runs of the command named `$1` (its process group: TERM, then KILL after a
/// second): for a step whose check found it done although its earlier attempt's command never
/// finished — a slonik still waiting for an event would hold its locks against every later
/// step. Says `stopped` when there was something to stop.
const ONCE_STOP: &str = r#"name=$1
for d in "${HOME:-/nonexistent}/.cache/opsh/once" "/tmp/opsh-once-$(id -u)"; do
  m=$d/$name
  [ -d "$m" ] && [ ! -f "$m/rc" ] && [ -f "$m/group" ] || continue
  g=$(cat "$m/group")
  kill -0 "$g" 2>/dev/null || continue
  kill -TERM "-$g" 2>/dev/null || kill -TERM "$g" 2>/dev/null
  sleep 1
  kill -KILL "-$g" 2>/dev/null || kill -KILL "$g" 2>/dev/null
  echo stopped
done
exit 0"#;

/// The request that stops the unfinished command named `name` on its host ([`ONCE_STOP`]).
pub fn stop_request(name: &str) -> ExecRequest {
    ExecRequest::new(vec!["sh".into(), "-c".into(), ONCE_STOP.into(), "opsh-once-stop".into(), name.into()])
}

fn wrap_command(request: &ExecRequest, escalation: Become) -> CapResult<(Vec<String>, Vec<u8>)> {
    let mut argv = request.argv.clone();
    let mut stdin = Vec::new();
    if let Some(data) = request.stdin.as_ref().filter(|d| !d.is_empty()) {
        let mut wrapped = vec!["sh".to_string(), "-c".to_string(), WHOLE_INPUT.to_string(), "opsh-input".to_string(), data.len().to_string()];
        wrapped.append(&mut argv);
        argv = wrapped;
    }
    if !request.env.is_empty() {
        let mut script = String::new();
        for (name, value) in &request.env {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(CapabilityError::Invalid(format!("environment variable name {name:?} is not valid")));
            }
            match value {
                EnvValue::Plain(text) => script.push_str(&format!("{name}={}; export {name}; ", shell_words::quote(text))),
                EnvValue::Secret(secret) => {
                    if secret.expose().contains('\n') {
                        return Err(CapabilityError::Invalid(format!("the secret for {name} contains a line break and cannot be passed safely")));
                    }
                    // A line cut short (no line break: opsh went away while sending it) would
                    // give the command part of a secret: run nothing, as the input guard does.
                    script.push_str(&format!(
                        "IFS= read -r {name} || {{ echo \"opsh: the command's input arrived incomplete; it was not run\" >&2; exit 125; }}; export {name}; "
                    ));
                    stdin.extend_from_slice(secret.expose().as_bytes());
                    stdin.push(b'\n');
                }
            }
        }
        script.push_str("exec \"$@\"");
        let mut wrapped = vec!["sh".to_string(), "-c".to_string(), script, "opsh".to_string()];
        wrapped.append(&mut argv);
        argv = wrapped;
    }
    if request.privileged && escalation == Become::Sudo {
        argv.splice(0..0, ["sudo".to_string(), "-n".to_string()]);
    }
    // Outside sudo: the marker belongs to the ssh login, which can see whether the first
    // attempt's shell still runs.
    if let Some(name) = &request.once {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) || name.starts_with('.') {
            return Err(CapabilityError::Invalid(format!("command name {name:?}: letters, digits, '.', '-' and '_' only")));
        }
        argv.splice(0..0, ["sh".to_string(), "-c".to_string(), ONCE.to_string(), "opsh-once".to_string(), name.clone()]);
    }
    if let Some(data) = &request.stdin {
        stdin.extend_from_slice(data);
    }
    Ok((argv, stdin))
}

async fn run_local(argv: &[String], stdin: Vec<u8>, max: usize) -> CapResult<ExecOutput> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: the operator's Ctrl-C is opsh's to handle.
        .process_group(0)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CapabilityError::NotFound(format!("`{}` is not installed on host local", argv[0])),
            _ => CapabilityError::Failed(format!("cannot start `{}` on host local: {e}", argv[0])),
        })?;
    let (_, out, err) = tokio::join!(feed(child.stdin.take(), stdin), collect(child.stdout.take(), max), collect(child.stderr.take(), max));
    let status = child.wait().await.map_err(|e| CapabilityError::Failed(format!("waiting for `{}` on host local: {e}", argv[0])))?;
    let (stdout, t1) = out.map_err(|e| CapabilityError::Failed(format!("reading output of `{}`: {e}", argv[0])))?;
    let (stderr, t2) = err.map_err(|e| CapabilityError::Failed(format!("reading errors of `{}`: {e}", argv[0])))?;
    Ok(ExecOutput { status: status.code(), stdout, stderr, truncated: t1 || t2 })
}

async fn feed<W: AsyncWrite + Unpin>(pipe: Option<W>, data: Vec<u8>) {
    if let Some(mut pipe) = pipe {
        // A command that does not read its input closes the pipe early: not an error.
        let _ = pipe.write_all(&data).await;
        let _ = pipe.shutdown().await;
    }
}

/// Read a stream to its end, keeping at most `max` bytes.
async fn collect<R: AsyncRead + Unpin>(stream: Option<R>, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut stream) = stream else { return Ok((Vec::new(), false)) };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

fn classify_ssh_error(host: &str, e: openssh::Error) -> CapabilityError {
    let text = match &e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => other.to_string(),
    };
    let text = text.trim().to_string();
    if text.contains("Permission denied") {
        CapabilityError::Auth(format!("host {host}: ssh refused the login ({text}); check the user and key in the inventory and the host's authorized_keys"))
    } else if text.contains("Host key verification failed") || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        CapabilityError::Auth(format!("host {host}: its host key is not in known_hosts or has changed ({text}); verify the key and add it to known_hosts"))
    } else {
        CapabilityError::Unreachable(format!("host {host}: ssh failed ({text}); check that the host is up and reachable"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two callers that reach a host which accepts TCP but never speaks ssh (a frozen sshd) at
    /// once cost it one connect between them; a later caller asks afresh (the host may be back).
    /// Counted by the connections the stand-in host accepts, not by time.
    #[test]
    fn callers_waiting_on_one_failed_connect_share_its_failure_and_a_later_one_asks_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let port = listener.local_addr().expect("port").port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!("[defaults]\nconnect-timeout-ms = 500\n[hosts.frozen]\naddress = \"127.0.0.1\"\nssh-port = {port}\n");
        let inventory = Arc::new(Inventory::parse(&text).expect("inventory"));
        let remote = Remote::new(inventory, dir.path().join("ssh"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (a, b) = tokio::join!(remote.reach("frozen"), remote.reach("frozen"));
            assert!(matches!(a, Err(CapabilityError::Unreachable(_))), "{a:?}");
            assert_eq!(a, b, "the waiting caller took the first one's failure");
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one connect for both");
            let later = remote.reach("frozen").await;
            assert!(matches!(later, Err(CapabilityError::Unreachable(_))), "{later:?}");
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "a caller after the failure connects again");
        });
    }

    #[test]
    fn secrets_travel_on_stdin_not_argv() {
        let mut request = ExecRequest::new(vec!["av-setup".into()]);
        request.env.push(("DB_HOST".into(), EnvValue::Plain("10.0.0.2".into())));
        request.env.push(("DB_PASSWORD".into(), EnvValue::Secret(crate::inventory::tests_support::secret("s3cr3t"))));
        request.privileged = true;
        let (argv, stdin) = wrap_command(&request, Become::Sudo).expect("wrap");
        assert_eq!(&argv[..4], ["sudo", "-n", "sh", "-c"]);
        assert!(argv.iter().all(|a| !a.contains("s3cr3t")), "{argv:?}");
        assert_eq!(stdin, b"s3cr3t\n");
    }

    /// Run a wrapped command locally as ssh would run it remotely, on `input` (perhaps cut
    /// short), with `home` as its HOME when given.
    fn feed(argv: &[String], input: &[u8], home: Option<&std::path::Path>) -> std::process::Output {
        use std::io::Write;
        let mut command = std::process::Command::new(&argv[0]);
        command.args(&argv[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(home) = home {
            command.env("HOME", home);
        }
        let mut child = command.spawn().expect("sh");
        child.stdin.take().expect("stdin").write_all(input).expect("write");
        child.wait_with_output().expect("wait")
    }

    /// An input cut short ran nothing: exit 125, the guard's own words, and no `out` written.
    fn ran_nothing(cut: &std::process::Output, out: &std::path::Path, why: &str) {
        assert_eq!(cut.status.code(), Some(125), "{cut:?}");
        assert!(String::from_utf8_lossy(&cut.stderr).contains("arrived incomplete; it was not run"), "{cut:?}");
        assert!(!out.exists(), "{why}");
    }

    /// The input-guard script, run here with a stand-in command: whole input runs it on exactly
    /// that input; an input cut short (opsh killed while sending) runs nothing.
    #[test]
    fn a_command_runs_on_its_whole_input_or_not_at_all() {
        let mut request = ExecRequest::new(vec!["sh".into(), "-c".into(), "cat > \"$0\"".into()]);
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("got");
        request.argv.push(out.display().to_string());
        request.stdin = Some(b"line 1\nline 2\n".to_vec());
        let (argv, stdin) = wrap_command(&request, Become::None).expect("wrap");
        let run = |input: &[u8]| feed(&argv, input, None);
        let whole = run(&stdin);
        assert!(whole.status.success(), "{whole:?}");
        assert_eq!(std::fs::read(&out).expect("written"), b"line 1\nline 2\n");
        std::fs::remove_file(&out).expect("remove");
        let cut = run(&stdin[..5]);
        ran_nothing(&cut, &out, "the command did not run on half its input");
    }

    /// A secret passed on standard input whose line was cut short runs nothing (the command
    /// would log in with part of a password, or act on part of a token); whole, it arrives.
    #[test]
    fn a_command_whose_secret_arrived_cut_short_runs_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("got");
        let mut request = ExecRequest::new(vec!["sh".into(), "-c".into(), "printf %s \"$TOKEN\" > \"$0\"".into(), out.display().to_string()]);
        request.env.push(("TOKEN".into(), EnvValue::Secret(crate::inventory::tests_support::secret("s3cret-token-value"))));
        let (argv, stdin) = wrap_command(&request, Become::None).expect("wrap");
        let run = |input: &[u8]| feed(&argv, input, None);
        let cut = run(&stdin[..6]);
        ran_nothing(&cut, &out, "the command did not run with part of its secret");
        let whole = run(&stdin);
        assert!(whole.status.success(), "{whole:?}");
        assert_eq!(std::fs::read_to_string(&out).expect("written"), "s3cret-token-value");
    }

    /// A named command whose input was cut short (the lab's `cut` during a slonik step) ran
    /// nothing, so the next attempt under the same name runs it instead of replaying exit 125.
    #[test]
    fn a_named_command_whose_input_arrived_incomplete_runs_on_the_next_attempt() {
        let home = tempfile::tempdir().expect("home");
        let out = home.path().join("got");
        let mut request = ExecRequest::new(vec!["sh".into(), "-c".into(), "cat > \"$0\"".into(), out.display().to_string()]);
        request.once = Some("r1.s9.e0.a1".into());
        request.stdin = Some(b"script line 1\nscript line 2\n".to_vec());
        let (argv, stdin) = wrap_command(&request, Become::None).expect("wrap");
        let run = |input: &[u8]| feed(&argv, input, Some(home.path()));
        let cut = run(&stdin[..7]);
        ran_nothing(&cut, &out, "nothing ran on half the input");
        let again = run(&stdin);
        assert!(again.status.success(), "the next attempt ran it: {again:?}");
        assert!(!String::from_utf8_lossy(&again.stderr).contains("not run again"), "{again:?}");
        assert_eq!(std::fs::read(&out).expect("written"), b"script line 1\nscript line 2\n");
    }

    /// The run-once wrapper, run here as the host would on a remote one, with a stand-in command
    /// that counts its runs: under one name the command runs once and a second attempt replays
    /// its exit status and output; a second attempt while the first still runs waits for it; a
    /// first attempt that died unfinished lets the next run it; another name runs it anew.
    #[test]
    fn a_named_command_runs_once_and_a_second_attempt_replays_or_waits() {
        let home = tempfile::tempdir().expect("home");
        let count = home.path().join("runs");
        let command = |name: &str, body: &str| {
            let mut request = ExecRequest::new(vec!["sh".into(), "-c".into(), format!("echo x >> '{}'; {body}", count.display())]);
            request.once = Some(name.to_string());
            let (argv, _) = wrap_command(&request, Become::None).expect("wrap");
            let mut command = std::process::Command::new(&argv[0]);
            command.args(&argv[1..]).env("HOME", home.path()).stdin(Stdio::null());
            command
        };
        let runs = || std::fs::read_to_string(&count).unwrap_or_default().lines().count();
        let first = command("r1.s0.e0.a1", "echo done; exit 3").output().expect("sh");
        assert_eq!((first.status.code(), String::from_utf8_lossy(&first.stdout).trim()), (Some(3), "done"));
        let again = command("r1.s0.e0.a1", "echo done; exit 3").output().expect("sh");
        assert_eq!(again.status.code(), Some(3), "{again:?}");
        assert!(String::from_utf8_lossy(&again.stderr).contains("not run again: an earlier, interrupted attempt"), "{again:?}");
        assert_eq!(runs(), 1, "the second attempt under the same name did not run the command");
        let fresh = command("r1.s0.e0.a2", "exit 0").output().expect("sh");
        assert!(fresh.status.success(), "{fresh:?}");
        assert_eq!(runs(), 2, "a new attempt's name runs it");

        // The first attempt still runs, its opsh gone (nobody reads its output): the second
        // waits for it, then replays its output.
        let mut slow = command("r1.s1.e0.a1", "sleep 2; echo slow").stdout(Stdio::piped()).spawn().expect("sh");
        drop(slow.stdout.take());
        std::thread::sleep(Duration::from_millis(300));
        let waited = command("r1.s1.e0.a1", "echo slow").output().expect("sh");
        assert!(waited.status.success(), "{waited:?}");
        assert!(String::from_utf8_lossy(&waited.stdout).starts_with("slow\n"), "its output replayed: {waited:?}");
        assert_eq!(runs(), 3, "the waiting attempt did not run the command beside the first");
        let _ = { slow }.wait();

        // A first attempt killed before it finished (host rebooted, its shell killed): run again.
        let mut killed = command("r1.s2.e0.a1", "sleep 30").spawn().expect("sh");
        std::thread::sleep(Duration::from_millis(300));
        killed.kill().expect("kill");
        let _ = killed.wait();
        let rerun = command("r1.s2.e0.a1", "exit 0").output().expect("sh");
        assert!(rerun.status.success(), "{rerun:?}");
        assert_eq!(runs(), 5, "an attempt that died unfinished is run again");

        // A step found done while its earlier attempt's command still waits: stopped, all of it.
        let inner = home.path().join("inner-pid");
        let script = format!("sh -c 'sleep 60 & echo $! > {}; wait'; echo never", inner.display());
        let waiting = command("r1.s3.e0.a1", &script).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("sh");
        std::thread::sleep(Duration::from_millis(500));
        let inner = std::fs::read_to_string(&inner).expect("the inner sleep's pid").trim().to_string();
        let stop = stop_request("r1.s3.e0.a1");
        let stopped = std::process::Command::new(&stop.argv[0]).args(&stop.argv[1..]).env("HOME", home.path()).output().expect("sh");
        assert_eq!(String::from_utf8_lossy(&stopped.stdout).trim(), "stopped", "{stopped:?}");
        let waited = { waiting }.wait_with_output().expect("the wrapper ends");
        assert_ne!(waited.status.code(), Some(0), "the command was stopped, not finished: {waited:?}");
        let group = std::fs::read_to_string(home.path().join(".cache/opsh/once/r1.s3.e0.a1/group")).expect("its group");
        assert!(!std::path::Path::new(&format!("/proc/{}", group.trim())).exists(), "its group's leader is gone");
        let zombie_or_gone = std::fs::read_to_string(format!("/proc/{inner}/stat")).map_or(true, |stat| stat.contains(") Z "));
        assert!(zombie_or_gone, "the command's own child (the sleep {inner}) was stopped too");
        let again = std::process::Command::new(&stop.argv[0]).args(&stop.argv[1..]).env("HOME", home.path()).output().expect("sh");
        assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "", "nothing left to stop");

        let mut bad = ExecRequest::new(vec!["true".into()]);
        bad.once = Some("../x".into());
        assert!(wrap_command(&bad, Become::None).is_err(), "a name with a path in it is refused");
    }
}
