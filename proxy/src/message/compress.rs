//! Response compression: for a client whose `Accept-Encoding` takes one of the encodings offered,
//! a response of a compressible type is encoded as it streams, each frame flushed on its own (so
//! what the backend sent reaches the client when it would have, only smaller). Event streams,
//! bodies already encoded, small bodies, ranges and `no-transform` responses go as they are.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, VARY,
};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::BoxError;
use crate::config::{CompressionConfig, Encoding};

/// The encoding to give a response with `status` and `headers` to a `method` request whose
/// `Accept-Encoding` was `accept`, if it should be compressed at all.
pub fn choose(
    config: &CompressionConfig,
    accept: &HeaderValue,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Encoding> {
    if method == Method::HEAD
        || !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || headers.get(CONTENT_ENCODING).is_some_and(|e| e != "identity")
    {
        return None;
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n < config.min_length) {
        return None;
    }
    let no_transform = super::lists_token(headers, CACHE_CONTROL, "no-transform");
    if no_transform {
        return None;
    }
    let media = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })?;
    if media == "text/event-stream" || !config.content_types.iter().any(|t| type_matches(t, &media)) {
        return None;
    }
    let accept = accept.to_str().ok()?;
    config
        .encodings
        .iter()
        .copied()
        .find(|e| accepts(accept, e.as_str()))
}

/// Whether media type `media` is what the pattern `pattern` (`text/*` or a whole type) names.
fn type_matches(pattern: &str, media: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(kind) => media.split('/').next() == Some(kind),
        None => pattern.eq_ignore_ascii_case(media),
    }
}

/// Whether `Accept-Encoding: accept` takes `coding` (by name or by `*`, with q above 0).
fn accepts(accept: &str, coding: &str) -> bool {
    let mut wildcard = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            wildcard = q > 0.0;
        }
    }
    wildcard
}

/// Marks `headers` as those of a response encoded with `encoding`: its length is no longer known,
/// caches must key on `Accept-Encoding`, and a strong validator no longer holds for these bytes.
pub fn encode_headers(headers: &mut HeaderMap, encoding: Encoding) {
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.as_str()));
    let varies =
        super::lists_token(headers, VARY, "*") || super::lists_token(headers, VARY, "accept-encoding");
    if !varies {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(etag) = headers.get(ETAG).filter(|e| !e.as_bytes().starts_with(b"W/")) {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(ETAG, weak);
        }
    }
}

/// A streaming encoder writing into a buffer that each frame empties.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder at `level` (1 to 9), mapped onto each encoding's scale.
    pub fn new(encoding: Encoding, level: u32) -> std::io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
            // Brotli's 0-11 and zstd's 1-19: the same level is their "fast to moderate".
            Encoding::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level,
                22,
            ))),
            Encoding::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level as i32)?),
        })
    }

    /// Encodes `data` and flushes, returning what is ready to send.
    fn encode(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let out = match self {
            Self::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Self::Br(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Self::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream, returning its last bytes.
    fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Self::Gzip(e) => e.finish()?,
            Self::Br(e) => e.into_inner(),
            Self::Zstd(e) => e.finish()?,
        }))
    }
}

pin_project! {
    /// `inner`, encoded as it streams.
    pub struct Compressed<B> {
        #[pin]
        inner: B,
        encoder: Option<Encoder>,
        // Trailers that came after the data, sent once the encoded stream has ended.
        trailers: Option<HeaderMap>,
    }
}

impl<B> Compressed<B> {
    /// `inner` encoded by `encoder`.
    pub fn new(inner: B, encoder: Encoder) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            trailers: None,
        }
    }
}

impl<B> Body for Compressed<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let encoded = encoder.encode(&data)?;
                        if !encoded.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(encoded))));
                        }
                    }
                    Err(frame) => {
                        // Trailers: the encoded stream ends first.
                        *this.trailers = frame.into_trailers().ok();
                        let last = this.encoder.take().expect("checked above").finish()?;
                        return Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let last = this.encoder.take().expect("checked above").finish()?;
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Read;

    fn config() -> CompressionConfig {
        CompressionConfig::default()
    }

    fn json_headers(len: Option<u64>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(len) = len {
            h.insert(CONTENT_LENGTH, len.into());
        }
        h
    }

    fn chosen(accept: &str, headers: &HeaderMap) -> Option<Encoding> {
        choose(
            &config(),
            &HeaderValue::from_str(accept).unwrap(),
            &Method::GET,
            StatusCode::OK,
            headers,
        )
    }

    #[test]
    fn negotiates_by_the_proxys_preference_among_what_the_client_takes() {
        let h = json_headers(Some(5000));
        assert_eq!(chosen("gzip, deflate, br, zstd", &h), Some(Encoding::Zstd));
        assert_eq!(chosen("gzip, br;q=0.9", &h), Some(Encoding::Br));
        assert_eq!(chosen("gzip", &h), Some(Encoding::Gzip));
        assert_eq!(chosen("*", &h), Some(Encoding::Zstd));
        assert_eq!(chosen("*, zstd;q=0, br;q=0", &h), Some(Encoding::Gzip));
        assert_eq!(chosen("identity", &h), None);
        assert_eq!(chosen("gzip;q=0", &h), None);
    }

    #[test]
    fn leaves_alone_what_must_not_or_need_not_be_compressed() {
        assert_eq!(chosen("gzip", &json_headers(Some(100))), None, "too small");
        let mut sse = json_headers(None);
        sse.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        assert_eq!(chosen("gzip", &sse), None, "events");
        let mut png = json_headers(None);
        png.insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
        assert_eq!(chosen("gzip", &png), None, "already compressed media");
        let mut encoded = json_headers(None);
        encoded.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(chosen("gzip", &encoded), None, "already encoded");
        let mut no_transform = json_headers(None);
        no_transform.insert(CACHE_CONTROL, HeaderValue::from_static("public, no-transform"));
        assert_eq!(chosen("gzip", &no_transform), None);
        let mut html = json_headers(None);
        html.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(chosen("gzip", &html), Some(Encoding::Gzip), "text/* matches");
        let accept = HeaderValue::from_static("gzip");
        assert_eq!(
            choose(
                &config(),
                &accept,
                &Method::HEAD,
                StatusCode::OK,
                &json_headers(None)
            ),
            None
        );
        assert_eq!(
            choose(
                &config(),
                &accept,
                &Method::GET,
                StatusCode::PARTIAL_CONTENT,
                &json_headers(None)
            ),
            None
        );
    }

    #[test]
    fn headers_say_the_encoding_and_drop_the_length_and_the_strong_validator() {
        let mut h = json_headers(Some(5000));
        h.insert(ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(VARY, HeaderValue::from_static("origin"));
        encode_headers(&mut h, Encoding::Br);
        assert_eq!(h[CONTENT_ENCODING], "br");
        assert!(h.get(CONTENT_LENGTH).is_none());
        assert_eq!(h[ETAG], "W/\"v1\"");
        let vary: Vec<_> = h.get_all(VARY).iter().collect();
        assert_eq!(vary, ["origin", "accept-encoding"]);
    }

    async fn round_trip(encoding: Encoding) -> Vec<u8> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..50)
            .map(|i| {
                Ok(Frame::data(Bytes::from(format!(
                    "{{\"line\":{i},\"text\":\"hello hello hello\"}}\n"
                ))))
            })
            .collect();
        let encoder = Encoder::new(encoding, 4).unwrap();
        let body = Compressed::new(StreamBody::new(futures_util::stream::iter(frames)), encoder);
        let encoded = body.collect().await.unwrap().to_bytes();
        let mut decoded = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(&encoded[..])
                    .read_to_end(&mut decoded)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(&encoded[..], 4096)
                    .read_to_end(&mut decoded)
                    .unwrap();
            }
            Encoding::Zstd => decoded = zstd::decode_all(&encoded[..]).unwrap(),
        }
        decoded
    }

    #[tokio::test]
    async fn every_encoding_round_trips_a_streamed_body() {
        let expected: String = (0..50)
            .map(|i| format!("{{\"line\":{i},\"text\":\"hello hello hello\"}}\n"))
            .collect();
        for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            assert_eq!(
                String::from_utf8(round_trip(encoding).await).unwrap(),
                expected,
                "{encoding:?}"
            );
        }
    }
}
