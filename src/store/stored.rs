//! Rows as any store reads them, before they are trusted: each column as it came (`None` where
//! it could not be read as its kind), turned into a session or an outcome by one set of rules,
//! whatever database held them. A value that cannot be read (a row edited by hand, written by
//! another program) makes the session `Damaged`, shown with its name so that it can be removed
//! or recreated, and leaves every other session readable.

use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

use crate::session::{
    Action, LastCall, MAX_INTERVAL, MIN_INTERVAL, Mode, Outcome, OutcomeKind, SessionId, SessionKey, Status,
    TrackedSession, WorkbookRef,
};
use crate::text;

/// A time as stores keep it: RFC 3339 in UTC with milliseconds, so that text order is time order.
pub(crate) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An interval as stores keep it.
pub(crate) fn interval_ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.min(MAX_INTERVAL).as_millis()).unwrap_or(i64::MAX))
}

/// The column and direction a dashboard's first page is read in, close to `sort`.
pub(crate) fn page_order(sort: crate::session::SortBy, reverse: bool) -> (&'static str, &'static str) {
    use crate::session::SortBy;
    let column = match sort {
        SortBy::Name | SortBy::Latency => "name",
        SortBy::Workbook => "workbook",
        SortBy::Mode => "mode",
        SortBy::Status => "status",
        SortBy::Last | SortBy::Next | SortBy::Expires => "last_refresh",
        SortBy::Failures => "failures",
    };
    let descending = reverse != matches!(sort, SortBy::Failures);
    (column, if descending { "DESC" } else { "ASC" })
}

/// A stored time; `None` for one that cannot be read or lies outside the years the store keeps.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    (at.timestamp() >= 0 && at.year() <= 9999).then_some(at)
}

/// A session row with its newest outcome's time and latency. A column that is `None` could not
/// be read; `Some(None)` is a column that is empty on purpose.
#[derive(Debug, Default)]
pub(crate) struct StoredSession {
    pub key: SessionKey,
    pub name: Option<String>,
    pub workbook: Option<String>,
    pub session_id: Option<String>,
    pub mode: Option<String>,
    pub interval_ms: Option<Option<i64>>,
    pub recreate: Option<bool>,
    pub auto: Option<bool>,
    pub status: Option<String>,
    pub last_refresh: Option<Option<String>>,
    pub failures: Option<u32>,
    pub created_at: Option<String>,
    pub owner: Option<String>,
    pub last_at: Option<String>,
    pub last_latency_ms: Option<i64>,
}

impl StoredSession {
    /// The session, damaged where a column could not be read. `None` only when not even a
    /// placeholder id can be made.
    pub(crate) fn read(self) -> Option<TrackedSession> {
        let key = self.key;
        let name = self.name.unwrap_or_else(|| format!("#{key}"));
        let mut damage: Vec<&'static str> = Vec::new();
        let workbook = self.workbook.and_then(|w| WorkbookRef::parse(&w).ok()).unwrap_or_else(|| {
            damage.push("workbook");
            WorkbookRef::unreadable()
        });
        let session_id = match self.session_id.and_then(|id| SessionId::new(&id).ok()) {
            Some(id) => id,
            None => {
                damage.push("session id");
                SessionId::new("unreadable").ok()?
            }
        };
        let mode = match self.mode.as_deref() {
            Some("persistent") => Mode::Persistent,
            Some("non-persistent") => Mode::NonPersistent,
            _ => {
                damage.push("mode");
                Mode::Persistent
            }
        };
        // A hand-edited store must not overflow the scheduler.
        let interval = match self.interval_ms {
            Some(ms) => {
                ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)).clamp(MIN_INTERVAL, MAX_INTERVAL))
            }
            None => {
                damage.push("interval");
                None
            }
        };
        let recreate = self.recreate.unwrap_or_else(|| {
            damage.push("recreate");
            false
        });
        let auto = self.auto.unwrap_or_else(|| {
            damage.push("auto");
            false
        });
        let status = match self.status.as_deref().and_then(Status::parse) {
            // Stale is what `ok` turns into with time; it is never stored, but read it kindly.
            Some(Status::Stale) => Status::Ok,
            Some(status) => status,
            None => {
                damage.push("status");
                Status::Damaged
            }
        };
        let last_refresh = match self.last_refresh {
            Some(None) => None,
            Some(Some(t)) => parse_time(&t).or_else(|| {
                damage.push("last refresh");
                None
            }),
            None => {
                damage.push("last refresh");
                None
            }
        };
        let failures = self.failures.unwrap_or_else(|| {
            damage.push("failures");
            0
        });
        let created_at = self.created_at.as_deref().and_then(parse_time).unwrap_or_else(|| {
            damage.push("created at");
            DateTime::<Utc>::UNIX_EPOCH
        });
        let last_call = self.last_at.as_deref().and_then(parse_time).map(|at| LastCall {
            at,
            latency_ms: self.last_latency_ms.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
        });
        let damaged = !damage.is_empty();
        if damaged {
            tracing::warn!(session = %name, damaged = ?damage, "a stored session cannot be read whole; shown as damaged");
        }
        Some(TrackedSession {
            key,
            name,
            workbook,
            session_id,
            mode,
            interval,
            recreate,
            auto,
            status: if damaged { Status::Damaged } else { status },
            last_refresh,
            failures,
            created_at,
            owner: crate::text::clean_opt(self.owner.as_deref(), 200),
            last_call,
        })
    }
}

/// An outcome row: `at, action, kind, latency_ms, http_status, codes, request_id,
/// client_request_id, message, made_by`.
#[derive(Debug, Default)]
pub(crate) struct StoredOutcome {
    pub at: Option<String>,
    pub action: Option<String>,
    pub kind: Option<String>,
    pub latency_ms: Option<i64>,
    pub http_status: Option<u16>,
    pub codes: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub message: Option<String>,
    pub made_by: Option<String>,
}

impl StoredOutcome {
    /// The outcome. What a server said is cleaned again on the way out: a store written by an
    /// older build may hold raw text.
    pub(crate) fn read(self) -> Outcome {
        let at = self.at.as_deref().and_then(parse_time);
        let action = self.action.as_deref().and_then(Action::parse);
        let kind = self.kind.as_deref().and_then(OutcomeKind::parse);
        let readable = at.is_some() && action.is_some() && kind.is_some();
        Outcome {
            at: at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            action: action.unwrap_or(Action::Refresh),
            kind: kind.unwrap_or(OutcomeKind::Error),
            latency_ms: self.latency_ms.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
            http_status: self.http_status,
            codes: self
                .codes
                .map(|c| c.split(',').filter(|s| !s.is_empty()).map(|c| text::clean(c, text::MAX_TOKEN)).collect())
                .unwrap_or_default(),
            request_id: text::clean_opt(self.request_id.as_deref(), text::MAX_TOKEN),
            client_request_id: text::clean_opt(self.client_request_id.as_deref(), text::MAX_TOKEN),
            message: if readable {
                text::clean_opt(self.message.as_deref(), text::MAX_MESSAGE)
            } else {
                Some("this stored outcome cannot be read whole".into())
            },
            by: text::clean_opt(self.made_by.as_deref(), text::MAX_TOKEN),
        }
    }

    /// The columns an outcome is written as, in the order above.
    pub(crate) fn of(o: &Outcome) -> StoredOutcome {
        StoredOutcome {
            at: Some(time_text(o.at)),
            action: Some(o.action.as_str().to_string()),
            kind: Some(o.kind.as_str().to_string()),
            latency_ms: Some(i64::try_from(o.latency_ms).unwrap_or(i64::MAX)),
            http_status: o.http_status,
            codes: (!o.codes.is_empty()).then(|| o.codes.join(",")),
            request_id: o.request_id.clone(),
            client_request_id: o.client_request_id.clone(),
            message: o.message.as_deref().map(|m| text::clean(m, text::MAX_MESSAGE)),
            made_by: o.by.clone(),
        }
    }
}

/// Hold rows `(id, workbook, until_ms)` as the budget's answer gives them, and the newest id.
pub(crate) fn shared_holds(rows: Vec<(i64, String, i64)>, seen: i64) -> (Vec<crate::store::SharedHold>, i64) {
    let newest = rows.iter().map(|(id, _, _)| *id).max().unwrap_or(seen).max(seen);
    let holds = rows
        .into_iter()
        .filter_map(|(_, workbook, until_ms)| {
            Some(crate::store::SharedHold { workbook, until: DateTime::<Utc>::from_timestamp_millis(until_ms)? })
        })
        .collect();
    (holds, newest)
}
