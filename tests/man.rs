//! The man pages under docs/man are what the command line says of itself: generated from the
//! same clap definitions as `--help`, and checked here so that they never fall behind.
//! `UPDATE_MAN=1 cargo test --test man` writes them anew.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use clap::CommandFactory;

/// The page of a command and of each subcommand, by file name.
fn pages() -> Vec<(String, Vec<u8>)> {
    let mut command = wbsessions::cli::Cli::command();
    // Built, so that each subcommand carries the global options and its full name.
    command.build();
    let mut pages = Vec::new();
    let mut render = |name: String, command: clap::Command| {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page).unwrap();
        pages.push((name, page));
    };
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wbsessions-{}", sub.get_name());
        render(format!("{name}.1"), sub.clone().display_name(name));
    }
    render("wbsessions.1".into(), command);
    pages
}

#[test]
fn the_man_pages_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let update = std::env::var_os("UPDATE_MAN").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, page) in pages() {
        let path = dir.join(&name);
        if update {
            std::fs::write(&path, &page).unwrap();
            continue;
        }
        let current = std::fs::read(&path).unwrap_or_default();
        assert!(current == page, "docs/man/{name} is out of date: UPDATE_MAN=1 cargo test --test man writes it anew");
    }
}
