//! The real token taken out of whatever Graph (or a hostile server in its place) sends back,
//! bodies and headers alike, success or error: it is never the caller's. Bodies are scrubbed as
//! they stream, holding back only as many bytes as could begin the token.

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

/// What stands in the token's place.
const WITHHELD: &[u8] = b"[withheld by wbsessions proxy]";
/// Shorter "tokens" are a test's placeholders (`t`), not secrets: replacing every `t` in every
/// answer would mangle it, and a replacement that contains the token would never end.
const MIN_SECRET: usize = 8;

/// Replaces the token in a stream of bytes, across chunk boundaries.
pub(super) struct Scrubber {
    finder: memchr::memmem::Finder<'static>,
    /// The end of what came so far that could still be the start of the token.
    held: Vec<u8>,
}

impl Scrubber {
    pub(super) fn new(token: &str) -> Option<Scrubber> {
        (token.len() >= MIN_SECRET)
            .then(|| Scrubber { finder: memchr::memmem::Finder::new(token.as_bytes()).into_owned(), held: Vec::new() })
    }

    fn len(&self) -> usize {
        self.finder.needle().len()
    }

    /// What of `chunk` (after what was held back) can be passed on now.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len());
        let mut from = 0;
        // Left to right, never looking again at what was put in: each match is replaced once.
        while let Some(at) = self.finder.find(&data[from..]) {
            out.extend_from_slice(&data[from..from + at]);
            out.extend_from_slice(WITHHELD);
            from += at + self.len();
        }
        let keep = data.len().saturating_sub(from).min(self.len() - 1);
        out.extend_from_slice(&data[from..data.len() - keep]);
        self.held = data[data.len() - keep..].to_vec();
        out
    }

    /// The bytes held back at the end: no token begins in them any more.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// `bytes` with the token taken out.
pub(super) fn scrubbed(bytes: &[u8], token: &str) -> Vec<u8> {
    match Scrubber::new(token) {
        Some(mut scrubber) => {
            let mut out = scrubber.feed(bytes);
            out.extend(scrubber.finish());
            out
        }
        None => bytes.to_vec(),
    }
}

/// Every header value with the token taken out of it.
pub(super) fn scrub_headers(headers: &mut HeaderMap, token: &str) {
    if token.len() < MIN_SECRET {
        return;
    }
    for value in headers.values_mut() {
        let bytes = value.as_bytes();
        if memchr::memmem::find(bytes, token.as_bytes()).is_some()
            && let Ok(clean) = HeaderValue::from_bytes(&scrubbed(bytes, token))
        {
            *value = clean;
        }
    }
}

/// A body stream with the token taken out as it passes.
pub(super) fn scrub_stream<E: Send + 'static>(
    stream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    token: &str,
) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static {
    let scrubber = Scrubber::new(token);
    let stream = Box::pin(stream);
    futures_util::stream::unfold((stream, scrubber, false), |(mut stream, mut scrubber, done)| async move {
        if done {
            return None;
        }
        match stream.next().await {
            Some(Ok(chunk)) => {
                let out = match scrubber.as_mut() {
                    Some(s) => Bytes::from(s.feed(&chunk)),
                    None => chunk,
                };
                Some((Ok(out), (stream, scrubber, false)))
            }
            Some(Err(e)) => Some((Err(e), (stream, scrubber, true))),
            None => {
                let rest = scrubber.as_mut().map(Scrubber::finish).unwrap_or_default();
                (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), (stream, scrubber, true)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_replaced_once_wherever_it_falls_and_short_tokens_are_left_alone() {
        let token = "eyJ0eXAi.secret-token.sig";
        let text = format!("a{token}b{token}{token}c");
        let whole = scrubbed(text.as_bytes(), token);
        assert_eq!(whole, format!("a{w}b{w}{w}c", w = "[withheld by wbsessions proxy]").into_bytes());
        // Fed a byte at a time, across every boundary, the same.
        let mut s = Scrubber::new(token).unwrap();
        let mut out: Vec<u8> = text.bytes().flat_map(|b| s.feed(&[b])).collect();
        out.extend(s.finish());
        assert_eq!(out, whole);
        // A token the replacement contains would loop forever; such tokens are not secrets.
        assert_eq!(scrubbed(b"content-type", "t"), b"content-type");
        assert_eq!(
            scrubbed(b"[withheld by wbsessions proxy]", "withheld"),
            b"[[withheld by wbsessions proxy] by wbsessions proxy]"
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        scrub_headers(&mut headers, token);
        assert_eq!(headers["x-echo"], "Bearer [withheld by wbsessions proxy]");
    }
}
