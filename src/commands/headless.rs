//! The commands that only read the store, and `import`, which writes it without calling Graph.

use std::collections::HashSet;
use std::io::{BufRead, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::bad_input;
use super::output::{Times, count, outcome_line, session_json};
use crate::cli::ImportArgs;
use crate::config::Settings;
use crate::session::{Draft, Mode, NewSession, SessionId, Status, TrackedSession};
use crate::store::{KEPT_OUTCOMES, Store, StoreError};
use crate::time::{format_ago, format_duration, format_until};

pub fn store_error(e: StoreError) -> anyhow::Error {
    if e.is_bad_input() { bad_input(e) } else { e.into() }
}

/// The store for a command that changes it: created if missing.
pub fn open_store(settings: &Settings) -> Result<Store> {
    Store::open(&settings.store).map_err(store_error)
}

/// The store for a command that only reads: a missing one is an error and is not created.
pub fn open_to_read(settings: &Settings) -> Result<Store> {
    Store::open_for_reading(&settings.store).map_err(store_error)
}

fn times(settings: &Settings) -> Times {
    Times { utc: settings.utc }
}

fn next_refresh(s: &TrackedSession, settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> String {
    let interval = settings.engine.defaults.interval_of(s);
    s.next_refresh_estimate(interval).map_or("-".into(), |due| format_until(due, now))
}

pub fn list(settings: &Settings, as_json: bool) -> Result<ExitCode> {
    let store = open_to_read(settings)?;
    let defaults = &settings.engine.defaults;
    let now = chrono::Utc::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        // A JSON array with one session per line, written as it is read: memory stays flat, and
        // `import` reads the same lines back.
        writeln!(out, "[")?;
        let mut first = true;
        store.each_session(|s| -> Result<()> {
            let comma = if first { "" } else { "," };
            first = false;
            writeln!(out, "{comma}{}", session_json(&s, defaults, now))?;
            Ok(())
        })?;
        writeln!(out, "]")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let sessions = store.sessions().map_err(store_error)?;
    if sessions.is_empty() {
        writeln!(
            out,
            "no sessions tracked in {}; add one with `wbsessions create NAME --workbook REF`",
            settings.store.display()
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
            next_refresh(s, settings, now),
            expires,
            s.mode.as_str(),
            s.workbook
        )?;
    }
    if let Some(pid) = crate::store::read_holder(&settings.store) {
        writeln!(out, "(kept alive by wbsessions pid {pid})")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(settings: &Settings, name: &str, as_json: bool) -> Result<ExitCode> {
    let store = open_to_read(settings)?;
    let s = store.session(name).map_err(store_error)?;
    let outcomes = store.outcomes(s.key, KEPT_OUTCOMES).map_err(store_error)?;
    let defaults = &settings.engine.defaults;
    let now = chrono::Utc::now();
    let times = times(settings);
    let mut out = std::io::stdout().lock();
    if as_json {
        let mut value = session_json(&s, defaults, now);
        value["outcomes"] = serde_json::to_value(&outcomes)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = defaults.status_at(&s, now);
    writeln!(out, "name          {}", s.name)?;
    writeln!(out, "status        {status} ({} failures in a row): {}", s.failures, status.meaning())?;
    writeln!(out, "workbook      {}", s.workbook)?;
    writeln!(out, "session id    {}", s.session_id)?;
    writeln!(out, "mode          {}", s.mode.as_str())?;
    writeln!(
        out,
        "refresh       every {}{}, {}, {}",
        format_duration(defaults.interval_of(&s)),
        if s.interval.is_none() { " (default)" } else { "" },
        if s.auto { "automatic" } else { "manual only" },
        if s.recreate { "recreated on expiry" } else { "not recreated on expiry" }
    )?;
    let last =
        s.last_refresh.map_or("never".to_string(), |t| format!("{} ({})", times.stamp_secs(t), format_ago(t, now)));
    writeln!(out, "last refresh  {last}")?;
    writeln!(out, "next refresh  {}", next_refresh(&s, settings, now))?;
    let expires = defaults.expires_at(&s).map_or("unknown".to_string(), |t| {
        let when = if t <= now { "passed".to_string() } else { format_until(t, now) };
        format!("{} ({when}, if nothing refreshes it)", times.stamp_secs(t))
    });
    writeln!(out, "expires       {expires}")?;
    writeln!(out, "tracked since {}", times.stamp_secs(s.created_at))?;
    writeln!(out, "outcomes (newest first):")?;
    for o in &outcomes {
        writeln!(out, "  {}", outcome_line(times, None, o, None))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The id, only of a session known to be alive: a script must not be handed a dead one.
pub fn id(settings: &Settings, name: &str, any: bool) -> Result<ExitCode> {
    let store = open_to_read(settings)?;
    let s = store.session(name).map_err(store_error)?;
    let status = settings.engine.defaults.status_at(&s, chrono::Utc::now());
    if !any && !status.is_alive() {
        let hint = match status {
            Status::Stale => format!("`wbsessions refresh {name}` checks it"),
            Status::Closed => format!("`wbsessions recreate {name}` starts a new one"),
            _ if s.recreate => format!("the keeper recreates it; `wbsessions recreate {name}` does it now"),
            _ => format!("`wbsessions recreate {name}` starts a new one"),
        };
        anyhow::bail!("{name} is {status} ({}); {hint}, or pass --any to print its id anyway", status.meaning());
    }
    writeln!(std::io::stdout().lock(), "{}", s.session_id)?;
    Ok(ExitCode::SUCCESS)
}

// ---- import -------------------------------------------------------------------------------------

/// One session of an import as `list --json` writes it; only name, workbook and session id are
/// required, the rest round-trips when present.
#[derive(serde::Deserialize)]
struct ImportRecord {
    name: String,
    workbook: String,
    session_id: String,
    #[serde(default)]
    mode: Option<Mode>,
    /// Seconds.
    #[serde(default)]
    interval: Option<f64>,
    #[serde(default)]
    recreate: Option<bool>,
    #[serde(default)]
    auto: Option<bool>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    last_refresh: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    failures: Option<u32>,
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn is_csv_header(line: &str) -> bool {
    line.get(..5).is_some_and(|start| start.eq_ignore_ascii_case("name,"))
}

fn parse_mode(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "persistent" => Ok(false),
        "non-persistent" | "nonpersistent" => Ok(true),
        other => Err(format!("mode {other:?} is neither persistent nor non-persistent")),
    }
}

fn parse_flag(text: &str) -> Result<Option<bool>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "1" => Ok(Some(true)),
        "false" | "no" | "0" => Ok(Some(false)),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// One line of the file as a session, checked exactly as `add` checks one; `None` for lines
/// that hold nothing (blank, the array's brackets, a CSV header, a `#` comment).
fn parse_line(
    line: &str,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<TrackedSession>, String> {
    let line = line.trim().trim_end_matches(',').trim_start_matches(',').trim();
    if line.is_empty() || line == "[" || line == "]" || line.starts_with('#') || is_csv_header(line) {
        return Ok(None);
    }
    let (draft, extra) = if line.starts_with('{') {
        let record: ImportRecord = serde_json::from_str(line).map_err(|e| format!("not a session: {e}"))?;
        let interval = match record.interval {
            None => None,
            Some(secs) if secs.is_finite() && (0.0..=31_536_000.0).contains(&secs) => {
                Some(Duration::from_secs_f64(secs))
            }
            Some(secs) => return Err(format!("interval {secs} is not a number of seconds up to a year")),
        };
        let draft = Draft {
            name: record.name,
            workbook: record.workbook,
            session_id: Some(record.session_id),
            non_persistent: record.mode == Some(Mode::NonPersistent),
            interval,
            recreate: record.recreate,
        };
        (draft, Some((record.auto, record.status, record.last_refresh, record.failures, record.created_at)))
    } else {
        let fields: Vec<&str> = line.split(',').collect();
        if !(3..=6).contains(&fields.len()) {
            return Err("a CSV line holds name,workbook,session_id[,interval,mode,recreate]".into());
        }
        let field = |i: usize| fields.get(i).map_or("", |f| f.trim());
        let interval = match field(3) {
            "" => None,
            text => Some(crate::time::parse_duration(text).map_err(|e| e.to_string())?),
        };
        let draft = Draft {
            name: field(0).to_string(),
            workbook: field(1).to_string(),
            session_id: Some(field(2).to_string()),
            non_persistent: parse_mode(field(4))?,
            interval,
            recreate: parse_flag(field(5))?,
        };
        (draft, None)
    };
    let new = NewSession::check(&draft, &settings.engine.defaults)?;
    if new.workbook.is_by_path() {
        return Err(format!(
            "{} is a by-path workbook, which needs Graph to resolve; import takes item ids (`wbsessions add` resolves paths)",
            new.workbook
        ));
    }
    let Some(id) = new.session_id.clone() else { return Err("no session id".into()) };
    let mut session = new.into_tracked(id, now);
    if let Some((auto, status, last_refresh, failures, created_at)) = extra {
        session.auto = auto.unwrap_or(true);
        // What was known about the session comes along; a refreshing or stale one is just ok.
        session.status = match status {
            Some(Status::Refreshing | Status::Stale) => Status::Ok,
            Some(status) => status,
            None => Status::New,
        };
        session.last_refresh = last_refresh;
        session.failures = failures.unwrap_or(0);
        session.created_at = created_at.unwrap_or(now);
    }
    Ok(Some(session))
}

pub fn import(settings: &Settings, args: ImportArgs) -> Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| bad_input(format!("cannot read {}: {e}", args.file.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut store = open_store(settings)?;
    let mut names: HashSet<String> = HashSet::new();
    let mut ids: HashSet<SessionId> = HashSet::new();
    store
        .each_session(|s| -> Result<(), StoreError> {
            names.insert(s.name);
            ids.insert(s.session_id);
            Ok(())
        })
        .map_err(store_error)?;
    let now = chrono::Utc::now();
    let mut sessions = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read line {number} of {}", args.file.display()))?;
        let checked = parse_line(&line, settings, now).and_then(|session| match session {
            Some(s) if names.contains(&s.name) => Err(format!("a session named {:?} is already tracked", s.name)),
            Some(s) if ids.contains(&s.session_id) => Err(format!("the session id of {:?} is already tracked", s.name)),
            other => Ok(other),
        });
        match checked {
            Ok(Some(session)) => {
                names.insert(session.name.clone());
                ids.insert(session.session_id.clone());
                sessions.push(session);
            }
            Ok(None) => {}
            Err(why) if args.skip_invalid => skipped.push((number, why)),
            Err(why) => {
                return Err(bad_input(format!(
                    "line {number} of {}: {why}; nothing was imported (--skip-invalid imports the other lines)",
                    args.file.display()
                )));
            }
        }
    }
    store.insert_all(&sessions).map_err(store_error)?;
    let mut err = std::io::stderr().lock();
    for (number, why) in &skipped {
        writeln!(err, "wbsessions: skipped line {number}: {}", crate::text::clean(why, 500))?;
    }
    writeln!(
        std::io::stdout().lock(),
        "imported {}{}",
        count(sessions.len(), "session"),
        if skipped.is_empty() { String::new() } else { format!("; skipped {}", count(skipped.len(), "invalid line")) }
    )?;
    Ok(ExitCode::SUCCESS)
}
