//! The command-line front end: each subcommand, its output and its exit code. The only place
//! besides `main` where `anyhow` is used.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, SimArgs};
use crate::config::Settings;
use crate::time::Clock;

mod headless;
mod interactive;
mod signin;

/// A problem with what the user asked for: exit code 2, and nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn bad_input(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.to_string()))
}

pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.is::<BadInput>() || c.is::<crate::config::ConfigError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Errors are one line: the context chain joined, without repeats.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

pub fn run(cli: Cli, store_from_flag: bool) -> Result<ExitCode> {
    if let Some(Command::Completions { shell }) = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "wbsessions", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let command = cli.command;
    let settings = Settings::load(&cli.global)?;
    let _log = init_logging(&settings);
    // One thread: the work is waiting on the network, and cross-thread wake-ups cost more than they give.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let Some(command) = command else { return interactive::dashboard(&settings, None).await };
        match command {
            Command::Demo => interactive::demo(&settings, store_from_flag).await,
            Command::Sim(args) => sim(args).await,
            Command::Add(args) => headless::add(&settings, args).await,
            Command::Create(args) => headless::create(&settings, args).await,
            Command::List(args) => headless::list(&settings, args.json),
            Command::Show(args) => headless::show(&settings, &args.name, args.json),
            Command::Id(args) => headless::id(&settings, &args.name),
            Command::Refresh(args) => headless::refresh(&settings, args).await,
            Command::Close(args) => headless::close(&settings, &args.names).await,
            Command::Remove(args) => headless::remove(&settings, &args.names),
            Command::Run(args) => headless::run(&settings, args.json).await,
            Command::Login(args) => signin::login(&settings, args).await,
            Command::Logout => signin::logout(&settings),
            Command::Whoami => signin::whoami(&settings),
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

fn init_logging(settings: &Settings) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    std::fs::create_dir_all(&settings.log_dir).ok()?;
    let appender = tracing_appender::rolling::never(&settings.log_dir, "wbsessions.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_new(format!("wbsessions={}", settings.log_level)).ok()?;
    tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter(filter).try_init().ok()?;
    Some(guard)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn sim(args: SimArgs) -> Result<ExitCode> {
    let config = args.to_config();
    let running = crate::sim::start(config, Clock::system(), args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}", running.addr)?;
    out.flush()?;
    // The rest is for people; a reader that only wanted the address may have gone already.
    let mut notes = String::new();
    for (id, path) in &running.sim.config().workbooks {
        notes.push_str(&format!("workbook me/drive/items/{id}"));
        if let Some(p) = path {
            notes.push_str(&format!("  (also /me/drive/root:/{p}:)"));
        }
        notes.push('\n');
    }
    notes.push_str(&format!(
        "Graph endpoint {}; sign-in at {}; stop with Ctrl-C\n",
        running.graph_url(),
        running.login_url()
    ));
    let _ = out.write_all(notes.as_bytes()).and_then(|_| out.flush());
    drop(out);
    shutdown_signal().await;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
