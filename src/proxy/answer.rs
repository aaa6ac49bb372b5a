//! Reading what Graph answers: whole (a `$batch`'s), its first part (an error's), or streamed
//! to the caller under a turn that a caller who stops reading cannot keep.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::TurnGuard;
use crate::graph::ForwardError;

/// How long a whole answer (a `$batch`'s, read before it is passed on) may take to arrive.
const WHOLE_ANSWER_TIME: Duration = Duration::from_secs(120);

/// A whole answer, or why there is none: it broke off, stalled, took longer than
/// `WHOLE_ANSWER_TIME` or grew past the proxy's body limit. Part of an answer is never passed
/// on as if it were all of it.
pub(super) async fn read_whole(
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, ForwardError>> + Send,
) -> Result<Vec<u8>, ForwardError> {
    let mut stream = std::pin::pin!(stream);
    let read = async {
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    };
    tokio::time::timeout(WHOLE_ANSWER_TIME, read).await.unwrap_or_else(|_| {
        Err(ForwardError::Unanswered(format!(
            "the answer took longer than {}",
            crate::time::format_duration(WHOLE_ANSWER_TIME)
        )))
    })
}

/// Reads the first `cap` bytes of an answer (one that trickles is not waited for without end),
/// and hands back the rest of it, if there is more.
pub(super) async fn read_prefix<S>(
    stream: S,
    cap: usize,
) -> (Vec<u8>, Option<futures_util::stream::BoxStream<'static, S::Item>>)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, ForwardError>> + Send + 'static,
{
    let mut stream = stream.boxed();
    let mut bytes = Vec::new();
    let mut ended = false;
    let read = async {
        while bytes.len() < cap {
            match stream.next().await {
                Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
                Some(Err(_)) | None => {
                    ended = true;
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), read).await.is_err() {
        ended = true;
    }
    (bytes, (!ended).then_some(stream))
}

/// Time in all that one call may hold its workbook's turn while its answer streams.
const MAX_TURN: Duration = Duration::from_secs(300);

/// A turn held while an answer streams to its caller; a watchdog ends it when the caller
/// stops taking the answer.
pub(super) struct HeldTurn {
    guard: Arc<std::sync::Mutex<Option<TurnGuard>>>,
    began: Instant,
    /// When the caller last took a chunk, in milliseconds since `began`.
    progress: Arc<std::sync::atomic::AtomicU64>,
    /// Ends the turn of a caller that stalls; stopped with the answer, so that a proxy passing
    /// thousands of calls a second keeps no timer for calls that are over.
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl HeldTurn {
    pub(super) fn new(guard: TurnGuard, stall: Duration) -> HeldTurn {
        let mut held = HeldTurn {
            guard: Arc::new(std::sync::Mutex::new(Some(guard))),
            began: Instant::now(),
            progress: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            watchdog: None,
        };
        let (guard, progress, began) = (held.guard.clone(), held.progress.clone(), held.began);
        held.watchdog = Some(tokio::spawn(async move {
            loop {
                // Asleep until the caller could first count as stalled, then looked at again.
                let taken = Duration::from_millis(progress.load(Ordering::Relaxed));
                let wake = (began + taken + stall).min(began + MAX_TURN);
                tokio::time::sleep_until(wake.into()).await;
                let taken = Duration::from_millis(progress.load(Ordering::Relaxed));
                let stalled = began.elapsed().saturating_sub(taken) >= stall;
                let mut slot = guard.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    return;
                }
                if stalled || began.elapsed() >= MAX_TURN {
                    tracing::warn!(stalled, "a caller is not taking its answer; its workbook's turn ends");
                    drop(slot.take());
                    return;
                }
            }
        }));
        held
    }

    pub(super) fn progressed(&self) {
        let at = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress.store(at, Ordering::Relaxed);
    }
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        drop(self.guard.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}
