//! The Microsoft Graph client: the session calls, error classification and Retry-After
//! (docs/graph.md has the facts it relies on).

mod client;
mod error;

pub use client::{
    CallMeta, ClientBuildError, ClientOptions, DEFAULT_GRAPH_URL, GraphClient, GraphError, MAX_BODY, Me, PollPolicy,
    Reply, check_base_url, install_tls_provider, read_capped,
};
pub use error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
