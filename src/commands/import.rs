//! `import`: sessions from a file into the store, all or nothing, without calling Graph.
//!
//! The form is told by the first character that is not blank or a `#` comment line: `[` is a JSON
//! array (what `list --json` writes, or the same through `jq -c`), `{` is one JSON object per line
//! (`jq -c '.[]'`), anything else is CSV: `name,workbook,session_id[,interval,mode,recreate]`, or
//! any order under a header row that names the columns. A byte-order mark (Excel's "CSV UTF-8")
//! is skipped.

use std::collections::HashSet;
use std::io::{Read, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::bad_input;
use super::front::{open_store, store_error};
use super::output::count;
use crate::cli::ImportArgs;
use crate::config::Settings;
use crate::session::{Draft, Mode, NewSession, SessionId, Status, TrackedSession};

/// One session as `list --json` writes it. Name, workbook and session id are required; what was
/// known about the session comes along when present. A key `list --json` never writes is refused:
/// a misspelt `recreat` must not be dropped without a word.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRecord {
    name: String,
    workbook: String,
    session_id: String,
    #[serde(default)]
    mode: Option<Mode>,
    /// The session's own interval, in seconds (`interval` in files of older versions).
    #[serde(default, alias = "interval")]
    own_interval_secs: Option<f64>,
    #[serde(default)]
    recreate: Option<bool>,
    #[serde(default)]
    auto: Option<bool>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    last_refresh: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    failures: Option<u32>,
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    owner: Option<String>,
    /// Written by `list --json` as the interval in force. Without `own_interval_secs`, it is the
    /// session's own, unless it is the default here for the session's mode.
    #[serde(default)]
    interval_secs: Option<f64>,
    /// Written by `list --json` as the expiry as of then: derived, so read past.
    #[serde(default, rename = "expires_at")]
    _expires_at: Option<IgnoredAny>,
}

/// What a session carries beyond what `add` takes: its state when it was listed.
struct Known {
    auto: Option<bool>,
    status: Option<Status>,
    last_refresh: Option<chrono::DateTime<chrono::Utc>>,
    failures: Option<u32>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    owner: Option<String>,
}

/// A session read from the file, checked exactly as `add` checks one.
fn checked(draft: Draft, known: Option<Known>, settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> Checked {
    let new = NewSession::check(&draft, &settings.engine.defaults).map_err(|e| e.to_string())?;
    if new.workbook.is_by_path() {
        return Err(format!(
            "{} is a by-path workbook, which needs Graph to resolve; import takes item ids (`wbsessions add` resolves paths)",
            new.workbook
        ));
    }
    let Some(id) = new.session_id.clone() else { return Err("no session id".into()) };
    let mut session = new.into_tracked(id, now);
    if let Some(known) = known {
        // The store keeps times from 1970 on; nothing this tool did happened earlier.
        for (what, at) in [("last_refresh", known.last_refresh), ("created_at", known.created_at)] {
            if let Some(at) = at.filter(|at| at.timestamp() < 0) {
                return Err(format!(
                    "{what} {} is before 1970; give a time this session could have been seen at, or leave it out",
                    at.to_rfc3339()
                ));
            }
        }
        session.auto = known.auto.unwrap_or(true);
        // A refreshing or stale session is just ok: the keeper that said so is not this one.
        session.status = match known.status {
            Some(Status::Refreshing | Status::Stale) => Status::Ok,
            Some(status) => status,
            None => Status::New,
        };
        // Times from a machine whose clock runs ahead would put the first refresh after Graph
        // expired the session: nothing here happened later than now.
        session.last_refresh = known.last_refresh.map(|t| t.min(now));
        session.failures = known.failures.unwrap_or(0);
        session.created_at = known.created_at.map_or(now, |t| t.min(now));
        // Entra's names do not depend on case: one spelling for all (`Graph::owner` does the same).
        session.owner = crate::text::clean_opt(known.owner.as_deref(), 200).map(|o| o.to_lowercase());
    }
    Ok(session)
}

type Checked = Result<TrackedSession, String>;

/// A JSON error as one line for a person: serde's own position (counted within the object) is
/// dropped, since the caller names the file's line, and no Rust type name shows.
fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.rfind(" at line ").map_or(text.as_str(), |at| &text[..at]);
    text.replace("struct ImportRecord", "a session object")
}

/// One session object; an error comes with the line within the object where it was found.
fn from_json(text: &str, settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> (usize, Checked) {
    match serde_json::from_str::<ImportRecord>(text) {
        Ok(record) => (0, from_record(record, settings, now)),
        Err(e) => (e.line().saturating_sub(1), Err(format!("not a session: {}", json_problem(&e)))),
    }
}

fn from_record(record: ImportRecord, settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> Checked {
    let seconds = |key: &str, secs: f64| {
        Duration::try_from_secs_f64(secs).map_err(|_| format!("{key} {secs} is not a number of seconds"))
    };
    let mode = if record.mode == Some(Mode::NonPersistent) { Mode::NonPersistent } else { Mode::Persistent };
    let interval = match (record.own_interval_secs, record.interval_secs) {
        (Some(secs), _) => Some(seconds("own_interval_secs", secs)?),
        (None, Some(secs)) => {
            Some(seconds("interval_secs", secs)?).filter(|i| *i != settings.engine.defaults.interval(mode))
        }
        (None, None) => None,
    };
    let draft = Draft {
        name: record.name,
        workbook: record.workbook,
        session_id: Some(record.session_id),
        non_persistent: record.mode == Some(Mode::NonPersistent),
        interval,
        recreate: record.recreate,
    };
    let known = Known {
        auto: record.auto,
        status: record.status,
        last_refresh: record.last_refresh,
        failures: record.failures,
        created_at: record.created_at,
        owner: record.owner,
    };
    checked(draft, Some(known), settings, now)
}

/// The CSV columns, in the order a file without a header gives them.
const COLUMNS: [&str; 6] = ["name", "workbook", "session_id", "interval", "mode", "recreate"];

fn column_of(header: &str) -> Option<usize> {
    let header = header.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    COLUMNS.iter().position(|c| *c == header || (*c == "session_id" && header == "sessionid"))
}

fn parse_mode(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "persistent" => Ok(false),
        "non-persistent" | "nonpersistent" => Ok(true),
        other => Err(format!("mode {other:?} is neither persistent nor non-persistent")),
    }
}

fn parse_flag(text: &str) -> Result<Option<bool>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "1" => Ok(Some(true)),
        "false" | "no" | "0" => Ok(Some(false)),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// Where each of [`COLUMNS`] sits in a record; required columns always have a place.
type Layout = [Option<usize>; 6];

const POSITIONAL: Layout = [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)];

/// A first row that names any column is a header, and then every field of it must name one: a
/// misspelt column is a mistake worth a line, not data.
fn header_layout(record: &csv::StringRecord) -> Option<Result<Layout, String>> {
    if !record.iter().any(|field| column_of(field).is_some()) {
        return None;
    }
    let mut layout: Layout = [None; 6];
    for (position, header) in record.iter().enumerate() {
        match column_of(header) {
            Some(column) if layout[column].is_none() => layout[column] = Some(position),
            Some(_) => return Some(Err(format!("the column {header:?} is named twice"))),
            None => {
                return Some(Err(format!("unknown column {header:?}; the columns are {}", COLUMNS.join(", "))));
            }
        }
    }
    if let Some(missing) = COLUMNS[..3].iter().zip(layout).find(|(_, at)| at.is_none()) {
        return Some(Err(format!("the header has no {} column", missing.0)));
    }
    Some(Ok(layout))
}

fn from_csv(
    record: &csv::StringRecord,
    layout: &Layout,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> Checked {
    if record.iter().any(|field| field.contains(['\n', '\r'])) {
        return Err("a quoted field runs on past its line: a closing \" is missing".into());
    }
    let width = layout.iter().flatten().max().map_or(0, |last| last + 1);
    if record.len() > width || record.len() < 3 {
        return Err(format!(
            "a CSV line holds {}",
            if layout == &POSITIONAL {
                "name,workbook,session_id[,interval,mode,recreate]".to_string()
            } else {
                format!("at most the {width} columns of the header")
            }
        ));
    }
    let field = |column: usize| layout[column].and_then(|at| record.get(at)).unwrap_or("").trim();
    let interval = match field(3) {
        "" => None,
        text => Some(crate::time::parse_duration(text).map_err(|e| e.to_string())?),
    };
    let draft = Draft {
        name: field(0).to_string(),
        workbook: field(1).to_string(),
        session_id: Some(field(2).to_string()),
        non_persistent: parse_mode(field(4))?,
        interval,
        recreate: parse_flag(field(5))?,
    };
    checked(draft, None, settings, now)
}

/// The offset of the first byte at or after `offset` that is not a line end and not in a `#` line.
fn skip_blank_and_comment_lines(text: &str, mut offset: usize) -> usize {
    let bytes = text.as_bytes();
    while let Some(&byte) = bytes.get(offset) {
        match byte {
            b'\r' | b'\n' => offset += 1,
            b'#' => offset = text[offset..].find('\n').map_or(text.len(), |end| offset + end + 1),
            _ => break,
        }
    }
    offset
}

/// The 1-based line of `offset` in `text`, counting on from the last answer (offsets only grow).
struct LineCounter<'t> {
    text: &'t str,
    offset: usize,
    line: usize,
}

impl LineCounter<'_> {
    fn line_at(&mut self, offset: usize) -> usize {
        let offset = offset.clamp(self.offset, self.text.len());
        self.line += self.text.as_bytes()[self.offset..offset].iter().filter(|b| **b == b'\n').count();
        self.offset = offset;
        self.line
    }
}

/// Why an import stopped: at a line of the file, and whether skipping invalid lines would help.
struct Stop {
    line: usize,
    why: String,
    skippable: bool,
}

impl Stop {
    fn file(line: usize, why: String) -> Stop {
        Stop { line, why, skippable: false }
    }
}

/// Calls `each` with every session of `text` and the line it starts on; it stops at the first
/// `Err` of `each`, or where the file as a whole cannot be read.
fn each_session(
    text: &str,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
    mut each: impl FnMut(usize, Checked) -> Result<(), String>,
) -> Result<(), Stop> {
    let mut each =
        |line: usize, session: Checked| each(line, session).map_err(|why| Stop { line, why, skippable: true });
    let first = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .and_then(|line| line.chars().next());
    if !matches!(first, Some('[' | '{')) {
        return each_csv_session(text, settings, now, each);
    }
    // `#` comment lines are blanked, not removed, so that offsets still give the file's lines.
    let blanked: String;
    let json = if text.lines().any(|l| l.trim_start().starts_with('#')) {
        blanked = text
            .split_inclusive('\n')
            .map(|l| if l.trim_start().starts_with('#') { " ".repeat(l.len() - 1) + "\n" } else { l.to_string() })
            .collect();
        blanked.as_str()
    } else {
        text
    };
    let mut lines = LineCounter { text: json, offset: 0, line: 1 };
    let mut line_of = |item: &RawValue| {
        let offset = (item.get().as_ptr() as usize).saturating_sub(json.as_ptr() as usize);
        lines.line_at(offset)
    };
    let items: Vec<&RawValue> = if first == Some('[') {
        serde_json::from_str(json)
            .map_err(|e| Stop::file(e.line(), format!("not a JSON array of sessions: {}", json_problem(&e))))?
    } else {
        // Objects one after another: one per line (`jq -c '.[]'`) or spread over lines (`jq '.[]'`).
        serde_json::Deserializer::from_str(json)
            .into_iter::<&RawValue>()
            .collect::<Result<_, _>>()
            .map_err(|e| Stop::file(e.line(), format!("not JSON: {}", json_problem(&e))))?
    };
    for item in items {
        let line = line_of(item);
        let (within, session) = from_json(item.get(), settings, now);
        each(line + within, session)?;
    }
    Ok(())
}

fn each_csv_session(
    text: &str,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
    mut each: impl FnMut(usize, Checked) -> Result<(), Stop>,
) -> Result<(), Stop> {
    // The csv crate's position is where it began reading, before the blank and comment lines it
    // skipped, and its line count misses CRLF: the line is counted here from the offset.
    let mut lines = LineCounter { text, offset: 0, line: 1 };
    let mut line_at = |position: Option<&csv::Position>| {
        position.map_or(0, |p| lines.line_at(skip_blank_and_comment_lines(text, p.byte() as usize)))
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut layout = None;
    for record in reader.records() {
        let record = record.map_err(|e| Stop::file(line_at(e.position()), format!("not CSV: {e}")))?;
        let line = line_at(record.position());
        let layout = match layout {
            Some(layout) => layout,
            None => match header_layout(&record) {
                Some(Ok(header)) => {
                    layout = Some(header);
                    continue;
                }
                Some(Err(why)) => return Err(Stop::file(line, why)),
                None => *layout.insert(POSITIONAL),
            },
        };
        each(line, from_csv(&record, &layout, settings, now))?;
    }
    Ok(())
}

/// Refusals said one by one with `--skip-invalid`; the rest are counted.
const MAX_REASONS: usize = 1000;

/// The longest line a file may have: a session is a few hundred bytes.
const MAX_LINE: usize = 1024 * 1024;

/// The most a file that must be read whole (CSV, JSON spread over lines) may hold: some 500,000
/// sessions in CSV. JSON with one session per line, as `list --json` writes it, is read a line at a
/// time instead, and has no such limit.
const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// The input, a line at a time: each at most `MAX_LINE` bytes and UTF-8, refused as soon as a
/// line is seen not to be, so that memory stays bounded whatever the input is.
struct Lines<R> {
    input: std::io::BufReader<R>,
    file: String,
    /// The number of the line `next` returns next.
    line: usize,
}

impl<R: Read> Lines<R> {
    fn new(input: R, file: &str) -> Self {
        Lines { input: std::io::BufReader::with_capacity(64 * 1024, input), file: file.to_string(), line: 1 }
    }

    /// The next line, with its end; `None` at the end of the input.
    fn next(&mut self) -> Result<Option<String>> {
        use std::io::BufRead;
        let mut bytes = Vec::new();
        loop {
            let buffer = match self.input.fill_buf() {
                Ok(buffer) => buffer,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad_input(format!("cannot read {}: {e}", self.file))),
            };
            if buffer.is_empty() {
                break;
            }
            let (taken, done) = match buffer.iter().position(|b| *b == b'\n') {
                Some(end) => (end + 1, true),
                None => (buffer.len(), false),
            };
            bytes.extend_from_slice(&buffer[..taken]);
            self.input.consume(taken);
            if bytes.len() > MAX_LINE + 2 {
                return Err(bad_input(format!(
                    "line {} of {} is longer than {} MiB; nothing was imported (a session is one line of a few \
                     hundred bytes: `jq -c '.[]'` puts each on its own)",
                    self.line,
                    self.file,
                    MAX_LINE / (1024 * 1024)
                )));
            }
            if done {
                break;
            }
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            bad_input(format!(
                "line {} of {} is not UTF-8 text; nothing was imported (save the file as UTF-8; in Excel: CSV UTF-8)",
                self.line, self.file
            ))
        })?;
        self.line += 1;
        Ok(Some(text))
    }
}

/// A line of JSON as `list --json` or `jq -c` writes it: one whole session object, maybe
/// after the array's `[` or a `,`, maybe before a `,` or the closing `]`. `None` for a line
/// that is only decoration; `Err` when the object is not whole on its line.
fn one_line_object(line: &str) -> Option<&str> {
    let trimmed = line.trim().trim_start_matches('[').trim_start().trim_start_matches(',').trim();
    let trimmed = trimmed.trim_end_matches(']').trim_end().trim_end_matches(',').trim_end();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// Why reading stopped: the input itself (a line too long, not text), or a session in it.
enum Fail {
    Read(anyhow::Error),
    Stop(Stop),
}

/// Calls `each` with every session of the input and its line, stopping at the first `Err`.
/// JSON with each session on a line of its own is checked as it is read; other input (CSV,
/// JSON spread over lines) is read whole, up to `MAX_DOCUMENT`, and then checked.
///
/// CSV is also checked while it is read, at its 1st, 2nd, 4th, 8th, … line, when `stop_early`
/// (no `--skip-invalid`): a file of garbage is refused at its first line, not at its size limit.
fn each_session_read(
    input: impl Read,
    file: &str,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
    stop_early: bool,
    mut each: impl FnMut(usize, Checked) -> Result<(), String>,
) -> Result<(), Fail> {
    let mut lines = Lines::new(input, file);
    let mut head = String::new();
    let mut first = true;
    let mut streaming = None;
    let (mut csv, mut csv_lines, mut checkpoint) = (false, 0usize, 1usize);
    while let Some(mut line) = lines.next().map_err(Fail::Read)? {
        if first {
            first = false;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_string();
            }
        }
        let number = lines.line - 1;
        let meaningful = {
            let t = line.trim();
            !t.is_empty() && !t.starts_with('#')
        };
        let json_start = matches!(line.trim_start().chars().next(), Some('[' | '{'));
        let object = one_line_object(&line);
        match streaming {
            // Blank, comment and decoration lines (the array's `[`) decide nothing yet.
            None if !meaningful || (json_start && object.is_none()) => {}
            // One whole object on this line: the rest of the file is read the same way.
            None if json_start && object.is_some_and(|o| serde_json::from_str::<&RawValue>(o).is_ok()) => {
                streaming = Some(true);
            }
            None => {
                streaming = Some(false);
                csv = !json_start;
            }
            _ => {}
        }
        match streaming {
            Some(true) => {
                if let Some(object) = object.filter(|_| meaningful) {
                    let (_, session) = from_json(object, settings, now);
                    each(number, session).map_err(|why| Fail::Stop(Stop { line: number, why, skippable: true }))?;
                }
            }
            None | Some(false) => {
                if head.len() + line.len() > MAX_DOCUMENT {
                    return Err(Fail::Read(bad_input(format!(
                        "{file} is larger than {} MiB; nothing was imported: write it as JSON with one session \
                         per line (as `list --json` does, or `jq -c '.[]'`), which has no limit, or split it",
                        MAX_DOCUMENT / (1024 * 1024)
                    ))));
                }
                head.push_str(&line);
                if csv && meaningful && stop_early {
                    csv_lines += 1;
                    if csv_lines == checkpoint {
                        checkpoint *= 2;
                        each_session(&head, settings, now, |_, session| session.map(|_| ())).map_err(Fail::Stop)?;
                    }
                }
            }
        }
    }
    if streaming == Some(true) {
        return Ok(());
    }
    each_session(&head, settings, now, each).map_err(Fail::Stop)
}

pub async fn import(settings: &Settings, args: ImportArgs) -> Result<ExitCode> {
    let from_stdin = args.file.as_os_str() == "-";
    let file = if from_stdin { "standard input".to_string() } else { args.file.display().to_string() };
    let input: Box<dyn Read> = if from_stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.file).map_err(|e| bad_input(format!("cannot read {file}: {e}")))?)
    };
    let refuse = |Stop { line, why, skippable }: Stop| {
        bad_input(format!(
            "line {line} of {file}: {}; nothing was imported{}",
            crate::text::clean(&why, 500),
            if skippable { " (--skip-invalid imports the other lines)" } else { "" }
        ))
    };

    // The whole file is checked before the store is even opened: a bad file changes nothing.
    let now = chrono::Utc::now();
    let mut names: HashSet<String> = HashSet::new();
    let mut ids: HashSet<SessionId> = HashSet::new();
    let mut found: Vec<(usize, TrackedSession)> = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    let mut skipped_more = 0usize;
    let read = each_session_read(input, &file, settings, now, !args.skip_invalid, |line, session| {
        let session = session.and_then(|s| {
            if names.contains(&s.name) {
                Err(format!("the name {:?} is in the file twice", s.name))
            } else if ids.contains(&s.session_id) {
                Err(format!("the session id of {:?} is in the file twice", s.name))
            } else {
                Ok(s)
            }
        });
        match session {
            Ok(session) => {
                names.insert(session.name.clone());
                ids.insert(session.session_id.clone());
                found.push((line, session));
            }
            // Each refusal is said, up to a point: a file of nothing but bad lines must not fill
            // the memory with reasons.
            Err(why) if args.skip_invalid && skipped.len() < MAX_REASONS => skipped.push((line, why)),
            Err(_) if args.skip_invalid => skipped_more += 1,
            Err(why) => return Err(why),
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(Fail::Read(e)) => return Err(e),
        Err(Fail::Stop(stop)) => return Err(refuse(stop)),
    }
    if found.is_empty() && skipped.is_empty() && skipped_more == 0 {
        return Err(bad_input(format!(
            "{file} holds no sessions; import takes what `list --json` writes, or CSV name,workbook,session_id"
        )));
    }

    let store = open_store(settings)?.sessions;
    let mut tracked_names: HashSet<String> = HashSet::new();
    let mut tracked_ids: HashSet<SessionId> = HashSet::new();
    let mut chunks = store.each_session();
    while let Some(chunk) = chunks.recv().await {
        for s in chunk.map_err(store_error)? {
            tracked_names.insert(s.name);
            tracked_ids.insert(s.session_id);
        }
    }
    let mut sessions = Vec::with_capacity(found.len());
    for (line, session) in found {
        let clash = if tracked_names.contains(&session.name) {
            Some(format!("a session named {:?} is already tracked", session.name))
        } else if tracked_ids.contains(&session.session_id) {
            Some(format!("the session id of {:?} is already tracked", session.name))
        } else {
            None
        };
        match clash {
            None => sessions.push(session),
            Some(why) if args.skip_invalid && skipped.len() < MAX_REASONS => skipped.push((line, why)),
            Some(_) if args.skip_invalid => skipped_more += 1,
            Some(why) => return Err(refuse(Stop { line, why, skippable: true })),
        }
    }
    let count_in = sessions.len();
    store.insert_all(sessions).await.map_err(store_error)?;
    store.close().await;
    skipped.sort_by_key(|(line, _)| *line);
    let mut err = std::io::stderr().lock();
    for (line, why) in &skipped {
        writeln!(err, "wbsessions: skipped line {line}: {}", crate::text::clean(why, 500))?;
    }
    if skipped_more > 0 {
        writeln!(err, "wbsessions: skipped {}", count(skipped_more, "more invalid line"))?;
    }
    let skipped_all = skipped.len() + skipped_more;
    if settings.json {
        let reasons: Vec<serde_json::Value> = skipped
            .iter()
            .map(|(line, why)| serde_json::json!({ "line": line, "error": crate::text::clean(why, 500) }))
            .collect();
        let value = serde_json::json!({ "imported": count_in, "skipped": reasons, "skipped_count": skipped_all });
        writeln!(std::io::stdout().lock(), "{value}")?;
    } else {
        writeln!(
            std::io::stdout().lock(),
            "imported {}{}",
            count(count_in, "session"),
            if skipped_all == 0 { String::new() } else { format!("; skipped {}", count(skipped_all, "invalid line")) }
        )?;
    }
    // Every line refused is a failed import, even when refusals were allowed.
    Ok(if count_in == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_names_columns_in_any_order_and_a_wrong_one_is_named() {
        let header = csv::StringRecord::from(vec!["Name", "Session ID", "workbook", "interval"]);
        let layout = header_layout(&header).and_then(Result::ok);
        assert_eq!(layout, Some([Some(0), Some(2), Some(1), Some(3), None, None]));
        let typo = csv::StringRecord::from(vec!["name", "workbok", "session_id"]);
        assert!(header_layout(&typo).is_some_and(|r| r.is_err_and(|e| e.contains("\"workbok\""))));
        let data = csv::StringRecord::from(vec!["budget", "me/drive/items/X", "S"]);
        assert!(header_layout(&data).is_none(), "a first row of data is not a header");
    }

    #[test]
    fn lines_are_counted_on_from_the_last_offset() {
        let text = "[\n{}\n\n{}]";
        let mut lines = LineCounter { text, offset: 0, line: 1 };
        assert_eq!(lines.line_at(2), 2);
        assert_eq!(lines.line_at(6), 4);
        assert_eq!(lines.line_at(999), 4, "past the end is the last line");
    }
}
