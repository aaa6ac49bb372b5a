//! How the commands reach the store and the engine: the store opened as the command needs it,
//! Graph as the settings describe it, a one-shot engine that answers each request once, and
//! what each typed error means on the command line (its words, its hint, its exit code).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{bad_input, shutdown_signal};
use crate::auth::signin::Authority;
use crate::auth::{AuthError, DeviceSignIn, Tokens};
use crate::config::{LoginOverrides, Settings};
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::engine::ops::Failure;
use crate::engine::{Answer, Context, EngineError, Event, JobKind, LiveGraph, Request};
use crate::graph::{ClientOptions, GraphClient};
use crate::session::TrackedSession;
use crate::store::{Access, Opened, StoreError};
use crate::time::Clock;

pub(crate) fn store_error(e: StoreError) -> anyhow::Error {
    if e.is_bad_input() { bad_input(e) } else { e.into() }
}

/// The store for a command that changes it: created if missing.
pub fn open_store(settings: &Settings) -> Result<Opened> {
    crate::store::open(&settings.store, Access::Write).map_err(store_error)
}

/// The store for a command that only reads: a missing one is an error and is not created.
pub(crate) fn open_to_read(settings: &Settings) -> Result<Opened> {
    crate::store::open(&settings.store, Access::Read).map_err(store_error)
}

/// Graph as the settings describe it: the engine's context, and the token source behind it.
pub(crate) struct GraphSetup {
    pub ctx: Context,
    pub tokens: Tokens,
}

/// Graph as the settings describe it; `authority` replaces where sign-in goes (the demo's).
pub(crate) fn graph_setup(settings: &Settings, authority: Option<Authority>) -> Result<GraphSetup> {
    let options = ClientOptions::with_timeout(settings.engine.request_timeout);
    let client = GraphClient::new(&settings.graph_url, options).map_err(bad_input)?;
    let tokens = Tokens::from_settings(
        settings.token.as_deref(),
        settings.token_command.as_deref().map(|c| (c, settings.token_command_timeout)),
        settings.token_cache.clone(),
    );
    let auth = DeviceSignIn {
        tokens: tokens.clone(),
        authority: authority.or_else(|| settings.authority(&LoginOverrides::default())),
        cache: settings.token_cache.clone(),
        client: client.clone(),
    };
    let ctx =
        Context { graph: LiveGraph::new(client, tokens.clone()), clock: Clock::system(), auth: Some(Arc::new(auth)) };
    Ok(GraphSetup { ctx, tokens })
}

impl GraphSetup {
    /// Without any token source no call can be made: that is a failed operation (exit 1), fixed
    /// by signing in, not bad input.
    pub(crate) fn require_tokens(&self) -> Result<()> {
        if let Some(problem) = self.tokens.problem() {
            anyhow::bail!(problem);
        }
        if self.tokens.is_configured() { Ok(()) } else { Err(AuthError::Missing.into()) }
    }
}

/// Names this process's sign-in to a store whose keepers share its workbooks, before it keeps
/// any: it keeps only that owner's sessions and those of no known owner (docs/postgres.md,
/// "Owners"). Elsewhere there is nothing to name, and nothing is asked of Graph.
pub(crate) async fn identify(role: &dyn crate::store::DriverRole, graph: &GraphSetup) {
    // Without a token nothing can be asked, and the command says so itself.
    if !role.shares_workbooks() || !graph.tokens.is_configured() {
        return;
    }
    let owner = graph.ctx.graph.owner().await;
    match &owner {
        Some(owner) => tracing::info!(%owner, "keeping the sessions of this sign-in"),
        None => {
            let line = "wbsessions: whose sign-in this is cannot be told (/me cannot be read and the token does not say): \
                        this process keeps only sessions of no known owner";
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            tracing::warn!("{line}");
        }
    }
    role.identify(owner);
}

/// Runs `requests` on a one-shot engine holding `sessions`, and returns their answers in the
/// order asked; every event passes `on_event` on the way. Ctrl-C stops it (what finished stays).
pub(crate) async fn one_shot(
    settings: &Settings,
    opened: Opened,
    graph: GraphSetup,
    sessions: Vec<TrackedSession>,
    requests: Vec<Request>,
    mut on_event: impl FnMut(&Event) -> Result<()>,
    progress: &Progress,
) -> Result<Vec<Answer>> {
    let start = Start::Given { sessions, rev: 0 };
    let mut keeper = Keeper::start(opened.sessions, KeeperRole::OneShot, graph.ctx, settings.engine.clone(), start)
        .await
        .map_err(store_error)?;
    let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
    let mut pending: FuturesUnordered<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let answer = keeper.handle.send(request);
            async move { (i, answer.await) }
        })
        .collect();
    let mut failed: Option<anyhow::Error> = None;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    while !pending.is_empty() {
        tokio::select! {
            biased;
            Some(event) = keeper.events.recv() => {
                if let Err(e) = on_event(&event) {
                    failed = Some(e);
                    break;
                }
                if let Event::Retrying { kind, name, attempt, after } = &event {
                    say_retrying(kind.verb(), name, *attempt, *after);
                }
            }
            Some((i, answer)) = pending.next() => {
                progress.tick();
                answers[i] = Some(answer);
            }
            _ = &mut signal => {
                failed = Some(super::Interrupted.into());
                break;
            }
        }
    }
    progress.finish();
    let mut rest = keeper.stop().await;
    while let Ok(event) = rest.try_recv() {
        if failed.is_none() {
            let _ = on_event(&event);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(answers.into_iter().map(|a| a.unwrap_or(Err(EngineError::Stopped))).collect()),
    }
}

/// Whoever waits hears why it takes longer.
fn say_retrying(verb: &str, name: &str, attempt: u8, after: std::time::Duration) {
    let when = match after.as_secs_f64().ceil() {
        0.0 => "now".to_string(),
        secs => format!("in {}", crate::time::format_duration(std::time::Duration::from_secs_f64(secs))),
    };
    let _ = writeln!(
        std::io::stderr().lock(),
        "wbsessions: {name}: {verb} failed; trying again {when} (attempt {} of {})",
        attempt + 1,
        crate::engine::policy::MANUAL_RETRIES + 1
    );
}

/// What to do about an error, for the session it is about: the one place a refusal's advice is
/// worded on the command line.
pub(crate) fn hint(e: &EngineError, session: Option<&TrackedSession>, name: &str) -> String {
    match e {
        EngineError::Expired(_) if !session.is_some_and(|s| s.recreate) => {
            format!(" (`wbsessions recreate {name}` starts a new session; --recreate lets the keeper do it)")
        }
        // A token source's own message says what to do already.
        EngineError::Unauthorized(failure) if matches!(**failure, Failure::Graph(_)) => {
            " (run `wbsessions login`, or set a valid WBSESSIONS_TOKEN)".to_string()
        }
        EngineError::Closed { .. } => format!("; `wbsessions recreate {name}` starts a new session on its workbook"),
        EngineError::Damaged { .. } => format!(
            "; `wbsessions remove {name}` drops it, `wbsessions recreate {name}` starts a new session on its workbook"
        ),
        _ => String::new(),
    }
}

/// An error as one line with its hint, cleaned for the terminal.
pub(crate) fn explain(e: &EngineError, session: Option<&TrackedSession>, name: &str) -> String {
    format!("{}{}", crate::text::clean(&e.to_string(), 2000), hint(e, session, name))
}

/// Creations an earlier process started and never finished, each said once: a session may be
/// open at Graph under that name that nothing tracks.
pub async fn unfinished_creations(store: &dyn crate::store::SessionStore, times: super::output::Times) -> Vec<String> {
    match store.unfinished().await {
        Ok(found) => found
            .into_iter()
            .map(|u| {
                format!(
                    "{}: a session may be open at Graph that nothing tracks: creating one on {} was cut short at {} (the process ended before storing it); unused, it expires by itself",
                    crate::text::clean(&u.name, 100),
                    crate::text::clean(&u.workbook, 200),
                    times.stamp_secs(u.started_at)
                )
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the creations cut short");
            Vec::new()
        }
    }
}

/// Failures said one by one; more are said once per kind, with the first in full.
const FAILURES_SAID: usize = 5;

/// Says on stderr what each failure means and what to do (many of one kind: the first in full
/// and the others by name), then, for many sessions, one line of how it went ("10,000
/// refreshed: 9,998 ok, 2 expired"); exit 1 if anything failed.
pub(crate) fn conclude(kind: JobKind, answered: &[(&TrackedSession, Answer)]) -> Result<ExitCode> {
    let mut err = std::io::stderr().lock();
    let failures: Vec<(&TrackedSession, &EngineError)> =
        answered.iter().filter_map(|(s, answer)| answer.as_ref().err().map(|e| (*s, e))).collect();
    let failed: Vec<&'static str> = failures.iter().map(|(_, e)| e.word()).collect();
    let mut words: Vec<&'static str> = Vec::new();
    for word in &failed {
        if !words.contains(word) {
            words.push(word);
        }
    }
    for word in words {
        let alike: Vec<&(&TrackedSession, &EngineError)> = failures.iter().filter(|(_, e)| e.word() == word).collect();
        let shown = if failures.len() <= FAILURES_SAID { alike.len() } else { 1 };
        for (session, e) in alike.iter().take(shown) {
            let why = explain(e, Some(session), &session.name);
            writeln!(err, "wbsessions: {}: {} failed: {why}", session.name, kind.verb())?;
        }
        if alike.len() > shown {
            let rest: Vec<String> = alike.iter().skip(shown).map(|(s, _)| s.name.clone()).collect();
            let names = crate::text::names_line(&rest);
            writeln!(err, "wbsessions: {} more {word}, alike: {names}", crate::text::thousands(rest.len()))?;
        }
    }
    if answered.len() > 1 {
        let ok = answered.len() - failed.len();
        writeln!(err, "wbsessions: {}", crate::text::summary(answered.len(), kind.past(), ok, failed.iter().copied()))?;
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// How fast the work goes (`done` of `total` in `elapsed`), at most `cap` a second, and how long
/// the rest takes at that pace; nothing to say before the first is done.
fn pace(done: u64, total: u64, elapsed: Duration, cap: f64) -> (f64, Option<Duration>) {
    let seconds = elapsed.as_secs_f64();
    if done == 0 || seconds <= 0.0 {
        return (0.0, None);
    }
    let rate = (done as f64 / seconds).min(cap.max(f64::MIN_POSITIVE));
    let left = total.saturating_sub(done) as f64 / rate;
    (rate, Duration::try_from_secs_f64(left).ok())
}

/// A progress bar on stderr while many sessions are worked on, where someone watches: not when
/// stderr is no terminal, not with `--quiet`, not for one session.
#[derive(Clone, Default)]
pub(crate) struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub(crate) fn new(settings: &Settings, total: usize, doing: &str) -> Progress {
        use std::io::IsTerminal;
        if settings.quiet || total < 2 || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
        // The request budget bounds the pace: one request a session, so never more than a tenth
        // of the budget a second, however fast the first burst went.
        let cap = f64::from(settings.engine.request_budget) / crate::engine::dispatch::BUDGET_WINDOW.as_secs_f64();
        let pace = move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let (rate, left) = pace(state.pos(), state.len().unwrap_or(0), state.elapsed(), cap);
            let _ = write!(w, "{}/s", crate::text::thousands(rate.round() as usize));
            if let Some(left) = left {
                let _ = write!(w, " · about {} left", crate::time::format_coarse(left.as_secs().max(1)));
            }
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {wide_bar} {human_pos}/{human_len} {pace}") {
            bar.set_style(style.with_key("pace", pace));
        }
        bar.set_message(doing.to_string());
        Progress(Some(bar))
    }

    fn tick(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }

    /// Writes a line to standard output without tearing the bar.
    pub(crate) fn println(&self, line: &str) -> std::io::Result<()> {
        let write = || writeln!(std::io::stdout().lock(), "{line}");
        match &self.0 {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first burst as fast as the budget allows at once does not promise the rest that fast.
    #[test]
    fn the_pace_never_beats_the_budget() {
        let (rate, left) = pace(1000, 10_000, Duration::from_secs(1), 100.0);
        assert_eq!(rate, 100.0);
        assert_eq!(left, Some(Duration::from_secs(90)));
        let (rate, left) = pace(500, 1000, Duration::from_secs(50), 100.0);
        assert_eq!((rate, left), (10.0, Some(Duration::from_secs(50))), "slower than the budget: as measured");
        assert_eq!(pace(0, 1000, Duration::from_secs(3), 100.0), (0.0, None));
        assert_eq!(pace(1000, 1000, Duration::from_secs(3), 100.0).1, Some(Duration::ZERO));
    }
}
