//! The commands that call Graph or change sessions. Each runs an engine on the store (a one-shot
//! one, or the keeper for `run`), so that every call passes the same dispatcher and limits.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;

use super::bad_input;
use super::front::{GraphSetup, Progress, conclude, explain, graph_setup, one_shot, open_store, store_error};
use super::output::{Times, count, describe, names_line, outcome_json, outcome_line, session_json};
use super::shutdown_signal;
use crate::cli::{AddArgs, CreateArgs, EditArgs, RefreshArgs, RunArgs, SessionOptions};
use crate::config::Settings;
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::engine::{Answer, EngineError, Event, JobKind, Reply, Request};
use crate::session::{Draft, NewSession, SettingsChange, Status, TrackedSession};
use crate::store::{Opened, RoleError, SessionStore, StoreError};

/// Looks up every name first, so that one unknown name changes nothing.
async fn find_all(store: &dyn SessionStore, names: &[String]) -> Result<Vec<TrackedSession>> {
    let mut seen = HashSet::new();
    let mut found = Vec::with_capacity(names.len());
    for name in names.iter().filter(|n| seen.insert(n.as_str())) {
        found.push(store.session(name).await.map_err(store_error)?);
    }
    Ok(found)
}

fn times(settings: &Settings) -> Times {
    Times { utc: settings.utc }
}

/// Prints each outcome as it arrives; failures are logged by the engine with their request ids.
fn print_outcomes(times: Times, as_json: bool, progress: Progress) -> impl FnMut(&Event) -> Result<()> {
    move |event| {
        if let Event::Outcome { name, outcome, .. } = event {
            let line = if as_json {
                outcome_json(name, outcome, None).to_string()
            } else {
                outcome_line(times, Some(name), outcome, None)
            };
            progress.println(&line)?;
        }
        Ok(())
    }
}

fn draft(name: &str, options: &SessionOptions, session_id: Option<&str>) -> Draft {
    Draft {
        name: name.to_string(),
        workbook: options.workbook.clone(),
        session_id: session_id.map(str::to_string),
        non_persistent: options.non_persistent,
        interval: options.interval,
        recreate: options.recreate.then_some(true),
    }
}

/// A name or id already tracked is refused before Graph is asked anything.
async fn ensure_free(store: &dyn SessionStore, new: &NewSession) -> Result<()> {
    match store.session(&new.name).await {
        Ok(_) => return Err(store_error(StoreError::NameTaken(new.name.clone()))),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(store_error(e)),
    }
    if let Some(id) = &new.session_id
        && let Some(name) = store.name_of_id(id).await.map_err(store_error)?
    {
        return Err(store_error(StoreError::IdTaken(name)));
    }
    Ok(())
}

/// Runs one request per session with a progress bar, prints each outcome, and says how each
/// went; exit 1 if any failed.
async fn each(
    settings: &Settings,
    opened: Opened,
    graph: GraphSetup,
    sessions: Vec<TrackedSession>,
    ask: impl Fn(&TrackedSession) -> Request,
) -> Result<(ExitCode, Vec<Answer>)> {
    let requests: Vec<Request> = sessions.iter().map(&ask).collect();
    let kind = requests.first().map_or(JobKind::Refresh, Request::kind);
    let progress = Progress::new(settings, sessions.len(), kind.doing());
    let print = print_outcomes(times(settings), settings.json, progress.clone());
    let answers = one_shot(settings, opened, graph, sessions.clone(), requests, print, &progress).await?;
    let answered: Vec<(&TrackedSession, Answer)> = sessions.iter().zip(answers.iter().cloned()).collect();
    let code = conclude(kind, &answered)?;
    Ok((code, answers))
}

/// Creates or tracks one session through a one-shot engine and says what came of it.
async fn add_one(settings: &Settings, new: NewSession, create: bool) -> Result<ExitCode> {
    if let Some(warning) = &new.warning {
        writeln!(std::io::stderr().lock(), "wbsessions: warning: {warning}")?;
    }
    let opened = open_store(settings)?;
    ensure_free(&*opened.sessions, &new).await?;
    let graph = graph_setup(settings, None)?;
    if create || new.workbook.is_by_path() {
        graph.require_tokens()?;
    }
    let name = new.name.clone();
    let request = if create { Request::Create(new) } else { Request::Track(new) };
    let answers =
        one_shot(settings, opened, graph, Vec::new(), vec![request], |_| Ok(()), &Progress::default()).await?;
    match answers.into_iter().next() {
        Some(Ok(Reply::Session(session))) => {
            let mut out = std::io::stdout().lock();
            if settings.json {
                writeln!(out, "{}", session_json(&session, &settings.engine.defaults, chrono::Utc::now()))?;
            } else {
                let verb = if create { "created" } else { "tracking" };
                writeln!(out, "{verb} {}", describe(&session, &settings.engine.defaults))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) if e.is_bad_input() => Err(bad_input(explain(&e, None, &name))),
        Some(Err(e)) => {
            anyhow::bail!(
                "{} {name} failed: {}",
                if create { "creating" } else { "tracking" },
                explain(&e, None, &name)
            )
        }
        _ => anyhow::bail!("{name}: no answer from the engine; see the log"),
    }
}

pub async fn add(settings: &Settings, args: AddArgs) -> Result<ExitCode> {
    let new = NewSession::check(&draft(&args.name, &args.options, Some(&args.session_id)), &settings.engine.defaults)
        .map_err(bad_input)?;
    add_one(settings, new, false).await
}

pub async fn create(settings: &Settings, args: CreateArgs) -> Result<ExitCode> {
    let new =
        NewSession::check(&draft(&args.name, &args.options, None), &settings.engine.defaults).map_err(bad_input)?;
    add_one(settings, new, true).await
}

/// A closed session has nothing to refresh: said as the engine would say it, before it starts.
fn refuse_closed(session: &TrackedSession) -> anyhow::Error {
    let closed = EngineError::Closed { name: session.name.clone() };
    bad_input(explain(&closed, Some(session), &session.name))
}

pub async fn refresh(settings: &Settings, args: RefreshArgs) -> Result<ExitCode> {
    let opened = open_store(settings)?;
    // Closed and damaged sessions have nothing to refresh: named, that is an error; in `--all`,
    // they are skipped, and said so.
    let unrefreshable = |s: &TrackedSession| matches!(s.status, Status::Closed | Status::Damaged);
    let (sessions, skipped): (Vec<TrackedSession>, Vec<TrackedSession>) = if args.all {
        opened.sessions.sessions().await.map_err(store_error)?.into_iter().partition(|s| !unrefreshable(s))
    } else {
        let named = find_all(&*opened.sessions, &args.names).await?;
        if let Some(closed) = named.iter().find(|s| s.status == Status::Closed) {
            return Err(refuse_closed(closed));
        }
        (named, Vec::new())
    };
    if !skipped.is_empty() {
        let mut err = std::io::stderr().lock();
        for status in [Status::Closed, Status::Damaged] {
            let names: Vec<String> = skipped.iter().filter(|s| s.status == status).map(|s| s.name.clone()).collect();
            if !names.is_empty() {
                let what = format!("{} session", status.as_str());
                writeln!(err, "wbsessions: skipped {}: {}", count(names.len(), &what), names_line(&names))?;
            }
        }
    }
    if sessions.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let graph = graph_setup(settings, None)?;
    graph.require_tokens()?;
    let (code, _) = each(settings, opened, graph, sessions, |s| Request::Refresh(s.key)).await?;
    Ok(code)
}

pub async fn close(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let opened = open_store(settings)?;
    let (closed, sessions): (Vec<TrackedSession>, Vec<TrackedSession>) =
        find_all(&*opened.sessions, names).await?.into_iter().partition(|s| s.status == Status::Closed);
    // Closing twice asks Graph nothing (the engine says the same for every front end); said here
    // too, so that knowing it needs no sign-in.
    for s in &closed {
        if settings.json {
            writeln!(std::io::stderr().lock(), "wbsessions: {} is already closed", s.name)?;
        } else {
            writeln!(std::io::stdout().lock(), "{} is already closed", s.name)?;
        }
    }
    if sessions.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let graph = graph_setup(settings, None)?;
    graph.require_tokens()?;
    let (code, _) = each(settings, opened, graph, sessions, |s| Request::Close(s.key)).await?;
    Ok(code)
}

pub async fn recreate(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let opened = open_store(settings)?;
    let sessions = find_all(&*opened.sessions, names).await?;
    let graph = graph_setup(settings, None)?;
    graph.require_tokens()?;
    let (code, _) = each(settings, opened, graph, sessions, |s| Request::Recreate(s.key)).await?;
    Ok(code)
}

pub async fn remove(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let opened = open_store(settings)?;
    let sessions = find_all(&*opened.sessions, names).await?;
    let graph = graph_setup(settings, None)?;
    let requests = sessions.iter().map(|s| Request::Remove(s.key)).collect();
    let progress = Progress::new(settings, sessions.len(), JobKind::Remove.doing());
    let answers = one_shot(settings, opened, graph, sessions.clone(), requests, |_| Ok(()), &progress).await?;
    let mut out = std::io::stdout().lock();
    for (s, answer) in sessions.iter().zip(&answers) {
        if answer.is_err() {
            continue;
        }
        if settings.json {
            writeln!(out, "{}", serde_json::json!({ "session": s.name, "action": "remove", "status": "ok" }))?;
            continue;
        }
        match s.status {
            Status::Closed | Status::Expired | Status::Dead => writeln!(out, "removed {}", s.name)?,
            _ => writeln!(
                out,
                "removed {} (the session itself stays open at Graph until it expires; `wbsessions close` before `remove` ends it)",
                s.name
            )?,
        }
    }
    drop(out);
    let answered: Vec<(&TrackedSession, Answer)> = sessions.iter().zip(answers).collect();
    conclude(JobKind::Remove, &answered)
}

pub async fn edit(settings: &Settings, args: EditArgs) -> Result<ExitCode> {
    // Only what the flags name is changed: another process's edit of the rest stands.
    let change = SettingsChange {
        name: args.rename.clone(),
        interval: if args.default_interval { Some(None) } else { args.interval.map(Some) },
        recreate: (args.recreate || args.no_recreate).then_some(args.recreate),
        auto: (args.auto || args.no_auto).then_some(args.auto),
    };
    if change.is_empty() {
        return Err(bad_input(
            "nothing to change: pass --interval, --default-interval, --recreate/--no-recreate, --auto/--no-auto or --rename",
        ));
    }
    change.check().map_err(bad_input)?;
    let opened = open_store(settings)?;
    let session = opened.sessions.session(&args.name).await.map_err(store_error)?;
    let mut changed = session.clone();
    change.apply_to(&mut changed);
    if let Some(warning) = settings.engine.defaults.interval_warning(changed.interval, session.mode) {
        writeln!(std::io::stderr().lock(), "wbsessions: warning: {warning}")?;
    }
    let key = session.key;
    let graph = graph_setup(settings, None)?;
    let answers = one_shot(
        settings,
        opened,
        graph,
        vec![session.clone()],
        vec![Request::Edit { key, change }],
        |_| Ok(()),
        &Progress::default(),
    )
    .await?;
    let saved = match answers.into_iter().next() {
        Some(Ok(Reply::Session(saved))) => (*saved).clone(),
        Some(Err(e)) => return Err(bad_input(explain(&e, Some(&session), &session.name))),
        _ => changed,
    };
    if settings.json {
        writeln!(std::io::stdout().lock(), "{}", session_json(&saved, &settings.engine.defaults, chrono::Utc::now()))?;
    } else {
        writeln!(
            std::io::stdout().lock(),
            "saved: {}{}",
            describe(&saved, &settings.engine.defaults),
            if saved.auto { "" } else { ", manual only" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The headless keeper: every session kept alive until SIGINT or SIGTERM, one line per outcome.
pub async fn run(settings: &Settings, args: RunArgs) -> Result<ExitCode> {
    // Heard from the first moment, while the store opens and the role is taken.
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let as_json = settings.json;
    let wait = args.wait;
    // Where the proxy would listen is checked before anything starts.
    let listener = if args.proxy { Some(super::proxy::bind(&args.proxy_options).await?) } else { None };
    let opened = open_store(settings)?;
    let graph = graph_setup(settings, None)?;
    super::front::identify(&*opened.role, &graph).await;
    let lease = match opened.role.join() {
        Ok(lease) => lease,
        // Another keeper or dashboard drives: not a usage error, and with --wait, a turn to wait for.
        Err(RoleError::Held { holder, .. }) if wait => {
            writeln!(
                std::io::stderr().lock(),
                "wbsessions: {holder} drives the store; waiting for it to go (Ctrl-C stops)"
            )?;
            loop {
                tokio::select! {
                    _ = &mut signal => return Err(super::Interrupted.into()),
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                match opened.role.try_acquire() {
                    Ok(lease) => break lease,
                    Err(RoleError::Held { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e @ RoleError::Held { .. }) => {
            anyhow::bail!("{e} (`wbsessions run --wait` waits for its turn)")
        }
        Err(e) if e.is_bad_input() => return Err(bad_input(e)),
        Err(e) => return Err(e.into()),
    };
    graph.require_tokens()?;
    let tokens = graph.tokens.clone();
    let calls = graph.ctx.graph.clone();
    for line in super::front::unfinished_creations(&*opened.sessions, times(settings)).await {
        writeln!(std::io::stderr().lock(), "wbsessions: {line}")?;
    }
    let (sessions, rev) = opened.sessions.snapshot().await.map_err(store_error)?;
    let (kept, skipped): (Vec<&TrackedSession>, Vec<&TrackedSession>) =
        sessions.iter().partition(|s| s.is_kept_alive());
    let mut err = std::io::stderr().lock();
    if opened.role.shares_workbooks() {
        // The others keep the rest: its share follows `keepers`.
        write!(
            err,
            "wbsessions: keeping its share of {} in {} alive, beside the store's other keepers",
            count(kept.len(), "session"),
            settings.store
        )?;
    } else {
        write!(err, "wbsessions: keeping {} in {} alive", count(kept.len(), "session"), settings.store)?;
    }
    if !skipped.is_empty() {
        let names: Vec<String> = skipped
            .iter()
            .map(|s| format!("{} ({})", s.name, if s.auto { s.status.as_str() } else { "manual" }))
            .collect();
        write!(err, "; skipping {}", names_line(&names))?;
    }
    if opened.sessions.paused().await.map_err(store_error)? {
        write!(err, "; automatic refresh is paused (the dashboard's p resumes it)")?;
    }
    writeln!(err, "; Ctrl-C stops")?;
    drop(err);
    tracing::info!(sessions = sessions.len(), store = %settings.store, "keeper started");
    let start = Start::Given { sessions, rev };
    let mut keeper = Keeper::start(
        opened.sessions,
        KeeperRole::Drive { lease, role: opened.role },
        graph.ctx,
        settings.engine.clone(),
        start,
    )
    .await
    .map_err(store_error)?;
    let serving = match listener {
        Some(listener) => {
            let serving =
                super::proxy::serve_on(settings, &args.proxy_options, listener, keeper.handle.clone(), tokens, calls)?;
            writeln!(std::io::stderr().lock(), "wbsessions: proxy listening on {}", serving.url)?;
            Some(serving)
        }
        None => None,
    };
    let times = times(settings);
    // Lines that arrive together (a batch's outcomes) go out in one write: flushed when no
    // further event waits, and at least every `FLUSH_AT_LEAST_EVERY` while events keep coming.
    const FLUSH_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last_flush = std::time::Instant::now();
    let mut stopping = false;
    let mut interrupted = false;
    // A reader that went away is an ending nobody asked for: the exit says so, as for any command.
    let mut output_closed = false;
    // Between outcomes (an interval can be long) a closed pipe is noticed without writing to it,
    // so that a keeper nobody reads does not hold the store's driver lock.
    let mut reader_check = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = reader_check.tick(), if !stopping => {
                if super::stdout_gone() {
                    output_closed = true;
                    stopping = true;
                    keeper.handle.shutdown();
                }
            }
            signal = &mut signal, if !stopping => {
                interrupted = signal == super::Signal::Interrupt;
                stopping = true;
                keeper.handle.shutdown();
            }
            event = keeper.events.recv() => match event {
                None | Some(Event::Stopped) => break,
                Some(Event::Outcome { name, outcome, late, .. }) => {
                    let line = if as_json { outcome_json(&name, &outcome, late).to_string() } else { outcome_line(times, Some(&name), &outcome, late) };
                    if !output_closed && writeln!(out, "{line}").is_err() {
                        output_closed = true;
                    }
                }
                Some(Event::Holds { workbooks, until }) if !as_json => {
                    let mut err = std::io::stderr().lock();
                    let _ = match until {
                        Some(until) if workbooks > 0 => writeln!(err, "wbsessions: throttled by Graph: {} held back until {}", count(workbooks, "workbook"), times.stamp(until)),
                        _ => writeln!(err, "wbsessions: no workbook is held back any more"),
                    };
                }
                Some(Event::Watching(holder)) => {
                    let who = holder.map_or_else(|| "another process".to_string(), |h| h.to_string());
                    let _ = writeln!(std::io::stderr().lock(), "wbsessions: {who} drives the store now (this keeper had stopped); this keeper watches and takes over when it goes");
                }
                Some(Event::Driving) => {
                    let _ = writeln!(std::io::stderr().lock(), "wbsessions: the other driver went away; this keeper drives the store again");
                }
                Some(Event::Paused(paused)) if !as_json => {
                    let _ = writeln!(std::io::stderr().lock(), "wbsessions: automatic refresh {}", if paused { "paused" } else { "resumed" });
                }
                Some(Event::Error(e) | Event::Note(e)) => { let _ = writeln!(std::io::stderr().lock(), "wbsessions: {}", crate::text::clean(&e, 2000)); }
                Some(Event::Added(s)) if !as_json => { let _ = writeln!(std::io::stderr().lock(), "wbsessions: now keeping {}", s.name); }
                Some(Event::Removed { name, .. }) if !as_json => { let _ = writeln!(std::io::stderr().lock(), "wbsessions: no longer keeping {name}"); }
                Some(_) => {}
            }
        }
        let due = keeper.events.is_empty() || last_flush.elapsed() >= FLUSH_AT_LEAST_EVERY;
        if !output_closed && !out.buffer().is_empty() && due {
            output_closed = out.flush().is_err();
            last_flush = std::time::Instant::now();
        }
        if output_closed && !stopping {
            // Nobody reads the output any more: stop as if asked to.
            stopping = true;
            keeper.handle.shutdown();
        }
    }
    drop(out);
    if let Some(serving) = serving {
        serving.stop().await;
    }
    keeper.stop().await;
    tracing::info!(output_closed, "keeper stopped");
    Ok(if output_closed {
        ExitCode::from(1)
    } else if interrupted {
        ExitCode::from(super::INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}
