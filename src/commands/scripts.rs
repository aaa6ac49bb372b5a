//! What scripts use: `exec`, which hands a command a live session, and shell completions.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::front::explain;
use super::keeping::ensure_alive;
use crate::cli::{COMPLETE_VAR, ExecArgs};
use crate::config::Settings;

/// Runs CMD once the session is known to be alive, with its id, workbook URL and name (and the
/// access token, if asked) in CMD's environment; returns CMD's exit code.
pub async fn exec(settings: &Settings, args: ExecArgs) -> Result<ExitCode> {
    let (session, graph, refreshed) = ensure_alive(settings, &args.name).await?;
    if let Err(e) = refreshed {
        anyhow::bail!(
            "{} is not alive ({}); the command was not run",
            args.name,
            explain(&e, Some(&session), &args.name)
        );
    }
    let mut command = std::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("WBSESSIONS_SESSION_ID", session.session_id.as_str())
        .env("WBSESSIONS_WORKBOOK_URL", session.workbook.url(&settings.graph_url))
        .env("WBSESSIONS_NAME", &session.name);
    if args.export_token {
        let token = graph.tokens.get().await?;
        command.env("WBSESSIONS_ACCESS_TOKEN", token.secret.expose());
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
    let status = match command.status() {
        Ok(status) => status,
        Err(e) => {
            // As a shell says it: 127 for a command that is not there, 126 for one that cannot run.
            writeln!(std::io::stderr().lock(), "wbsessions: cannot run {program}: {e}")?;
            return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }));
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

/// The shell's completion script: it asks this program for candidates as the user types, so
/// session names complete too. Written whole or not at all (a closed stdout is not a panic).
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let Some(completer) = shells.completer(&name) else {
        return Err(super::bad_input(format!("no completion for {name}; try bash, zsh, fish, elvish or powershell")));
    };
    let program = std::env::current_exe().map_or_else(|_| "wbsessions".to_string(), |p| p.display().to_string());
    let mut script = Vec::new();
    completer
        .write_registration(COMPLETE_VAR, "wbsessions", "wbsessions", &program, &mut script)
        .context("cannot write the completions")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).context("cannot write the completions")?;
    Ok(ExitCode::SUCCESS)
}
