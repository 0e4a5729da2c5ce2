//! The decisions of a failover, from the live state alone and for any number of members: which
//! standby becomes master (and why), which members must be fenced so that no second master can
//! exist, which standbys must follow the new master, and what is refused. Pure functions over
//! [`Member`]s, so they are unit-tested natively on shapes the lab never builds.

use opsh_plugin_sdk::pg::Lsn;
use opsh_plugin_sdk::{Text, text};

use crate::cluster::{GtmMember, GtmRole, Live, Member};

/// A standby further behind its live master than this is not promoted without `--force`.
pub const MAX_LAG_BYTES: u64 = 16 << 20;

#[derive(Debug)]
pub struct Failover<'a> {
    pub candidate: &'a Member,
    /// The master that still answers (a switchover): fenced first, and the candidate must have
    /// received all of its WAL before it is promoted.
    pub old_master: Option<&'a Member>,
    /// Members that take writes (other than the candidate): stopped and fenced.
    pub fence_running: Vec<&'a Member>,
    /// Members that are stopped but would start as masters: fenced so a restart cannot make a
    /// second master.
    pub fence_stopped: Vec<&'a Member>,
    /// Other standbys that must follow the new master.
    pub repoint: Vec<&'a Member>,
    /// Why this candidate, what could not be fenced.
    pub notes: Vec<Text>,
}

#[derive(Debug, PartialEq)]
pub enum Refusal {
    Usage(String),
    Refused(Text),
}

fn refused(en: String, ja: String) -> Refusal {
    Refusal::Refused(text(&en, &ja))
}

pub fn describe(live: &Live) -> String {
    match live {
        Live::Master { .. } => "master".into(),
        Live::Standby(s) if s.streaming => "streaming standby".into(),
        Live::Standby(_) => "standby (not streaming)".into(),
        Live::Stopped { fenced: true, .. } => "stopped (fenced)".into(),
        Live::Stopped { fenced: false, .. } => "stopped".into(),
        Live::Unknown(why) => format!("cannot tell ({why})"),
    }
}

fn position(m: &Member) -> Option<Lsn> {
    m.standby().and_then(|s| s.position())
}

fn show(lsn: Option<Lsn>) -> String {
    lsn.map(|l| l.to_string()).unwrap_or_else(|| "no WAL received".into())
}

/// Fail `node` over: `members` are all of its members, `to` an operator's choice of standby.
pub fn failover<'a>(node: &str, members: &[&'a Member], force: bool, to: Option<&str>) -> Result<Failover<'a>, Refusal> {
    let roles = || members.iter().map(|m| format!("{} is {}", m.db, describe(&m.live))).collect::<Vec<_>>().join(", ");
    let masters: Vec<&Member> = members.iter().copied().filter(|m| m.is_master()).collect();
    if masters.len() > 1 {
        let names: Vec<&str> = masters.iter().map(|m| m.db.as_str()).collect();
        return Err(refused(
            format!(
                "{node} has {} writable masters ({}): a split brain. opsh cannot tell which one holds the data to keep: compare them, stop the one to give up (pg_ctl stop), then run `otb promote {node}` or `otb rebuild {node}`",
                masters.len(),
                names.join(", ")
            ),
            format!(
                "{node} に書き込み可能なマスターが {} 個あります ({}): スプリットブレインです。残す方を決め、もう一方を停止してから再実行してください",
                masters.len(),
                names.join(", ")
            ),
        ));
    }
    let old_master = masters.first().copied();
    let mut notes = Vec::new();
    let unknown: Vec<&Member> = members.iter().copied().filter(|m| matches!(m.live, Live::Unknown(_))).collect();
    if !unknown.is_empty() {
        let list = unknown.iter().map(|m| format!("{} on {} ({})", m.db, m.host, describe(&m.live))).collect::<Vec<_>>().join("; ");
        if !force {
            return Err(refused(
                format!(
                    "the role of {list} cannot be read: it may still take writes, and opsh cannot fence it. Make sure it is down (power it off or cut it off), then add --force"
                ),
                format!("{list} のロールを読めません: まだ書き込みを受け付けている可能性があり、隔離できません。停止を確認してから --force を付けてください"),
            ));
        }
        notes.push(text(
            &format!("--force: {list} cannot be fenced by opsh; it must stay down, or it may take writes as a second master"),
            &format!("--force: {list} は opsh が隔離できません。停止したままにしてください"),
        ));
    }
    let standbys: Vec<&Member> = members.iter().copied().filter(|m| m.standby().is_some()).collect();
    if standbys.is_empty() {
        return Err(refused(
            format!("{node} has no standby to promote ({}); give it one with `otb rebuild {node}` first", roles()),
            format!("{node} には昇格できるスタンバイがありません ({})", roles()),
        ));
    }
    // The most advanced; on a tie, one that streamed from a master rather than from another
    // standby (fewer hops), then the first by name.
    let cascades = |m: &Member| members.iter().any(|up| up.standby().is_some() && m.follows(up));
    let best = |candidates: &[&'a Member]| {
        candidates.iter().copied().max_by(|a, b| position(a).cmp(&position(b)).then_with(|| cascades(b).cmp(&cascades(a))).then_with(|| b.db.cmp(&a.db)))
    };
    let candidate = match to {
        Some(name) => match members.iter().copied().find(|m| m.db == name) {
            Some(m) if m.standby().is_some() => m,
            Some(m) => return Err(Refusal::Usage(format!("--to {name}: it is {}, not a standby of {node}", describe(&m.live)))),
            None => {
                return Err(Refusal::Usage(format!(
                    "--to {name} is not a member of {node}: its members are {}",
                    members.iter().map(|m| m.db.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        },
        None => match old_master {
            // A switchover: the most advanced standby that streams from the master itself.
            Some(master) => {
                let direct: Vec<&Member> = standbys.iter().copied().filter(|s| s.follows(master)).collect();
                best(if direct.is_empty() { &standbys } else { &direct }).unwrap_or(standbys[0])
            }
            None => best(&standbys).unwrap_or(standbys[0]),
        },
    };
    let Some(state) = candidate.standby() else { return Err(Refusal::Usage(format!("{} is not a standby", candidate.db))) };
    match old_master {
        Some(master) => {
            let Live::Master { lsn, .. } = master.live else { return Err(Refusal::Usage(format!("{} is not a master", master.db))) };
            if !state.streaming && !force {
                return Err(refused(
                    format!(
                        "{} is not replicating from {} although the master answers: promoting it would lose writes; fix replication, or add --force",
                        candidate.db, master.db
                    ),
                    format!("{} はマスター {} から複製していません (--force で強行)", candidate.db, master.db),
                ));
            }
            let behind = match state.position() {
                Some(p) => p.bytes_to(lsn),
                None if force => u64::MAX,
                None => {
                    return Err(refused(
                        format!("{} has received no WAL from {}: it is not a usable standby (add --force to promote it anyway)", candidate.db, master.db),
                        format!("{} は {} から WAL を受信していません", candidate.db, master.db),
                    ));
                }
            };
            if behind > MAX_LAG_BYTES && !force {
                return Err(refused(
                    format!(
                        "{} is {behind} bytes behind {} (at {}, the master at {lsn}): wait until it catches up, or add --force",
                        candidate.db,
                        master.db,
                        show(state.position())
                    ),
                    format!("{} は {} より {behind} バイト遅れています (--force で強行)", candidate.db, master.db),
                ));
            }
            notes.push(text(
                &format!(
                    "the master {} is healthy: this is a switchover — it is stopped first, and {} is promoted once it has received all of its WAL",
                    master.db, candidate.db
                ),
                &format!("マスター {} は正常です: これはスイッチオーバーです。先に停止し、{} が全 WAL を受信してから昇格します", master.db, candidate.db),
            ));
        }
        None => {
            if state.position().is_none() && !force {
                return Err(refused(
                    format!("{} has never received WAL from its master; it is not a usable standby (add --force to promote it anyway)", candidate.db),
                    format!("{} はマスターから WAL を受信したことがありません", candidate.db),
                ));
            }
            let ahead: Vec<String> = standbys
                .iter()
                .filter(|s| s.db != candidate.db && position(s) > state.position())
                .map(|s| format!("{} at {}", s.db, show(position(s))))
                .collect();
            if !ahead.is_empty() && !force {
                return Err(refused(
                    format!(
                        "{} (at {}) is behind {}: promoting it loses what only they received; choose the most advanced standby, or add --force",
                        candidate.db,
                        show(state.position()),
                        ahead.join(", ")
                    ),
                    format!("{} は {} より遅れています (--force で強行)", candidate.db, ahead.join(", ")),
                ));
            }
            let others: Vec<String> = standbys.iter().filter(|s| s.db != candidate.db).map(|s| format!("{} at {}", s.db, show(position(s)))).collect();
            notes.push(text(
                &format!(
                    "{node} has no live master: {} is promoted as the most advanced standby (WAL at {}{})",
                    candidate.db,
                    show(state.position()),
                    if others.is_empty() { String::new() } else { format!("; {}", others.join(", ")) }
                ),
                &format!("{node} に稼働中のマスターがありません: 最も進んだスタンバイ {} を昇格します (WAL {})", candidate.db, show(state.position())),
            ));
        }
    }
    let fence_running: Vec<&Member> = members.iter().copied().filter(|m| m.db != candidate.db && m.is_master()).collect();
    let fence_stopped: Vec<&Member> = members.iter().copied().filter(|m| matches!(m.live, Live::Stopped { fenced: false, .. })).collect();
    // Standbys that followed a fenced master, or a member that is no longer there, follow the new
    // master; a cascading standby of a remaining standby keeps its upstream.
    let repoint: Vec<&Member> = members
        .iter()
        .copied()
        .filter(|m| m.db != candidate.db && m.standby().is_some() && !m.follows(candidate))
        .filter(|m| !members.iter().any(|up| up.db != candidate.db && up.standby().is_some() && m.follows(up)))
        .collect();
    Ok(Failover { candidate, old_master, fence_running, fence_stopped, repoint, notes })
}

#[derive(Debug)]
pub struct GtmFailover<'a> {
    pub candidate: &'a GtmMember,
    pub fence_running: Vec<&'a GtmMember>,
    /// Stopped GTM servers whose configuration would start them active.
    pub check_stopped: Vec<&'a GtmMember>,
    pub notes: Vec<Text>,
}

/// Fail the GTM over to its most advanced standby (or the one named).
pub fn gtm_failover<'a>(gtms: &'a [GtmMember], force: bool, to: Option<&str>) -> Result<GtmFailover<'a>, Refusal> {
    let roles = || gtms.iter().map(|g| format!("{}: {}", g.host, g.describe())).collect::<Vec<_>>().join(", ");
    let primaries: Vec<&GtmMember> = gtms.iter().filter(|g| matches!(g.role, GtmRole::Primary(_))).collect();
    if primaries.len() > 1 {
        return Err(refused(
            format!(
                "{} GTM servers are primary at once ({}): opsh cannot tell which one to keep; stop the one to give up, then run `otb promote gtm`",
                primaries.len(),
                roles()
            ),
            format!("プライマリの GTM が {} 台あります ({})", primaries.len(), roles()),
        ));
    }
    let mut notes = Vec::new();
    let unknown: Vec<&GtmMember> = gtms.iter().filter(|g| matches!(g.role, GtmRole::Unknown(_))).collect();
    if !unknown.is_empty() {
        let list = unknown.iter().map(|g| format!("{} ({})", g.host, g.describe())).collect::<Vec<_>>().join("; ");
        if !force {
            return Err(refused(
                format!("the GTM on {list} cannot be asked: it may still be primary, and opsh cannot fence it. Make sure it is down, then add --force"),
                format!("{list} の GTM に問い合わせできません。停止を確認してから --force を付けてください"),
            ));
        }
        notes.push(text(
            &format!("--force: the GTM on {list} cannot be fenced by opsh; it must stay down"),
            &format!("--force: {list} の GTM は隔離できません"),
        ));
    }
    let xlog = |g: &GtmMember| if let GtmRole::Standby(x) = g.role { x } else { None };
    let standbys: Vec<&GtmMember> = gtms.iter().filter(|g| matches!(g.role, GtmRole::Standby(_))).collect();
    let candidate = match to {
        Some(host) => match gtms.iter().find(|g| g.host == host) {
            Some(g) if matches!(g.role, GtmRole::Standby(_)) => g,
            Some(g) => return Err(Refusal::Usage(format!("--to {host}: its GTM is {}, not a standby", g.describe()))),
            None => {
                return Err(Refusal::Usage(format!(
                    "--to {host} is not a GTM server: they are {}",
                    gtms.iter().map(|g| g.host.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        },
        None => match standbys.iter().copied().max_by(|a, b| xlog(a).cmp(&xlog(b)).then_with(|| b.host.cmp(&a.host))) {
            Some(g) => g,
            None => {
                return Err(refused(format!("the GTM has no running standby ({})", roles()), format!("GTM に稼働中のスタンバイがありません ({})", roles())));
            }
        },
    };
    if standbys.len() > 1 {
        notes.push(text(
            &format!(
                "the GTM standby on {} is promoted (xlog {}); {}",
                candidate.host,
                xlog(candidate).map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                standbys
                    .iter()
                    .filter(|g| g.host != candidate.host)
                    .map(|g| format!("{} at {}", g.host, xlog(g).map(|l| l.to_string()).unwrap_or_else(|| "?".into())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &format!("{} の GTM スタンバイを昇格します", candidate.host),
        ));
    }
    Ok(GtmFailover { candidate, fence_running: primaries, check_stopped: gtms.iter().filter(|g| g.role == GtmRole::Stopped).collect(), notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Kind, Standby, Upstream};

    fn member(db: &str, host: &str, port: u16, live: Live) -> Member {
        Member {
            db: db.into(),
            node: "dn01".into(),
            kind: Kind::Datanode,
            host: host.into(),
            port,
            data_dir: "/d".into(),
            bin_dir: None,
            user: "opsh".into(),
            live,
        }
    }

    fn master(db: &str, host: &str, lsn: &str) -> Member {
        member(db, host, 23001, Live::Master { version: 150000, lsn: Lsn::parse(lsn).expect("lsn") })
    }

    fn standby(db: &str, host: &str, upstream: Option<(&str, u16)>, received: Option<&str>, streaming: bool) -> Member {
        member(
            db,
            host,
            23001,
            Live::Standby(Standby {
                version: 150000,
                upstream: upstream.map(|(h, p)| Upstream { host: h.into(), port: p }),
                streaming,
                received: received.and_then(Lsn::parse),
                replayed: received.and_then(Lsn::parse),
                conninfo: None,
                slot: None,
            }),
        )
    }

    fn names(members: &[&Member]) -> Vec<String> {
        members.iter().map(|m| m.db.clone()).collect()
    }

    #[test]
    fn with_the_master_alive_and_listed_last_the_master_is_fenced_and_the_other_standby_follows() {
        let a = standby("dn01-a", "a", Some(("c", 23001)), Some("0/5000000"), true);
        let b = standby("dn01-b", "b", Some(("c", 23001)), Some("0/5000100"), true);
        let c = master("dn01-c", "c", "0/5000100");
        let plan = failover("dn01", &[&a, &b, &c], false, None).expect("plan");
        assert_eq!(plan.candidate.db, "dn01-b", "the most advanced standby");
        assert_eq!(names(&plan.fence_running), vec!["dn01-c"]);
        assert_eq!(names(&plan.repoint), vec!["dn01-a"]);
        assert_eq!(plan.old_master.map(|m| m.db.as_str()), Some("dn01-c"));
        assert!(plan.notes[0].en.contains("switchover"), "{:?}", plan.notes);
    }

    #[test]
    fn with_the_master_crashed_the_most_advanced_standby_is_promoted_and_the_master_fenced_on_disk() {
        let a = standby("dn01-a", "a", Some(("c", 23001)), Some("0/5000000"), false);
        let b = standby("dn01-b", "b", Some(("c", 23001)), Some("0/5000200"), false);
        let c = member("dn01-c", "c", 23001, Live::Stopped { fenced: false, major: Some(15) });
        let plan = failover("dn01", &[&a, &b, &c], false, None).expect("plan");
        assert_eq!(plan.candidate.db, "dn01-b");
        assert!(plan.fence_running.is_empty());
        assert_eq!(names(&plan.fence_stopped), vec!["dn01-c"], "a crashed master must not come back as a second one");
        assert_eq!(names(&plan.repoint), vec!["dn01-a"]);
        assert!(plan.notes[0].en.contains("most advanced standby (WAL at 0/5000200; dn01-a at 0/5000000)"), "{:?}", plan.notes);
        // Naming the one behind is refused unless forced.
        let behind = failover("dn01", &[&a, &b, &c], false, Some("dn01-a")).unwrap_err();
        assert!(matches!(&behind, Refusal::Refused(t) if t.en.contains("is behind dn01-b at 0/5000200")), "{behind:?}");
        assert_eq!(failover("dn01", &[&a, &b, &c], true, Some("dn01-a")).expect("forced").candidate.db, "dn01-a");
    }

    #[test]
    fn two_masters_and_an_unreadable_member_are_refused() {
        let a = master("dn01-a", "a", "0/1");
        let b = master("dn01-b", "b", "0/2");
        let s = standby("dn01-s", "s", Some(("a", 23001)), Some("0/1"), true);
        assert!(matches!(failover("dn01", &[&a, &b, &s], true, None), Err(Refusal::Refused(t)) if t.en.contains("2 writable masters (dn01-a, dn01-b)")));
        let u = member("dn01-u", "u", 23001, Live::Unknown("timeout".into()));
        let refused = failover("dn01", &[&s, &u], false, None).unwrap_err();
        assert!(matches!(&refused, Refusal::Refused(t) if t.en.contains("dn01-u on u") && t.en.contains("--force")), "{refused:?}");
        let forced = failover("dn01", &[&s, &u], true, None).expect("forced");
        assert!(forced.notes.iter().any(|n| n.en.contains("cannot be fenced")));
    }

    #[test]
    fn a_cascading_standby_keeps_following_its_upstream() {
        let m = member("dn01-m", "m", 23001, Live::Stopped { fenced: false, major: Some(15) });
        let a = standby("dn01-a", "a", Some(("m", 23001)), Some("0/900"), false);
        let b = standby("dn01-b", "b", Some(("m", 23001)), Some("0/800"), false);
        let cascade = standby("dn01-x", "x", Some(("b", 23001)), Some("0/700"), true);
        let plan = failover("dn01", &[&m, &a, &b, &cascade], false, None).expect("plan");
        assert_eq!(plan.candidate.db, "dn01-a");
        assert_eq!(names(&plan.repoint), vec!["dn01-b"], "dn01-x follows dn01-b, which follows the new master");
        // On a tie, the standby that streamed from the master itself, not the cascading one.
        let up = standby("dn01-z", "z", Some(("m", 23001)), Some("0/700"), false);
        let tied = standby("dn01-y", "y", Some(("z", 23001)), Some("0/700"), true);
        assert_eq!(failover("dn01", &[&m, &tied, &up], false, None).expect("plan").candidate.db, "dn01-z");
    }

    #[test]
    fn a_switchover_refuses_a_lagging_or_silent_standby_and_fails_closed() {
        let m = master("dn01-m", "m", "1/0");
        let far = standby("dn01-a", "a", Some(("m", 23001)), Some("0/10"), true);
        assert!(matches!(failover("dn01", &[&m, &far], false, None), Err(Refusal::Refused(t)) if t.en.contains("bytes behind dn01-m")));
        let silent = standby("dn01-a", "a", Some(("m", 23001)), None, false);
        assert!(failover("dn01", &[&m, &silent], false, None).is_err());
        let broken = standby("dn01-a", "a", None, Some("1/0"), false);
        assert!(matches!(failover("dn01", &[&m, &broken], false, None), Err(Refusal::Refused(t)) if t.en.contains("not replicating")));
    }
}
