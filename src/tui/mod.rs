//! The dashboard: a view onto the engine. Terminal events and engine events become `Msg`s for
//! `App::update`, whose effects (engine commands, quitting) this loop carries out; the screen is
//! drawn only when something changed, plus a tick a second while relative times are on screen.

pub mod app;
pub mod bulk;
pub mod dialog;
mod filter;
mod heard;
mod input;
pub mod keymap;
pub mod layout;
pub mod theme;
pub mod view;

use std::io::{self, Stdout};
use std::sync::Once;
use std::time::Duration;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event as TermEvent,
    EventStream,
};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::engine::{Event, Handle};
use crate::time::Clock;
pub use app::{App, Driver, Effect, Info, Msg, ProxyGauge};

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the terminal failed: {0}")]
    Terminal(#[from] io::Error),
    #[error("the refresh engine stopped unexpectedly; see the log file")]
    EngineGone,
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Raw mode, the alternate screen, mouse capture and bracketed paste for as long as it lives;
/// undone on drop and on any panic, in any thread.
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
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The terminal's size, or a usual one where it cannot be asked.
pub(crate) fn terminal_size() -> (u16, u16) {
    crossterm::terminal::size().unwrap_or((80, 24))
}

/// Runs the dashboard until the user quits or the engine stops. `first` carries effects the app
/// asked for before the loop started (a sign-in it opens by itself). The app comes back, for
/// what the caller keeps of it (the sort).
pub async fn run(
    app: &mut App,
    engine: &Handle,
    events: &mut mpsc::UnboundedReceiver<Event>,
    clock: &Clock,
    first: Vec<Effect>,
) -> Result<(), TuiError> {
    let guard = TerminalGuard::enter()?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let result = event_loop(app, engine, events, clock, &mut terminal, first).await;
    drop(terminal);
    drop(guard);
    result
}

/// Carries out effects; returns whether the dashboard should end. An answer from the engine
/// comes back on `answers` when it is ready: the screen never waits for it.
fn apply(effects: Vec<Effect>, engine: &Handle, answers: &mpsc::UnboundedSender<Msg>) -> bool {
    let mut quit = false;
    for effect in effects {
        match effect {
            Effect::Ask { request, about } => {
                let (kind, key) = (request.kind(), request.key());
                let answer = engine.send(request);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let answer = answer.await;
                    let _ = answers.send(Msg::Answer { kind, key, about, answer });
                });
            }
            // OSC 52: the terminal (or tmux, or the terminal at the far end of ssh) sets its
            // clipboard; nothing here needs a display server.
            Effect::Copy(text) => {
                let _ = execute!(io::stdout(), crossterm::clipboard::CopyToClipboard::to_clipboard_from(text));
            }
            Effect::Quit => quit = true,
        }
    }
    quit
}

async fn event_loop(
    app: &mut App,
    engine: &Handle,
    events: &mut mpsc::UnboundedReceiver<Event>,
    clock: &Clock,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    first: Vec<Effect>,
) -> Result<(), TuiError> {
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = std::time::Instant::now();
    let mut draws: u64 = 0;
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let mut quit = apply(first, engine, &answers_tx);
    let size = terminal.size()?;
    quit |= apply(app.update(Msg::Resize(size.width, size.height), clock.now()), engine, &answers_tx);
    while !quit {
        if app.dirty {
            let now = clock.now();
            terminal.draw(|frame| view::draw(frame, app, now))?;
            app.drawn(now);
            draws += 1;
        }
        let msg = tokio::select! {
            event = input.next() => match event {
                Some(Ok(TermEvent::Key(key))) => Msg::Key(key),
                Some(Ok(TermEvent::Mouse(mouse))) => Msg::Mouse(mouse),
                Some(Ok(TermEvent::Paste(text))) => Msg::Paste(text),
                Some(Ok(TermEvent::Resize(width, height))) => Msg::Resize(width, height),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            event = events.recv() => match event {
                Some(event) => Msg::Engine(event),
                None => return Err(TuiError::EngineGone),
            },
            Some(answer) = answers.recv() => answer,
            _ = tick.tick(), if app.needs_ticks() => Msg::Tick,
        };
        quit = apply(app.update(msg, clock.now()), engine, &answers_tx);
        // A burst of engine events becomes one frame, laid out once.
        while !quit && let Ok(event) = events.try_recv() {
            quit = apply(app.update(Msg::Engine(event), clock.now()), engine, &answers_tx);
        }
        app.settle();
    }
    tracing::info!(draws, seconds = started.elapsed().as_secs_f64(), "dashboard closed");
    Ok(())
}
