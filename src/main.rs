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
    let matches = match Cli::command().try_get_matches() {
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
