use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use wbsessions::cli::Cli;
use wbsessions::commands;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The demo keeps a store only when told so on its command line, never from the environment.
    let store_from_flag = matches.value_source("store") == Some(clap::parser::ValueSource::CommandLine);
    match commands::run(cli, store_from_flag) {
        Ok(code) => code,
        Err(e) => commands::report(&e),
    }
}
