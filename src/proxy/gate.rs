//! Who gets in and what goes through: pure checks on a request, before anything is forwarded.

use crate::session::WorkbookRef;

/// The header a caller names a tracked session with.
pub const SESSION_HEADER: &str = "x-wbsessions-session";
/// Graph's session header.
pub const GRAPH_SESSION_HEADER: &str = "workbook-session-id";

/// Whether a `Host` header names this machine: a page elsewhere that rebinds its own name to
/// 127.0.0.1 still sends its own name, and is refused.
pub fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((name, rest)) if rest.is_empty() || rest.starts_with(':') => name,
            _ => return false,
        },
        None => match host.split_once(':') {
            // A port is digits and nothing else: `localhost:80@evil` names no loopback host.
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `Authorization` presents the proxy's secret, compared in time that does not depend
/// on where the first difference is.
pub fn presents(authorization: Option<&str>, secret: &str) -> bool {
    // The scheme's name is not case-sensitive (RFC 9110, 11.1).
    let given =
        authorization.and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    let Some(given) = given.map(|(_, token)| token.trim()) else { return false };
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What a call is, once it may go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub workbook: WorkbookRef,
    pub kind: CallKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    /// The drive item itself (its metadata, its content): no session.
    Item,
    /// createSession, refreshSession, closeSession sent by the caller: passed on as they are.
    SessionCall,
    /// Any other workbook call: it gets a session unless it brought one.
    Workbook,
}

/// Why a path is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the proxy serves Graph under /v1.0/; {0} is not under it")]
    NotGraph(String),
    #[error(
        "only drive-item and workbook calls are forwarded (…/items/{{id}}… or …/root:/path:/workbook/…); {0} is neither"
    )]
    NotWorkbook(String),
    /// `$batch`: forwarded when each of its requests would be (`POST` only).
    #[error("$batch takes POST only")]
    Batch,
}

/// The call a path (below `/v1.0`) makes, or why it is not forwarded.
pub fn target(path: &str) -> Result<Target, Refusal> {
    let shown = || crate::text::clean(path, 200);
    let Some(below) = path.strip_prefix("/v1.0/") else { return Err(Refusal::NotGraph(shown())) };
    if below.eq_ignore_ascii_case("$batch") {
        return Err(Refusal::Batch);
    }
    let decoded = crate::text::percent_decoded(&crate::text::percent_decoded(below));
    let segments: Vec<&str> = decoded.split('/').collect();
    // Judged as a server would read it: no climbing, no other host (a `$batch` item's URL is
    // checked here alone).
    if segments.iter().any(|s| *s == ".." || *s == "." || s.contains('\\')) || decoded.contains("://") {
        return Err(Refusal::NotWorkbook(shown()));
    }
    // The first `workbook` segment whose prefix reads as a workbook: a folder of that name in
    // a by-path reference is part of the path, not the call.
    for (i, segment) in segments.iter().enumerate() {
        if !segment.eq_ignore_ascii_case("workbook") || i == 0 {
            continue;
        }
        if let Ok(workbook) = WorkbookRef::parse(&segments[..i].join("/")) {
            let call = segments.get(i + 1).copied().unwrap_or_default();
            let kind = if segments.len() == i + 2
                && ["createSession", "refreshSession", "closeSession"].iter().any(|c| call.eq_ignore_ascii_case(c))
            {
                CallKind::SessionCall
            } else {
                CallKind::Workbook
            };
            return Ok(Target { workbook, kind });
        }
    }
    // A drive item without a workbook call: everything up to its id names it.
    if let Some(i) = segments.iter().position(|s| s.eq_ignore_ascii_case("items"))
        && let Some(end) = (i + 2 <= segments.len()).then_some(i + 2)
        && let Ok(workbook) = WorkbookRef::parse(&segments[..end].join("/"))
    {
        return Ok(Target { workbook, kind: CallKind::Item });
    }
    Err(Refusal::NotWorkbook(shown()))
}

/// A path with its query values blanked, for the log: a filter or a token-like value in a
/// query string is the caller's business.
pub fn loggable(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let mut shown = crate::text::clean(path, 300);
    if let Some(query) = query {
        let names: Vec<&str> = query.split('&').map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k)).collect();
        shown.push('?');
        shown.push_str(&crate::text::clean(&names.join("=…&"), 200));
        shown.push_str("=…");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_get_in() {
        for good in ["127.0.0.1:8733", "localhost", "LOCALHOST:1", "[::1]:80", "127.1.2.3"] {
            assert!(loopback_host(Some(good)), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8733",
            "10.0.0.1:80",
            "[::2]:1",
            "[::1]x",
            "",
            "localhost.evil",
            "localhost:80@evil",
            "127.0.0.1:",
        ] {
            assert!(!loopback_host(Some(bad)), "{bad}");
        }
        assert!(!loopback_host(None));
    }

    #[test]
    fn the_secret_must_match_whole() {
        assert!(presents(Some("Bearer s3cret"), "s3cret"));
        assert!(presents(Some("bearer s3cret"), "s3cret"));
        for bad in [None, Some("s3cret"), Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Basic s3cret")] {
            assert!(!presents(bad, "s3cret"), "{bad:?}");
        }
    }

    #[test]
    fn drive_item_and_workbook_calls_go_through_and_nothing_else() {
        let t = target("/v1.0/me/drive/items/W1/workbook/worksheets/Sheet1/range(address='A1')").ok();
        assert_eq!(t.map(|t| (t.workbook.to_string(), t.kind)), Some(("me/drive/items/W1".into(), CallKind::Workbook)));
        let t = target("/v1.0/me/drive/items/W1/workbook/createSession").ok();
        assert_eq!(t.map(|t| t.kind), Some(CallKind::SessionCall));
        let t = target("/v1.0/drives/D1/items/W1").ok();
        assert_eq!(t.map(|t| (t.workbook.to_string(), t.kind)), Some(("drives/D1/items/W1".into(), CallKind::Item)));
        let t = target("/v1.0/me/drive/root:/workbook/Budget.xlsx:/workbook/tables").ok();
        assert_eq!(t.map(|t| t.workbook.to_string()), Some("/me/drive/root:/workbook/Budget.xlsx:".into()));
        assert!(matches!(target("/v1.0/me/messages"), Err(Refusal::NotWorkbook(_))));
        assert!(matches!(target("/v1.0/users/x/drive/items"), Err(Refusal::NotWorkbook(_))));
        assert!(matches!(target("/beta/me/drive/items/W1"), Err(Refusal::NotGraph(_))));
        assert!(matches!(target("/v1.0/$batch"), Err(Refusal::Batch)));
        for climbing in [
            "/v1.0/me/drive/items/W1/workbook/../../../../me/messages",
            "/v1.0/me/drive/items/W1/workbook/%2e%2e/x",
            "/v1.0/me/drive/items/W1/workbook/%252e%252e/x",
            "/v1.0/https://evil.example/v1.0/me/drive/items/W1/workbook/worksheets",
        ] {
            assert!(matches!(target(climbing), Err(Refusal::NotWorkbook(_))), "{climbing}");
        }
    }

    #[test]
    fn query_values_stay_out_of_the_log() {
        assert_eq!(loggable("/v1.0/x?$filter=secret&a=b"), "/v1.0/x?$filter=…&a=…");
        assert_eq!(loggable("/v1.0/x"), "/v1.0/x");
    }
}
