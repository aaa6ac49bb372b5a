//! Microsoft Graph: the way to its host (`transport`: the origin guard, the token, the caps, any
//! request forwarded as it came), the session calls on top of it (`client`), and Microsoft's
//! classification of what came back (`error`). What a failure means for a session is the
//! engine's to say. docs/graph.md has the facts this relies on.

mod client;
mod error;
mod transport;

pub use client::{GraphClient, Me};
pub use error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
pub use transport::{
    CallMeta, ClientBuildError, ClientOptions, DEFAULT_GRAPH_URL, Forward, ForwardError, Forwarded, GraphError, MAX_BODY,
    PollPolicy, Reply, Transport, check_base_url, end_to_end, install_tls_provider, read_capped,
};
