//! One operation on one session, start to finish: the token, the call, one renewal on a `401`,
//! and recreation of an expired session where allowed. The engine runs these in tasks; the
//! one-shot commands call them directly.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::{AuthError, Secret, Tokens};
use crate::graph::{ErrorClass, GraphClient, GraphError, Reply};
use crate::session::{Action, Mode, Outcome, OutcomeKind, SessionId, TrackedSession, WorkbookRef};
use crate::time::Clock;

/// What operations need, cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Context {
    pub client: GraphClient,
    pub tokens: Tokens,
    pub clock: Clock,
}

/// Why a call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

impl Failure {
    pub fn class(&self) -> ErrorClass {
        match self {
            Failure::Auth(_) => ErrorClass::Auth,
            Failure::Graph(e) => e.class,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Auth(_) => None,
            Failure::Graph(e) => e.retry_after,
        }
    }

    fn outcome(&self, action: Action, at: DateTime<Utc>) -> Outcome {
        match self {
            Failure::Graph(e) => e.outcome(action, at),
            Failure::Auth(e) => Outcome {
                at,
                action,
                kind: OutcomeKind::Auth,
                latency_ms: 0,
                http_status: None,
                codes: Vec::new(),
                request_id: None,
                client_request_id: None,
                message: Some(e.to_string()),
            },
        }
    }
}

/// Runs `call` with a token; on a `401` the token is renewed once and the call made again.
async fn authorized<T, F, Fut>(tokens: &Tokens, call: F) -> Result<Reply<T>, Failure>
where
    F: Fn(Secret) -> Fut,
    Fut: Future<Output = Result<Reply<T>, GraphError>>,
{
    let token = tokens.get().await?;
    match call(token.secret.clone()).await {
        Err(e) if e.class == ErrorClass::Auth => {
            tracing::info!(request_id = ?e.meta.request_id, "the token was refused; renewing it once");
            match tokens.renew_after_rejection(&token).await? {
                Some(renewed) => Ok(call(renewed.secret).await?),
                None => Err(e.into()),
            }
        }
        other => Ok(other?),
    }
}

/// Everything one operation did, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Oldest first.
    pub outcomes: Vec<Outcome>,
    /// Set when the session was recreated (or created).
    pub new_session_id: Option<SessionId>,
    /// Set when a by-path workbook was resolved on the way.
    pub resolved_workbook: Option<WorkbookRef>,
    /// The failure the operation ended with; `None` when it ended well.
    pub failure: Option<Failure>,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// The store writes that record this report for `session` (after `apply_to`): its new state
    /// with each outcome.
    pub fn records(&self, session: &TrackedSession) -> Vec<crate::store::Write> {
        let state = crate::store::RuntimeState::of(session);
        self.outcomes
            .iter()
            .map(|o| crate::store::Write::Record { key: session.key, state: state.clone(), outcome: Some(o.clone()) })
            .collect()
    }

    /// Applies the report to a session: status, last refresh, failures, id, outcomes (newest first,
    /// at most `keep`).
    pub fn apply_to(&self, session: &mut TrackedSession, keep: usize) {
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
            session.outcomes.insert(0, outcome.clone());
        }
        session.outcomes.truncate(keep);
        if let Some(last) = self.outcomes.last() {
            session.status = match (last.action, last.kind) {
                (Action::Close, OutcomeKind::Ok) => crate::session::Status::Closed,
                (_, kind) => kind.into(),
            };
        }
    }
}

/// Resolves a by-path workbook once; others come back as they are.
pub async fn resolve(ctx: &Context, workbook: &WorkbookRef) -> Result<WorkbookRef, Failure> {
    if !workbook.is_by_path() {
        return Ok(workbook.clone());
    }
    Ok(authorized(&ctx.tokens, |t: Secret| async move { ctx.client.resolve(t.expose(), workbook).await }).await?.value)
}

/// Creates a session on `workbook`.
pub async fn create(ctx: &Context, workbook: &WorkbookRef, mode: Mode) -> Report {
    let mut report = Report::default();
    let workbook = match resolve(ctx, workbook).await {
        Ok(w) => {
            if w != *workbook {
                report.resolved_workbook = Some(w.clone());
            }
            w
        }
        Err(failure) => {
            report.outcomes.push(failure.outcome(Action::Create, ctx.clock.now()));
            report.failure = Some(failure);
            return report;
        }
    };
    match authorized(&ctx.tokens, |t: Secret| {
        let workbook = &workbook;
        async move { ctx.client.create_session(t.expose(), workbook, mode).await }
    })
    .await
    {
        Ok(reply) => {
            report.outcomes.push(reply.meta.ok_outcome(Action::Create, ctx.clock.now()));
            report.new_session_id = Some(reply.value);
        }
        Err(failure) => {
            report.outcomes.push(failure.outcome(Action::Create, ctx.clock.now()));
            report.failure = Some(failure);
        }
    }
    report
}

/// Refreshes a session; an expired one is recreated when the session allows it.
pub async fn refresh(ctx: &Context, session: &TrackedSession) -> Report {
    let mut report = Report::default();
    let call =
        |t: Secret| async move { ctx.client.refresh_session(t.expose(), &session.workbook, &session.session_id).await };
    match authorized(&ctx.tokens, call).await {
        Ok(reply) => report.outcomes.push(reply.meta.ok_outcome(Action::Refresh, ctx.clock.now())),
        Err(failure) => {
            report.outcomes.push(failure.outcome(Action::Refresh, ctx.clock.now()));
            if failure.class() == ErrorClass::Expired && session.recreate {
                tracing::info!(session = %session.name, "session expired; creating a new one as allowed");
                let created = create(ctx, &session.workbook, session.mode).await;
                report.outcomes.extend(created.outcomes);
                report.new_session_id = created.new_session_id;
                report.resolved_workbook = created.resolved_workbook;
                report.failure = created.failure;
            } else {
                report.failure = Some(failure);
            }
        }
    }
    report
}

/// Closes a session at Graph. One that is already gone counts as closed.
pub async fn close(ctx: &Context, session: &TrackedSession) -> Report {
    let mut report = Report::default();
    let call =
        |t: Secret| async move { ctx.client.close_session(t.expose(), &session.workbook, &session.session_id).await };
    match authorized(&ctx.tokens, call).await {
        Ok(reply) => report.outcomes.push(reply.meta.ok_outcome(Action::Close, ctx.clock.now())),
        Err(Failure::Graph(e)) if e.class == ErrorClass::Expired => {
            let mut outcome = e.outcome(Action::Close, ctx.clock.now());
            outcome.kind = OutcomeKind::Ok;
            outcome.message = Some("the session was already gone".into());
            report.outcomes.push(outcome);
        }
        Err(failure) => {
            report.outcomes.push(failure.outcome(Action::Close, ctx.clock.now()));
            report.failure = Some(failure);
        }
    }
    report
}
