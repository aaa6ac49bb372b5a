//! Microsoft Graph: the way to its host (`transport`: the origin guard, the token, the caps, any
//! request forwarded as it came), the session calls on top of it (`client`), and Microsoft's
//! classification of what came back (`error`). What a failure means for a session is the
//! engine's to say. docs/graph.md has the facts this relies on.

mod client;
mod error;
mod transport;

pub use client::GraphClient;
pub use error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
pub use transport::{
    CallMeta, ClientOptions, Forward, ForwardError, Forwarded, GraphError, PollPolicy, Reply, Transport,
    install_tls_provider,
};
pub(crate) use transport::{DEFAULT_GRAPH_URL, check_base_url, read_capped};
