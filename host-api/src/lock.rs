//! Two opsh processes must not change the same topology at once. A change takes an exclusive
//! lock per topology it touches (or per target outside any topology): `DATA/locks/KEY.lock`,
//! an OS file lock, so it is released when the process ends — `kill -9` included — and never
//! goes stale. The holder writes its run id and pid into the file for the refusal message.
//! Scope: processes sharing a data directory on one machine.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::inventory::Inventory;

pub struct Locks {
    _files: Vec<File>,
    pub keys: Vec<String>,
}

/// The lock keys a plan needs: every topology that has one of the targets (or a host of a target
/// database) as a member; targets in no topology are locked by their own name.
pub fn keys_for(inventory: &Inventory, targets: &BTreeSet<String>) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for target in targets {
        let host_of = inventory.database(target).map(|d| d.host.clone());
        let mut in_topology = false;
        for (name, topology) in &inventory.topologies {
            let members = topology.members.values().flatten();
            if members.clone().any(|m| m == target || Some(m) == host_of.as_ref() || inventory.database(m).is_some_and(|d| &d.host == target)) {
                keys.insert(format!("topology-{name}"));
                in_topology = true;
            }
        }
        if !in_topology {
            keys.insert(format!("target-{target}"));
        }
    }
    keys.into_iter().collect()
}

/// Take every lock or none. The error names the holder: its run id and pid.
pub fn acquire(dir: &Path, keys: &[String], run: &str) -> Result<Locks, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the lock directory {}: {e}", dir.display()))?;
    let mut files = Vec::with_capacity(keys.len());
    for key in keys {
        let path = dir.join(format!("{key}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open lock {}: {e}", path.display()))?;
        // A holder that has just died releases the lock a moment later; one whose process is
        // gone while the lock stays is held by a process that inherited it, which is named.
        let mut locked = file.try_lock().is_ok();
        for _ in 0..30 {
            if locked || holder_alive(&mut file) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            locked = file.try_lock().is_ok();
        }
        match if locked { Ok(()) } else { Err(()) } {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = writeln!(file, "run={run} pid={}", std::process::id());
                let _ = file.sync_data();
                files.push(file);
            }
            Err(_) => {
                let mut holder = String::new();
                let _ = file.rewind().and_then(|()| file.read_to_string(&mut holder));
                let holder = holder.trim();
                let inherited = if holder_alive(&mut file) {
                    String::new()
                } else {
                    let others = processes_holding(&path);
                    format!(
                        " — that process has ended; the lock is still held by {}",
                        if others.is_empty() { "a process it started".to_string() } else { others.join(", ") }
                    )
                };
                return Err(format!(
                    "{} is being changed by another opsh ({}{inherited}); wait for it to finish, or check that process",
                    key.replace("topology-", "topology ").replace("target-", "target "),
                    if holder.is_empty() { "holder unknown".to_string() } else { holder.replace("run=", "run ").replace(" pid=", ", pid ") }
                ));
            }
        }
    }
    Ok(Locks { _files: files, keys: keys.to_vec() })
}

/// Whether the process the lock file names is still running (not only a zombie).
fn holder_alive(file: &mut File) -> bool {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return true;
    }
    let Some(pid) = text.split_whitespace().find_map(|w| w.strip_prefix("pid=")).and_then(|p| p.parse::<u32>().ok()) else { return true };
    process_alive(pid)
}

/// Whether process `pid` of this machine runs (a zombie does not).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: Z is a zombie, X is dead.
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `pid N (command)` of every process with `path` open.
fn processes_holding(path: &Path) -> Vec<String> {
    let Ok(path) = path.canonicalize() else { return Vec::new() };
    let mut holders = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let fds = std::fs::read_dir(entry.path().join("fd")).into_iter().flatten().flatten();
        if fds.filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| target == path) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            holders.push(format!("pid {pid} ({})", comm.trim()));
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_run_and_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = vec!["topology-otb".to_string()];
        let first = acquire(dir.path(), &keys, "run-1").expect("first");
        let refused = acquire(dir.path(), &keys, "run-2").err().expect("refused");
        assert!(refused.contains("topology otb") && refused.contains("run run-1") && refused.contains(&format!("pid {}", std::process::id())), "{refused}");
        drop(first);
        assert!(acquire(dir.path(), &keys, "run-3").is_ok(), "released with its holder");
    }

    #[test]
    fn a_lock_its_dead_holder_left_to_a_child_names_the_process_that_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("topology-otb.lock");
        // The opsh that took it is gone (a process that has ended); a process it started still
        // has it open.
        let mut gone = std::process::Command::new("true").spawn().expect("true");
        let gone_pid = gone.id();
        gone.wait().expect("wait");
        std::fs::write(&path, format!("run=run-1 pid={gone_pid}\n")).expect("lock file");
        let held = dir.path().join("held");
        let mut holder = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$0\" && flock 9 && : > \"$1\" && exec sleep 30"])
            .arg(&path)
            .arg(&held)
            .spawn()
            .expect("sh with flock(1)");
        while !held.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let holder_pid = holder.id();
        let refused = acquire(dir.path(), &["topology-otb".to_string()], "run-2").err().expect("refused");
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(refused.contains(&format!("run run-1, pid {gone_pid} — that process has ended; the lock is still held by pid ")), "{refused}");
        assert!(refused.contains(&format!("pid {} (sleep)", holder_pid)), "names the process: {refused}");
        assert!(acquire(dir.path(), &["topology-otb".to_string()], "run-3").is_ok(), "free once that process ends");
    }

    #[test]
    fn keys_follow_topologies() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\n[hosts.b]\naddress='127.0.0.3'\n[databases.a-db]\nhost='a'\ndbname='x'\nuser='u'\n[topologies.t]\nmembers = { m = ['a-db'] }\n",
        )
        .expect("inventory");
        let targets: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(keys_for(&inventory, &targets), vec!["target-b".to_string(), "topology-t".to_string()]);
    }
}
