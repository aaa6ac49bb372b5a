//! The Microsoft Graph client: the session calls, error classification and Retry-After.

mod client;
mod error;

pub use client::{
    CallMeta, ClientBuildError, ClientOptions, DEFAULT_GRAPH_URL, GraphClient, GraphError, Me, PollPolicy, Reply,
    check_base_url, install_tls_provider,
};
pub use error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
