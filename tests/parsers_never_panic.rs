//! Property tests: whatever bytes or JSON shapes arrive, the parsers answer without panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use proptest::prelude::*;
use serde_json::Value;
use wbsessions::graph::{CallKind, ErrorBody, classify, parse_retry_after};
use wbsessions::session::{SessionId, WorkbookRef};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![".*", Just("innerError".to_string()), Just("invalidSessionReCreatable".to_string())]
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("code".to_string()),
                        Just("innerError".to_string()),
                        Just("innererror".to_string()),
                        Just("request-id".to_string()),
                        ".*"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn error_bodies_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), status in 100u16..600) {
        let body = ErrorBody::parse(&bytes);
        let _ = classify(status, &body, CallKind::Sessionful, false);
    }

    #[test]
    fn error_bodies_from_arbitrary_json(shape in json_value(), status in 100u16..600) {
        let wrapped = serde_json::json!({ "error": shape });
        for text in [wrapped.to_string(), shape.to_string()] {
            let body = ErrorBody::parse(text.as_bytes());
            for call in [CallKind::Create, CallKind::Sessionful, CallKind::Other] {
                let _ = classify(status, &body, call, true);
            }
        }
    }

    #[test]
    fn workbook_refs_from_arbitrary_text(text in ".*") {
        if let Ok(parsed) = WorkbookRef::parse(&text) {
            prop_assert_eq!(WorkbookRef::parse(&parsed.to_string()), Ok(parsed.clone()));
            prop_assert!(!parsed.segments().is_empty());
        }
    }

    #[test]
    fn workbook_refs_from_plausible_text(text in "/?(me|drives|sites|groups|users)(/[a-zA-Z0-9:!,. ]{0,6}){0,6}:?") {
        if let Ok(parsed) = WorkbookRef::parse(&text) {
            prop_assert_eq!(WorkbookRef::parse(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn session_ids_and_retry_after_from_arbitrary_text(text in ".*") {
        if let Ok(id) = SessionId::new(&text) {
            prop_assert!(id.as_str().bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
        let _ = parse_retry_after(&text, chrono::Utc::now());
        let _ = wbsessions::time::parse_duration(&text);
    }
}
