//! The commands that only read the store.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;

use super::front::{open_to_read, store_error};
use super::output::{Times, count, outcome_json, outcome_line, session_json};
use crate::config::Settings;
use crate::engine::policy::next_due;
use crate::session::{Status, TrackedSession};
use crate::store::KEPT_OUTCOMES;
use crate::time::{format_ago, format_duration, format_until};

fn times(settings: &Settings) -> Times {
    Times { utc: settings.utc }
}

/// When a keeper would refresh the session next: `paused` while automatic refresh is paused for
/// the whole store, `-` when nothing keeps it.
fn next_refresh(s: &TrackedSession, settings: &Settings, paused: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    if paused && s.is_kept_alive() {
        return "paused".into();
    }
    next_due(s, &settings.engine.defaults, now).map_or("-".into(), |due| format_until(due, now))
}

/// The live keepers: on PostgreSQL every `run` with its share of the workbooks, elsewhere the
/// one process that drives.
pub fn keepers(settings: &Settings) -> Result<ExitCode> {
    let opened = open_to_read(settings)?;
    let keepers = opened.role.keepers().map_err(|e| anyhow::anyhow!(e))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if settings.json {
        let list: Vec<serde_json::Value> = keepers
            .iter()
            .map(|k| {
                serde_json::json!({
                    "host": k.host,
                    "pid": k.pid,
                    "since": k.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    "last_heartbeat_secs": k.quiet_secs,
                    "workbooks": k.workbooks,
                    "sessions": k.sessions,
                    "owner": k.owner,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
    } else if keepers.is_empty() {
        writeln!(out, "no keeper is running on {}; `wbsessions run` keeps its sessions alive", settings.store)?;
    } else {
        writeln!(
            out,
            "{:<24} {:>8}  {:<20} {:>10} {:>9} {:>9}  OWNER",
            "HOST", "PID", "SINCE", "HEARTBEAT", "WORKBOOKS", "SESSIONS"
        )?;
        let all = |n: Option<u64>| n.map_or_else(|| "all".to_string(), |n| n.to_string());
        for k in &keepers {
            writeln!(
                out,
                "{:<24} {:>8}  {:<20} {:>10} {:>9} {:>9}  {}",
                crate::text::clean(&k.host, 24),
                k.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                k.since.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                k.quiet_secs.map_or_else(|| "-".into(), |s| format!("{s:.1}s ago")),
                all(k.workbooks),
                all(k.sessions),
                k.owner.as_deref().map_or_else(|| "-".into(), |o| crate::text::clean(o, 60)),
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(settings: &Settings) -> Result<ExitCode> {
    let opened = open_to_read(settings)?;
    let store = &opened.sessions;
    let defaults = &settings.engine.defaults;
    let now = chrono::Utc::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if settings.json {
        // A JSON array with one session per line, written as it is read: memory stays flat, and
        // `import` reads the same lines back.
        writeln!(out, "[")?;
        let mut first = true;
        let mut chunks = store.each_session();
        while let Some(chunk) = chunks.recv().await {
            for s in chunk.map_err(store_error)? {
                let comma = if first { "" } else { "," };
                first = false;
                writeln!(out, "{comma}{}", session_json(&s, defaults, now))?;
            }
        }
        writeln!(out, "]")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let sessions = store.sessions().await.map_err(store_error)?;
    let paused = store.paused().await.unwrap_or(false);
    if sessions.is_empty() {
        writeln!(
            out,
            "no sessions tracked in {}; add one with `wbsessions create NAME --workbook REF`",
            settings.store
        )?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = sessions.iter().map(|s| s.name.chars().count()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:10}  {:12}  {:8}  {:9}  {:14}  WORKBOOK",
        "NAME", "STATUS", "LAST REFRESH", "NEXT", "EXPIRES", "MODE"
    )?;
    for s in &sessions {
        let last = s.last_refresh.map_or("never".to_string(), |t| format_ago(t, now));
        let expires = defaults
            .expires_at(s)
            .map_or("-".to_string(), |t| if t <= now { "passed".to_string() } else { format_until(t, now) });
        writeln!(
            out,
            "{:width$}  {:10}  {:12}  {:8}  {:9}  {:14}  {}",
            s.name,
            defaults.status_at(s, now).as_str(),
            last,
            next_refresh(s, settings, paused, now),
            expires,
            s.mode.as_str(),
            s.workbook
        )?;
    }
    // Only a keeper that is not paused keeps anything alive.
    match (opened.role.holder(), paused) {
        (Some(holder), false) => writeln!(out, "(kept alive by {holder})")?,
        (Some(holder), true) => writeln!(
            out,
            "(automatic refresh is paused: {holder} refreshes nothing until `p` in a dashboard resumes it)"
        )?,
        (None, true) => writeln!(out, "(automatic refresh is paused: `p` in a dashboard resumes it)")?,
        (None, false) => {}
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn show(settings: &Settings, name: &str) -> Result<ExitCode> {
    let store = open_to_read(settings)?.sessions;
    let s = store.session(name).await.map_err(store_error)?;
    let paused = store.paused().await.unwrap_or(false);
    let outcomes = store.history(s.key, KEPT_OUTCOMES).await.map_err(store_error)?;
    let defaults = &settings.engine.defaults;
    let now = chrono::Utc::now();
    let times = times(settings);
    let mut out = std::io::stdout().lock();
    if settings.json {
        let mut value = session_json(&s, defaults, now);
        value["outcomes"] = outcomes.iter().map(|o| outcome_json(&s.name, o, None)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = defaults.status_at(&s, now);
    writeln!(out, "name          {}", s.name)?;
    writeln!(out, "status        {status} ({} in a row): {}", count(s.failures as usize, "failure"), status.meaning())?;
    writeln!(out, "workbook      {}", s.workbook)?;
    writeln!(out, "session id    {}", s.session_id)?;
    writeln!(out, "mode          {}", s.mode.as_str())?;
    writeln!(
        out,
        "refresh       every {}{}, {}, {}",
        format_duration(defaults.interval_of(&s)),
        if s.interval.is_none() { " (default)" } else { "" },
        match (s.auto, paused) {
            (true, false) => "automatic",
            (true, true) => "automatic (paused for the whole store: `p` in a dashboard resumes it)",
            (false, _) => "manual only",
        },
        if s.recreate { "recreated on expiry" } else { "not recreated on expiry" }
    )?;
    let last =
        s.last_refresh.map_or("never".to_string(), |t| format!("{} ({})", times.stamp_secs(t), format_ago(t, now)));
    writeln!(out, "last refresh  {last}")?;
    writeln!(out, "next refresh  {}", next_refresh(&s, settings, paused, now))?;
    let expires = defaults.expires_at(&s).map_or("unknown".to_string(), |t| {
        let when = if t <= now { "passed".to_string() } else { format_until(t, now) };
        format!("{} ({when}, if nothing refreshes it)", times.stamp_secs(t))
    });
    writeln!(out, "expires       {expires}")?;
    if s.created_at == chrono::DateTime::<chrono::Utc>::UNIX_EPOCH {
        writeln!(out, "tracked since unknown (the stored time cannot be read)")?;
    } else {
        writeln!(out, "tracked since {}", times.stamp_secs(s.created_at))?;
    }
    if let Some(owner) = &s.owner {
        writeln!(out, "owner         {}", crate::text::clean(owner, 200))?;
    }
    if outcomes.is_empty() {
        writeln!(out, "outcomes      none yet")?;
    } else {
        writeln!(out, "outcomes (newest first):")?;
    }
    for o in &outcomes {
        writeln!(out, "  {}", outcome_line(times, None, o, None))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The id, only of a session known to be alive: a script must not be handed a dead one.
pub async fn id(settings: &Settings, name: &str, any: bool) -> Result<ExitCode> {
    let store = open_to_read(settings)?.sessions;
    let s = store.session(name).await.map_err(store_error)?;
    let status = settings.engine.defaults.status_at(&s, chrono::Utc::now());
    if !any && !status.is_alive() {
        let hint = match status {
            Status::Stale | Status::New => format!("`wbsessions refresh {name}` checks it"),
            Status::Closed => format!("`wbsessions recreate {name}` starts a new one"),
            _ if s.recreate => format!("the keeper recreates it; `wbsessions recreate {name}` does it now"),
            _ => format!("`wbsessions recreate {name}` starts a new one"),
        };
        // "is expired", "is stale", but a failing call is not a state of being.
        let state = match status {
            Status::Error | Status::Auth | Status::Throttled => format!("failing ({status})"),
            other => other.to_string(),
        };
        anyhow::bail!("{name} is {state}: {}; {hint}, or pass --any to print its id anyway", status.meaning());
    }
    let mut out = std::io::stdout().lock();
    if settings.json {
        writeln!(out, "{}", session_json(&s, &settings.engine.defaults, chrono::Utc::now()))?;
    } else {
        writeln!(out, "{}", s.session_id)?;
    }
    Ok(ExitCode::SUCCESS)
}
