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

use crate::engine::{Command, EngineHandle};
use crate::time::Clock;
pub use app::{App, Driver, Info, Msg};

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
pub async fn run(mut app: App, engine: &mut EngineHandle, clock: &Clock) -> Result<(), TuiError> {
    let guard = TerminalGuard::enter()?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let result = event_loop(&mut app, engine, clock, &mut terminal).await;
    drop(terminal);
    drop(guard);
    let _ = engine.commands.send(Command::Shutdown);
    result
}

async fn event_loop(
    app: &mut App,
    engine: &mut EngineHandle,
    clock: &Clock,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
) -> Result<(), TuiError> {
    let mut input = EventStream::new();
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
        let needs_tick = !app.rows.is_empty() || app.flash.is_some() || app.throttled_until.is_some();
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
            _ = tick.tick(), if needs_tick => Msg::Tick,
        };
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
