use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use wbsessions::cli::Cli;
use wbsessions::commands;

/// Prints clap's answer (help, version, a usage error); a help that cannot be written is not a
/// success.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let printed = e.print();
    match u8::try_from(e.exit_code()) {
        Ok(0) if printed.is_err() => ExitCode::from(1),
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::from(2),
    }
}

fn main() -> ExitCode {
    // The shell's completion script asks through this variable; answered, the process ends here.
    clap_complete::CompleteEnv::with_factory(Cli::command).var(wbsessions::cli::COMPLETE_VAR).complete();
    let mut command = Cli::command();
    if let Some(logs) = wbsessions::config::default_log_dir() {
        command = command.after_help(format!("Logs: {} (a file a day, a week kept)", logs.display()));
    }
    // clap's own messages (usage errors, help) come before the flag is parsed.
    if std::env::args_os().any(|arg| arg == "--no-color") {
        command = command.color(clap::ColorChoice::Never);
    }
    let matches = match command.try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return clap_exit(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // The demo keeps a store only when told so on its command line, never from the environment.
    let store_from_flag = matches.value_source("store") == Some(clap::parser::ValueSource::CommandLine);
    match commands::run(cli, store_from_flag) {
        Ok(code) => code,
        Err(e) => commands::report(&e),
    }
}
