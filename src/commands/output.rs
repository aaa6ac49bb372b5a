//! How sessions and outcomes read on the command line: one line per outcome, RFC 3339 times in
//! one offset (local, or UTC with `--utc`), and JSON whose times are always UTC.

use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde_json::json;

use crate::session::{Defaults, Outcome, OutcomeKind, TrackedSession};
use crate::text;
use crate::time::format_duration;

/// The offset every human-readable time is printed in.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub(crate) utc: bool,
}

impl Times {
    pub(crate) fn stamp(self, t: DateTime<Utc>) -> String {
        if self.utc {
            t.to_rfc3339_opts(SecondsFormat::Millis, true)
        } else {
            t.with_timezone(&Local).to_rfc3339_opts(SecondsFormat::Millis, false)
        }
    }

    /// To the second, for people: `2026-11-29T10:04:05+01:00`.
    pub(crate) fn stamp_secs(self, t: DateTime<Utc>) -> String {
        if self.utc {
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        } else {
            t.with_timezone(&Local).to_rfc3339_opts(SecondsFormat::Secs, false)
        }
    }
}

/// One outcome as a line of text: time, session, call, kind, status, latency, codes, ids, message.
/// Whatever a server said is cleaned: one line, no escape sequences.
pub(crate) fn outcome_line(times: Times, name: Option<&str>, o: &Outcome, late: Option<Duration>) -> String {
    let mut line = times.stamp(o.at);
    if let Some(name) = name {
        line.push(' ');
        line.push_str(name);
    }
    line.push_str(&format!(" {} {}", o.action.as_str(), o.kind.as_str()));
    if let Some(status) = o.http_status {
        line.push_str(&format!(" {status}"));
    }
    line.push_str(&format!(" {}ms", o.latency_ms));
    if !o.codes.is_empty() {
        let codes: Vec<String> = o.codes.iter().map(|c| text::clean(c, text::MAX_TOKEN)).collect();
        line.push_str(&format!(" {}", codes.join("/")));
    }
    if o.kind != OutcomeKind::Ok {
        if let Some(id) = &o.request_id {
            line.push_str(&format!(" request-id={}", text::clean(id, text::MAX_TOKEN)));
        }
        if let Some(id) = &o.client_request_id {
            line.push_str(&format!(" client-request-id={}", text::clean(id, text::MAX_TOKEN)));
        }
    }
    if let Some(late) = late.filter(|l| *l >= Duration::from_secs(1)) {
        line.push_str(&format!(" late={}", format_duration(late)));
    }
    if let Some(message) = &o.message {
        line.push_str(&format!(": {}", text::clean(message, text::MAX_MESSAGE)));
    }
    line
}

/// Every time in JSON: RFC 3339 in UTC, to the millisecond (docs/configuration.md, "JSON").
pub(crate) fn json_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every duration in JSON: seconds, with the milliseconds as a fraction.
pub(crate) fn json_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One call: the session, what was done (`action`), how it went (`status`, in the words a
/// session's status uses), and what Microsoft support would ask for.
pub(crate) fn outcome_json(name: &str, o: &Outcome, late: Option<Duration>) -> serde_json::Value {
    let mut value = json!({
        "session": name,
        "at": json_time(o.at),
        "action": o.action.as_str(),
        "status": o.kind.as_str(),
        "latency_secs": json_secs(Duration::from_millis(o.latency_ms)),
    });
    let optional = [
        ("http_status", o.http_status.map(|s| json!(s))),
        ("codes", (!o.codes.is_empty()).then(|| json!(o.codes))),
        ("request_id", o.request_id.as_ref().map(|id| json!(id))),
        ("client_request_id", o.client_request_id.as_ref().map(|id| json!(id))),
        ("message", o.message.as_ref().map(|m| json!(m))),
        ("late_secs", late.map(|l| json!(json_secs(l)))),
        ("by", o.by.as_ref().map(|b| json!(b))),
    ];
    for (key, field) in optional {
        if let Some(field) = field {
            value[key] = field;
        }
    }
    value
}

/// A session as every command writes it: its settings (`own_interval_secs` only when it has its
/// own; `interval_secs` is the one in force), the status as of now (`stale` past the idle
/// expiry) and when Graph would expire it. `import` reads it back.
pub(crate) fn session_json(s: &TrackedSession, defaults: &Defaults, now: DateTime<Utc>) -> serde_json::Value {
    let mut value = json!({
        "name": s.name,
        "workbook": s.workbook.to_string(),
        "session_id": s.session_id.as_str(),
        "mode": s.mode,
        "interval_secs": json_secs(defaults.interval_of(s)),
        "recreate": s.recreate,
        "auto": s.auto,
        "status": defaults.status_at(s, now),
        "last_refresh": s.last_refresh.map(json_time),
        "failures": s.failures,
        // A creation time that could not be read is stored as the epoch's: unknown, not 1970.
        "created_at": (s.created_at != DateTime::<Utc>::UNIX_EPOCH).then(|| json_time(s.created_at)),
        "expires_at": defaults.expires_at(s).map(json_time),
    });
    if let Some(own) = s.interval {
        value["own_interval_secs"] = json!(json_secs(own));
    }
    if let Some(owner) = &s.owner {
        value["owner"] = json!(owner);
    }
    value
}

/// `name on workbook (mode, refresh every 4m, recreated on expiry)`.
pub(crate) fn describe(s: &TrackedSession, defaults: &Defaults) -> String {
    format!(
        "{} on {} ({}, refresh every {}{})",
        s.name,
        s.workbook,
        s.mode.as_str(),
        format_duration(defaults.interval_of(s)),
        if s.recreate { ", recreated on expiry" } else { "" }
    )
}

pub(crate) use crate::text::names_line;

pub use crate::text::count;
