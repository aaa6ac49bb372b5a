//! The real binary in a real terminal: `wbsessions demo` inside tmux, driven by keys, read back
//! from the screen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cli, SimThread, sigterm, sim_config, wait_for};

struct Tmux {
    socket: String,
}

/// Polls that `check` keeps holding for `span` (an absence can only be watched for a while).
fn holds_for(span: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + span;
    while std::time::Instant::now() < end {
        if !check() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
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
        "env -i PATH=\"$PATH\" TERM=xterm-256color NO_COLOR=1 HOME={home} XDG_STATE_HOME={home}/state XDG_DATA_HOME={home}/data XDG_CONFIG_HOME={home}/config {bin} demo; \
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
    wait_for("the help overlay", Duration::from_secs(3), || tmux.screen().contains("keys (esc closes)"));
    // The help scrolls: page through it and gather what it shows.
    let mut help = tmux.screen();
    for _ in 0..6 {
        let before = tmux.screen();
        tmux.keys("PageDown");
        // Until the page turns (or a moment passes at the last page).
        let end = std::time::Instant::now() + Duration::from_secs(1);
        while tmux.screen() == before && std::time::Instant::now() < end {
            std::thread::yield_now();
        }
        help.push_str(&tmux.screen());
    }
    for binding in wbsessions::tui::keymap::KEYMAP {
        assert!(help.contains(binding.help), "the help does not name {:?}:\n{help}", binding.label);
    }
    for status in wbsessions::session::Status::ALL {
        assert!(help.contains(status.meaning()), "the help's legend lacks {status}");
    }
    tmux.keys("Escape");
    wait_for("the help to close", Duration::from_secs(3), || !tmux.screen().contains("keys (esc closes)"));
    tmux.keys("q");
    wait_for("the demo to exit", Duration::from_secs(10), || !read(&stty_file).is_empty());
    assert_eq!(read(&exit_file).trim(), "0");
    let stty = read(&stty_file);
    assert!(stty.contains(" icanon") && stty.contains(" echo"), "the terminal was left raw: {stty}");
    let flags = tmux.run(&["display-message", "-p", "-t", "e2e", "#{alternate_on} #{cursor_flag}"]);
    assert_eq!(flags.trim(), "0 1", "alternate screen off, cursor visible");
}

#[test]
fn a_watching_dashboard_pauses_the_driver_and_takes_over_as_paused() {
    if tmux_missing() {
        return;
    }
    let sim = SimThread::start(sim_config(&[("W1", None), ("W2", None)]), wbsessions::time::Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    cli.ok(&["create", "b", "--workbook", "me/drive/items/W2", "--interval", "1s"]);
    let driver =
        cli.command(&["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the driver's lock", Duration::from_secs(5), || common::driver_pid(&cli.store).is_some());
    let script = format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color NO_COLOR=1 HOME={home} XDG_STATE_HOME={home}/state XDG_DATA_HOME={home}/data \
         XDG_CONFIG_HOME={home}/config WBSESSIONS_STORE={store} WBSESSIONS_GRAPH_URL={url} WBSESSIONS_TOKEN=T {bin}; sleep 30",
        home = cli.home.display(),
        store = cli.store.display(),
        url = sim.url,
        bin = env!("CARGO_BIN_EXE_wbsessions"),
    );
    let tmux = Tmux { socket: format!("wbsessions-e2e-watch-{}", std::process::id()) };
    tmux.run(&["new-session", "-d", "-s", "e2e", "-x", "120", "-y", "30", &script]);
    wait_for("the dashboard to watch", Duration::from_secs(10), || tmux.screen().contains("watching, pid"));
    let refreshed = || sim.sim.stats().refreshed;

    // p in the watcher pauses the driver: within two seconds its refreshes stop.
    tmux.keys("p");
    wait_for("the pause in the header", Duration::from_secs(3), || tmux.screen().contains("auto paused"));
    let quiet = || {
        let n = refreshed();
        holds_for(Duration::from_millis(1200), || refreshed() == n)
    };
    wait_for("refreshes under way to land", Duration::from_secs(3), &quiet);
    let paused_at = refreshed();
    assert!(holds_for(Duration::from_secs(5), || refreshed() == paused_at), "the driver kept refreshing while paused");
    // p again resumes them.
    tmux.keys("p");
    wait_for("refreshes to resume", Duration::from_secs(5), || refreshed() >= paused_at + 2);

    // Paused again, the driver stops: the watcher takes over, still paused, and says so.
    tmux.keys("p");
    wait_for("the pause in the header", Duration::from_secs(3), || tmux.screen().contains("auto paused"));
    sigterm(&driver);
    wait_for("the takeover", Duration::from_secs(10), || {
        let screen = tmux.screen();
        screen.contains("wbsessions driver") && screen.contains("auto paused")
    });
    wait_for("refreshes under way to land", Duration::from_secs(3), &quiet);
    let taken_at = refreshed();
    assert!(holds_for(Duration::from_secs(3), || refreshed() == taken_at), "a paused takeover refreshed anyway");
    tmux.keys("p");
    wait_for("the new driver to refresh", Duration::from_secs(5), || refreshed() >= taken_at + 2);
    assert!(tmux.screen().contains("auto on"));
    tmux.keys("q");
    let mut driver = driver;
    let _ = driver.wait();
}

#[test]
fn y_puts_the_selected_sessions_id_in_the_terminals_clipboard() {
    if tmux_missing() {
        return;
    }
    let sim = SimThread::start(sim_config(&[("W1", None)]), wbsessions::time::Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "first", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "second", "--workbook", "me/drive/items/W1"]);
    let second = cli.ok(&["id", "second"]).trim().to_string();
    let script = format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color HOME={home} XDG_STATE_HOME={home}/state XDG_DATA_HOME={home}/data \
         XDG_CONFIG_HOME={home}/config WBSESSIONS_STORE={store} WBSESSIONS_GRAPH_URL={url} WBSESSIONS_TOKEN=T {bin}; sleep 30",
        home = cli.home.display(),
        store = cli.store.display(),
        url = sim.url,
        bin = env!("CARGO_BIN_EXE_wbsessions"),
    );
    let tmux = Tmux { socket: format!("wbsessions-e2e-copy-{}", std::process::id()) };
    tmux.run(&["-f", "/dev/null", "new-session", "-d", "-s", "e2e", "-x", "120", "-y", "30", &script]);
    tmux.run(&["set-option", "-g", "set-clipboard", "on"]);
    wait_for("the two sessions", Duration::from_secs(10), || {
        let screen = tmux.screen();
        screen.contains("first") && screen.contains("second")
    });
    tmux.keys("j");
    tmux.keys("y");
    wait_for("the copy to land in tmux's buffer", Duration::from_secs(5), || {
        tmux.run(&["show-buffer"]).trim() == second
    });
    assert!(tmux.screen().contains("copied the session id of second"));
    tmux.keys("q");
}
