//! The command-line front end: each subcommand, its output and its exit code. The only place
//! besides `main` where `anyhow` is used, and the only one that uses the simulator.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, SimArgs, SimBatchArg};
use crate::config::Settings;
use crate::sim::{SimBatch, SimConfig};
use crate::time::Clock;

mod front;
mod headless;
mod import;
mod interactive;
mod keeping;
mod output;
mod proxy;
mod scripts;
mod signin;

/// A problem with what the user asked for: exit code 2, and nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadInput(pub String);

pub(crate) fn bad_input(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.to_string()))
}

/// The exit code of a command stopped by Ctrl-C, as a shell reports an interrupt.
pub(crate) const INTERRUPTED: u8 = 130;

/// Stopped by Ctrl-C or SIGTERM before it was done: exit 130, as a shell reports an interrupt.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; what finished is recorded")]
pub(crate) struct Interrupted;

/// Whether standard output is a pipe whose reader has gone, found without writing to it.
#[cfg(unix)]
pub(crate) fn stdout_gone() -> bool {
    let mut out = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: one valid pollfd and a zero timeout: poll only reads the descriptor's state.
    let ready = unsafe { libc::poll(&mut out, 1, 0) };
    ready > 0 && out.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(not(unix))]
pub(crate) fn stdout_gone() -> bool {
    false
}

/// Standard output went away (a closed pipe, a full disk): the command ends quietly.
fn is_closed_output(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::StorageFull | std::io::ErrorKind::WriteZero
            ) || io.raw_os_error() == Some(libc::ENOSPC)
        })
    })
}

pub(crate) fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.is::<Interrupted>()) {
        ExitCode::from(INTERRUPTED)
    } else if e.chain().any(|c| c.is::<BadInput>() || c.is::<crate::config::ConfigError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Errors are one line: the context chain joined, without repeats, with nothing a terminal
/// would act on.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = crate::text::clean(&cause.to_string(), 2000);
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// What `main` prints and returns for an error: nothing at all when stdout was closed under us
/// (`| head`), one line on stderr otherwise.
pub fn report(e: &anyhow::Error) -> ExitCode {
    if is_closed_output(e) {
        return ExitCode::from(1);
    }
    let _ = writeln!(std::io::stderr(), "wbsessions: {}", one_line(e));
    exit_code_of(e)
}

/// The process's file-creation mask before this program tightened it, for commands it runs.
#[cfg(unix)]
static INHERITED_UMASK: std::sync::OnceLock<libc::mode_t> = std::sync::OnceLock::new();

/// Everything this program creates (store, logs, lock, token cache, temp files) is the user's
/// alone, whatever the umask it was started with.
fn private_by_default() {
    #[cfg(unix)]
    {
        // SAFETY: umask only swaps the process's file-creation mask.
        let before = unsafe { libc::umask(0o077) };
        let _ = INHERITED_UMASK.set(before);
    }
}

/// The umask the user had, for a command `exec` runs on their behalf.
#[cfg(unix)]
pub(crate) fn inherited_umask() -> Option<libc::mode_t> {
    INHERITED_UMASK.get().copied()
}

pub fn run(cli: Cli, store_from_flag: bool) -> Result<ExitCode> {
    private_by_default();
    if let Some(Command::Completions { shell }) = cli.command {
        return scripts::completions(shell);
    }
    let command = cli.command;
    if cli.dashboard.proxy && command.is_some() {
        return Err(bad_input(
            "--proxy before a command is the dashboard's; for a proxy without a dashboard use `wbsessions run --proxy` or `wbsessions proxy`",
        ));
    }
    let mut overrides = cli.global.overrides();
    if overrides.token.as_deref() == Some("-") {
        overrides.token = Some(read_token_from_stdin()?);
    }
    if overrides.json
        && let Some(what) = match &command {
            None | Some(Command::Demo) => Some("the dashboard"),
            Some(Command::Exec(_)) => Some("exec (its output is the command's)"),
            _ => None,
        }
    {
        return Err(bad_input(format!(
            "{what} has no JSON output; --json is for the commands that print sessions or outcomes"
        )));
    }
    let mut settings = Settings::load(&overrides)?;
    // The demo keeps its log and its dashboard state with its throwaway store: it touches none
    // of the user's files.
    let scratch = match command {
        Some(Command::Demo) => {
            let dir = interactive::scratch_dir()?;
            settings.log_dir = dir.join("logs");
            settings.ui_state = dir.join("ui.json");
            Some(dir)
        }
        _ => None,
    };
    let _log = init_logging(&settings)?;
    // One thread: the work is waiting on the network, and cross-thread wake-ups cost more than they give.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let Some(command) = command else {
            let proxy = cli.dashboard.proxy.then_some(&cli.dashboard.proxy_options);
            return interactive::dashboard(&settings, None, proxy).await;
        };
        match command {
            Command::Demo => interactive::demo(&settings, store_from_flag, scratch).await,
            Command::Sim(args) => sim(args, settings.json).await,
            Command::Add(args) => keeping::add(&settings, args).await,
            Command::Create(args) => keeping::create(&settings, args).await,
            Command::List => headless::list(&settings).await,
            Command::Keepers => headless::keepers(&settings),
            Command::Show(args) => headless::show(&settings, &args.name).await,
            Command::Id(args) => headless::id(&settings, &args.name, args.any).await,
            Command::Refresh(args) => keeping::refresh(&settings, args).await,
            Command::Close(args) => keeping::close(&settings, &args.names).await,
            Command::Remove(args) => keeping::remove(&settings, &args.names).await,
            Command::Edit(args) => keeping::edit(&settings, args).await,
            Command::Recreate(args) => keeping::recreate(&settings, &args.names).await,
            Command::Exec(args) => scripts::exec(&settings, args).await,
            Command::Import(args) => import::import(&settings, args).await,
            Command::Run(args) => keeping::run(&settings, args).await,
            Command::Proxy(args) => proxy::proxy(&settings, args).await,
            Command::Login(args) => signin::login(&settings, args).await,
            Command::Logout => signin::logout(&settings),
            Command::Whoami => signin::whoami(&settings),
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

fn read_token_from_stdin() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut text).context("cannot read the token from standard input")?;
    let token = text.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(bad_input("--token - read no single token from standard input"));
    }
    Ok(token)
}

/// The log: daily files in the state folder, a week of them kept; never the terminal. A log
/// folder or today's file that is a symbolic link is refused: what is logged would land in its
/// target. Any other trouble only leaves the log unwritten.
fn init_logging(settings: &Settings) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let today = settings.log_dir.join(format!("wbsessions.{}.log", chrono::Utc::now().format("%Y-%m-%d")));
    for path in [&settings.log_dir, &today] {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(bad_input(format!(
                "the log {} is a symbolic link, which is refused (what is logged would land in its target); remove it",
                path.display()
            )));
        }
    }
    Ok(start_logging(settings))
}

fn start_logging(settings: &Settings) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    crate::files::private_dir(&settings.log_dir).ok()?;
    let appender = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("wbsessions")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&settings.log_dir)
        .ok()?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_new(format!("wbsessions={}", settings.log_level)).ok()?;
    tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter(filter).try_init().ok()?;
    Some(guard)
}

/// Resolves on SIGINT or SIGTERM.
/// SIGINT or SIGTERM. The handlers are in place when this returns, not when the future is
/// first polled: a signal that comes while a command is still starting (its store opened, its
/// role taken) is heard, not left to kill the process.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = Signal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => Signal::Interrupt,
                    _ = terminate.recv() => Signal::Terminate,
                },
                (Ok(mut interrupt), Err(_)) => {
                    interrupt.recv().await;
                    Signal::Interrupt
                }
                (Err(_), _) => {
                    let _ = tokio::signal::ctrl_c().await;
                    Signal::Interrupt
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

/// How a process was asked to stop: Ctrl-C (exit 130, as a shell reports it) or a service
/// manager's SIGTERM (a stop as planned: exit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Interrupt,
    Terminate,
}

/// The simulator as `wbsessions sim` describes it.
pub fn sim_config(args: &SimArgs) -> SimConfig {
    SimConfig {
        persistent_expiry: args.persistent_expiry,
        non_persistent_expiry: args.non_persistent_expiry,
        token: args.token.clone(),
        workbooks: args
            .workbook
            .iter()
            .map(|w| match w.split_once('=') {
                Some((id, path)) => (id.to_string(), Some(path.trim_matches('/').to_string())),
                None => (w.clone(), None),
            })
            .collect(),
        async_create: args.async_create,
        throttle_rate: args.throttle_rate,
        error_rate: args.error_rate,
        latency: args.latency,
        rate_limit: args.rate_limit,
        failing_workbooks: args.failing_workbook.clone(),
        unsupported_workbooks: args.unsupported_workbook.clone(),
        approve_after: args.approve_after,
        token_lifetime: args.token_lifetime,
        seed: args.seed,
        batch: match args.batch {
            SimBatchArg::Honoured => SimBatch::Honoured,
            SimBatchArg::Ignored => SimBatch::Ignored,
            SimBatchArg::Missing => SimBatch::Missing,
        },
    }
}

async fn sim(args: SimArgs, json: bool) -> Result<ExitCode> {
    let config = sim_config(&args);
    let running = crate::sim::start(config, Clock::system(), args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let mut out = std::io::stdout().lock();
    if json {
        let workbooks: Vec<String> =
            running.sim.config().workbooks.iter().map(|(id, _)| format!("me/drive/items/{id}")).collect();
        let value = serde_json::json!({
            "graph_url": running.graph_url(),
            "login_url": running.login_url(),
            "workbooks": workbooks,
        });
        writeln!(out, "{value}")?;
        out.flush()?;
        drop(out);
        let _ = shutdown_signal().await;
        running.stop().await;
        return Ok(ExitCode::SUCCESS);
    }
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
    let _ = shutdown_signal().await;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sim_flags_become_a_simulator() {
        let cli = Cli::try_parse_from(["wbsessions", "sim", "--workbook", "W1", "--workbook", "W2=/Reports/Q1.xlsx"])
            .unwrap();
        let Some(Command::Sim(args)) = cli.command else { panic!("not sim") };
        let config = sim_config(&args);
        assert_eq!(config.workbooks, [("W1".into(), None), ("W2".into(), Some("Reports/Q1.xlsx".into()))]);
    }
}
