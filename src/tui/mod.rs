//! The dashboard: a view onto the engine. Keys become commands; engine events update a mirror of
//! the session list; the screen is drawn only when something changed, plus a tick a second while
//! relative times are on screen.

pub mod app;
pub mod keymap;
pub mod view;

use std::io::{self, Stdout};
use std::sync::Once;
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::auth::Tokens;
use crate::auth::signin::{self, Authority, NO_CLIENT_ID, SignIn};
use crate::engine::{Command, EngineHandle};
use crate::graph::GraphClient;
use crate::time::Clock;
pub use app::{App, Driver, Info, Msg};
use app::{Dialog, SignInEvent};

/// What the dashboard needs to sign in by itself and to show the sign-in in its header.
pub struct SignInSetup {
    /// `None` when no client id is configured anywhere.
    pub authority: Option<Authority>,
    pub graph: GraphClient,
    pub cache: std::path::PathBuf,
    pub tokens: Tokens,
}

/// The header's words for the sign-in; never the token.
pub fn signin_label(tokens: &Tokens) -> String {
    match tokens.status() {
        Some(status) if status.ended.is_some() => "ended: l signs in again".into(),
        Some(status) => format!(
            "{} · token until {}",
            status.user.as_deref().unwrap_or("signed in"),
            status.expires_at.with_timezone(&chrono::Local).format("%H:%M")
        ),
        None if tokens.is_sign_in() => "not signed in: l signs in".into(),
        None => tokens.describe().into(),
    }
}

async fn sign_in(
    setup: (Authority, GraphClient, std::path::PathBuf, Tokens),
    events: tokio::sync::mpsc::UnboundedSender<SignInEvent>,
) {
    let (authority, graph, cache, tokens) = setup;
    let result = async {
        let client = SignIn::new(authority).map_err(|e| e.to_string())?;
        let code = client.device_code().await.map_err(|e| e.to_string())?;
        let _ = events.send(SignInEvent::Code {
            verification_uri: code.verification_uri.clone(),
            user_code: code.user_code.clone(),
            expires_in: code.expires_in,
        });
        let signed_in = client.wait_for_tokens(&code, |_| {}).await.map_err(|e| e.to_string())?;
        let signed_in = signin::finish(signed_in, &graph, &cache).await.map_err(|e| e.to_string())?;
        tokens.reload();
        tracing::info!("signed in from the dashboard");
        Ok(signed_in.user.unwrap_or_else(|| "an unknown user".into()))
    }
    .await;
    let _ = events.send(SignInEvent::Done(result));
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the terminal failed: {0}")]
    Terminal(#[from] io::Error),
    #[error("the refresh engine stopped unexpectedly; see the log file")]
    EngineGone,
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Raw mode, the alternate screen and mouse capture for as long as it lives; undone on drop and
/// on any panic, in any thread.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Runs the dashboard until the user quits. The engine is asked to shut down on the way out.
pub async fn run(mut app: App, engine: &mut EngineHandle, clock: &Clock, signin: SignInSetup) -> Result<(), TuiError> {
    let guard = TerminalGuard::enter()?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let result = event_loop(&mut app, engine, clock, &signin, &mut terminal).await;
    drop(terminal);
    drop(guard);
    let _ = engine.commands.send(Command::Shutdown);
    result
}

async fn event_loop(
    app: &mut App,
    engine: &mut EngineHandle,
    clock: &Clock,
    setup: &SignInSetup,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
) -> Result<(), TuiError> {
    let mut input = EventStream::new();
    let (signin_tx, mut signin_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut signing_in: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = std::time::Instant::now();
    let mut draws: u64 = 0;
    loop {
        if app.dirty {
            terminal.draw(|frame| view::draw(frame, app, clock.now()))?;
            app.dirty = false;
            draws += 1;
        }
        if app.quit {
            break;
        }
        if std::mem::take(&mut app.sign_in_requested) {
            match &setup.authority {
                Some(authority) => {
                    let job = (authority.clone(), setup.graph.clone(), setup.cache.clone(), setup.tokens.clone());
                    signing_in = Some(tokio::spawn(sign_in(job, signin_tx.clone())));
                }
                None => {
                    app.update(Msg::SignIn(SignInEvent::Done(Err(NO_CLIENT_ID.into()))), clock.now());
                    continue;
                }
            }
        }
        if signing_in.as_ref().is_some_and(|t| !t.is_finished()) && !matches!(app.dialog, Some(Dialog::SignIn(_))) {
            // The dialog was closed: the sign-in is cancelled.
            if let Some(task) = signing_in.take() {
                task.abort();
            }
        }
        let needs_tick = !app.rows.is_empty()
            || app.flash.is_some()
            || app.throttled_until.is_some()
            || matches!(app.dialog, Some(Dialog::SignIn(_)));
        let msg = tokio::select! {
            event = input.next() => match event {
                Some(Ok(TermEvent::Key(key))) => Msg::Key(key),
                Some(Ok(TermEvent::Mouse(mouse))) => Msg::Mouse(mouse),
                Some(Ok(TermEvent::Resize(_, _))) => Msg::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            event = engine.events.recv() => match event {
                Some(event) => Msg::Engine(event),
                None => return Err(TuiError::EngineGone),
            },
            Some(event) = signin_rx.recv() => Msg::SignIn(event),
            _ = tick.tick(), if needs_tick => Msg::Tick,
        };
        if matches!(msg, Msg::Tick | Msg::SignIn(_)) && !app.info.demo {
            let label = signin_label(&setup.tokens);
            if label != app.info.signin {
                app.info.signin = label;
                app.dirty = true;
            }
        }
        send(engine, app.update(msg, clock.now()));
        // A burst of engine events becomes one frame.
        while let Ok(event) = engine.events.try_recv() {
            send(engine, app.update(Msg::Engine(event), clock.now()));
        }
    }
    tracing::info!(draws, seconds = started.elapsed().as_secs_f64(), "dashboard closed");
    Ok(())
}

fn send(engine: &EngineHandle, commands: Vec<Command>) {
    for command in commands {
        let _ = engine.commands.send(command);
    }
}
