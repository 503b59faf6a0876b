//! Stage 6 helper: the upstream leg of a request without a body, in hand-written HTTP/1.1.
//!
//! Why by hand: measured with callgrind (`bench/callgrind-passthrough.sh`), hyper's client
//! connection cost about 13k instructions per proxied request, over a third of the gateway's
//! total: its driver task, the channels between that task and the request's task, and the
//! wake-ups between them. Here the downstream connection's own task writes the request head and
//! reads the response head, and the response body reads the socket as the downstream side polls
//! it. No task, no channel. hyper's client still carries requests with a body (it reads the
//! upstream's answer while the body is still going out, which an early 413 needs) and upgrades.
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
use super::forward::{is_hop_by_hop, names_other_field};
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
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the response was complete")]
    Closed,
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
    pub error: H1Error,
    pub retry: bool,
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
    pub fn new(stream: TcpStream) -> Self {
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
    pub fn idle_ok(&self) -> bool {
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
    pub fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    pub fn poll_frame(
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
#[path = "h1_tests.rs"]
mod tests;
