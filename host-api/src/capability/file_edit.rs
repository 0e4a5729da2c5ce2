//! Text files on inventory hosts, read and replaced through small POSIX shell scripts run by the
//! exec driver (so the same code serves ssh hosts and `local`).
//!
//! The path is the path: both scripts resolve it on the target (`realpath -m`) and refuse one
//! that goes through a symbolic link anywhere (or is not in its plain form), so a link inside a
//! granted directory cannot read or write outside the grant. The write checks again in the same
//! script that renames, and the rename itself replaces a link put there since, never its target.
//!
//! A write is atomic and checked: the new content goes to a temp file in the same directory, the
//! current content's SHA-256 is compared with what the caller expects (no lost update), a backup
//! is kept beside the file, mode and owner are copied, and a rename puts it in place.

use sha2::{Digest, Sha256};

use super::exec::{ExecRequest, Remote};
use super::{Bounds, CapResult, CapabilityError};

#[derive(Debug, Clone)]
pub struct FileSnapshot {
    pub exists: bool,
    pub content: String,
    pub sha256: String,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub backup_path: Option<String>,
    pub sha256: String,
}

/// The SHA-256 `write` expects for "the file must not exist yet".
pub const ABSENT: &str = "";

const READ_SCRIPT: &str = r#"f=$1
real=$(realpath -m -- "$f") || exit 22
if [ "$real" != "$f" ]; then echo "the path leads through a symbolic link to $real" >&2; exit 25; fi
if [ ! -e "$f" ]; then echo absent; exit 0; fi
if [ ! -f "$f" ]; then echo "not a regular file" >&2; exit 21; fi
if [ ! -r "$f" ]; then echo "permission denied" >&2; exit 22; fi
printf 'present %s\n' "$(stat -c %a -- "$f")"
exec cat -- "$f""#;

const WRITE_SCRIPT: &str = r#"set -u
f=$1 expected=$2 check=$3 stamp=$4
dir=$(dirname -- "$f")
real=$(realpath -m -- "$f") || exit 22
if [ "$real" != "$f" ]; then echo "the path leads through a symbolic link to $real" >&2; exit 25; fi
[ -d "$dir" ] || { echo "directory $dir does not exist" >&2; exit 23; }
if [ -e "$f" ]; then current=$(sha256sum -- "$f" | cut -d' ' -f1) || exit 22; else current=""; fi
if [ "$check" = yes ] && [ "$current" != "$expected" ]; then printf 'conflict %s\n' "${current:-absent}"; exit 17; fi
tmp=$(mktemp "$dir/.opsh-edit.XXXXXX") || { echo "cannot create a temp file in $dir" >&2; exit 22; }
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp" || exit 24
if [ -e "$f" ]; then
  chmod --reference="$f" -- "$tmp" || exit 24
  chown --reference="$f" -- "$tmp" 2>/dev/null || true
  backup="$f.opsh-$stamp.bak"
  cp -p -- "$f" "$backup" || { echo "cannot keep a backup at $backup" >&2; exit 24; }
  printf 'backup %s\n' "$backup"
else
  chmod 0644 -- "$tmp"
fi
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$f" || exit 24
trap - EXIT
printf 'written\n'"#;

pub async fn read(remote: &Remote, host: &str, path: &str, privileged: bool, bounds: &Bounds) -> CapResult<FileSnapshot> {
    check_path(host, path)?;
    let mut request = script(READ_SCRIPT, &[path]);
    request.privileged = privileged;
    request.max_output = bounds.max_file_bytes + 64;
    let output = remote.exec(host, request).await?;
    if !output.success() {
        return Err(script_error(host, path, "read", output.status, &output.stderr_text()));
    }
    if output.truncated {
        return Err(CapabilityError::Invalid(format!(
            "file {path} on host {host} is larger than {} MiB: too large to edit through opsh",
            bounds.max_file_bytes >> 20
        )));
    }
    let newline = output.stdout.iter().position(|b| *b == b'\n').unwrap_or(output.stdout.len());
    let header = String::from_utf8_lossy(&output.stdout[..newline]).to_string();
    if header == "absent" {
        return Ok(FileSnapshot { exists: false, content: String::new(), sha256: ABSENT.into(), mode: 0 });
    }
    let mode = header
        .strip_prefix("present ")
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .ok_or_else(|| CapabilityError::Failed(format!("reading {path} on host {host}: unexpected answer {header:?}")))?;
    let bytes = output.stdout.get(newline + 1..).unwrap_or_default().to_vec();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let content =
        String::from_utf8(bytes).map_err(|_| CapabilityError::Invalid(format!("file {path} on host {host} is not UTF-8 text; opsh edits text files only")))?;
    Ok(FileSnapshot { exists: true, content, sha256, mode })
}

pub async fn write(remote: &Remote, host: &str, path: &str, content: &str, expected_sha256: Option<&str>, privileged: bool) -> CapResult<WriteOutcome> {
    check_path(host, path)?;
    let stamp = backup_stamp();
    let (check, expected) = match expected_sha256 {
        Some(sha) => ("yes", sha),
        None => ("no", ""),
    };
    let mut request = script(WRITE_SCRIPT, &[path, expected, check, &stamp]);
    request.privileged = privileged;
    request.stdin = Some(content.as_bytes().to_vec());
    let output = remote.exec(host, request).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status == Some(17) {
        let found = stdout.lines().find_map(|l| l.strip_prefix("conflict ")).unwrap_or("?").to_string();
        return Err(CapabilityError::Conflict(format!(
            "file {path} on host {host} changed since it was read (expected sha256 {}, found {}); nothing was written — plan again to see the current content",
            short(expected),
            if found == "absent" { "no file".to_string() } else { short(&found) }
        )));
    }
    if !output.success() || !stdout.lines().any(|l| l == "written") {
        return Err(script_error(host, path, "write", output.status, &output.stderr_text()));
    }
    Ok(WriteOutcome {
        backup_path: stdout.lines().find_map(|l| l.strip_prefix("backup ")).map(str::to_string),
        sha256: hex::encode(Sha256::digest(content.as_bytes())),
    })
}

fn script(body: &str, args: &[&str]) -> ExecRequest {
    let mut argv = vec!["sh".to_string(), "-c".to_string(), body.to_string(), "opsh-file".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    ExecRequest::new(argv)
}

fn check_path(host: &str, path: &str) -> CapResult<()> {
    if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|part| part == "..") {
        return Err(CapabilityError::Invalid(format!("file path {path:?} on host {host} must be absolute, without '..'")));
    }
    Ok(())
}

fn script_error(host: &str, path: &str, op: &str, status: Option<i32>, stderr: &str) -> CapabilityError {
    match status {
        Some(21) => CapabilityError::Invalid(format!("{path} on host {host} is not a regular file")),
        Some(22) => CapabilityError::Denied(format!(
            "cannot {op} {path} on host {host}: permission denied ({stderr}); set `become = \"sudo\"` on the host in the inventory if it needs root"
        )),
        Some(23) => CapabilityError::NotFound(format!("cannot {op} {path} on host {host}: {stderr}")),
        Some(25) => CapabilityError::Denied(format!(
            "cannot {op} {path} on host {host}: {stderr}; opsh edits a granted path only as it is (grant the real path instead)"
        )),
        _ => CapabilityError::Failed(format!("cannot {op} {path} on host {host}: {stderr} (exit {status:?})")),
    }
}

fn backup_stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}{:03}", now.as_secs(), now.subsec_millis())
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

/// A plugin was shown a file's passwords as `scrub::MARKER`: writing that content back would put
/// asterisks where a password was. Refused when the file on the host holds one.
pub async fn keep_secrets(remote: &Remote, scrubber: &crate::scrub::Scrubber, bounds: &Bounds, host: &str, path: &str, content: &str) -> CapResult<()> {
    if !content.contains(crate::scrub::MARKER) {
        return Ok(());
    }
    let current = read(remote, host, path, true, bounds).await?;
    if scrubber.holds_secret(&current.content) {
        return Err(CapabilityError::Conflict(format!(
            "{path} on host {host} holds a password from the inventory, which the plugin was shown as {}: writing its edit would replace the password; edit this file by hand",
            crate::scrub::MARKER
        )));
    }
    Ok(())
}
