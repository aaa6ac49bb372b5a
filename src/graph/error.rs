//! Graph error bodies, read leniently, and Microsoft's classification rule (docs/graph.md, "Errors").

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What could be read out of an error body. Every field may be missing; the body may not be JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    /// Second-level codes and deeper, outermost first.
    pub(crate) inner_codes: Vec<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub date: Option<String>,
}

impl ErrorBody {
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return ErrorBody::default();
        };
        let Some(error) = value.get("error").and_then(Value::as_object) else {
            return ErrorBody::default();
        };
        let text =
            |obj: &serde_json::Map<String, Value>, key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
        let mut body = ErrorBody { code: text(error, "code"), message: text(error, "message"), ..ErrorBody::default() };
        let mut level = Some(error);
        let mut depth = 0;
        while let Some(obj) = level {
            if depth > 0
                && let Some(code) = text(obj, "code")
            {
                body.inner_codes.push(code);
            }
            body.request_id = body.request_id.or_else(|| text(obj, "request-id"));
            body.client_request_id = body.client_request_id.or_else(|| text(obj, "client-request-id"));
            body.date = body.date.or_else(|| text(obj, "date"));
            depth += 1;
            // The key is spelled `innerError` or `innererror` depending on the service.
            level = obj
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("innererror"))
                .and_then(|(_, v)| v.as_object())
                .filter(|_| depth < 32);
        }
        body
    }

    /// All codes, outermost first, for the record.
    pub(crate) fn all_codes(&self) -> Vec<String> {
        self.code.iter().chain(self.inner_codes.iter()).cloned().collect()
    }
}

/// Which kind of call failed: the same status means different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// createSession: no session involved yet.
    Create,
    /// refreshSession, closeSession: a session id was sent.
    Sessionful,
    /// Anything else (resolving a path, `/me`).
    Other,
}

/// What a session keeper does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The session is gone but a new one may be created.
    Expired,
    /// The session is unusable; recreating it the same way will not help.
    Dead,
    /// Wait (for Retry-After if given), then try again.
    Throttled,
    /// The token was refused: renew it once, else the user must sign in.
    Auth,
    /// Network trouble, timeouts, server hiccups: retry with backoff.
    Transient,
    /// The request itself is wrong or forbidden; retrying soon will not help.
    Failed,
}

fn known_second_level(code: &str, call: CallKind) -> Option<ErrorClass> {
    let code = code.to_ascii_lowercase();
    Some(match code.as_str() {
        "invalidsessionrecreatable" => ErrorClass::Expired,
        "invalidsessionauthentication" | "unauthorizeduncategorized" => ErrorClass::Auth,
        "invalidsessionnotfound"
        | "invalidsessionrestricted"
        | "invalidsessionunexpected"
        | "invalidsessionunsupportedworkbook"
        | "invalidsessionaccessconflict" => ErrorClass::Dead,
        "internalservererroruncategorized" => match call {
            CallKind::Sessionful => ErrorClass::Dead,
            CallKind::Create | CallKind::Other => ErrorClass::Transient,
        },
        "toomanyrequestsuncategorized" | "serviceunavailableuncategorized" | "transientfailure" => {
            ErrorClass::Throttled
        }
        "accessconflict" | "conflictuncategorized" => ErrorClass::Transient,
        _ => return None,
    })
}

/// The HTTP status a documented top-level code stands for, old spellings included.
fn top_level_status(code: &str) -> Option<u16> {
    Some(match code.to_ascii_lowercase().as_str() {
        "badrequest" | "invalidrequest" => 400,
        "unauthorized" | "unauthenticated" => 401,
        "forbidden" | "accessdenied" => 403,
        "notfound" | "itemnotfound" | "resourcenotfound" => 404,
        "methodnotallowed" => 405,
        "conflict" => 409,
        "payloadtoolarge" => 413,
        "toomanyrequests" => 429,
        "internalservererror" => 500,
        "notimplemented" => 501,
        "badgateway" => 502,
        "serviceunavailable" => 503,
        "gatewaytimeout" => 504,
        _ => return None,
    })
}

fn by_status(status: u16, call: CallKind, has_retry_after: bool) -> ErrorClass {
    let sessionful = call == CallKind::Sessionful;
    match status {
        401 => ErrorClass::Auth,
        // An expired session was documented to answer 404; the top-level code is not documented.
        404 if sessionful => ErrorClass::Expired,
        429 => ErrorClass::Throttled,
        503 if has_retry_after => ErrorClass::Throttled,
        // For a sessionful request a bare 502/503 means "recreate the session".
        502 | 503 if sessionful => ErrorClass::Expired,
        408 | 409 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Failed,
    }
}

/// Microsoft's rule: a known second-level code, else the top-level code, else the HTTP status.
pub fn classify(status: u16, body: &ErrorBody, call: CallKind, has_retry_after: bool) -> ErrorClass {
    if let Some(class) = body.inner_codes.iter().find_map(|c| known_second_level(c, call)) {
        return class;
    }
    let effective = body.code.as_deref().and_then(top_level_status).unwrap_or(status);
    by_status(effective, call, has_retry_after)
}

/// The longest `Retry-After` read as it is; anything longer reads as this.
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// `Retry-After` as (possibly fractional) seconds or an HTTP date. Nonsense reads as absent.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(LONGEST_RETRY_AFTER.as_secs_f64())));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO).min(LONGEST_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_spellings_and_nesting() {
        let body = br#"{"error":{"code":"itemNotFound","message":"m","innerError":{"code":"invalidSessionReCreatable",
            "innererror":{"code":"deeper"},"request-id":"r1","client-request-id":"c1","date":"2026-01-01T00:00:00"}}}"#;
        let parsed = ErrorBody::parse(body);
        assert_eq!(parsed.code.as_deref(), Some("itemNotFound"));
        assert_eq!(parsed.inner_codes, ["invalidSessionReCreatable", "deeper"]);
        assert_eq!(parsed.request_id.as_deref(), Some("r1"));
        assert_eq!(parsed.client_request_id.as_deref(), Some("c1"));
        assert_eq!(parsed.date.as_deref(), Some("2026-01-01T00:00:00"));

        let lower = ErrorBody::parse(br#"{"error":{"innererror":{"code":"X","request-id":"r"}}}"#);
        assert_eq!(lower.inner_codes, ["X"]);
        assert_eq!(lower.code, None);
        assert_eq!(lower.request_id.as_deref(), Some("r"));
    }

    #[test]
    fn anything_that_is_not_an_error_object_reads_as_empty() {
        for body in
            [&b"<html>502 Bad Gateway</html>"[..], b"", b"[]", b"{\"error\":\"x\"}", b"{\"error\":{\"code\":5}}"]
        {
            let parsed = ErrorBody::parse(body);
            assert_eq!(parsed.code, None);
            assert!(parsed.inner_codes.is_empty());
        }
    }

    #[test]
    fn classification_follows_microsofts_order() {
        let body = |top: &str, inner: &str| ErrorBody {
            code: (!top.is_empty()).then(|| top.to_string()),
            inner_codes: if inner.is_empty() { vec![] } else { vec![inner.to_string()] },
            ..ErrorBody::default()
        };
        let s = CallKind::Sessionful;
        // Second-level code wins over the top-level one and over the status.
        assert_eq!(classify(404, &body("itemNotFound", "invalidSessionReCreatable"), s, false), ErrorClass::Expired);
        assert_eq!(classify(400, &body("badRequest", "INVALIDSESSIONNOTFOUND"), s, false), ErrorClass::Dead);
        assert_eq!(classify(401, &body("unauthorized", "invalidSessionAuthentication"), s, false), ErrorClass::Auth);
        assert_eq!(
            classify(500, &body("internalServerError", "internalServerErrorUncategorized"), s, false),
            ErrorClass::Dead
        );
        assert_eq!(
            classify(500, &body("internalServerError", "internalServerErrorUncategorized"), CallKind::Create, false),
            ErrorClass::Transient
        );
        assert_eq!(classify(503, &body("serviceUnavailable", "transientFailure"), s, false), ErrorClass::Throttled);
        assert_eq!(classify(409, &body("conflict", "accessConflict"), s, false), ErrorClass::Transient);
        // An unknown second-level code falls through to the top-level code...
        assert_eq!(classify(200, &body("TooManyRequests", "429"), s, false), ErrorClass::Throttled);
        // ...and an unknown top-level code to the status.
        assert_eq!(classify(401, &body("InvalidAuthenticationToken", ""), s, false), ErrorClass::Auth);
        assert_eq!(classify(404, &body("", ""), s, false), ErrorClass::Expired);
        assert_eq!(classify(404, &body("itemNotFound", ""), CallKind::Create, false), ErrorClass::Failed);
        assert_eq!(classify(502, &body("", ""), s, false), ErrorClass::Expired);
        assert_eq!(classify(502, &body("", ""), CallKind::Create, false), ErrorClass::Transient);
        assert_eq!(classify(503, &body("", ""), s, true), ErrorClass::Throttled);
        assert_eq!(classify(503, &body("", ""), s, false), ErrorClass::Expired);
        assert_eq!(classify(403, &body("accessDenied", ""), s, false), ErrorClass::Failed);
        assert_eq!(classify(504, &body("", ""), s, false), ErrorClass::Transient);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("2.128", now), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sat, 28 Nov 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sat, 28 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
