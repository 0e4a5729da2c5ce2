//! Reads during an outage. Before a reading call (read, plan, verify) the host reaches every
//! database and host the plugin could touch, all at once, each bounded by the connect timeout:
//! kept connections must answer, missing ones are opened. What does not answer is an *outage*
//! for the rest of that call, and every capability call to it fails at once as unreachable — a
//! status with one frozen server of two answers in about one connect timeout, instead of one
//! timeout per question asked of it. The same holds for a target that first fails to connect
//! during the call. Applying never uses this: every change call tries for itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::{CapResult, Capabilities, CapabilityError};
use crate::grants::Capability;

/// Targets that did not answer in this call, when, and how they failed first. Only a target
/// that kept the caller waiting is remembered (a refused connection costs nothing to ask
/// again), and only for a while: a verify that polls a host coming back asks it again.
#[derive(Debug, Default)]
pub struct Outages {
    failed: Mutex<BTreeMap<String, (Instant, CapabilityError)>>,
    /// A failure that took at least this long was a wait for an answer.
    slow: Duration,
    /// How long a target that did not answer is not asked again.
    remembered: Duration,
    /// Calls that got an answer (rows, output, or an error the target itself gave).
    answered: AtomicUsize,
    /// Targets that gave none (unreachable, refused the login, timed out), with why, briefly.
    silent: Mutex<BTreeMap<String, &'static str>>,
}

impl Outages {
    pub fn new(connect_timeout: Duration) -> Self {
        Self { slow: connect_timeout / 2, remembered: connect_timeout * 5, ..Self::default() }
    }

    /// Fail at once for a target (`database NAME`, `host NAME`: see `database`, `host`) that
    /// did not answer earlier in this call.
    pub fn check(&self, target: &str) -> CapResult<()> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(target) {
            Some((when, first)) if when.elapsed() < self.remembered => {
                Err(CapabilityError::Unreachable(format!("{} ({:.0} s ago; not asked again yet)", first.message(), when.elapsed().as_secs_f32())))
            }
            _ => Ok(()),
        }
    }

    /// Count a plugin's call: did the target answer?
    pub fn tally<T>(&self, target: &str, result: &CapResult<T>) {
        let why = match result {
            Err(CapabilityError::Unreachable(_)) => "unreachable",
            Err(CapabilityError::Auth(_)) => "auth failed",
            Err(CapabilityError::Timeout(_)) => "no answer in time",
            Err(CapabilityError::Denied(_) | CapabilityError::Invalid(_) | CapabilityError::NotFound(_)) => return,
            _ => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.silent.lock().unwrap_or_else(|p| p.into_inner()).entry(target.to_string()).or_insert(why);
    }

    /// When the plugin asked targets and not one answered: which, and why (a read that could
    /// read nothing has failed, whatever its tables say).
    pub fn none_answered(&self) -> Option<String> {
        let silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        if self.answered.load(Ordering::Relaxed) > 0 || silent.is_empty() {
            return None;
        }
        let each: Vec<String> = silent.iter().map(|(target, why)| format!("{target}: {why}")).collect();
        Some(format!("no target answered ({}); nothing could be read", each.join(", ")))
    }

    /// Remember a target that could not be reached after a wait of `took`.
    pub fn note<T>(&self, target: &str, result: &CapResult<T>, took: Duration) {
        if let Err(error @ CapabilityError::Unreachable(_)) = result
            && took >= self.slow
        {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(target.to_string(), (Instant::now(), error.clone()));
        }
    }
}

/// The outage key of a database (a host may have the same name).
pub fn database(name: &str) -> String {
    format!("database {name}")
}

/// The outage key of a host.
pub fn host(name: &str) -> String {
    format!("host {name}")
}

enum Target {
    Database(String),
    Host(String),
}

impl Capabilities {
    /// Reach, concurrently, every database and remote host `plugin` could use with the
    /// capabilities it declared; what did not answer is returned as the call's outages.
    pub async fn reach_ahead(&self, plugin: &str, declared: &std::collections::BTreeSet<Capability>) -> Outages {
        let (databases, hosts) = self.grants.reachable(plugin, &self.inventory, declared);
        let targets = databases.into_iter().map(Target::Database).chain(hosts.into_iter().map(Target::Host));
        let outages = Outages::new(Duration::from_millis(self.inventory.defaults.connect_timeout_ms));
        let reached: Vec<(String, CapResult<()>, Duration)> = stream::iter(targets)
            .map(|target| async move {
                let started = Instant::now();
                let (key, result) = match target {
                    Target::Database(name) => {
                        let result = self.sql.reach(&name, super::sql::Session { plugin, read_only: true }).await;
                        (database(&name), result)
                    }
                    Target::Host(name) => {
                        let result = self.remote.reach(&name).await;
                        (host(&name), result)
                    }
                };
                (key, result, started.elapsed())
            })
            .buffer_unordered(self.inventory.defaults.parallel.max(1))
            .collect()
            .await;
        for (target, result, took) in &reached {
            outages.note(target, result, *took);
        }
        outages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> CapResult<()> {
        Err(CapabilityError::Unreachable("database d: no answer within 3 s; check that the server is up".into()))
    }

    #[test]
    fn a_target_that_kept_the_call_waiting_is_not_asked_again_for_a_while() {
        let outages = Outages::new(Duration::from_secs(3));
        outages.note("database d", &unreachable(), Duration::from_millis(10));
        assert!(outages.check("database d").is_ok(), "a quick refusal costs nothing to ask again");
        outages.note("database d", &unreachable(), Duration::from_secs(3));
        let again = outages.check("database d").expect_err("remembered");
        assert!(matches!(again, CapabilityError::Unreachable(_)) && again.message().contains("no answer within 3 s"), "{again:?}");
        assert!(outages.check("host d").is_ok(), "a host of the same name is another target");
        let forgotten = Outages { remembered: Duration::ZERO, ..Outages::new(Duration::from_secs(3)) };
        forgotten.note("database d", &unreachable(), Duration::from_secs(3));
        assert!(forgotten.check("database d").is_ok(), "asked again once the while is over");
    }

    #[test]
    fn a_read_fails_only_when_it_asked_and_nothing_answered() {
        let outages = Outages::new(Duration::from_secs(3));
        assert_eq!(outages.none_answered(), None, "asked nothing");
        outages.tally("database a", &unreachable());
        outages.tally("host b", &Err::<(), _>(CapabilityError::Auth("host b: ssh refused the login".into())));
        outages.tally("database c", &Err::<(), _>(CapabilityError::Denied("not granted".into())));
        assert_eq!(outages.none_answered().as_deref(), Some("no target answered (database a: unreachable, host b: auth failed); nothing could be read"));
        outages.tally("database d", &Err::<(), _>(CapabilityError::Failed("ERROR: relation x does not exist".into())));
        assert_eq!(outages.none_answered(), None, "an error the server gave is an answer");
    }
}
