//! Buffering a request body whole, up to a cap: [`read_limited`], and within the read timeout:
//! [`read_within`], for the gated path and the canvas decide only (the pass-through path
//! streams every body, see `upstream/body.rs`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::upstream::body::BodyFault;
use super::upstream::timer;
use super::ProxyError;

/// Buffer a request body up to `limit` bytes within `within` (`listen.body_read_timeout`): a
/// slow-loris body must not hold the request open. Too large 413, unreadable 400, too slow 408.
pub(crate) async fn read_within(
    body: Incoming,
    limit: usize,
    within: Duration,
) -> Result<Bytes, ProxyError> {
    match timer::timeout(timer::now(), within, read_limited(body, limit)).await {
        Ok(read) => Ok(read?),
        Err(timer::Elapsed) => Err(ProxyError::BodyTimeout),
    }
}

/// Why a request body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body could not be read")]
    Read(#[source] BodyFault),
}

/// Buffer `body` whole, failing as soon as it exceeds `limit` bytes (a declared
/// `Content-Length` above the limit fails before anything is read). Trailers are dropped.
pub(crate) async fn read_limited<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyFault>,
{
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| BodyError::Read(e.into()))?.into_data() else {
            continue;
        };
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + data.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        // The common case is one frame: keep it without copying.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(f.len() + data.len());
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::ProxyBody;
    use http_body::Frame;
    use http_body_util::StreamBody;

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyFault>>>;

    fn chunks(parts: &[&'static str]) -> StreamBody<Frames> {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn buffers_several_frames_in_order() {
        let got = read_limited(chunks(&["ab", "cd", "e"]), 5).await.unwrap();
        assert_eq!(&got[..], b"abcde");
    }

    #[tokio::test]
    async fn one_frame_and_empty_bodies() {
        assert_eq!(
            &read_limited(chunks(&["abc"]), 3).await.unwrap()[..],
            b"abc"
        );
        assert!(read_limited(chunks(&[]), 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn over_the_limit_is_too_large() {
        let err = read_limited(chunks(&["abc", "de"]), 4).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 4 }));
        let err = read_limited(ProxyBody::full("12345"), 4).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 4 }));
    }
}
