//! The commands that call Graph or change sessions. Each runs an engine on the store (a one-shot
//! one, or the keeper for `run`), so that every call passes the same dispatcher and limits.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;

use super::headless::{open_store, store_error};
use super::output::{Times, count, describe, names_line, outcome_json, outcome_line};
use super::{bad_input, shutdown_signal};
use crate::auth::{AuthError, Tokens};
use crate::cli::{AddArgs, CreateArgs, EditArgs, RefreshArgs, SessionOptions};
use crate::config::{LoginOverrides, Settings};
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::engine::{AuthSetup, Command, Context, Event, Finished, LiveGraph};
use crate::graph::{ClientOptions, GraphClient};
use crate::session::{Draft, NewSession, SettingsChange, Status, TrackedSession};
use crate::store::{DriverLock, Store, StoreError};
use crate::time::Clock;

/// Graph as the settings describe it: the client, the token source, and sign-in.
pub fn graph_context(settings: &Settings) -> Result<Context> {
    let options = ClientOptions { timeout: settings.engine.request_timeout, ..ClientOptions::default() };
    let client = GraphClient::new(&settings.graph_url, options).map_err(bad_input)?;
    let tokens = Tokens::from_settings(
        settings.token.as_deref(),
        settings.token_command.as_deref().map(|c| (c, settings.token_command_timeout)),
        settings.token_cache.clone(),
    );
    let auth = AuthSetup {
        tokens: tokens.clone(),
        authority: settings.authority(&LoginOverrides::default()),
        cache: settings.token_cache.clone(),
        client: client.clone(),
    };
    Ok(Context { graph: LiveGraph::new(client, tokens), clock: Clock::system(), auth: Some(Arc::new(auth)) })
}

/// Without any token source the call cannot be made: that is a failed operation (exit 1), fixed by
/// signing in, not bad input.
fn require_tokens(ctx: &Context) -> Result<()> {
    let Some(auth) = &ctx.auth else { return Ok(()) };
    if let Some(problem) = auth.tokens.problem() {
        anyhow::bail!(problem);
    }
    if auth.tokens.is_configured() { Ok(()) } else { Err(AuthError::Missing.into()) }
}

/// Looks up every name first, so that one unknown name changes nothing.
fn find_all(store: &Store, names: &[String]) -> Result<Vec<TrackedSession>> {
    let mut seen = HashSet::new();
    names.iter().filter(|n| seen.insert(n.as_str())).map(|n| store.session(n).map_err(store_error)).collect()
}

fn times(settings: &Settings) -> Times {
    Times { utc: settings.utc }
}

/// Runs `commands` on a one-shot engine holding `sessions`, until `expected` of them have
/// finished; every event passes `on_event` on the way. Ctrl-C stops it (what finished stays).
async fn one_shot(
    settings: &Settings,
    store: Store,
    sessions: Vec<TrackedSession>,
    commands: Vec<Command>,
    expected: usize,
    mut on_event: impl FnMut(&Event) -> Result<()>,
) -> Result<Vec<Finished>> {
    let ctx = graph_context(settings)?;
    let keeper =
        Keeper::start(store, KeeperRole::OneShot, ctx, settings.engine.clone(), Start::Given { sessions, rev: 0 })
            .map_err(store_error)?;
    for command in commands {
        keeper.send(command);
    }
    let mut keeper = keeper;
    let mut finished = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    while finished.len() < expected {
        tokio::select! {
            event = keeper.events.recv() => match event {
                None | Some(Event::Stopped) => break,
                Some(event) => {
                    if let Err(e) = on_event(&event) {
                        failed = Some(e);
                        break;
                    }
                    // Whoever waits hears why it takes longer.
                    if let Event::Retrying { kind, name, attempt, after } = &event {
                        let when = match after.as_secs_f64().ceil() {
                            0.0 => "now".to_string(),
                            secs => format!("in {}", crate::time::format_duration(std::time::Duration::from_secs_f64(secs))),
                        };
                        let _ = writeln!(
                            std::io::stderr().lock(),
                            "wbsessions: {name}: {} failed; trying again {when} (attempt {} of {})",
                            kind.verb(),
                            attempt + 1,
                            crate::engine::policy::MANUAL_RETRIES + 1
                        );
                    }
                    if let Event::Finished(f) = event {
                        finished.push(f);
                    }
                }
            },
            _ = &mut signal => {
                failed = Some(anyhow::anyhow!("interrupted; what finished is recorded"));
                break;
            }
        }
    }
    let mut rest = keeper.stop().await;
    while let Ok(event) = rest.try_recv() {
        if failed.is_none() {
            let _ = on_event(&event);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(finished),
    }
}

/// Prints each outcome as it arrives; failures are logged by the engine with their request ids.
fn print_outcomes(times: Times, as_json: bool) -> impl FnMut(&Event) -> Result<()> {
    move |event| {
        if let Event::Outcome { name, outcome, .. } = event {
            let line = if as_json {
                outcome_json(name, outcome, None).to_string()
            } else {
                outcome_line(times, Some(name), outcome, None)
            };
            writeln!(std::io::stdout().lock(), "{line}")?;
        }
        Ok(())
    }
}

/// Says on stderr what each failure means and what to do; exit 1 if anything failed.
fn conclude(finished: &[Finished], sessions: &[TrackedSession], as_json: bool) -> Result<ExitCode> {
    let mut failed = false;
    let mut err = std::io::stderr().lock();
    for f in finished {
        let Err(why) = &f.result else { continue };
        failed = true;
        if as_json {
            continue;
        }
        let session = f.key.and_then(|k| sessions.iter().find(|s| s.key == k));
        let name = session.map_or(f.name.as_str(), |s| s.name.as_str());
        let hint = if why.starts_with("session expired") && !session.is_some_and(|s| s.recreate) {
            format!(" (`wbsessions recreate {name}` starts a new session; --recreate lets the keeper do it)")
        } else if why.contains("not authorized") || why.contains("wbsessions login") {
            " (run `wbsessions login`, or set a valid WBSESSIONS_TOKEN)".to_string()
        } else {
            String::new()
        };
        writeln!(err, "wbsessions: {name}: {} failed: {}{hint}", f.kind.verb(), crate::text::clean(why, 2000))?;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
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
fn ensure_free(store: &Store, new: &NewSession) -> Result<()> {
    match store.session(&new.name) {
        Ok(_) => return Err(store_error(StoreError::NameTaken(new.name.clone()))),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(store_error(e)),
    }
    if let Some(id) = &new.session_id {
        let mut holder = None;
        store
            .each_session(|s| -> Result<(), StoreError> {
                if s.session_id == *id {
                    holder = Some(s.name);
                }
                Ok(())
            })
            .map_err(store_error)?;
        if let Some(name) = holder {
            return Err(store_error(StoreError::IdTaken(name)));
        }
    }
    Ok(())
}

/// Creates or tracks one session through a one-shot engine and says what came of it.
async fn add_one(settings: &Settings, new: NewSession, create: bool) -> Result<ExitCode> {
    if let Some(warning) = &new.warning {
        writeln!(std::io::stderr().lock(), "wbsessions: warning: {warning}")?;
    }
    let store = open_store(settings)?;
    ensure_free(&store, &new)?;
    if create || new.workbook.is_by_path() {
        require_tokens(&graph_context(settings)?)?;
    }
    let name = new.name.clone();
    let command = if create { Command::Create(new) } else { Command::Track(new) };
    let mut added: Option<TrackedSession> = None;
    let finished = one_shot(settings, store, Vec::new(), vec![command], 1, |event| {
        if let Event::Added(s) = event {
            added = Some((**s).clone());
        }
        Ok(())
    })
    .await?;
    match (finished.first().map(|f| &f.result), added) {
        (Some(Ok(())), Some(session)) => {
            let verb = if create { "created" } else { "tracking" };
            writeln!(std::io::stdout().lock(), "{verb} {}", describe(&session, &settings.engine.defaults))?;
            Ok(ExitCode::SUCCESS)
        }
        (Some(Err(why)), _) if why.contains("already tracked") => Err(bad_input(why)),
        (Some(Err(why)), _) => anyhow::bail!("{} {name} failed: {why}", if create { "creating" } else { "tracking" }),
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

pub async fn refresh(settings: &Settings, args: RefreshArgs) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let (sessions, skipped): (Vec<TrackedSession>, Vec<TrackedSession>) = if args.all {
        store.sessions().map_err(store_error)?.into_iter().partition(|s| s.status != Status::Closed)
    } else {
        let named = find_all(&store, &args.names)?;
        if let Some(closed) = named.iter().find(|s| s.status == Status::Closed) {
            return Err(bad_input(format!(
                "{0} is closed, so there is nothing to refresh; `wbsessions recreate {0}` starts a new session on its workbook",
                closed.name
            )));
        }
        (named, Vec::new())
    };
    if !skipped.is_empty() && !args.json {
        let names: Vec<String> = skipped.iter().map(|s| s.name.clone()).collect();
        writeln!(
            std::io::stderr().lock(),
            "wbsessions: skipped {}: {}",
            count(names.len(), "closed session"),
            names_line(&names)
        )?;
    }
    if sessions.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    require_tokens(&graph_context(settings)?)?;
    let keys = sessions.iter().map(|s| s.key).collect();
    let expected = sessions.len();
    let finished = one_shot(
        settings,
        store,
        sessions.clone(),
        vec![Command::Refresh(keys)],
        expected,
        print_outcomes(times(settings), args.json),
    )
    .await?;
    conclude(&finished, &sessions, args.json)
}

pub async fn close(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let (closed, sessions): (Vec<TrackedSession>, Vec<TrackedSession>) =
        find_all(&store, names)?.into_iter().partition(|s| s.status == Status::Closed);
    // Closing twice asks Graph nothing (the engine says the same for every front end); said here
    // too, so that knowing it needs no sign-in.
    for s in &closed {
        writeln!(std::io::stdout().lock(), "{} is already closed", s.name)?;
    }
    if sessions.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    require_tokens(&graph_context(settings)?)?;
    let keys = sessions.iter().map(|s| s.key).collect();
    let finished = one_shot(
        settings,
        store,
        sessions.clone(),
        vec![Command::Close(keys)],
        sessions.len(),
        print_outcomes(times(settings), false),
    )
    .await?;
    conclude(&finished, &sessions, false)
}

pub async fn recreate(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let sessions = find_all(&store, names)?;
    require_tokens(&graph_context(settings)?)?;
    let keys = sessions.iter().map(|s| s.key).collect();
    let finished = one_shot(
        settings,
        store,
        sessions.clone(),
        vec![Command::Recreate(keys)],
        sessions.len(),
        print_outcomes(times(settings), false),
    )
    .await?;
    conclude(&finished, &sessions, false)
}

pub async fn remove(settings: &Settings, names: &[String]) -> Result<ExitCode> {
    let store = open_store(settings)?;
    let sessions = find_all(&store, names)?;
    let keys = sessions.iter().map(|s| s.key).collect();
    let finished =
        one_shot(settings, store, sessions.clone(), vec![Command::Remove(keys)], sessions.len(), |_| Ok(())).await?;
    let mut out = std::io::stdout().lock();
    for f in finished.iter().filter(|f| f.result.is_ok()) {
        let Some(s) = sessions.iter().find(|s| Some(s.key) == f.key) else { continue };
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
    conclude(&finished, &sessions, false)
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
    let store = open_store(settings)?;
    let session = store.session(&args.name).map_err(store_error)?;
    let mut changed = session.clone();
    change.apply_to(&mut changed);
    if let Some(warning) = settings.engine.defaults.interval_warning(changed.interval, session.mode) {
        writeln!(std::io::stderr().lock(), "wbsessions: warning: {warning}")?;
    }
    let key = session.key;
    let finished = one_shot(settings, store, vec![session], vec![Command::Edit { key, change }], 1, |_| Ok(())).await?;
    if let Some(Err(why)) = finished.first().map(|f| &f.result) {
        return Err(bad_input(why));
    }
    writeln!(
        std::io::stdout().lock(),
        "saved: {}{}",
        describe(&changed, &settings.engine.defaults),
        if changed.auto { "" } else { ", manual only" }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The headless keeper: every session kept alive until SIGINT or SIGTERM, one line per outcome.
pub async fn run(settings: &Settings, as_json: bool) -> Result<ExitCode> {
    // The store is checked before the lock file is made beside it: a bad store changes nothing.
    let store = open_store(settings)?;
    let lock =
        DriverLock::acquire(&settings.store).map_err(|e| if e.is_bad_input() { bad_input(e) } else { e.into() })?;
    let ctx = graph_context(settings)?;
    require_tokens(&ctx)?;
    let (sessions, rev) = store.snapshot().map_err(store_error)?;
    let (kept, skipped): (Vec<&TrackedSession>, Vec<&TrackedSession>) =
        sessions.iter().partition(|s| s.is_kept_alive());
    let mut err = std::io::stderr().lock();
    write!(err, "wbsessions: keeping {} in {} alive", count(kept.len(), "session"), settings.store.display())?;
    if !skipped.is_empty() {
        let names: Vec<String> = skipped
            .iter()
            .map(|s| format!("{} ({})", s.name, if s.auto { s.status.as_str() } else { "manual" }))
            .collect();
        write!(err, "; skipping {}", names_line(&names))?;
    }
    if store.paused().map_err(store_error)? {
        write!(err, "; automatic refresh is paused (the dashboard's p resumes it)")?;
    }
    writeln!(err, "; Ctrl-C stops")?;
    drop(err);
    tracing::info!(sessions = sessions.len(), store = %settings.store.display(), lock = %lock.path().display(), "keeper started");
    let mut keeper =
        Keeper::start(store, KeeperRole::Drive(lock), ctx, settings.engine.clone(), Start::Given { sessions, rev })
            .map_err(store_error)?;
    let times = times(settings);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    // Lines that arrive together (a batch's outcomes) go out in one write: flushed when no
    // further event waits, and at least every `FLUSH_AT_LEAST_EVERY` while events keep coming.
    const FLUSH_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last_flush = std::time::Instant::now();
    let mut stopping = false;
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
                    keeper.send(Command::Shutdown);
                }
            }
            _ = &mut signal, if !stopping => {
                stopping = true;
                keeper.send(Command::Shutdown);
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
            keeper.send(Command::Shutdown);
        }
    }
    drop(out);
    keeper.stop().await;
    tracing::info!(output_closed, "keeper stopped");
    Ok(if output_closed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Refreshes one session (recreating it if it expired and may be), and returns it as it is after,
/// with how the refresh ended.
pub async fn ensure_alive(settings: &Settings, name: &str) -> Result<(TrackedSession, Result<(), String>)> {
    let store = open_store(settings)?;
    let session = store.session(name).map_err(store_error)?;
    if session.status == Status::Closed {
        // Not alive, as for an expired session: `exec` exits 1 without running the command.
        anyhow::bail!("{name} is closed; the command was not run (`wbsessions recreate {name}` starts a new session)");
    }
    require_tokens(&graph_context(settings)?)?;
    let mut latest = session.clone();
    let finished =
        one_shot(settings, store, vec![session.clone()], vec![Command::Refresh(vec![session.key])], 1, |event| {
            if let Event::Changed(s) = event {
                latest = (**s).clone();
            }
            Ok(())
        })
        .await?;
    let result = finished.into_iter().next().map_or_else(|| Err("no answer from the engine".to_string()), |f| f.result);
    Ok((latest, result))
}
