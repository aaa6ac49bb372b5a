//! The calls the engine makes, behind a trait so that the engine can be tested against a fake
//! under paused time, and the operations built on them: refresh, create (resolving a by-path
//! workbook on the way), close. Each operation returns a `Report` of everything it did.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

pub(crate) use super::batching::Probe;
use crate::auth::{AuthError, Secret, Tokens};
use crate::graph::{CallMeta, ErrorClass, GraphClient, GraphError, Reply};
use crate::session::{Action, Mode, Outcome, OutcomeKind, SessionId, Status, TrackedSession, WorkbookRef};
use crate::time::Clock;

/// Why a call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// No usable token; `requests` made before that was known (a refused token is one).
    #[error("{error}")]
    Auth { error: AuthError, requests: u32 },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

impl From<AuthError> for Failure {
    fn from(error: AuthError) -> Self {
        Failure::Auth { error, requests: 0 }
    }
}

impl Failure {
    pub fn class(&self) -> ErrorClass {
        match self {
            Failure::Auth { .. } => ErrorClass::Auth,
            Failure::Graph(e) => e.class,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Auth { .. } => None,
            Failure::Graph(e) => e.retry_after,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Failure::Auth { .. } => None,
            Failure::Graph(e) => e.meta.http_status,
        }
    }

    /// HTTP requests the failed call made.
    pub fn requests(&self) -> u32 {
        match self {
            Failure::Auth { requests, .. } => *requests,
            Failure::Graph(e) => e.meta.requests,
        }
    }

    fn outcome(&self, action: Action, at: DateTime<Utc>) -> Outcome {
        match self {
            Failure::Graph(e) => failed_outcome(e, action, at),
            Failure::Auth { error, .. } => Outcome {
                at,
                action,
                kind: OutcomeKind::Auth,
                latency_ms: 0,
                http_status: None,
                codes: Vec::new(),
                request_id: None,
                client_request_id: None,
                message: Some(error.to_string()),
                by: Some(crate::store::this_process()),
            },
        }
    }
}

/// What a failure of this class means for the session it was about.
fn kind_of(class: ErrorClass) -> OutcomeKind {
    match class {
        ErrorClass::Expired => OutcomeKind::Expired,
        ErrorClass::Dead => OutcomeKind::Dead,
        ErrorClass::Throttled => OutcomeKind::Throttled,
        ErrorClass::Auth => OutcomeKind::Auth,
        ErrorClass::Transient | ErrorClass::Failed => OutcomeKind::Error,
    }
}

fn outcome(meta: &CallMeta, action: Action, kind: OutcomeKind, at: DateTime<Utc>) -> Outcome {
    Outcome {
        at,
        action,
        kind,
        latency_ms: meta.latency.as_millis().try_into().unwrap_or(u64::MAX),
        http_status: meta.http_status,
        codes: Vec::new(),
        request_id: meta.request_id.clone(),
        client_request_id: Some(meta.client_request_id.clone()),
        message: None,
        by: Some(crate::store::this_process()),
    }
}

/// A call that went well, as the session's history keeps it.
pub(crate) fn ok_outcome(meta: &CallMeta, action: Action, at: DateTime<Utc>) -> Outcome {
    outcome(meta, action, OutcomeKind::Ok, at)
}

/// Graph's facts about a failed call, as the session's history keeps them.
pub(crate) fn failed_outcome(e: &GraphError, action: Action, at: DateTime<Utc>) -> Outcome {
    let mut failed = outcome(&e.meta, action, kind_of(e.class), at);
    failed.codes = e.codes.clone();
    failed.message = e.message_with_wait();
    failed
}

/// The Graph calls the engine makes, with whatever authorisation they need.
pub trait Graph: Send + Sync {
    fn create<'a>(&'a self, workbook: &'a WorkbookRef, mode: Mode) -> BoxFuture<'a, Result<Reply<SessionId>, Failure>>;
    fn refresh<'a>(&'a self, workbook: &'a WorkbookRef, id: &'a SessionId)
    -> BoxFuture<'a, Result<Reply<()>, Failure>>;
    fn close<'a>(&'a self, workbook: &'a WorkbookRef, id: &'a SessionId) -> BoxFuture<'a, Result<Reply<()>, Failure>>;
    /// A by-path workbook as an item id; other forms come back as they are, without a request.
    fn resolve<'a>(&'a self, workbook: &'a WorkbookRef) -> BoxFuture<'a, Result<Reply<WorkbookRef>, Failure>>;
    /// refreshSession for sessions on different workbooks in one `$batch` request: `Err` when
    /// the batch itself failed (nothing is known of its items), else each item's answer in order.
    fn refresh_batch<'a>(&'a self, items: &'a [(&'a WorkbookRef, &'a SessionId)]) -> BoxFuture<'a, BatchResult>;
    /// Whose sign-in the calls go out under (`TrackedSession::owner`); `None` where that cannot
    /// be told.
    fn owner(&self) -> BoxFuture<'_, Option<String>> {
        futures_util::future::ready(None).boxed()
    }
}

/// What one `$batch` of refreshes answered: each item's answer, or the batch's own failure.
pub type BatchResult = Result<Vec<Result<Reply<()>, Failure>>, Failure>;

/// Graph over HTTP: a token for each call, renewed once when Graph refuses it.
pub struct LiveGraph {
    pub client: GraphClient,
    pub tokens: Tokens,
    /// Whose sign-in this is, once found.
    owner: tokio::sync::OnceCell<String>,
}

impl LiveGraph {
    pub fn new(client: GraphClient, tokens: Tokens) -> Arc<LiveGraph> {
        Arc::new(LiveGraph { client, tokens, owner: tokio::sync::OnceCell::new() })
    }

    /// Runs `call` with a token; on a `401` the token is renewed once and the call made again.
    async fn authorized<T, F, Fut>(&self, call: F) -> Result<Reply<T>, Failure>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<Reply<T>, GraphError>>,
    {
        let token = self.tokens.get().await?;
        match call(token.secret.clone()).await {
            Err(first) if first.class == ErrorClass::Auth => {
                tracing::info!(request_id = ?first.meta.request_id, "the token was refused; renewing it once");
                let spent = first.meta.requests;
                match self.tokens.renew_after_rejection(&token).await {
                    Ok(Some(renewed)) => match call(renewed.secret).await {
                        Ok(mut reply) => {
                            reply.meta.requests += spent;
                            Ok(reply)
                        }
                        Err(mut e) => {
                            e.meta.requests += spent;
                            Err(e.into())
                        }
                    },
                    Ok(None) => Err(first.into()),
                    Err(error) => Err(Failure::Auth { error, requests: spent }),
                }
            }
            other => Ok(other?),
        }
    }
}

impl Graph for LiveGraph {
    /// The `/me` user's principal name; where `/me` cannot be read, the token's own claim of
    /// who it is (docs/graph.md, "Owners"). Found once; not found, asked again next time.
    fn owner(&self) -> BoxFuture<'_, Option<String>> {
        async move {
            let found = self
                .owner
                .get_or_try_init(|| async {
                    let token = self.tokens.get().await.map_err(|_| ())?;
                    match self.client.me(token.secret.expose()).await {
                        Ok(me) => {
                            // Entra's names do not depend on case: one spelling for all.
                            if let Some(upn) = crate::text::clean_opt(me.value.user_principal_name.as_deref(), 200) {
                                return Ok(upn.to_lowercase());
                            }
                        }
                        Err(e) => {
                            tracing::info!(error = %e, request_id = ?e.meta.request_id, "/me could not be read; the token's own claim names its user")
                        }
                    }
                    crate::auth::token_subject(token.secret.expose()).map(|s| s.to_lowercase()).ok_or(())
                })
                .await;
            found.ok().cloned()
        }
        .boxed()
    }

    fn create<'a>(&'a self, workbook: &'a WorkbookRef, mode: Mode) -> BoxFuture<'a, Result<Reply<SessionId>, Failure>> {
        self.authorized(move |t: Secret| async move { self.client.create_session(t.expose(), workbook, mode).await })
            .boxed()
    }

    fn refresh<'a>(
        &'a self,
        workbook: &'a WorkbookRef,
        id: &'a SessionId,
    ) -> BoxFuture<'a, Result<Reply<()>, Failure>> {
        self.authorized(move |t: Secret| async move { self.client.refresh_session(t.expose(), workbook, id).await })
            .boxed()
    }

    fn close<'a>(&'a self, workbook: &'a WorkbookRef, id: &'a SessionId) -> BoxFuture<'a, Result<Reply<()>, Failure>> {
        self.authorized(move |t: Secret| async move { self.client.close_session(t.expose(), workbook, id).await })
            .boxed()
    }

    fn resolve<'a>(&'a self, workbook: &'a WorkbookRef) -> BoxFuture<'a, Result<Reply<WorkbookRef>, Failure>> {
        async move {
            if !workbook.is_by_path() {
                return Ok(Reply { value: workbook.clone(), meta: CallMeta::default() });
            }
            self.authorized(move |t: Secret| async move { self.client.resolve(t.expose(), workbook).await }).await
        }
        .boxed()
    }

    fn refresh_batch<'a>(&'a self, items: &'a [(&'a WorkbookRef, &'a SessionId)]) -> BoxFuture<'a, BatchResult> {
        async move {
            let reply = self
                .authorized(move |t: Secret| async move { self.client.refresh_batch(t.expose(), items).await })
                .await?;
            let mut answers = Vec::with_capacity(reply.value.len());
            for answer in reply.value {
                answers.push(answer.map_err(Failure::from));
            }
            Ok(answers)
        }
        .boxed()
    }
}

/// Everything one operation did, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Oldest first.
    pub outcomes: Vec<Outcome>,
    /// Set when the session was created or recreated.
    pub new_session_id: Option<SessionId>,
    /// Set when a by-path workbook was resolved on the way.
    pub(crate) resolved_workbook: Option<WorkbookRef>,
    /// The failure the operation ended with; `None` when it ended well.
    pub failure: Option<Failure>,
    /// HTTP requests made, for the budget.
    pub requests: u32,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    fn fail(&mut self, failure: Failure, action: Action, clock: &Clock) {
        self.requests += failure.requests();
        self.outcomes.push(failure.outcome(action, clock.now()));
        self.failure = Some(failure);
    }

    /// The store writes that record this report for `session` (after `apply_to`): its new state
    /// with each outcome.
    pub(crate) fn records(&self, session: &TrackedSession) -> Vec<crate::store::Write> {
        self.records_with(session, Some(crate::store::RuntimeState::of(session)))
    }

    /// The outcomes alone, for a call that changed nothing of the session's state.
    pub(crate) fn outcomes_only(&self, session: &TrackedSession) -> Vec<crate::store::Write> {
        self.records_with(session, None)
    }

    fn records_with(
        &self,
        session: &TrackedSession,
        state: Option<crate::store::RuntimeState>,
    ) -> Vec<crate::store::Write> {
        self.outcomes
            .iter()
            .map(|o| crate::store::Write::Record { key: session.key, state: state.clone(), outcome: Some(o.clone()) })
            .collect()
    }

    /// Applies the report to a session: status, last refresh, failures, id, newest outcome.
    pub fn apply_to(&self, session: &mut TrackedSession) {
        if let Some(id) = &self.new_session_id {
            session.session_id = id.clone();
        }
        if let Some(workbook) = &self.resolved_workbook {
            session.workbook = workbook.clone();
        }
        for outcome in &self.outcomes {
            if outcome.kind == OutcomeKind::Ok {
                if outcome.action != Action::Close {
                    session.last_refresh = Some(outcome.at);
                }
                session.failures = 0;
            } else {
                session.failures = session.failures.saturating_add(1);
            }
        }
        if let Some(last) = self.outcomes.last() {
            session.last_call = Some(last.into());
            session.status = Status::after(last.action, last.kind);
        }
    }
}

/// Resolves a by-path workbook once; others come back as they are.
pub async fn resolve(graph: &dyn Graph, workbook: &WorkbookRef) -> (Result<WorkbookRef, Failure>, u32) {
    match graph.resolve(workbook).await {
        Ok(reply) => (Ok(reply.value), reply.meta.requests),
        Err(failure) => {
            let spent = failure.requests();
            (Err(failure), spent)
        }
    }
}

/// Creates a session on `workbook`, resolving a by-path one first.
pub async fn create(graph: &dyn Graph, workbook: &WorkbookRef, mode: Mode, clock: &Clock) -> Report {
    let mut report = Report::default();
    let (resolved, spent) = resolve(graph, workbook).await;
    report.requests += spent;
    let workbook = match resolved {
        Ok(w) => {
            if w != *workbook {
                report.resolved_workbook = Some(w.clone());
            }
            w
        }
        Err(failure) => {
            report.fail(failure, Action::Create, clock);
            return report;
        }
    };
    match graph.create(&workbook, mode).await {
        Ok(reply) => {
            report.requests += reply.meta.requests;
            report.outcomes.push(ok_outcome(&reply.meta, Action::Create, clock.now()));
            report.new_session_id = Some(reply.value);
        }
        Err(failure) => report.fail(failure, Action::Create, clock),
    }
    report
}

/// Refreshes a session: one call. Recreating an expired one is a job of its own.
pub async fn refresh(graph: &dyn Graph, session: &TrackedSession, clock: &Clock) -> Report {
    refreshed(graph.refresh(&session.workbook, &session.session_id).await, clock)
}

fn refreshed(answer: Result<Reply<()>, Failure>, clock: &Clock) -> Report {
    let mut report = Report::default();
    match answer {
        Ok(reply) => {
            report.requests += reply.meta.requests;
            report.outcomes.push(ok_outcome(&reply.meta, Action::Refresh, clock.now()));
        }
        Err(failure) => report.fail(failure, Action::Refresh, clock),
    }
    report
}

/// What became of a group's `$batch` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Batch {
    /// None was sent: the probe said no.
    NotSent,
    /// Graph answered it (each item on its own, or one outer `429`/`401` for all).
    Answered,
    /// It was refused, or answered unusably: what was wrong.
    DidNotWork(String),
    /// No answer came (a timeout, a dropped connection): why.
    Unanswered(String),
}

/// What refreshing a group of sessions found (`refresh_group`).
#[derive(Debug)]
pub(crate) struct GroupResult {
    /// One per session, in the order given.
    pub reports: Vec<Report>,
    /// What the probe found, when one was made.
    pub probe: Option<Probe>,
    /// `Answered`: the reports came from the batch; otherwise from plain calls.
    pub batch: Batch,
}

/// Refreshes sessions on different workbooks: in one `$batch` request, probing first whether
/// Graph reads the session header there when `probe` is set (`batching`); one request after
/// another when the probe says no or the batch does not work. One after another: the group holds
/// one place under the concurrency limit.
pub(crate) async fn refresh_group(
    graph: &dyn Graph,
    sessions: &[&TrackedSession],
    probe: bool,
    clock: &Clock,
) -> GroupResult {
    let mut result = GroupResult { reports: Vec::new(), probe: None, batch: Batch::NotSent };
    if sessions.is_empty() {
        return result;
    }
    // Requests that went to no session's own answer: the probe's, a failed batch's.
    let mut overhead = 0;
    if let Some(first) = sessions.first().filter(|_| probe) {
        let (found, spent) = probe_batch(graph, &first.workbook).await;
        overhead += spent;
        result.probe = Some(found);
    }
    if result.probe.as_ref().is_none_or(|p| *p == Probe::Honoured) {
        let items: Vec<(&WorkbookRef, &SessionId)> = sessions.iter().map(|s| (&s.workbook, &s.session_id)).collect();
        result.batch = match graph.refresh_batch(&items).await {
            Ok(answers) if answers.len() == sessions.len() => {
                result.reports = answers.into_iter().map(|answer| refreshed(answer, clock)).collect();
                Batch::Answered
            }
            Ok(_) => {
                overhead += 1;
                Batch::DidNotWork("the answer did not match the requests".into())
            }
            // Graph would say the same to each request on its own.
            Err(failure) if matches!(failure.class(), ErrorClass::Throttled | ErrorClass::Auth) => {
                result.reports = sessions.iter().map(|_| refreshed(Err(failure.clone()), clock)).collect();
                Batch::Answered
            }
            Err(failure) => {
                overhead += failure.requests();
                if failure.class() == ErrorClass::Failed {
                    Batch::DidNotWork(failure.to_string())
                } else {
                    Batch::Unanswered(failure.to_string())
                }
            }
        };
    }
    if result.batch != Batch::Answered {
        for session in sessions {
            result.reports.push(refresh(graph, session, clock).await);
        }
    }
    if let Some(first) = result.reports.first_mut() {
        first.requests += overhead;
    }
    result
}

/// Asks Graph, in a one-item `$batch`, to refresh a session id that does not exist on
/// `workbook` (docs/graph.md, "Batching"). Only an `invalidSession…` code back shows that Graph
/// read the header there; a success shows that it did not. Returns the requests it made.
pub(crate) async fn probe_batch(graph: &dyn Graph, workbook: &WorkbookRef) -> (Probe, u32) {
    let Ok(unknown) = SessionId::new(&format!("wbsessions-probe-{}", uuid::Uuid::new_v4())) else {
        return (Probe::Inconclusive("no probe id".into()), 0);
    };
    match graph.refresh_batch(&[(workbook, &unknown)]).await {
        Ok(answers) => match answers.into_iter().next() {
            Some(Ok(_)) => (Probe::Ignored, 1),
            Some(Err(Failure::Graph(e)))
                if e.codes.iter().any(|c| c.to_ascii_lowercase().starts_with("invalidsession")) =>
            {
                (Probe::Honoured, 1)
            }
            Some(Err(failure)) => (Probe::Inconclusive(failure.to_string()), 1),
            None => (Probe::Inconclusive("the $batch answer was empty".into()), 1),
        },
        Err(failure) if failure.class() == ErrorClass::Failed => {
            (Probe::Unavailable(failure.to_string()), failure.requests())
        }
        Err(failure) => (Probe::Inconclusive(failure.to_string()), failure.requests()),
    }
}

/// Closes a session at Graph. One that is already gone counts as closed.
pub async fn close(graph: &dyn Graph, session: &TrackedSession, clock: &Clock) -> Report {
    let mut report = Report::default();
    match graph.close(&session.workbook, &session.session_id).await {
        Ok(reply) => {
            report.requests += reply.meta.requests;
            report.outcomes.push(ok_outcome(&reply.meta, Action::Close, clock.now()));
        }
        Err(Failure::Graph(e)) if e.class == ErrorClass::Expired => {
            report.requests += e.meta.requests;
            let mut outcome = failed_outcome(&e, Action::Close, clock.now());
            outcome.kind = OutcomeKind::Ok;
            outcome.message = Some("the session was already gone".into());
            report.outcomes.push(outcome);
        }
        Err(failure) => report.fail(failure, Action::Close, clock),
    }
    report
}
