//! The real binary in a real terminal: `wbsessions demo` inside tmux, driven by keys, read back
//! from the screen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::wait_for;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out =
            Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs (CI installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "e2e"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "e2e", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether tmux can run here; CI installs it, a developer's machine may not have it.
fn tmux_missing() -> bool {
    let missing = Command::new("tmux").arg("-V").output().map_or(true, |o| !o.status.success());
    if missing {
        // Straight to stderr, past the test harness's capture, so that the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: tmux is not installed, so the dashboard's end-to-end test did not run (CI installs tmux)"
        );
    }
    missing
}

#[test]
fn demo_refresh_help_and_quit_in_a_real_terminal() {
    if tmux_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit");
    let stty_file = dir.path().join("stty");
    let home = dir.path().join("home");
    let script = format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color HOME={home} XDG_STATE_HOME={home}/state XDG_DATA_HOME={home}/data XDG_CONFIG_HOME={home}/config {bin} demo; \
         echo $? > {exit}; stty -a > {stty}; sleep 30",
        home = home.display(),
        bin = env!("CARGO_BIN_EXE_wbsessions"),
        exit = exit_file.display(),
        stty = stty_file.display(),
    );
    let tmux = Tmux { socket: format!("wbsessions-e2e-{}", std::process::id()) };
    tmux.run(&["new-session", "-d", "-s", "e2e", "-x", "120", "-y", "40", &script]);

    let names = [
        "budget-live",
        "sales-pipeline",
        "inventory-scratch",
        "forecast-model",
        "legacy-macros",
        "nightly-import",
        "report-cache",
        "ops-by-path",
    ];
    wait_for("the eight demo sessions", Duration::from_secs(30), || {
        let screen = tmux.screen();
        names.iter().all(|n| screen.contains(n))
    });
    assert!(tmux.screen().contains("DEMO"));

    // Let the creation's "just now" age first, so that the refresh is what shows.
    wait_for("the first row to age", Duration::from_secs(5), || {
        tmux.screen().lines().find(|l| l.contains("budget-live")).is_some_and(|l| l.contains("s ago"))
    });
    tmux.keys("r");
    wait_for("the selected row's refresh", Duration::from_secs(5), || {
        tmux.screen()
            .lines()
            .find(|l| l.contains("budget-live"))
            .is_some_and(|l| l.contains("just now") || l.contains(" 0s ago"))
    });

    tmux.keys("?");
    wait_for("the help overlay", Duration::from_secs(3), || tmux.screen().contains("keys (any key closes)"));
    let help = tmux.screen();
    for binding in wbsessions::tui::keymap::KEYMAP {
        assert!(help.contains(binding.help), "the help does not name {:?}:\n{help}", binding.label);
    }
    tmux.keys("Escape");
    wait_for("the help to close", Duration::from_secs(3), || !tmux.screen().contains("keys (any key closes)"));
    tmux.keys("q");
    wait_for("the demo to exit", Duration::from_secs(10), || !read(&stty_file).is_empty());
    assert_eq!(read(&exit_file).trim(), "0");
    let stty = read(&stty_file);
    assert!(stty.contains(" icanon") && stty.contains(" echo"), "the terminal was left raw: {stty}");
    let flags = tmux.run(&["display-message", "-p", "-t", "e2e", "#{alternate_on} #{cursor_flag}"]);
    assert_eq!(flags.trim(), "0 1", "alternate screen off, cursor visible");
}
