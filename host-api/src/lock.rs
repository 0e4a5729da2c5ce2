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
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = writeln!(file, "run={run} pid={}", std::process::id());
                let _ = file.sync_data();
                files.push(file);
            }
            Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(format!(
                    "{} is being changed by another opsh ({}); wait for it to finish, or check that process",
                    key.replace("topology-", "topology ").replace("target-", "target "),
                    if holder.is_empty() { "holder unknown".to_string() } else { holder.replace("run=", "run ").replace(" pid=", ", pid ") }
                ));
            }
        }
    }
    Ok(Locks { _files: files, keys: keys.to_vec() })
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
    fn keys_follow_topologies() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\n[hosts.b]\naddress='127.0.0.3'\n[databases.a-db]\nhost='a'\ndbname='x'\nuser='u'\n[topologies.t]\nmembers = { m = ['a-db'] }\n",
        )
        .expect("inventory");
        let targets: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(keys_for(&inventory, &targets), vec!["target-b".to_string(), "topology-t".to_string()]);
    }
}
