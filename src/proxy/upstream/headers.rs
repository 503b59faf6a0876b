//! The header rules of the upstream leg, in one place for both send paths (hyper's for requests
//! with a body or an upgrade, `streamed.rs`; the hand-written client for the rest, `h1.rs`).
//!
//! - Connection-specific fields (the fixed [`HOP_BY_HOP`] list and every field `Connection`
//!   names) are dropped both ways; a client-sent `Approval-Id` is dropped from every request
//!   (only the gateway sets it, on a request that consumed an approval).
//! - `Host` is kept as the client sent it (its first line); an absolute-form target without one
//!   sends its authority; otherwise the upstream's authority.
//! - This hop is joined onto `X-Forwarded-For` and (when the client named a host)
//!   `X-Forwarded-Host`, one line each; `X-Forwarded-Proto` is replaced ([`Hop::forwarded_proto`]).
//!
//! The `X-Forwarded-*`/`Host` rules are [`Hop::fields`]; [`Hop::apply`] applies them to the
//! header map (hyper's path), [`Hop::write_head`] as it writes the head (the hand-written path,
//! which spares the map its growth and rehash).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Version};

use super::body::ProxyBody;
use super::h1;
use super::Downstream;

/// The header through which the gateway tells the upstream which approval a request consumed.
pub(crate) static APPROVAL_ID: HeaderName = HeaderName::from_static("approval-id");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP: HeaderValue = HeaderValue::from_static("http");
pub(super) const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// Connection-specific fields (RFC 9110 §7.6.1, plus the proxy-auth pair and the legacy
/// `Keep-Alive`/`Proxy-Connection`, as Go's and nginx's proxies also drop them).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The fields this hop appends to, in the order the hand-written head writes them.
const FORWARDED: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];

/// The upstream's side of the rules: its authority (the default `Host`) and the peers whose
/// `X-Forwarded-Proto` is kept.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    /// The base URL's authority, sent as `Host` only when the client sent none.
    pub(super) host: HeaderValue,
    /// Peers whose `X-Forwarded-Proto` is kept (`[listen] trusted_proxies`).
    pub(super) trusted_proxies: Arc<[ipnet::IpNet]>,
}

/// How this hop's value combines with the client's lines of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// `<the client's values>, ours` on one line.
    Join,
    /// Ours alone.
    Replace,
}

impl Hop {
    /// The `X-Forwarded-Proto` to send: how the gateway was reached (`http`; it does not
    /// terminate TLS), or, from a trusted front proxy, the one value it sent if that is `http`
    /// or `https`. Replaced rather than appended: the workspace-server builds its external URLs
    /// from this field, and `"https, http"` breaks them.
    pub(super) fn forwarded_proto(&self, headers: &HeaderMap, down: &Downstream) -> HeaderValue {
        if self.trusted_proxies.is_empty()
            || !self
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&down.addr.ip().to_canonical()))
        {
            return HTTP;
        }
        let mut sent = headers.get_all(&X_FORWARDED_PROTO).iter();
        match (sent.next(), sent.next()) {
            (Some(v), None)
                if v.as_bytes().eq_ignore_ascii_case(b"https")
                    || v.as_bytes().eq_ignore_ascii_case(b"http") =>
            {
                v.clone()
            }
            _ => HTTP,
        }
    }

    /// THE `X-Forwarded-*` rules: for each of [`FORWARDED`], in order, this hop's value (none:
    /// the field is left as the client sent it) and how it combines with the client's.
    /// `client_host`: the first `Host` line the client sent, if any.
    fn fields<'a>(
        down: &'a Downstream,
        proto: &'a HeaderValue,
        client_host: Option<&'a HeaderValue>,
    ) -> [(Option<&'a HeaderValue>, Combine); 3] {
        [
            (Some(&down.ip), Combine::Join),
            (Some(proto), Combine::Replace),
            (client_host, Combine::Join),
        ]
    }

    /// Apply the `X-Forwarded-*` and `Host` rules to a prepared request's map (hyper's path).
    pub(super) fn apply(&self, headers: &mut HeaderMap, down: &Downstream) {
        let proto = self.forwarded_proto(headers, down);
        let client_host = headers.get(header::HOST).cloned();
        let fields = Self::fields(down, &proto, client_host.as_ref());
        for (name, (ours, combine)) in FORWARDED.into_iter().zip(fields) {
            match (ours, combine) {
                (Some(ours), Combine::Join) => append_forwarded(headers, name, ours),
                (Some(ours), Combine::Replace) => {
                    headers.insert(name, ours.clone());
                }
                (None, _) => {}
            }
        }
        if client_host.is_none() {
            headers.insert(header::HOST, self.host.clone());
        }
    }

    /// The request head for the hand-written client, written straight into `buf`: the
    /// prepared fields in order, `Host` (the upstream's authority when the client named none),
    /// and then the [`Hop::fields`] lines. Writing them here spares the map its growth and
    /// rehash: three inserts into a full map were about 2k instructions per request.
    pub(super) fn write_head(
        &self,
        buf: &mut Vec<u8>,
        head: &http::request::Parts,
        down: &Downstream,
    ) {
        let target = head.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        h1::request_line(buf, &head.method, target);
        let (mut host, mut forwarded) = (None, 0u8);
        for (name, value) in &head.headers {
            let bit = forwarded_bit(name);
            if bit != 0 {
                // Written combined with ours below.
                forwarded |= bit;
                continue;
            }
            if *name == header::HOST && host.is_none() {
                // The first line, as `HeaderMap::get` (the map path) reads it.
                host = Some(value);
            }
            h1::field(buf, name, value.as_bytes());
        }
        if host.is_none() {
            h1::field(buf, &header::HOST, self.host.as_bytes());
        }
        let proto = self.forwarded_proto(&head.headers, down);
        let fields = Self::fields(down, &proto, host);
        for (i, (name, (ours, combine))) in FORWARDED.into_iter().zip(fields).enumerate() {
            if let Some(ours) = ours {
                let join = combine == Combine::Join && forwarded & (1 << i) != 0;
                write_forwarded(buf, &head.headers, name, join, ours.as_bytes());
            }
        }
        buf.extend_from_slice(b"\r\n");
    }
}

/// Rewrite the request's headers in place for the upstream: hop-by-hop fields and a client-sent
/// `Approval-Id` removed, `Host` taken from an absolute-form target when the client sent none,
/// HTTP/1.1. Returns the `Upgrade` value when the client asks for a protocol upgrade (kept on
/// the upstream request). The `X-Forwarded-*` fields and the default `Host` come later, from
/// the send path ([`Hop::apply`] or [`Hop::write_head`]).
pub(super) fn prepare_request(req: &mut Request<ProxyBody>) -> Option<HeaderValue> {
    let headers = req.headers_mut();
    let upgrade = if connection_has(headers, "upgrade") {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip(headers, true);
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, proto.clone());
    }
    if !req.headers().contains_key(header::HOST) {
        // HTTP/2-style or absolute-form request without Host: keep the authority the client named.
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    // The pooled upstream connections speak HTTP/1.1 whatever the client spoke.
    *req.version_mut() = Version::HTTP_11;
    upgrade
}

/// Which [`FORWARDED`] field a name is, as a bit (`1 << index`; 0 for any other name).
fn forwarded_bit(name: &HeaderName) -> u8 {
    FORWARDED
        .iter()
        .position(|f| f == name)
        .map_or(0, |i| 1 << i)
}

/// Write `name: <the client's values>, ours` as one line (as [`append_forwarded`] joins them),
/// or `name: ours` when not `join`.
fn write_forwarded(
    buf: &mut Vec<u8>,
    headers: &HeaderMap,
    name: HeaderName,
    join: bool,
    ours: &[u8],
) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    if join {
        for v in headers.get_all(&name) {
            buf.extend_from_slice(v.as_bytes());
            buf.extend_from_slice(b", ");
        }
    }
    buf.extend_from_slice(ours);
    buf.extend_from_slice(b"\r\n");
}

/// Add `ours` to a list header: insert it when absent, else join with `, ` after the existing
/// values (one line, since some upstreams read only the first line).
fn append_forwarded(headers: &mut HeaderMap, name: HeaderName, ours: &HeaderValue) {
    // One lookup: `entry` hashes the name once for both the check and the insert.
    let mut entry = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(ours.clone());
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut buf = BytesMut::with_capacity(64);
    for v in entry.iter() {
        buf.put_slice(v.as_bytes());
        buf.put_slice(b", ");
    }
    buf.put_slice(ours.as_bytes());
    if let Ok(joined) = HeaderValue::from_maybe_shared(buf.freeze()) {
        // `insert` replaces every existing line with the one joined line.
        entry.insert(joined);
    }
}

/// Whether a `Connection` header lists `token` (case-insensitive).
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Remove connection-specific fields in place: the fixed list and every field `Connection` names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// The bit of `Approval-Id` in [`strip`]'s set: bit 9, after the nine [`HOP_BY_HOP`] bits.
const APPROVAL_ID_BIT: u16 = 1 << 9;

/// [`strip_hop_by_hop`], and with `approval_id` also `Approval-Id`, so a client can never name
/// an approval to the upstream; the gateway sets that field itself after this, on consumed
/// requests only.
fn strip(headers: &mut HeaderMap, approval_id: bool) {
    // One pass of cheap name comparisons (standard names compare as enum tags, a custom name
    // against a standard one fails on the tag) records which fields are present; most messages
    // carry none or only `Connection`, so this beats hashing and probing for each name.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if approval_id && *name == APPROVAL_ID {
            present |= APPROVAL_ID_BIT;
        }
    }
    if present == 0 {
        return;
    }
    // `HOP_BY_HOP[0]` is `Connection`: drop the fields it names. The usual tokens (`keep-alive`,
    // `close`, `upgrade`) are on the fixed list or name no field, so the list of other names is
    // only built when there are some.
    if present & 1 != 0 && connection_tokens(headers).any(names_other_field) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| names_other_field(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & APPROVAL_ID_BIT != 0 {
        headers.remove(&APPROVAL_ID);
    }
}

/// The comma-separated tokens of every `Connection` line, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Whether `name` is on the fixed hop-by-hop list (for `h1.rs`, which drops them as it parses).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether a `Connection` token names a field beyond the fixed hop-by-hop list.
pub(super) fn names_other_field(token: &[u8]) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"close")
        && !HOP_BY_HOP
            .iter()
            .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::upstream::tests::upstream;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_list_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", " upgrade ,, x-other"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("x-other", "1"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[("x-kept", "yes"), ("host", "h")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn forwarded_values_join_existing_ones() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_forwarded(
            &mut h,
            X_FORWARDED_FOR,
            &HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3");
        let mut h = HeaderMap::new();
        append_forwarded(
            &mut h,
            X_FORWARDED_FOR,
            &HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h[X_FORWARDED_FOR], "3.3.3.3");
    }

    /// `X-Forwarded-Proto` is how the gateway was reached, unless a trusted front proxy sent
    /// exactly one `http`/`https`.
    #[test]
    fn forwarded_proto_is_replaced_unless_a_trusted_proxy_sent_it() {
        let mut up = upstream("http://10.0.0.1:8081");
        let from = |ip: &str| Downstream::new(format!("{ip}:5555").parse().unwrap());
        let sent = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_FORWARDED_PROTO, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(
            up.hop
                .forwarded_proto(&sent(&["https"]), &from("192.0.2.7")),
            "http"
        );
        up.hop.trusted_proxies = vec!["192.0.2.0/24".parse().unwrap()].into();
        assert_eq!(
            up.hop
                .forwarded_proto(&sent(&["https"]), &from("192.0.2.7")),
            "https"
        );
        assert_eq!(
            up.hop
                .forwarded_proto(&sent(&["https"]), &from("198.51.100.1")),
            "http"
        );
        assert_eq!(
            up.hop
                .forwarded_proto(&sent(&["https", "http"]), &from("192.0.2.7")),
            "http"
        );
        assert_eq!(
            up.hop
                .forwarded_proto(&sent(&["gopher"]), &from("192.0.2.7")),
            "http"
        );
        assert_eq!(
            up.hop.forwarded_proto(&sent(&[]), &from("192.0.2.7")),
            "http"
        );
    }

    #[test]
    fn the_bodiless_head_joins_forwarded_fields_and_defaults_host() {
        let up = upstream("http://10.0.0.1:8081");
        let down = Downstream::new("192.0.2.7:5555".parse().unwrap());
        let (mut head, ()) = Request::delete("/w/1?x=%2F")
            .header("x-forwarded-for", "203.0.113.9")
            .header("accept", "*/*")
            .header("x-forwarded-for", "198.51.100.1")
            .body(())
            .unwrap()
            .into_parts();
        let encode = |head: &http::request::Parts| {
            let mut buf = Vec::new();
            up.hop.write_head(&mut buf, head, &down);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            encode(&head),
            "DELETE /w/1?x=%2F HTTP/1.1\r\naccept: */*\r\nhost: 10.0.0.1:8081\r\n\
             x-forwarded-for: 203.0.113.9, 198.51.100.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\n\r\n"
        );
        head.headers
            .insert(header::HOST, HeaderValue::from_static("api.example"));
        head.headers
            .insert(X_FORWARDED_HOST, HeaderValue::from_static("edge.example"));
        assert_eq!(
            encode(&head),
            "DELETE /w/1?x=%2F HTTP/1.1\r\naccept: */*\r\nhost: api.example\r\n\
             x-forwarded-for: 203.0.113.9, 198.51.100.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: edge.example, api.example\r\n\r\n"
        );
    }
}
