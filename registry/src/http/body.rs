//! Request and response bodies. Blob bodies move as streams of `Bytes` in both
//! directions (STYLE habit 7); only manifests are collected, under a size limit.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming, SizeHint};
use storage::{BodyStream, ByteStream};

/// Why a request body could not be read: what the handlers match on.
///
/// The store takes bodies as [`BodyStream`]s, whose items carry `io::Error`; a
/// `BodyError` crosses that boundary inside one ([`BodyError::into_io`]) and is
/// recovered on the way back ([`BodyError::in_io`]). Inside the registry it is typed.
#[derive(Debug)]
pub enum BodyError {
    /// The body's length differs from what the client declared (Content-Length or
    /// Content-Range): the client's mistake, `SIZE_INVALID`.
    LengthMismatch {
        declared: u64,
        received_at_least: u64,
    },
    /// The connection failed while the body was read (usually the client went away).
    Read(hyper::Error),
    /// No byte of the body arrived for `server.body_idle_timeout_secs`.
    Idle(std::time::Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::LengthMismatch {
                declared,
                received_at_least,
            } => write!(
                f,
                "request body length differs from the declared {declared} bytes (received {received_at_least}{})",
                if received_at_least > declared { "+" } else { "" }
            ),
            BodyError::Read(e) => e.fmt(f),
            BodyError::Idle(after) => write!(
                f,
                "no request body bytes arrived for {} s",
                after.as_secs()
            ),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::LengthMismatch { .. } | BodyError::Idle(_) => None,
            BodyError::Read(e) => Some(e),
        }
    }
}

impl BodyError {
    /// The `io::Error` the store's body stream carries.
    pub fn into_io(self) -> io::Error {
        let kind = match self {
            BodyError::LengthMismatch { .. } => io::ErrorKind::InvalidData,
            BodyError::Read(_) => io::ErrorKind::Other,
            BodyError::Idle(_) => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, self)
    }

    /// The `BodyError` an `io::Error` from the store carries, when it came from one of
    /// our request bodies (the store adds no body errors of its own).
    pub fn in_io(e: &io::Error) -> Option<&BodyError> {
        e.get_ref()?.downcast_ref()
    }
}

/// The response body type. Unsync because the store's read streams are `Send` only.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that records whether it was read to its end, and how many bytes of
/// it were read (for `/metrics`).
///
/// A handler may answer without reading the body (an error, or a repeated commit
/// that needs nothing from it). hyper then cannot find where the next request on the
/// connection starts and closes it after the response; a client that has already
/// put the connection back in its pool sends its next request into the closed socket.
/// [`BodyEnd::unread`] lets the server say `Connection: close` in such a response.
///
/// A body that goes `idle` (no frame) for that long ends with [`BodyError::Idle`]: a
/// client trickling or stalling an upload cannot hold the request open for ever.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// `None` for a request that came with no body: nothing to track (and no
    /// allocation for most requests).
    read: Option<Arc<ReadState>>,
    idle: Duration,
    /// Armed on the first wait for a frame; `moved` says a frame came since.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

#[derive(Debug)]
struct ReadState {
    to_end: AtomicBool,
    bytes: AtomicU64,
}

/// Whether a [`RequestBody`] was read to its end, kept by the server while the
/// handler has the body.
#[derive(Debug)]
pub struct BodyEnd(Option<Arc<ReadState>>);

impl BodyEnd {
    /// True when the request carried a body that was not read to its end.
    pub fn unread(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|read| !read.to_end.load(Ordering::Acquire))
    }

    /// Bytes of the body read so far.
    pub fn bytes_read(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |read| read.bytes.load(Ordering::Relaxed))
    }
}

impl RequestBody {
    pub fn new(inner: Incoming, idle: Duration) -> (Self, BodyEnd) {
        let read = (!hyper::body::Body::is_end_stream(&inner)).then(|| {
            Arc::new(ReadState {
                to_end: AtomicBool::new(false),
                bytes: AtomicU64::new(0),
            })
        });
        let end = BodyEnd(read.clone());
        let body = RequestBody {
            inner,
            read,
            idle,
            timer: None,
            moved: false,
        };
        (body, end)
    }

    /// Waits on the idle timer while the connection has no frame for us: `true` once
    /// it has run out.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if std::mem::take(&mut self.moved) {
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending if self.idle_expired(cx) => {
                return Poll::Ready(Some(Err(BodyError::Idle(self.idle))));
            }
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => {
                self.moved = true;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)))
            }
        };
        let Some(read) = &self.read else {
            return polled;
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                read.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            read.to_end.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Streams a blob read to the client. A store error mid-stream (e.g. a segment that
/// fails authentication) becomes a body error, which makes hyper cut the connection:
/// the client sees a truncated response, never unauthenticated bytes.
pub fn from_store(stream: ByteStream) -> Body {
    let frames = stream.map(|item| match item {
        Ok(bytes) => Ok(Frame::data(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "blob stream failed mid-response; cutting the connection");
            Err(io::Error::other(e))
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// The request body as the store takes it, checked against a declared length.
///
/// With `declared = Some(n)`, a body that ends before `n` bytes or runs past them
/// yields [`BodyError::LengthMismatch`] (inside the stream's `io::Error`): the store
/// then discards the append instead of committing a chunk that is not what the client
/// said it sent.
pub fn request_stream(body: RequestBody, declared: Option<u64>) -> BodyStream<'static> {
    let data = body.into_data_stream();
    CheckedLength {
        inner: Box::pin(data),
        declared,
        seen: 0,
        done: false,
    }
    .map(|r| r.map_err(BodyError::into_io))
    .boxed()
}

struct CheckedLength<S> {
    inner: Pin<Box<S>>,
    declared: Option<u64>,
    seen: u64,
    done: bool,
}

impl<S> Stream for CheckedLength<S>
where
    S: Stream<Item = Result<Bytes, BodyError>>,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mismatch = |declared: u64, seen: u64| BodyError::LengthMismatch {
            declared,
            received_at_least: seen,
        };
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                match self.declared {
                    Some(n) if self.seen > n => {
                        self.done = true;
                        Poll::Ready(Some(Err(mismatch(n, self.seen))))
                    }
                    _ => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.declared {
                    Some(n) if self.seen != n => Poll::Ready(Some(Err(mismatch(n, self.seen)))),
                    _ => Poll::Ready(None),
                }
            }
        }
    }
}

/// Why a bounded body could not be collected.
#[derive(Debug)]
pub enum CollectError {
    TooLarge,
    Body(BodyError),
}

/// Collects a small body (a manifest) into memory, holding at most `limit` bytes.
///
/// A body over the limit is read on and discarded up to `drain` bytes before
/// `TooLarge` is returned: hyper closes a connection whose request body was not read
/// to the end, and a client still writing then sees a reset instead of our 413. With
/// `skip = true` (the declared length is already over the limit) nothing is kept.
pub async fn collect_limited(
    body: RequestBody,
    limit: usize,
    drain: u64,
    skip: bool,
) -> Result<Bytes, CollectError> {
    let mut data = body.into_data_stream();
    let mut kept = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let mut over = skip;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(CollectError::Body)?;
        seen += chunk.len() as u64;
        if !over && kept.len() + chunk.len() > limit {
            over = true;
            kept = bytes::BytesMut::new();
        }
        if over {
            if seen > drain {
                break;
            }
        } else {
            kept.extend_from_slice(&chunk);
        }
    }
    if over {
        Err(CollectError::TooLarge)
    } else {
        Ok(kept.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    async fn run(
        chunks: Vec<&'static [u8]>,
        declared: Option<u64>,
    ) -> (Vec<u8>, Option<BodyError>) {
        let inner = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let mut s = CheckedLength {
            inner: Box::pin(inner),
            declared,
            seen: 0,
            done: false,
        };
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    assert!(s.next().await.is_none(), "stream ends after an error");
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    }

    fn is_mismatch(e: &BodyError) -> bool {
        matches!(e, BodyError::LengthMismatch { .. })
    }

    #[tokio::test]
    async fn exact_length_passes() {
        let (out, err) = run(vec![b"ab", b"cd"], Some(4)).await;
        assert_eq!(out, b"abcd");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn undeclared_length_passes() {
        let (out, err) = run(vec![b"ab", b"", b"c"], None).await;
        assert_eq!(out, b"abc");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn short_body_fails_at_the_end() {
        let (out, err) = run(vec![b"ab"], Some(3)).await;
        assert_eq!(out, b"ab");
        assert!(err.as_ref().is_some_and(is_mismatch));
    }

    #[tokio::test]
    async fn long_body_fails_before_passing_the_excess() {
        let (out, err) = run(vec![b"ab", b"cd"], Some(3)).await;
        assert_eq!(out, b"ab");
        assert!(err.as_ref().is_some_and(is_mismatch));
    }
}
