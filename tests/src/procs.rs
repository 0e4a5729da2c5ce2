//! Processes the lab owns, found and stopped by PID (with their start time, so that a reused PID
//! is never killed), and the processes of one lab host (everything in its mount namespace).

use std::path::Path;
use std::time::{Duration, Instant};

/// Start time of a process (clock ticks since boot), or None if it is gone or a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// The children of a process (waits a moment for a child that is still being forked).
pub fn children(pid: u32) -> Vec<u32> {
    for _ in 0..100 {
        let found: Vec<u32> =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if !found.is_empty() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Vec::new()
}

/// The mount namespace of a process (`mnt:[4026532…]`).
pub fn mount_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().map(|p| p.to_string_lossy().to_string())
}

/// Every live process in a mount namespace.
pub fn in_namespace(ns: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mount_ns(*pid).as_deref() == Some(ns) && start_time(*pid).is_some())
        .collect()
}

pub fn signal(pid: u32, signal: i32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// TERM, wait, then KILL; waits until the processes are gone (or zombies).
pub fn stop_all(pids: &[(u32, u64)], grace: Duration) {
    for (pid, started) in pids {
        if alive(*pid, *started) {
            signal(*pid, libc::SIGCONT);
            signal(*pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|(p, s)| alive(*p, *s)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (pid, started) in pids {
        if alive(*pid, *started) {
            signal(*pid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|(p, s)| alive(*p, *s)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The postmaster of a data directory, as a PID of this (the root) namespace. `postmaster.pid`
/// holds the PID as the lab host sees it (its own PID namespace): it is matched against the
/// namespace PIDs (`NSpid`) of that host's processes only, never used as it is.
pub fn postmaster(data_dir: &Path, namespace: &str) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let inner: u32 = text.lines().next()?.trim().parse().ok()?;
    in_namespace(namespace).into_iter().find(|pid| namespace_pid(*pid) == Some(inner) && command(*pid).as_deref() == Some("postgres"))
}

/// The machine-wide PID of the process a lab host knows as `inner` (its pid files hold
/// namespace PIDs, which mean another process out here).
pub fn from_host(namespace: &str, inner: u32) -> Option<u32> {
    in_namespace(namespace).into_iter().find(|pid| namespace_pid(*pid) == Some(inner))
}

/// A process's PID in its own (innermost) PID namespace.
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|pids| pids.split_whitespace().last()?.parse().ok())
}

fn command(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_string())
}
