//! Response compression through the real proxy: each encoding a client accepts, bodies streamed as
//! they come, and what must go as it is (event streams, images, small or already encoded bodies).

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use augur_proxy::Running;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;

use crate::backends::serve_fn;
use crate::harness::*;

type Body = BoxBody<Bytes, Infallible>;

fn document() -> String {
    (0..400)
        .map(|i| format!("{{\"row\":{i},\"text\":\"the same words again\"}}\n"))
        .collect()
}

/// `/json` (a 16 KB document), `/stream` (the document in five frames, all but the first held
/// until `release`), `/sse`, `/png`, `/small`, `/encoded` (already gzip).
async fn backend(release: Arc<Notify>) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| {
        let response = answer(req.uri().path(), release.clone());
        async move { response }
    })
    .await
}

fn answer(path: &str, release: Arc<Notify>) -> Response<Body> {
    let full = |t: &str, body: Vec<u8>| {
        Response::builder()
            .header("content-type", t)
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    match path {
        "/json" => full("application/json", document().into_bytes()),
        "/sse" => full("text/event-stream", document().into_bytes()),
        "/png" => full("image/png", document().into_bytes()),
        "/small" => full("application/json", b"{\"ok\":true}".to_vec()),
        "/encoded" => {
            let mut r = full("application/json", document().into_bytes());
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            r
        }
        _ => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
            tokio::spawn(async move {
                let text = document();
                let chunks: Vec<String> = text
                    .as_bytes()
                    .chunks(text.len() / 5 + 1)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                for (i, chunk) in chunks.into_iter().enumerate() {
                    if i == 1 {
                        release.notified().await;
                    }
                    if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed())
                .unwrap()
        }
    }
}

async fn fetch(proxy: &Running, path: &str, accept: Option<&str>) -> Reply {
    let mut request = Request::get(url(proxy, path));
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let response = client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = match parts.headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        None => bytes.to_vec(),
        Some("gzip") if path == "/encoded" => bytes.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("br") => {
            let mut out = Vec::new();
            brotli::Decompressor::new(&bytes[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(&bytes[..]).unwrap(),
        Some(other) => panic!("unexpected encoding {other}"),
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(text).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_the_client_accepts_and_streamed_as_they_come() {
    let release = Arc::new(Notify::new());
    let addr = backend(release.clone()).await;
    let proxy = start_proxy(&format!(
        "[compression]\n[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{addr}\" }}]\n"
    ))
    .await;

    for (accept, expected) in [("gzip", "gzip"), ("br, gzip", "br"), ("gzip, br, zstd", "zstd")] {
        let reply = fetch(&proxy, "/json", Some(accept)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-encoding"], expected, "{accept}");
        assert_eq!(reply.headers["vary"], "accept-encoding");
        assert_eq!(reply.headers["etag"], "W/\"v1\"");
        assert!(reply.headers.get("content-length").is_none());
        assert_eq!(
            reply.body,
            document(),
            "{accept}: decodes to what the backend sent"
        );
    }
    let plain = fetch(&proxy, "/json", None).await;
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(
        plain.headers["content-length"],
        document().len().to_string().as_str()
    );
    for path in ["/sse", "/png", "/small"] {
        let reply = fetch(&proxy, path, Some("gzip, br, zstd")).await;
        assert!(
            reply.headers.get("content-encoding").is_none(),
            "{path} goes as it is"
        );
        assert_eq!(reply.headers["etag"], "\"v1\"", "{path}");
    }
    let encoded = fetch(&proxy, "/encoded", Some("br")).await;
    assert_eq!(
        encoded.headers["content-encoding"], "gzip",
        "an encoded body is not encoded again"
    );

    // A streamed body: the first frame reaches the client, encoded, while the backend holds the rest.
    let exchange = async {
        let request = Request::get(url(&proxy, "/stream"))
            .header("accept-encoding", "gzip")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(!first.is_empty());
        release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        let mut all = first.to_vec();
        all.extend_from_slice(&rest);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, document());
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("the stream flows");
    proxy.shutdown().await;
}
