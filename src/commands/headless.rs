//! The commands that work without a dashboard.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use serde_json::json;

use super::{bad_input, shutdown_signal};
use crate::auth::{AuthError, Tokens};
use crate::cli::{AddArgs, CreateArgs, RefreshArgs, SessionOptions};
use crate::config::Settings;
use crate::engine::{self, Context, EngineConfig, Event, MEMORY_OUTCOMES, ops};
use crate::graph::{ClientOptions, GraphClient};
use crate::session::{MIN_INTERVAL, Mode, Outcome, OutcomeKind, SessionId, TrackedSession, WorkbookRef, validate_name};
use crate::store::{DriverLock, KEPT_OUTCOMES, LockError, Store, StoreError, StoreWriter, Write};
use crate::time::{Clock, format_ago, format_duration};

pub fn store_error(e: StoreError) -> anyhow::Error {
    if e.is_bad_input() { bad_input(e) } else { e.into() }
}

pub fn open_store(settings: &Settings) -> Result<Store> {
    Store::open(&settings.store).map_err(store_error)
}

pub fn graph_context(settings: &Settings) -> Result<Context> {
    let options = ClientOptions { timeout: settings.engine.request_timeout, ..ClientOptions::default() };
    let client = GraphClient::new(&settings.graph_url, options).map_err(bad_input)?;
    let tokens = Tokens::from_settings(
        settings.token.as_deref(),
        settings.token_command.as_deref(),
        settings.token_cache.clone(),
    );
    Ok(Context { client, tokens, clock: Clock::system() })
}

/// Without any token source the call cannot be made: that is a failed operation (exit 1), fixed by
/// signing in, not bad input.
fn require_tokens(ctx: &Context) -> Result<()> {
    if ctx.tokens.is_configured() { Ok(()) } else { Err(AuthError::Missing.into()) }
}

/// Everything about a new session that can be checked without the network or the store.
struct NewSession {
    name: String,
    workbook: WorkbookRef,
    mode: Mode,
    interval: Option<Duration>,
    recreate: bool,
}

fn check_new(settings: &Settings, name: &str, options: &SessionOptions) -> Result<NewSession> {
    validate_name(name).map_err(bad_input)?;
    let workbook = WorkbookRef::parse(&options.workbook).map_err(bad_input)?;
    if options.interval.is_some_and(|i| i < MIN_INTERVAL) {
        return Err(bad_input(format!("the interval must be at least {}", format_duration(MIN_INTERVAL))));
    }
    let mode = if options.non_persistent { Mode::NonPersistent } else { Mode::Persistent };
    let interval = options.interval.unwrap_or_else(|| settings.engine.default_interval(mode));
    if interval >= mode.expiry() {
        eprintln!(
            "wbsessions: warning: refreshing every {} lets a {} session expire first (it lives {} idle)",
            format_duration(interval),
            mode.as_str(),
            format_duration(mode.expiry())
        );
    }
    Ok(NewSession {
        name: name.to_string(),
        workbook,
        mode,
        interval: options.interval,
        recreate: options.recreate || settings.engine.recreate,
    })
}

fn ensure_name_free(store: &Store, name: &str) -> Result<()> {
    match store.session(name) {
        Ok(_) => Err(store_error(StoreError::NameTaken(name.to_string()))),
        Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(store_error(e)),
    }
}

fn describe(s: &TrackedSession, settings: &Settings) -> String {
    let interval = settings.engine.interval_of(s);
    format!(
        "{} on {} ({}, refresh every {}{})",
        s.name,
        s.workbook,
        s.mode.as_str(),
        format_duration(interval),
        if s.recreate { ", recreated on expiry" } else { "" }
    )
}

pub async fn add(settings: &Settings, args: AddArgs) -> Result<ExitCode> {
    let new = check_new(settings, &args.name, &args.options)?;
    let session_id = SessionId::new(&args.session_id).map_err(bad_input)?;
    let mut store = open_store(settings)?;
    ensure_name_free(&store, &new.name)?;
    let mut workbook = new.workbook.clone();
    if workbook.is_by_path() {
        let ctx = graph_context(settings)?;
        require_tokens(&ctx)?;
        workbook = ops::resolve(&ctx, &workbook).await.with_context(|| format!("cannot resolve {workbook}"))?;
    }
    let mut session = TrackedSession::new(new.name, workbook, session_id, new.mode, chrono::Utc::now());
    session.interval = new.interval;
    session.recreate = new.recreate;
    store.insert(&mut session).map_err(store_error)?;
    println!("tracking {}", describe(&session, settings));
    Ok(ExitCode::SUCCESS)
}

pub async fn create(settings: &Settings, args: CreateArgs) -> Result<ExitCode> {
    let new = check_new(settings, &args.name, &args.options)?;
    let ctx = graph_context(settings)?;
    require_tokens(&ctx)?;
    let mut store = open_store(settings)?;
    ensure_name_free(&store, &new.name)?;
    let report = ops::create(&ctx, &new.workbook, new.mode).await;
    let Some(id) = report.new_session_id.clone() else {
        let failure = report.failure.map_or_else(|| "no session id came back".to_string(), |f| f.to_string());
        anyhow::bail!("creating {} failed: {failure}", new.name);
    };
    let mut session = TrackedSession::new(new.name, new.workbook, id, new.mode, ctx.clock.now());
    session.interval = new.interval;
    session.recreate = new.recreate;
    report.apply_to(&mut session, KEPT_OUTCOMES);
    store.insert(&mut session).map_err(|e| {
        anyhow::anyhow!("{e}; the new session {} is open but not tracked", session.session_id.abbreviated())
    })?;
    println!("created {}", describe(&session, settings));
    Ok(ExitCode::SUCCESS)
}

fn next_refresh(s: &TrackedSession, settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> String {
    let interval = settings.engine.interval_of(s);
    s.next_refresh_estimate(interval).map_or("-".into(), |due| crate::time::format_until(due, now))
}

fn session_json(s: &TrackedSession, settings: &Settings) -> serde_json::Value {
    let mut value = serde_json::to_value(s).unwrap_or_default();
    let interval = settings.engine.interval_of(s);
    value["interval_secs"] = json!(interval.as_secs_f64());
    value
}

pub fn list(settings: &Settings, as_json: bool) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let sessions = store.sessions(0).map_err(store_error)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let list: Vec<_> = sessions.iter().map(|s| session_json(s, settings)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        writeln!(
            out,
            "no sessions tracked in {}; add one with `wbsessions create NAME --workbook REF`",
            settings.store.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let width = sessions.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:width$}  {:10}  {:12}  {:8}  {:14}  WORKBOOK", "NAME", "STATUS", "LAST REFRESH", "NEXT", "MODE")?;
    for s in &sessions {
        let last = s.last_refresh.map_or("never".to_string(), |t| format_ago(t, now));
        writeln!(
            out,
            "{:width$}  {:10}  {:12}  {:8}  {:14}  {}",
            s.name,
            s.status.as_str(),
            last,
            next_refresh(s, settings, now),
            s.mode.as_str(),
            s.workbook
        )?;
    }
    if let Some(pid) = crate::store::read_holder(&settings.store) {
        writeln!(out, "(kept alive by wbsessions pid {pid})")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(settings: &Settings, name: &str, as_json: bool) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let s = store.session(name).map_err(store_error)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&session_json(&s, settings))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let interval = settings.engine.interval_of(&s);
    writeln!(out, "name          {}", s.name)?;
    writeln!(out, "status        {} ({} failures in a row)", s.status, s.failures)?;
    writeln!(out, "workbook      {}", s.workbook)?;
    writeln!(out, "session id    {}", s.session_id)?;
    writeln!(out, "mode          {}", s.mode.as_str())?;
    writeln!(
        out,
        "refresh       every {}{}, {}, {}",
        format_duration(interval),
        if s.interval.is_none() { " (default)" } else { "" },
        if s.auto { "automatic" } else { "manual only" },
        if s.recreate { "recreated on expiry" } else { "not recreated on expiry" }
    )?;
    let last = s.last_refresh.map_or("never".to_string(), |t| format!("{} ({})", t.to_rfc3339(), format_ago(t, now)));
    writeln!(out, "last refresh  {last}")?;
    writeln!(out, "next refresh  {}", next_refresh(&s, settings, now))?;
    writeln!(out, "tracked since {}", s.created_at.to_rfc3339())?;
    writeln!(out, "outcomes (newest first):")?;
    for o in &s.outcomes {
        writeln!(out, "  {}", outcome_line(None, o, None))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn id(settings: &Settings, name: &str) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let s = store.session(name).map_err(store_error)?;
    println!("{}", s.session_id);
    Ok(ExitCode::SUCCESS)
}

/// One outcome as a line of text: time, session, call, kind, status, latency, codes, ids, message.
pub fn outcome_line(name: Option<&str>, o: &Outcome, late: Option<Duration>) -> String {
    let mut line = o.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Some(name) = name {
        line.push(' ');
        line.push_str(name);
    }
    line.push_str(&format!(" {} {}", o.action.as_str(), o.kind.as_str()));
    if let Some(status) = o.http_status {
        line.push_str(&format!(" {status}"));
    }
    line.push_str(&format!(" {}ms", o.latency_ms));
    if !o.codes.is_empty() {
        line.push_str(&format!(" {}", o.codes.join("/")));
    }
    if o.kind != OutcomeKind::Ok {
        if let Some(id) = &o.request_id {
            line.push_str(&format!(" request-id={id}"));
        }
        if let Some(id) = &o.client_request_id {
            line.push_str(&format!(" client-request-id={id}"));
        }
    }
    if let Some(late) = late.filter(|l| *l >= Duration::from_secs(1)) {
        line.push_str(&format!(" late={}", format_duration(late)));
    }
    if let Some(message) = &o.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

pub fn outcome_json(name: &str, o: &Outcome, late: Option<Duration>) -> serde_json::Value {
    let mut value = serde_json::to_value(o).unwrap_or_default();
    value["session"] = json!(name);
    if let Some(late) = late {
        value["late_ms"] = json!(late.as_secs_f64() * 1000.0);
    }
    value
}

/// Looks up every name first, so that one unknown name changes nothing.
fn find_all(store: &Store, names: &[String]) -> Result<Vec<TrackedSession>> {
    names.iter().map(|n| store.session(n).map_err(store_error)).collect()
}

pub async fn refresh(settings: &Settings, args: RefreshArgs) -> Result<ExitCode> {
    let mut store = open_store(settings)?;
    let sessions = if args.all {
        store
            .sessions(0)
            .map_err(store_error)?
            .into_iter()
            .filter(|s| s.status != crate::session::Status::Closed)
            .collect()
    } else {
        find_all(&store, &args.names)?
    };
    let ctx = graph_context(settings)?;
    require_tokens(&ctx)?;
    // One request at a time per workbook; workbooks side by side.
    let mut by_workbook: BTreeMap<String, Vec<TrackedSession>> = BTreeMap::new();
    for s in sessions {
        by_workbook.entry(s.workbook.to_string()).or_default().push(s);
    }
    let ctx_ref = &ctx;
    let results: Vec<(TrackedSession, engine::Report)> = futures_util::stream::iter(by_workbook.into_values())
        .map(|group| async move {
            let mut done = Vec::new();
            for s in group {
                let report = ops::refresh(ctx_ref, &s).await;
                done.push((s, report));
            }
            done
        })
        .buffer_unordered(settings.engine.concurrency)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    record_reports(&mut store, results, args.json)
}

/// Writes each report to the store, prints its outcomes, and turns failures into exit code 1.
fn record_reports(
    store: &mut Store,
    results: Vec<(TrackedSession, engine::Report)>,
    as_json: bool,
) -> Result<ExitCode> {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for (mut session, report) in results {
        report.apply_to(&mut session, KEPT_OUTCOMES);
        store.apply(&report.records(&session)).map_err(store_error)?;
        for o in &report.outcomes {
            if as_json {
                writeln!(out, "{}", outcome_json(&session.name, o, None))?;
            } else {
                writeln!(out, "{}", outcome_line(Some(&session.name), o, None))?;
            }
        }
        if let Some(failure) = &report.failure {
            failed = true;
            tracing::warn!(session = %session.name, error = %failure, "a call failed");
            if !as_json {
                let hint = match failure.class() {
                    crate::graph::ErrorClass::Expired if !session.recreate => {
                        " (the session expired: create a new one, or track sessions with --recreate)"
                    }
                    crate::graph::ErrorClass::Auth => " (run `wbsessions login`, or pass a valid --token)",
                    _ => "",
                };
                eprintln!("wbsessions: {}: {failure}{hint}", session.name);
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub async fn close(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let mut store = open_store(settings)?;
    let sessions = find_all(&store, names)?;
    let ctx = graph_context(settings)?;
    require_tokens(&ctx)?;
    let mut results = Vec::new();
    for s in sessions {
        let report = ops::close(&ctx, &s).await;
        results.push((s, report));
    }
    record_reports(&mut store, results, false)
}

pub fn remove(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let mut store = open_store(settings)?;
    let sessions = find_all(&store, names)?;
    let writes: Vec<Write> = sessions.iter().map(|s| Write::Remove { key: s.key }).collect();
    store.apply(&writes).map_err(store_error)?;
    for s in &sessions {
        println!("removed {} (the session itself was not closed)", s.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls the store for changes made by other processes this often.
pub const STORE_POLL: Duration = Duration::from_millis(250);

pub async fn run(settings: &Settings, as_json: bool) -> Result<ExitCode> {
    // The store is checked before the lock file is made beside it: a bad store changes nothing.
    let store = open_store(settings)?;
    let lock = DriverLock::acquire(&settings.store).map_err(|e| match e {
        LockError::Held { .. } => bad_input(e),
        other => other.into(),
    })?;
    let sessions = store.sessions(MEMORY_OUTCOMES).map_err(store_error)?;
    let ctx = graph_context(settings)?;
    require_tokens(&ctx)?;
    eprintln!(
        "wbsessions: keeping {} session{} in {} alive; Ctrl-C stops",
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" },
        settings.store.display()
    );
    tracing::info!(sessions = sessions.len(), store = %settings.store.display(), lock = %lock.path().display(), "keeper started");
    let writer = StoreWriter::spawn(store, STORE_POLL, MEMORY_OUTCOMES);
    let config = EngineConfig { settings: settings.engine.clone(), driver: true, take_over: None };
    let mut engine = engine::spawn(ctx, writer.handle.clone(), writer.events, sessions, config);
    drop(writer.handle);
    let mut stopping = false;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            _ = &mut signal, if !stopping => {
                stopping = true;
                let _ = engine.commands.send(engine::Command::Shutdown);
            }
            event = engine.events.recv() => match event {
                None | Some(Event::Stopped) => break,
                Some(Event::Outcome { name, outcome, late, .. }) => {
                    let line = if as_json { outcome_json(&name, &outcome, late).to_string() } else { outcome_line(Some(&name), &outcome, late) };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() && !stopping {
                        // Nobody reads the output any more: stop as if asked to.
                        stopping = true;
                        let _ = engine.commands.send(engine::Command::Shutdown);
                    }
                }
                Some(Event::Throttled { until: Some(until) }) if !as_json => {
                    eprintln!("wbsessions: throttled by Graph; waiting until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                }
                Some(Event::Error(e)) => eprintln!("wbsessions: {e}"),
                Some(Event::Added(s)) if !as_json => eprintln!("wbsessions: now keeping {}", s.name),
                Some(Event::Removed { name, .. }) if !as_json => eprintln!("wbsessions: no longer keeping {name}"),
                Some(_) => {}
            }
        }
    }
    let _ = engine.task.await;
    let thread = writer.thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    tracing::info!("keeper stopped");
    drop(lock);
    Ok(ExitCode::SUCCESS)
}
