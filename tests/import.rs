//! `import` as a user runs it: export → import round trips, CSV, one bad line refusing the lot,
//! and a running keeper that picks the new sessions up by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use wbsessions::time::Clock;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes `text` to `name` in `dir`; its path, as a command line takes it.
fn file_in(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn what_list_json_writes_imports_into_another_store_and_a_second_import_is_refused() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let from = tempfile::tempdir().unwrap();
    let source = Cli::new(&sim.url, from.path());
    source.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "30s"]);
    source.ok(&["create", "b", "--workbook", "me/drive/items/W1", "--non-persistent", "--recreate"]);
    source.ok(&["edit", "b", "--no-auto"]);
    let exported = source.ok(&["list", "--json"]);
    let file = from.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();

    let to = tempfile::tempdir().unwrap();
    let target = Cli::new(&sim.url, to.path());
    let out = target.ok(&["import", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "imported 2 sessions");
    let (before, after) = (json(&exported), json(&target.ok(&["list", "--json"])));
    for field in ["name", "workbook", "session_id", "mode", "recreate", "auto", "interval_secs", "last_refresh"] {
        for i in 0..2 {
            assert_eq!(before[i][field], after[i][field], "{field} of session {i} survives the round trip");
        }
    }
    // The ids still work at Graph: the imported sessions refresh.
    assert!(target.ok(&["refresh", "a", "b"]).matches("refresh ok 204").count() == 2);

    // The same file again: refused at its first clashing line, nothing changed.
    let out = target.output(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2 of") && stderr.contains("\"a\" is already tracked"), "{stderr}");
    assert!(stderr.contains("nothing was imported") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(names(&json(&target.ok(&["list", "--json"]))), ["a", "b"]);
}

#[test]
fn csv_lines_are_checked_like_add_and_one_bad_line_imports_nothing() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let file = dir.path().join("sessions.csv");
    std::fs::write(
        &file,
        "# name,workbook,session_id,interval,mode,recreate\n\
         c1,me/drive/items/W1,id-one,90s,persistent,true\n\
         c2,me/drive/items/W1,id-two\n\
         c3,me/drive/items/W1,id-three,30s,sometimes\n\
         c4,me/drive/items/W1,id-four,,non-persistent,no\n",
    )
    .unwrap();
    let out = cli.output(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("wbsessions: line 4 of") && stderr.contains("mode \"sometimes\""), "{stderr}");
    assert!(!cli.store.exists(), "nothing was imported: the store was not even made");

    let out = cli.output(&["import", "--skip-invalid", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "imported 3 sessions; skipped 1 invalid line");
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped line 4"));
    let list = json(&cli.ok(&["list", "--json"]));
    assert_eq!(names(&list), ["c1", "c2", "c4"]);
    assert_eq!(list[0]["interval_secs"], 90.0);
    assert_eq!(list[0]["recreate"], true);
    assert_eq!(list[2]["mode"], "non-persistent");
    assert_eq!(list[1]["status"], "new", "a session only known by its id is new until refreshed");

    // Standard input works too, and a duplicate inside one file is caught before anything is written.
    let mut child = cli
        .command(&["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"d1,me/drive/items/W1,id-d\nd2,me/drive/items/W1,id-d\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("line 2 of standard input: the session id of \"d2\" is in the file twice"),
        "{out:?}"
    );
    assert_eq!(names(&json(&cli.ok(&["list", "--json"]))), ["c1", "c2", "c4"]);
}

#[test]
fn a_running_keeper_picks_up_imported_sessions_within_a_second() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let from = tempfile::tempdir().unwrap();
    let source = Cli::new(&sim.url, from.path());
    for name in ["x", "y", "z"] {
        source.ok(&["create", name, "--workbook", "me/drive/items/W1"]);
    }
    // Exported as never refreshed, so the keeper refreshes them as soon as it sees them.
    let csv: String = json(&source.ok(&["list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{},{},{}\n",
                s["name"].as_str().unwrap(),
                s["workbook"].as_str().unwrap(),
                s["session_id"].as_str().unwrap()
            )
        })
        .collect();
    let file = from.path().join("new.csv");
    std::fs::write(&file, csv).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let mut keeper = cli.command(&["run", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = keeper.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    // Its first stderr line comes once it has read the store: anything imported after that
    // reaches it as a change, not as part of its first read.
    let mut stderr = BufReader::new(keeper.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("keeping 0 sessions"), "{first}");
    let imported_at = Instant::now();
    assert_eq!(cli.ok(&["import", file.to_str().unwrap()]).trim(), "imported 3 sessions");
    wait_for("the keeper to refresh the imported sessions", Duration::from_secs(10), || {
        let lines = lines.lock().unwrap();
        ["x", "y", "z"].iter().all(|name| {
            lines.iter().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["session"] == *name && v["action"] == "refresh" && v["status"] == "ok"
            })
        })
    });
    let took = imported_at.elapsed();
    sigterm(&keeper);
    let _ = keeper.wait();
    // Generous for a loaded machine: the keeper polls the store every 250 ms.
    assert!(took < Duration::from_secs(3), "picked up after {took:?}");
}

/// The files people actually have: Excel's CSV UTF-8 (a byte-order mark, quoted fields, columns in
/// its own order under a header), `list --json` through `jq -c` (one line) or `jq -c '.[]'` (an
/// object per line), and a typo in a key that must not be dropped without a word.
#[test]
fn the_forms_people_export_import_and_a_misspelt_key_is_refused() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let write = |name: &str, text: &str| file_in(dir.path(), name, text);

    let excel = write(
        "excel.csv",
        "\u{feff}Name,Session ID,Workbook,Interval\r\n\
         x1,\"id,with,commas\",me/drive/items/W1,2m\r\n\
         \"x2\",id-x2,\"me/drive/items/W1\",\r\n",
    );
    assert_eq!(cli.ok(&["import", &excel]).trim(), "imported 2 sessions");
    let listed = json(&cli.ok(&["list", "--json"]));
    assert_eq!(names(&listed), ["x1", "x2"]);
    assert_eq!(listed[0]["session_id"], "id,with,commas");
    assert_eq!(listed[0]["interval_secs"], 120.0);

    // `jq -c .` and `jq -c '.[]'` of an export, into fresh stores.
    let exported = json(&cli.ok(&["list", "--json"]));
    let one_line = write("one-line.json", &serde_json::to_string(&exported).unwrap());
    let per_line =
        write("per-line.jsonl", &exported.as_array().unwrap().iter().map(|s| format!("{s}\n")).collect::<String>());
    for file in [&one_line, &per_line] {
        let other = tempfile::tempdir().unwrap();
        let target = Cli::new(&sim.url, other.path());
        assert_eq!(target.ok(&["import", file]).trim(), "imported 2 sessions", "{file}");
        assert_eq!(names(&json(&target.ok(&["list", "--json"]))), ["x1", "x2"]);
    }

    let typo = write(
        "typo.json",
        "[\n{\"name\":\"t1\",\"workbook\":\"me/drive/items/W1\",\"session_id\":\"t-1\"},\n\
         {\"name\":\"t2\",\"workbook\":\"me/drive/items/W1\",\"session_id\":\"t-2\",\"recreat\":true}\n]\n",
    );
    let out = cli.output(&["import", &typo]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 3 of") && stderr.contains("recreat"), "the line and the key are named: {stderr}");

    let header_typo = write("header.csv", "name,workbok,session_id\nh1,me/drive/items/W1,h-1\n");
    let out = cli.output(&["import", &header_typo]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1 of") && stderr.contains("unknown column \"workbok\""), "{stderr}");
    assert!(!stderr.contains("--skip-invalid"), "skipping lines cannot mend a header: {stderr}");

    let long = write("long.csv", "l1,me/drive/items/W1,l-1,2d\n");
    let out = cli.output(&["import", &long]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be 1s to 24h"), "one rule for intervals: {out:?}");
    assert_eq!(names(&json(&cli.ok(&["list", "--json"]))), ["x1", "x2"], "nothing else was imported");
}

/// What a second look found: headers in any order, the file's own line numbers whatever the line
/// ends and comments, objects spread over lines, and a bad file that leaves no store behind.
#[test]
fn errors_name_the_files_own_line_and_a_bad_file_creates_nothing() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let write = |name: &str, text: &str| file_in(dir.path(), name, text);
    let refused = |file: &str| {
        let out = cli.output(&["import", file]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };

    let crlf =
        write("crlf.csv", "\u{feff}# sessions\r\nok,me/drive/items/W1,S0\r\n\r\n# more\r\nb!,me/drive/items/W1,S1\r\n");
    let stderr = refused(&crlf);
    assert!(stderr.contains("line 5 of"), "{stderr}");
    assert!(!cli.store.exists(), "a refused file leaves no store behind");

    let unclosed = write("unclosed.csv", "u1,me/drive/items/W1,\"U-1\nu2,me/drive/items/W1,U-2\n");
    let stderr = refused(&unclosed);
    assert!(stderr.contains("line 1 of") && stderr.contains("closing \" is missing"), "{stderr}");

    let typo = write("typo.csv", "nmae,workbook,session_id\nx,me/drive/items/W1,S1\n");
    assert!(refused(&typo).contains("unknown column \"nmae\""));

    let pretty = write(
        "pretty.json",
        "{\n  \"name\": \"p1\",\n  \"workbook\": \"me/drive/items/W1\",\n  \"session_id\": \"P-1\"\n}\n\
         {\n  \"name\": \"p2\",\n  \"workbook\": \"me/drive/items/W1\",\n  \"session_id\": \"P-2\",\n  \"recreat\": true\n}\n",
    );
    let stderr = refused(&pretty);
    assert!(stderr.contains("line 10 of") && stderr.contains("recreat"), "the key's own line: {stderr}");
    assert!(!stderr.contains("ImportRecord") && !stderr.contains("column"), "{stderr}");

    let empty = write("empty.csv", "# nothing yet\n\n");
    assert!(refused(&empty).contains("holds no sessions"));

    let reordered = write("reordered.csv", "workbook,name,session_id\nme/drive/items/W1,r1,R-1\n");
    assert_eq!(cli.ok(&["import", &reordered]).trim(), "imported 1 session");
    let pretty_ok = write(
        "pretty-ok.json",
        "{\n  \"name\": \"p1\",\n  \"workbook\": \"me/drive/items/W1\",\n  \"session_id\": \"P-1\"\n}\n",
    );
    assert_eq!(cli.ok(&["import", &pretty_ok]).trim(), "imported 1 session");

    // Everything refused, even when refusals are allowed, is a failed import.
    let out = cli.output(&["import", "--skip-invalid", &reordered]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped line 2: a session named \"r1\" is already tracked"));
}

/// Times from a machine whose clock runs ahead must not put the first refresh after Graph expired
/// the session.
#[test]
fn times_in_the_future_are_read_as_now() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let file = dir.path().join("ahead.json");
    std::fs::write(
        &file,
        format!(
            "{{\"name\":\"skew\",\"workbook\":\"me/drive/items/W1\",\"session_id\":\"SK\",\"status\":\"ok\",\"last_refresh\":\"{ahead}\",\"created_at\":\"{ahead}\"}}\n"
        ),
    )
    .unwrap();
    cli.ok(&["import", file.to_str().unwrap()]);
    let listed = json(&cli.ok(&["list", "--json"]));
    let after = chrono::Utc::now();
    for field in ["last_refresh", "created_at"] {
        let t: chrono::DateTime<chrono::Utc> = listed[0][field].as_str().unwrap().parse().unwrap();
        assert!(t <= after, "{field} {t} is after now {after}");
    }
}

#[test]
fn list_json_imported_into_a_new_store_lists_the_same_settings_field_by_field() {
    let sim = SimThread::start(sim_config(&[("W1", None), ("W2", None)]), Clock::system());
    let from = tempfile::tempdir().unwrap();
    let source = Cli::new(&sim.url, from.path());
    source.ok(&["create", "own", "--workbook", "me/drive/items/W1", "--interval", "90s", "--recreate"]);
    source.ok(&["create", "default", "--workbook", "me/drive/items/W2"]);
    source.ok(&["create", "scratch", "--workbook", "me/drive/items/W1", "--non-persistent", "--interval", "2m"]);
    source.ok(&["create", "manual", "--workbook", "me/drive/items/W2", "--interval", "45s"]);
    source.ok(&["edit", "manual", "--no-auto"]);
    let exported = source.ok(&["list", "--json"]);
    let file = from.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();
    let to = tempfile::tempdir().unwrap();
    let target = Cli::new(&sim.url, to.path());
    target.ok(&["import", file.to_str().unwrap()]);
    let settings = |list: &serde_json::Value| {
        let mut rows: Vec<Vec<serde_json::Value>> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                ["name", "workbook", "mode", "own_interval_secs", "interval_secs", "recreate", "auto"]
                    .map(|k| s[k].clone())
                    .to_vec()
            })
            .collect();
        rows.sort_by_key(|r| r[0].to_string());
        rows
    };
    assert_eq!(settings(&json(&exported)), settings(&json(&target.ok(&["list", "--json"]))));

    // A file that says only `interval_secs` (the interval in force) keeps it as the session's own.
    let hand = file_in(
        to.path(),
        "hand.jsonl",
        r#"{"name":"h","workbook":"me/drive/items/W1","session_id":"S-hand","interval_secs":75}"#,
    );
    target.ok(&["import", &hand]);
    let shown = json(&target.ok(&["show", "h", "--json"]));
    assert_eq!((shown["own_interval_secs"].as_f64(), shown["interval_secs"].as_f64()), (Some(75.0), Some(75.0)));
}

/// Endless input (`yes garbage | wbsessions import -`) is refused at its first bad line, as it
/// is read: nothing waits for an end that never comes, and memory stays flat.
#[test]
fn endless_input_is_refused_at_its_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("http://127.0.0.1:9/v1.0", dir.path());
    let good = r#"{"name":"a","workbook":"me/drive/items/W1","session_id":"S-1"}"#;
    for (line, expected) in [("garbage", "line 1"), (good, "line 2")] {
        let mut child = cli
            .command(&["import", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let text = format!("{line}\n").repeat(10_000);
        // Writes until the importer stops reading: it hangs up once it refused the input.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && stdin.write_all(text.as_bytes()).is_ok() {}
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected) && stderr.contains("nothing was imported"), "{stderr}");
    }
    assert!(!cli.store.exists(), "nothing was created");
}

/// With `--skip-invalid`, a file of many bad lines says the first thousand and counts the rest.
#[test]
fn many_skipped_lines_are_counted_not_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("http://127.0.0.1:9/v1.0", dir.path());
    let mut text = String::from(r#"{"name":"a","workbook":"me/drive/items/W1","session_id":"S-1"}"#);
    text.push('\n');
    text.push_str(&"{\"name\":\"-bad\"}\n".repeat(5000));
    let file = file_in(dir.path(), "many.jsonl", &text);
    let out = cli.output(&["--json", "import", "--skip-invalid", &file]);
    assert_eq!(out.status.code(), Some(0));
    let result = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((result["imported"].as_u64(), result["skipped_count"].as_u64()), (Some(1), Some(5000)));
    assert_eq!(result["skipped"].as_array().map(Vec::len), Some(1000));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 4,000 more invalid lines"));
}
