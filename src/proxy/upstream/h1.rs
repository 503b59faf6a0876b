//! The hand-written HTTP/1.1 client: the upstream leg of a request without a body.
//!
//! Why by hand: measured with callgrind (`bench/callgrind-passthrough.sh`), hyper's client
//! connection cost about 13k instructions per proxied request, over a third of the gateway's
//! total: its driver task, the channels between that task and the request's task, and the
//! wake-ups between them. Here the downstream connection's own task writes the request head and
//! reads the response head, and the response body reads the socket as the downstream side polls
//! it. No task, no channel.
//!
//! What it does not support (hyper's client, `streamed.rs`, carries these instead, or they are
//! refused): request bodies (it writes a head only);
//! protocol upgrades (a `101` is an error here: nothing asked for one); interim `1xx`
//! responses are read and dropped, not relayed; response trailers are read and dropped, not
//! relayed; no pipelining (one request per connection at a time); no HTTP/2, no TLS.
//! Leniencies beyond hyper: a bare LF ends a chunk line; `Transfer-Encoding` in an HTTP/1.0
//! response is read, then the connection closed.
//!
//! What proves it matches hyper: the differential property targets in `tests/props/h1.rs`
//! (`h1_response_agrees_with_httparse_and_hyper` and its byte-mutating twin, run by
//! `fuzz/run`) serve the same generated responses to this client and to hyper's and require
//! "h1 rejects or agrees" on status, fields and body; the scripted-upstream tests at the
//! bottom of this file cover framing, reuse and resend rules one case at a time.
//!
//! Input: a prepared request head (hop-by-hop fields already removed) and a connection.
//! Output: the response, whose body holds the connection until it is read to its end.
//! Invariants:
//! - a connection is reused only when its response was read exactly to its end, nothing more
//!   arrived, and neither side asked to close;
//! - a request is sent again on a new connection only when the caller allows it
//!   ([`Resend::IfUnprocessed`]: a reused connection, a request that did not consume an
//!   approval) and it cannot have been processed (its head could not be written), or it is safe
//!   (GET, HEAD, OPTIONS, TRACE) and the reused connection closed before any byte of an answer;
//! - response framing follows RFC 9112 §6.3: no body for HEAD, 204 and 304; `Transfer-Encoding`
//!   wins over `Content-Length`; conflicting lengths are an error, not a guess;
//! - the response comes back without its connection-specific fields (the fixed hop-by-hop list
//!   and every field `Connection` names), dropped as the head is parsed.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::headers::{is_hop_by_hop, names_other_field};
use super::pool::Home;

/// Largest response head accepted (status line and fields).
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an upstream response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Reading or writing the socket failed.
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before the whole response arrived.
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    /// The response is not valid HTTP/1.1; the text says what is wrong.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
}

/// Whether a request may go out again on a new connection when the one it was sent on fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Never: the connection was new (it cannot have been stale), or the request consumed an
    /// approval, which authorises one execution: a "safe" GET may still mint a token, so a
    /// second copy is never sent whatever the method.
    Never,
    /// When it cannot have been processed (the rules in this module's invariants).
    IfUnprocessed,
}

/// A failed round trip, and whether a new connection may carry the request again.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: H1Error,
    pub(crate) retry: bool,
}

/// One upstream connection: its socket, the bytes read and not yet used, and the buffer the
/// request head is written from (kept for its capacity).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    spans: Vec<Span>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(512),
            spans: Vec::new(),
        }
    }

    /// Whether an idle connection can carry a request: nothing arrived while it was idle,
    /// neither bytes nor the upstream's close. Costs no system call unless the socket became
    /// readable since it was last drained.
    pub(crate) fn idle_ok(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Read what the socket has into `rbuf`; `Ok(0)` is the upstream's close. Through
    /// `AsyncRead`, not `try_read_buf`: a read shorter than the buffer clears the socket's
    /// readiness, so [`Conn::idle_ok`] costs no system call on a drained connection (measured:
    /// one `recvfrom` less per request).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    async fn write_head(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.wbuf.len() {
            match self.stream.try_write(&self.wbuf[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stream.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Send a request without a body on `conn` and read the response head. `encode` writes the
/// whole request head (see [`request_line`] and [`field`]; the caller decides the fields).
/// `resend` says whether a retry may be offered at all ([`Resend::IfUnprocessed`] only for a
/// connection that came from the pool).
pub async fn round_trip(
    mut conn: Conn,
    method: &Method,
    encode: impl FnOnce(&mut Vec<u8>),
    resend: Resend,
    home: Home,
) -> Result<Response<ProxyBody>, Failed> {
    let may_resend = resend == Resend::IfUnprocessed;
    conn.wbuf.clear();
    encode(&mut conn.wbuf);
    if let Err(e) = conn.write_head().await {
        // Nothing the upstream could act on went out whole: safe to send again.
        return Err(Failed {
            error: e.into(),
            retry: may_resend,
        });
    }
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    // Whether any byte of an answer arrived (an interim 1xx counts: the request was seen).
    let mut answered = false;
    let head = loop {
        match parse_head(&mut conn.rbuf, &mut conn.spans, method) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(error) => {
                return Err(Failed {
                    error,
                    retry: false,
                })
            }
        }
        let error = match conn.fill().await {
            Ok(0) => H1Error::Closed,
            Ok(_) => {
                answered = true;
                continue;
            }
            Err(e) => H1Error::Io(e),
        };
        // A reused connection the upstream had closed: it cannot have answered this request.
        return Err(Failed {
            error,
            retry: may_resend && safe && !answered,
        });
    };
    Ok(head.into_response(conn, home))
}

/// Start a request head: `METHOD target HTTP/1.1`.
pub fn request_line(buf: &mut Vec<u8>, method: &Method, target: &str) {
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
}

/// One header field line. A head ends with an empty line (`\r\n`).
pub fn field(buf: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Where one header field lies in a response head: name and value as byte ranges.
type Span = (u32, u32, u32, u32);

/// Parse a final response head off the front of `buf`, skipping interim (1xx) responses.
/// `Ok(None)`: the head is not complete yet. `spans` is scratch space, kept by the connection
/// so that parsing allocates nothing after the first response.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    method: &Method,
) -> Result<Option<Head>, H1Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        );
        let len = match parsing {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
            Ok(_) => return Err(H1Error::Malformed("response head too large")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(H1Error::Malformed("too many header fields"))
            }
            Err(_) => return Err(H1Error::Malformed("invalid response head")),
        };
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Upgrades never take this path, so nothing asked for one.
            return Err(H1Error::Malformed("unrequested protocol switch"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Field positions relative to the head (below MAX_HEAD, so they fit in a u32), so the
        // head can be split off and its values shared rather than copied.
        let base = buf.as_ptr() as usize;
        let at = |p: *const u8| (p as usize - base) as u32;
        spans.clear();
        spans.extend(parsed.headers.iter().map(|h| {
            let (n, v) = (at(h.name.as_ptr()), at(h.value.as_ptr()));
            (n, n + h.name.len() as u32, v, v + h.value.len() as u32)
        }));
        let head = buf.split_to(len).freeze();
        return build_head(&head, spans, status, version, method).map(Some);
    }
}

fn build_head(
    head: &Bytes,
    spans: &[Span],
    status: StatusCode,
    version: Version,
    method: &Method,
) -> Result<Head, H1Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let (mut close, mut keep_alive) = (false, false);
    // `Connection` values that name other fields to drop (rare: kept only when there are some).
    let mut naming: Vec<HeaderValue> = Vec::new();
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| H1Error::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| H1Error::Malformed("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            for n in value.as_bytes().split(|b| *b == b',') {
                let n = parse_length(n.trim_ascii())?;
                if length.is_some_and(|l| l != n) {
                    return Err(H1Error::Malformed("conflicting content lengths"));
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding decides: `chunked` must be the final one to delimit.
            chunked = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue;
        } else if name == header::CONNECTION {
            let mut names_other = false;
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                names_other |= names_other_field(token);
            }
            if names_other {
                naming.push(value);
            }
            continue;
        }
        // Connection-specific fields describe this hop only (RFC 9110 §7.6.1): not relayed.
        if !is_hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    for value in &naming {
        for token in value.as_bytes().split(|b| *b == b',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if transfer_encoding {
        // RFC 9112 §6.3: a length beside a transfer coding is ignored (and must not be relayed).
        headers.remove(header::CONTENT_LENGTH);
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    // Both lengths at once is how response smuggling starts (RFC 9112 §6.3): read this one by
    // its transfer coding, then close the connection rather than trust what follows.
    // So is a transfer coding in an HTTP/1.0 message (RFC 9112 §6.1): read it, then close.
    let smuggling = transfer_encoding && (length.is_some() || version == Version::HTTP_10);
    let keep_alive = framing != Framing::Close
        && !close
        && !smuggling
        && (version == Version::HTTP_11 || keep_alive);
    Ok(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })
}

fn parse_length(digits: &[u8]) -> Result<u64, H1Error> {
    const BAD: H1Error = H1Error::Malformed("invalid content length");
    if digits.is_empty() || digits.len() > 19 {
        return Err(BAD);
    }
    digits.iter().try_fold(0u64, |n, d| match d {
        b'0'..=b'9' => Ok(n * 10 + u64::from(d - b'0')),
        _ => Err(BAD),
    })
}

impl Head {
    /// The response to relay. A body that arrived with its head (the usual small answer) is
    /// taken whole and the connection goes back to the pool at once.
    fn into_response(self, mut conn: Conn, home: Home) -> Response<ProxyBody> {
        let body = match self.framing {
            Framing::Length(0) => {
                finish(conn, self.keep_alive, home);
                ProxyBody::Empty
            }
            Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
                // `n` fits in memory: it is at most the buffer's length.
                let bytes = conn.rbuf.split_to(n as usize).freeze();
                finish(conn, self.keep_alive, home);
                ProxyBody::full(bytes)
            }
            framing => ProxyBody::H1(Body {
                conn: Some(conn),
                state: match framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::Chunked(Chunk::Size),
                    Framing::Close => State::Close,
                },
                keep_alive: self.keep_alive,
                home,
            }),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// The response was read to its end: pool the connection if it may carry another request.
fn finish(conn: Conn, keep_alive: bool, home: Home) {
    if keep_alive && conn.rbuf.is_empty() {
        home.put(conn);
    }
}

/// A response body read straight from its upstream connection.
#[derive(Debug)]
pub struct Body {
    /// `None` once the body ended (the connection pooled or closed) or failed.
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    home: Home,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: bytes still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields (dropped), up to the blank line.
    Trailers,
}

/// What one step of the decoder produced.
enum Step {
    Data(Bytes),
    /// Needs more bytes from the socket.
    More,
    /// Moved on without output (a size line, a chunk's CRLF, a trailer line).
    Again,
    End,
}

impl Body {
    pub(crate) fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match step(&mut self.state, &mut conn.rbuf) {
                Ok(step) => step,
                Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
            };
            match step {
                Step::Data(data) => {
                    if self.state == State::Done {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    self.end();
                    return Poll::Ready(None);
                }
                Step::Again => continue,
                Step::More => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.state == State::Close => {
                    self.state = State::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(self.fail(H1Error::Closed)))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
            }
        }
    }

    fn end(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            finish(conn, self.keep_alive, self.home);
        }
    }

    /// A broken body closes its connection.
    fn fail(&mut self, e: H1Error) -> H1Error {
        self.conn = None;
        self.state = State::Done;
        e
    }
}

/// One decoding step over the bytes buffered so far.
fn step(state: &mut State, buf: &mut BytesMut) -> Result<Step, H1Error> {
    match *state {
        State::Done => Ok(Step::End),
        State::Length(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let (data, left) = take(buf, left);
            *state = if left == 0 {
                State::Done
            } else {
                State::Length(left)
            };
            Ok(Step::Data(data))
        }
        State::Close if buf.is_empty() => Ok(Step::More),
        State::Close => Ok(Step::Data(buf.split().freeze())),
        State::Chunked(chunk) => chunk_step(state, chunk, buf),
    }
}

/// Up to `left` bytes off the front of `buf`, and how many are left after them.
fn take(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    (buf.split_to(n).freeze(), left - n as u64)
}

fn chunk_step(state: &mut State, chunk: Chunk, buf: &mut BytesMut) -> Result<Step, H1Error> {
    match chunk {
        Chunk::Size => {
            let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                return Ok(Step::More);
            };
            let size = parse_chunk_size(&line)?;
            *state = State::Chunked(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            });
            Ok(Step::Again)
        }
        Chunk::Data(_) if buf.is_empty() => Ok(Step::More),
        Chunk::Data(left) => {
            let (data, left) = take(buf, left);
            *state = State::Chunked(if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            });
            Ok(Step::Data(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(H1Error::Malformed("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            *state = State::Chunked(Chunk::Size);
            Ok(Step::Again)
        }
        Chunk::Trailers => match take_line(buf, MAX_HEAD)? {
            None => Ok(Step::More),
            Some(line) if line.is_empty() => Ok(Step::End),
            Some(_) => Ok(Step::Again),
        },
    }
}

/// One line off the front of `buf` without its line ending (CRLF, or a bare LF as RFC 9112
/// §2.2 lets a recipient accept); `None` while incomplete.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, H1Error> {
    let Some(lf) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > max {
            return Err(H1Error::Malformed("line too long"));
        }
        return Ok(None);
    };
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf);
    if line.last() == Some(&b'\r') {
        line.truncate(lf - 1);
    }
    Ok(Some(line))
}

/// The hex size before any `;` extension (white space may precede the `;`).
fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    const BAD: H1Error = H1Error::Malformed("invalid chunk size");
    let end = line
        .iter()
        .position(|b| *b == b';' || *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    let digits = &line[..end];
    // After the digits only `BWS ";" extension` may follow (RFC 9112 §7.1): `8 junk` is no size.
    let ext_ok = line[end..]
        .trim_ascii_start()
        .first()
        .is_none_or(|b| *b == b';');
    if digits.is_empty() || digits.len() > 15 || !ext_ok {
        return Err(BAD);
    }
    digits.iter().try_fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BAD),
        };
        Ok(n << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    //! The hand-written upstream client against scripted upstreams: each test's upstream is a raw
    //! TCP socket that reads one request head and writes exactly the bytes the test gives it, in
    //! the pieces given (so heads and chunks split across reads are covered).
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::proxy::upstream::pool::Pool;

    /// An upstream that answers each connection's first request with `pieces`, pausing between
    /// them, and then keeps the connection open (or closes it when `close`). Returns its pool.
    async fn scripted(pieces: Vec<&'static [u8]>, close: bool) -> Pool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let pieces = pieces.clone();
                tokio::spawn(async move {
                    read_head(&mut s).await;
                    for p in pieces {
                        s.write_all(p).await.unwrap();
                        s.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if !close {
                        // Hold the connection; a second request gets nothing.
                        let _ = s.read(&mut [0u8; 1]).await;
                    }
                });
            }
        });
        Pool::new(addr.to_string(), Duration::from_secs(1))
    }

    async fn read_head(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            got.push(byte[0]);
        }
        got
    }

    /// A request head of `method target` with `headers`, as a caller's `encode`.
    fn head<'a>(
        method: &'a Method,
        target: &'a str,
        headers: &'a HeaderMap,
    ) -> impl Fn(&mut Vec<u8>) + 'a {
        move |buf| {
            request_line(buf, method, target);
            for (name, value) in headers {
                field(buf, name, value.as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
        }
    }

    async fn get(pool: &Pool, method: Method) -> Result<Response<ProxyBody>, Failed> {
        let conn = pool.connect_raw().await.unwrap();
        let none = HeaderMap::new();
        round_trip(
            conn,
            &method,
            head(&method, "/x", &none),
            Resend::Never,
            pool.home(),
        )
        .await
    }

    async fn body_of(resp: Response<ProxyBody>) -> Result<Bytes, super::super::body::BodyFault> {
        resp.into_body().collect().await.map(|c| c.to_bytes())
    }

    fn idle(pool: &Pool) -> bool {
        match pool.take_raw(std::time::Instant::now()) {
            Some(conn) => {
                pool.home().put(conn);
                true
            }
            None => false,
        }
    }

    #[tokio::test]
    async fn a_length_delimited_body_in_the_head_packet_is_taken_whole_and_the_connection_pooled() {
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"],
            false,
        )
        .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers().get_all("x-a").iter().count(), 2);
        assert!(matches!(resp.body(), ProxyBody::Full(_)));
        assert!(idle(&pool), "the connection went back to the pool");
        assert_eq!(&body_of(resp).await.unwrap()[..], b"hello");
    }

    #[tokio::test]
    async fn heads_and_bodies_split_across_reads() {
        let pool = scripted(
            vec![
                b"HTTP/1.1 201 Created\r\nConte",
                b"nt-Length: 10\r\n\r\n01234",
                b"56789",
            ],
            false,
        )
        .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert!(!idle(&pool), "not pooled before the body is read");
        assert_eq!(&body_of(resp).await.unwrap()[..], b"0123456789");
        assert!(idle(&pool));
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_with_extensions_and_trailers_dropped() {
        let pool = scripted(
            vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n",
            b"5;ext=1\r\nhello\r\n",
            b"1\r",
            b"\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        ],
            false,
        )
        .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(&body_of(resp).await.unwrap()[..], b"hello 0123456789");
        assert!(
            !idle(&pool),
            "a length beside a transfer coding: not reused"
        );
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(&body_of(resp).await.unwrap()[..], b"ok");
        assert!(idle(&pool));
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() {
        let pool = scripted(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil", b" the end"], true).await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(&body_of(resp).await.unwrap()[..], b"until the end");
        assert!(!idle(&pool));
        // A transfer coding other than chunked last is delimited by the close too.
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"],
            true,
        )
        .await;
        assert_eq!(
            &body_of(get(&pool, Method::GET).await.unwrap())
                .await
                .unwrap()[..],
            b"zz"
        );
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_without_keep_alive_are_not_pooled() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let pool = scripted(vec![head], false).await;
            body_of(get(&pool, Method::GET).await.unwrap())
                .await
                .unwrap();
            assert!(!idle(&pool), "{}", String::from_utf8_lossy(head));
        }
        let pool = scripted(
            vec![b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await;
        body_of(get(&pool, Method::GET).await.unwrap())
            .await
            .unwrap();
        assert!(idle(&pool));
        // A transfer coding in HTTP/1.0 is read, then the connection is closed.
        let pool = scripted(
        vec![b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
        false,
    )
    .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(&body_of(resp).await.unwrap()[..], b"ok");
        assert!(!idle(&pool));
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_whatever_their_length_says() {
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"],
            false,
        )
        .await;
        let resp = get(&pool, Method::HEAD).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1234");
        assert!(body_of(resp).await.unwrap().is_empty());
        assert!(idle(&pool));
        for head in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
        ] {
            let pool = scripted(vec![head], false).await;
            assert!(body_of(get(&pool, Method::GET).await.unwrap())
                .await
                .unwrap()
                .is_empty());
            assert!(idle(&pool));
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let pool = scripted(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!",
            ],
            false,
        )
        .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("link").is_none());
    }

    #[tokio::test]
    async fn malformed_responses_are_errors_never_guesses() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        // A head over MAX_HEAD, and one whose last field ends just past it.
        let huge = |len: usize| -> &'static [u8] {
            let head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(len));
            Box::leak(head.into_bytes().into_boxed_slice())
        };
        for case in cases
            .into_iter()
            .chain([huge(MAX_HEAD + 100), huge(MAX_HEAD - 20)])
        {
            let pool = scripted(vec![case], true).await;
            let failed = match get(&pool, Method::GET).await {
                Ok(resp) => body_of(resp).await.map(|_| ()).unwrap_err().to_string(),
                Err(f) => {
                    assert!(!f.retry);
                    f.error.to_string()
                }
            };
            assert!(failed.contains("upstream"), "{failed}");
            assert!(!idle(&pool));
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_clean_end() {
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        )
        .await;
        let err = body_of(get(&pool, Method::GET).await.unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                super::super::body::BodyFault::Upstream(H1Error::Closed)
            ),
            "{err:?}"
        );
        let pool = scripted(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
            true,
        )
        .await;
        assert!(body_of(get(&pool, Method::GET).await.unwrap())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_reused_connection_closed_before_answering_may_be_retried_only_when_safe() {
        // The upstream answers nothing and closes.
        let pool = scripted(vec![], true).await;
        let none = HeaderMap::new();
        for (method, retry) in [(Method::GET, true), (Method::DELETE, false)] {
            let conn = pool.connect_raw().await.unwrap();
            let failed = round_trip(
                conn,
                &method,
                head(&method, "/", &none),
                Resend::IfUnprocessed,
                pool.home(),
            )
            .await
            .unwrap_err();
            assert_eq!(failed.retry, retry, "{method}");
            // An interim answer counts as an answer: not retried.
            let early = scripted(vec![b"HTTP/1.1 103 Early Hints\r\n\r\n"], true).await;
            let conn = early.connect_raw().await.unwrap();
            let failed = round_trip(
                conn,
                &method,
                head(&method, "/", &none),
                Resend::IfUnprocessed,
                early.home(),
            )
            .await
            .unwrap_err();
            assert!(!failed.retry, "{method} after a 1xx");
            // A new connection, or a request that consumed an approval, is never retried.
            let conn = pool.connect_raw().await.unwrap();
            let failed = round_trip(
                conn,
                &method,
                head(&method, "/", &none),
                Resend::Never,
                pool.home(),
            )
            .await
            .unwrap_err();
            assert!(!failed.retry);
        }
    }

    #[tokio::test]
    async fn the_head_encode_writes_reaches_the_upstream_byte_for_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let head = read_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            head
        });
        let pool = Pool::new(addr.to_string(), Duration::from_secs(1));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let conn = pool.connect_raw().await.unwrap();
        let resp = round_trip(
            conn,
            &Method::DELETE,
            head(&Method::DELETE, "/a/%2F?q", &headers),
            Resend::Never,
            pool.home(),
        )
        .await
        .unwrap();
        assert!(matches!(resp.body(), ProxyBody::Empty));
        assert_eq!(
            String::from_utf8(upstream.await.unwrap()).unwrap(),
            "DELETE /a/%2F?q HTTP/1.1\r\nhost: example\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    #[test]
    fn chunk_sizes_and_lengths_parse_strictly() {
        assert_eq!(parse_chunk_size(b"1aF").unwrap(), 0x1af);
        assert_eq!(parse_chunk_size(b"0;x=y").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"5 ;x").unwrap(), 5);
        assert_eq!(parse_chunk_size(b"5\t").unwrap(), 5);
        // Found by tests/props (h1 vs hyper): text after white space is not an extension.
        assert!(parse_chunk_size(b"8 junk").is_err());
        assert!(parse_chunk_size(b"2\t1").is_err());
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"g").is_err());
        assert!(parse_chunk_size(b"1234567890abcdef").is_err());
        assert_eq!(parse_length(b"0").unwrap(), 0);
        assert_eq!(
            parse_length(b"18446744073709551").unwrap(),
            18_446_744_073_709_551
        );
        assert!(parse_length(b"99999999999999999999").is_err());
        assert!(parse_length(b"+1").is_err());
    }

    #[tokio::test]
    async fn connection_specific_response_fields_are_dropped_as_the_head_is_parsed() {
        let pool = scripted(
        vec![b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"],
        false,
    )
    .await;
        let resp = get(&pool, Method::GET).await.unwrap();
        let mut names: Vec<_> = resp.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-kept"]);
        body_of(resp).await.unwrap();
        assert!(
            idle(&pool),
            "keep-alive was honoured before the field was dropped"
        );
    }
}
