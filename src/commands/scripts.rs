//! What scripts use: `exec`, which hands a command a live session, and shell completions.

use std::io::Write as _;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::{Context as _, Result};

use super::front::{explain, graph_setup, open_store, store_error};
use crate::cli::{COMPLETE_VAR, ExecArgs};
use crate::config::Settings;
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::engine::{EngineError, Reply, Request};
use crate::session::{Status, TrackedSession};
use crate::store::DriverRole;

/// Runs CMD once the session is known to be alive, with its id, workbook URL and name (and the
/// access token, if asked) in CMD's environment, and keeps the session alive while CMD runs
/// (unless a keeper drives the store, which does that already). SIGTERM and SIGHUP are passed
/// on to CMD, and SIGINT too unless the terminal sent it to CMD itself. Returns CMD's exit code.
pub async fn exec(settings: &Settings, args: ExecArgs) -> Result<ExitCode> {
    let opened = open_store(settings)?;
    let session = opened.sessions.session(&args.name).await.map_err(store_error)?;
    if session.status == Status::Closed {
        // Not alive, as for an expired session: `exec` exits 1 without running the command.
        let closed = EngineError::Closed { name: session.name.clone() };
        anyhow::bail!("{}; the command was not run", explain(&closed, Some(&session), &args.name));
    }
    let graph = graph_setup(settings, None)?;
    graph.require_tokens()?;
    let tokens = graph.tokens.clone();
    let role = opened.role.clone();
    let start = Start::Given { sessions: vec![session.clone()], rev: 0 };
    let mut keeper = Keeper::start(opened.sessions, KeeperRole::OneShot, graph.ctx, settings.engine.clone(), start)
        .await
        .map_err(store_error)?;
    let code = run_job(settings, &args, &mut keeper, &tokens, role.as_ref(), session).await;
    keeper.stop().await;
    code
}

async fn run_job(
    settings: &Settings,
    args: &ExecArgs,
    keeper: &mut Keeper,
    tokens: &crate::auth::Tokens,
    role: &dyn DriverRole,
    session: TrackedSession,
) -> Result<ExitCode> {
    let name = session.name.clone();
    let mut session = match keeper.handle.ask(Request::Refresh(session.key)).await {
        Ok(Reply::Session(alive)) => (*alive).clone(),
        Ok(_) => session,
        Err(e) => {
            anyhow::bail!("{name} is not alive ({}); the command was not run", explain(&e, Some(&session), &name))
        }
    };
    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        // The job gets the session, never the credentials that opened it.
        .env_remove("WBSESSIONS_TOKEN")
        .env_remove("WBSESSIONS_TOKEN_COMMAND")
        .env("WBSESSIONS_SESSION_ID", session.session_id.as_str())
        .env("WBSESSIONS_WORKBOOK_URL", session.workbook.url(&settings.graph_url))
        .env("WBSESSIONS_NAME", &session.name);
    if args.export_token {
        let token = tokens.get().await?;
        command.env("WBSESSIONS_ACCESS_TOKEN", token.secret.expose());
    }
    if args.proxy {
        let (url, secret) = super::proxy::ProxyFiles::of(settings).running()?;
        // The workbook through the proxy too: a job that uses the URL it is given goes there.
        command.env("WBSESSIONS_WORKBOOK_URL", session.workbook.url(&url));
        command.env(super::proxy::URL_VAR, url).env(super::proxy::SECRET_VAR, secret);
    }
    // The command is the user's: it creates files as they would, not as privately as this does.
    #[cfg(unix)]
    if let Some(mask) = super::inherited_umask() {
        // SAFETY: umask only swaps the process's file-creation mask; nothing here creates files
        // concurrently.
        unsafe {
            libc::umask(mask);
        }
    }
    let program = args.command[0].to_string_lossy().into_owned();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // As a shell says it: 127 for a command that is not there, 126 for one that cannot run.
            writeln!(std::io::stderr().lock(), "wbsessions: cannot run {program}: {e}")?;
            return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }));
        }
    };
    let mut signals = Signals::new();
    let status = loop {
        // Kept alive while the job runs, whatever its automatic refresh says: that is what exec is for.
        let interval = settings.engine.defaults.interval_of(&session).mul_f64(0.9).max(Duration::from_secs(1));
        let wait = crate::time::until(chrono::Utc::now(), crate::time::add(session.last_activity(), interval));
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            Some(signal) = signals.next() => signals.forward(signal, child.id()),
            () = tokio::time::sleep(wait) => {
                // A keeper that drives the store keeps the session alive; else this process does.
                if role.holder().is_some() {
                    session.last_refresh = Some(chrono::Utc::now());
                    continue;
                }
                match keeper.handle.ask(Request::Refresh(session.key)).await {
                    Ok(Reply::Session(alive)) => session = (*alive).clone(),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = writeln!(std::io::stderr().lock(), "wbsessions: {name}: keeping the session alive failed: {}", explain(&e, Some(&session), &name));
                        // Tried again after a backoff, not in a loop.
                        session.last_refresh = Some(chrono::Utc::now());
                        session.status = Status::Ok;
                    }
                }
            }
        }
    };
    if let Some(code) = status.code() {
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Ok(ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)));
        }
    }
    Ok(ExitCode::from(1))
}

/// The signals a job is told of.
struct Signals {
    #[cfg(unix)]
    streams: Vec<(i32, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                (libc::SIGINT, SignalKind::interrupt()),
                (libc::SIGTERM, SignalKind::terminate()),
                (libc::SIGHUP, SignalKind::hangup()),
            ];
            let streams = kinds.into_iter().filter_map(|(n, kind)| signal(kind).ok().map(|s| (n, s))).collect();
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal that arrived.
    async fn next(&mut self) -> Option<i32> {
        #[cfg(unix)]
        {
            if self.streams.is_empty() {
                return std::future::pending().await;
            }
            let waits = self.streams.iter_mut().map(|(n, s)| {
                let n = *n;
                Box::pin(async move { s.recv().await.map(|()| n) })
            });
            futures_util::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }

    /// Passes `signal` on to the job. A SIGINT typed at the terminal reached the job already
    /// (it is in the terminal's foreground group with this process): sent again, it would count
    /// twice.
    fn forward(&self, signal: i32, pid: Option<u32>) {
        #[cfg(unix)]
        {
            let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else { return };
            // SAFETY: tcgetpgrp and getpgrp only read the process's and the terminal's state.
            let from_terminal = signal == libc::SIGINT && unsafe { libc::tcgetpgrp(0) == libc::getpgrp() };
            if !from_terminal {
                // SAFETY: kill only sends a signal to the job this process started.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
    }
}

/// The shell's completion script: it asks this program for candidates as the user types, so
/// session names complete too. Written whole or not at all (a closed stdout is not a panic).
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let Some(completer) = shells.completer(&name) else {
        return Err(super::bad_input(format!("no completion for {name}; try bash, zsh, fish, elvish or powershell")));
    };
    // Called by name, as the user calls it: a script that names one build's path goes stale when
    // the binary moves or is upgraded elsewhere.
    let mut script = Vec::new();
    completer
        .write_registration(COMPLETE_VAR, "wbsessions", "wbsessions", "wbsessions", &mut script)
        .context("cannot write the completions")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).context("cannot write the completions")?;
    Ok(ExitCode::SUCCESS)
}
