//! The session calls (create with 202 polling, refresh, close, `$batch` of refreshes) and the
//! lookups around them (a by-path workbook, `/me`), made through the `Transport`.

use std::fmt;
use std::time::Instant;

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::error::{CallKind, ErrorBody, ErrorClass, classify};
use super::transport::{
    Answered, Call, CallMeta, ClientBuildError, ClientOptions, GraphError, Reply, Transport, failure, header_text,
};
use crate::session::{Mode, SessionId, WorkbookRef};
use crate::text;

#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    #[serde(rename = "userPrincipalName", default)]
    pub(crate) user_principal_name: Option<String>,
}

#[derive(Clone)]
pub struct GraphClient {
    transport: Transport,
    options: ClientOptions,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient").field("base", &self.transport.base_url().as_str()).finish()
    }
}

impl GraphClient {
    pub fn new(base_url: &str, options: ClientOptions) -> Result<Self, ClientBuildError> {
        let transport = Transport::new(base_url, options.timeout)?;
        Ok(GraphClient { transport, options })
    }

    /// The way to the Graph host these calls use, for requests of any kind.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub(crate) fn base_url(&self) -> &url::Url {
        self.transport.base_url()
    }

    fn url_for(&self, workbook: &WorkbookRef, tail: &[&str]) -> url::Url {
        let segments = workbook.segments();
        self.transport.url_for(segments.iter().map(String::as_str).chain(tail.iter().copied()))
    }

    async fn send(
        &self,
        token: &str,
        call: Call<'_>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, CallMeta), GraphError> {
        let Answered { status, headers, body, meta } = self.transport.send(token, call).await?;
        Ok((status, headers, body, meta))
    }

    /// createSession: `201` at once, or `202` + operation polling; a `504` is sent again (bounded).
    pub async fn create_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        mode: Mode,
    ) -> Result<Reply<SessionId>, GraphError> {
        let url = self.url_for(workbook, &["workbook", "createSession"]);
        let started = Instant::now();
        // A 504 here is sent again by the caller's dispatcher (docs/graph.md, "Errors"), which sees
        // every request.
        let call = Call {
            body: Some(json!({ "persistChanges": mode.persist_changes() })),
            prefer_async: self.options.respond_async,
            ..Call::new(Method::POST, url, CallKind::Create)
        };
        let (status, headers, bytes, mut meta) = self.send(token, call).await?;
        let id = if status == StatusCode::ACCEPTED {
            let location = header_text(&headers, LOCATION.as_str()).ok_or_else(|| {
                GraphError::local(ErrorClass::Transient, meta.clone(), "202 Accepted without a Location header".into())
            })?;
            let first = meta.requests;
            let (id, last) = self.poll_operation(token, &location, meta.clone()).await.map_err(|mut e| {
                e.meta.requests += first;
                e
            })?;
            meta = CallMeta { requests: first + last.requests, ..last };
            id
        } else {
            parse_session_id(&bytes).map_err(|why| GraphError::local(ErrorClass::Transient, meta.clone(), why))?
        };
        meta.latency = started.elapsed();
        Ok(Reply { value: id, meta })
    }

    /// Polls a long-running create; the returned meta (or the error's) counts every poll.
    async fn poll_operation(
        &self,
        token: &str,
        location: &str,
        meta: CallMeta,
    ) -> Result<(SessionId, CallMeta), GraphError> {
        let sent = std::sync::atomic::AtomicU32::new(0);
        match self.poll_operation_counted(token, location, meta, &sent).await {
            Ok((id, mut meta)) => {
                meta.requests = sent.load(std::sync::atomic::Ordering::Relaxed);
                Ok((id, meta))
            }
            Err(mut e) => {
                e.meta.requests = sent.load(std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn send_counted(
        &self,
        sent: &std::sync::atomic::AtomicU32,
        token: &str,
        call: Call<'_>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, CallMeta), GraphError> {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send(token, call).await
    }

    async fn poll_operation_counted(
        &self,
        token: &str,
        location: &str,
        mut meta: CallMeta,
        sent: &std::sync::atomic::AtomicU32,
    ) -> Result<(SessionId, CallMeta), GraphError> {
        #[derive(Deserialize)]
        struct Operation {
            #[serde(default)]
            status: Option<String>,
            #[serde(rename = "resourceLocation", default)]
            resource_location: Option<String>,
            #[serde(default)]
            error: Option<serde_json::Value>,
        }
        let url =
            self.transport.follow(location).map_err(|why| GraphError::local(ErrorClass::Failed, meta.clone(), why))?;
        let policy = self.options.poll;
        let started = Instant::now();
        let mut wait = policy.first;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(policy.max);
            // The session may exist already: a throttled or failed poll is polled again, never
            // answered with a second createSession that would leave the first one open.
            let (_, _, bytes, m) = match self
                .send_counted(sent, token, Call::new(Method::GET, url.clone(), CallKind::Other))
                .await
            {
                Err(e)
                    if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient)
                        && started.elapsed() < policy.give_up_after =>
                {
                    tracing::info!(request_id = ?e.meta.request_id, "polling the create operation failed; polling again");
                    if let Some(after) = e.retry_after {
                        wait = after.clamp(policy.first, policy.max);
                    }
                    continue;
                }
                other => other?,
            };
            meta = m;
            let op: Operation = serde_json::from_slice(&bytes).map_err(|e| {
                GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable operation status: {e}"))
            })?;
            match op.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("succeeded") => {
                    let resource = op.resource_location.ok_or_else(|| {
                        GraphError::local(
                            ErrorClass::Transient,
                            meta.clone(),
                            "the operation succeeded without a resourceLocation".into(),
                        )
                    })?;
                    let url = self
                        .transport
                        .follow(&resource)
                        .map_err(|why| GraphError::local(ErrorClass::Failed, meta.clone(), why))?;
                    let mut pause = policy.first;
                    let (_, _, bytes, m) = loop {
                        match self.send_counted(sent, token, Call::new(Method::GET, url.clone(), CallKind::Other)).await
                        {
                            Err(e)
                                if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient)
                                    && started.elapsed() < policy.give_up_after =>
                            {
                                tokio::time::sleep(e.retry_after.map_or(pause, |a| a.clamp(policy.first, policy.max)))
                                    .await;
                                pause = (pause * 2).min(policy.max);
                            }
                            other => break other?,
                        }
                    };
                    let id = parse_session_id(&bytes)
                        .map_err(|why| GraphError::local(ErrorClass::Transient, m.clone(), why))?;
                    return Ok((id, m));
                }
                Some("failed") => {
                    let wrapped = json!({ "error": op.error.clone().unwrap_or(serde_json::Value::Null) });
                    let body = ErrorBody::parse(wrapped.to_string().as_bytes());
                    let class = classify(meta.http_status.unwrap_or(200), &body, CallKind::Create, false);
                    // A failed operation arrives with HTTP 200, so the status says nothing; never call it success.
                    let class = if class == ErrorClass::Failed || class == ErrorClass::Expired {
                        ErrorClass::Failed
                    } else {
                        class
                    };
                    meta.request_id =
                        meta.request_id.or_else(|| text::clean_opt(body.request_id.as_deref(), text::MAX_TOKEN));
                    return Err(GraphError {
                        class,
                        meta,
                        codes: body.all_codes().iter().take(8).map(|c| text::clean(c, text::MAX_TOKEN)).collect(),
                        message: Some(
                            text::clean_opt(body.message.as_deref(), text::MAX_MESSAGE)
                                .unwrap_or_else(|| "the createSession operation failed".into()),
                        ),
                        retry_after: None,
                    });
                }
                // notStarted, running, and anything unknown: still running.
                _ => {}
            }
            if started.elapsed() >= policy.give_up_after {
                return Err(GraphError::local(
                    ErrorClass::Transient,
                    meta,
                    format!(
                        "the createSession operation did not finish within {}",
                        crate::time::format_duration(policy.give_up_after)
                    ),
                ));
            }
        }
    }

    pub async fn refresh_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
    ) -> Result<Reply<()>, GraphError> {
        self.sessionful(token, workbook, id, "refreshSession").await
    }

    pub async fn close_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
    ) -> Result<Reply<()>, GraphError> {
        self.sessionful(token, workbook, id, "closeSession").await
    }

    async fn sessionful(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
        call: &str,
    ) -> Result<Reply<()>, GraphError> {
        let url = self.url_for(workbook, &["workbook", call]);
        let (_, _, _, meta) = self
            .send(
                token,
                Call {
                    session: Some(id),
                    body: Some(json!({})),
                    timeout: Some(self.options.session_timeout),
                    ..Call::new(Method::POST, url, CallKind::Sessionful)
                },
            )
            .await?;
        Ok(Reply { value: (), meta })
    }

    /// refreshSession for several sessions in one `$batch` request (docs/graph.md, "Batching"),
    /// each on its own workbook: Graph may run a batch's items at once, and a workbook takes one
    /// call at a time. The outer error is the batch's own (nothing is known of the items then);
    /// an answer that came but cannot be read, or does not answer each request, is `Failed`: the
    /// batch did not work. Otherwise each item's answer, in the order given, classified as a
    /// plain call's would be. Each item counts as one request: Graph throttles them one by one.
    pub async fn refresh_batch(
        &self,
        token: &str,
        items: &[(&WorkbookRef, &SessionId)],
    ) -> Result<Reply<Vec<Result<Reply<()>, GraphError>>>, GraphError> {
        let requests: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, (workbook, id))| {
                let url = self.url_for(workbook, &["workbook", "refreshSession"]);
                let relative = url.path().strip_prefix(self.base_url().path()).unwrap_or(url.path());
                json!({
                    "id": i.to_string(),
                    "method": "POST",
                    "url": relative,
                    "headers": { "workbook-session-id": id.as_str(), "Content-Type": "application/json" },
                    "body": {},
                })
            })
            .collect();
        let url = self.transport.url_for(["$batch"]);
        let call = Call {
            body: Some(json!({ "requests": requests })),
            timeout: Some(self.options.session_timeout),
            ..Call::new(Method::POST, url, CallKind::Other)
        };
        let (_, _, bytes, outer) = self.send(token, call).await.map_err(|mut e| {
            // An answer came (too long, broken off): the batch itself did not work.
            if e.meta.http_status.is_some_and(|s| (200..300).contains(&s)) {
                e.class = ErrorClass::Failed;
            }
            e
        })?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            responses: Vec<ItemAnswer>,
        }
        #[derive(Deserialize)]
        struct ItemAnswer {
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            status: Option<u16>,
            #[serde(default)]
            headers: serde_json::Map<String, serde_json::Value>,
            #[serde(default)]
            body: Option<serde_json::Value>,
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Failed, outer.clone(), format!("unreadable $batch answer: {e}"))
        })?;
        let mut results: Vec<Option<Result<Reply<()>, GraphError>>> = items.iter().map(|_| None).collect();
        for item in answer.responses {
            // Ids are sent as "0", "1", ...; a server may echo them as numbers.
            let index = match &item.id {
                Some(serde_json::Value::String(s)) => s.parse::<usize>().ok(),
                Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
                _ => None,
            };
            let Some(slot) = index.and_then(|i| results.get_mut(i)).filter(|slot| slot.is_none()) else { continue };
            let header = |name: &str| {
                item.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            let meta = CallMeta {
                http_status: item.status,
                request_id: header("request-id")
                    .map(|id| text::clean(&id, text::MAX_TOKEN))
                    .or_else(|| outer.request_id.clone()),
                requests: 1,
                ..outer.clone()
            };
            let Some(status) = item.status else { continue };
            *slot = Some(if (200..300).contains(&status) {
                Ok(Reply { value: (), meta })
            } else {
                let body = item.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                Err(failure(status, header("retry-after"), body.as_bytes(), CallKind::Sessionful, meta))
            });
        }
        let mut value = Vec::with_capacity(results.len());
        for (i, slot) in results.into_iter().enumerate() {
            let Some(answer) = slot else {
                return Err(GraphError::local(
                    ErrorClass::Failed,
                    outer,
                    format!("the $batch answer did not answer request {i} with a status"),
                ));
            };
            value.push(answer);
        }
        Ok(Reply { value, meta: outer })
    }

    /// Turns `/me/drive/root:/a.xlsx:` into `me/drive/items/{id}`; other forms come back as they are.
    pub async fn resolve(&self, token: &str, workbook: &WorkbookRef) -> Result<Reply<WorkbookRef>, GraphError> {
        if !workbook.is_by_path() {
            return Ok(Reply { value: workbook.clone(), meta: CallMeta::default() });
        }
        #[derive(Deserialize)]
        struct Item {
            id: String,
        }
        let url = self.url_for(workbook, &[]);
        let (_, _, bytes, meta) = self.send(token, Call::new(Method::GET, url, CallKind::Other)).await?;
        let item: Item = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable drive item: {e}"))
        })?;
        // The id goes into URLs from now on: it must read as an item id of its own.
        WorkbookRef::parse(&format!("me/drive/items/{}", item.id)).map_err(|e| {
            GraphError::local(ErrorClass::Failed, meta.clone(), format!("the server returned an unusable item id: {e}"))
        })?;
        Ok(Reply { value: workbook.with_item(&item.id), meta })
    }

    /// `GET /me`: who the token belongs to.
    pub async fn me(&self, token: &str) -> Result<Reply<Me>, GraphError> {
        let url = self.transport.url_for(["me"]);
        let (_, _, bytes, meta) = self.send(token, Call::new(Method::GET, url, CallKind::Other)).await?;
        let me = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable /me answer: {e}"))
        })?;
        Ok(Reply { value: me, meta })
    }
}

fn parse_session_id(bytes: &[u8]) -> Result<SessionId, String> {
    #[derive(Deserialize)]
    struct Created {
        id: Option<String>,
    }
    let created: Created =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable createSession answer: {e}"))?;
    let raw = created.id.ok_or("the createSession answer has no session id")?;
    SessionId::new(&raw).map_err(|e| format!("the server returned an unusable session id: {e}"))
}
