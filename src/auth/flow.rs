//! Sign-in as a long-running program needs it: the state to show, and the device-code flow run
//! in the background with its steps reported as they happen. The engine reaches it through
//! `Authenticator` only, so that it never holds a concrete client.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::Tokens;
use super::signin::{Authority, NO_CLIENT_ID, Progress};
use crate::graph::GraphClient;

/// Where tokens come from, as the header shows it; never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInState {
    /// A fixed token or a token command.
    Source(&'static str),
    SignedIn {
        user: Option<String>,
        until: DateTime<Utc>,
    },
    /// The sign-in ended (`invalid_grant`): a new one is needed.
    Ended,
    NotSignedIn,
    /// The token cache cannot be used; the text says why and how to fix it.
    Unusable(String),
}

/// What the engine asks of sign-in.
pub trait Authenticator: Send + Sync {
    /// The state as of now.
    fn state(&self) -> SignInState;
    /// Looks at the token cache again (another process may have signed in).
    fn reload(&self);
    /// Runs the device-code flow, reporting each step, and ends with `Progress::Done`.
    fn sign_in(&self, progress: mpsc::UnboundedSender<Progress>) -> BoxFuture<'static, ()>;
}

/// The device-code flow against `authority`, caching what it gets in `cache` for `tokens`;
/// `client` names the user from `/me`.
pub(crate) struct DeviceSignIn {
    pub tokens: Tokens,
    pub authority: Option<Authority>,
    pub cache: PathBuf,
    pub client: GraphClient,
}

impl Authenticator for DeviceSignIn {
    fn state(&self) -> SignInState {
        let tokens = &self.tokens;
        if !tokens.is_sign_in() {
            SignInState::Source(tokens.describe())
        } else if let Some(problem) = tokens.problem() {
            SignInState::Unusable(problem)
        } else {
            match tokens.status() {
                Some(status) if status.ended.is_some() => SignInState::Ended,
                Some(status) => SignInState::SignedIn { user: status.user, until: status.expires_at },
                None => SignInState::NotSignedIn,
            }
        }
    }

    fn reload(&self) {
        self.tokens.reload();
    }

    fn sign_in(&self, progress: mpsc::UnboundedSender<Progress>) -> BoxFuture<'static, ()> {
        let Some(authority) = self.authority.clone() else {
            let _ = progress.send(Progress::Done(Err(NO_CLIENT_ID.into())));
            return async {}.boxed();
        };
        let (client, cache, tokens) = (self.client.clone(), self.cache.clone(), self.tokens.clone());
        async move {
            super::signin::sign_in(authority, &client, &cache, &tokens, |p| {
                let _ = progress.send(p);
            })
            .await;
        }
        .boxed()
    }
}
