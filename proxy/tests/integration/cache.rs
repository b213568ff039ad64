//! The response cache through the real proxy: GETs served again while their `Cache-Control` says
//! they are fresh (and matched on what they vary on), deterministic LLM requests served again by
//! their canonical body and tenant, and what must not be stored, never stored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use augur_proxy::gate::keyring::digest_hex;
use augur_proxy::Running;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::backends::serve_fn;
use crate::harness::*;

/// Answers each path as its name says; every body names how many requests the backend has had.
async fn backend(hits: Arc<AtomicUsize>) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| answer(req, hits.clone())).await
}

async fn answer(req: Request<Incoming>, hits: Arc<AtomicUsize>) -> Response<Full<Bytes>> {
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let language = req
        .headers()
        .get("accept-language")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let mut response = Response::builder().header("content-type", "text/plain");
    let body = match path.as_str() {
        "/fresh" => {
            response = response.header("cache-control", "public, max-age=60");
            format!("fresh {n}")
        }
        "/private" => {
            response = response.header("cache-control", "private, max-age=60");
            format!("private {n}")
        }
        "/vary" => {
            response = response
                .header("cache-control", "max-age=60")
                .header("vary", "accept-language");
            format!("{language} {n}")
        }
        "/big" => {
            response = response.header("cache-control", "max-age=60");
            format!("{n} {}", "x".repeat(4096))
        }
        "/v1/chat/completions" => {
            response = response.header("content-type", "application/json");
            format!("{{\"answer\": {n}}}")
        }
        _ => format!("plain {n}"),
    };
    response.body(Full::new(Bytes::from(body))).unwrap()
}

async fn get(proxy: &Running, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url(proxy, path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(&client(), request.body(Full::new(Bytes::new())).unwrap()).await
}

async fn chat(proxy: &Running, key: &str, body: &str) -> Reply {
    let request = Request::post(url(proxy, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(&client(), request).await
}

fn cache_header(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-augur-cache")
        .map_or("", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_and_deterministic_answers_are_served_again_and_nothing_else_is() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = backend(hits.clone()).await;
    let keys = temp_path("cache-keys.toml");
    replace_file(
        &keys,
        &format!(
            "[[keys]]\nid = \"a\"\ntenant = \"a\"\nsha256 = \"{}\"\n[[keys]]\nid = \"b\"\ntenant = \"b\"\nsha256 = \"{}\"\n",
            digest_hex("augur-cache-key-a"),
            digest_hex("augur-cache-key-b")
        ),
    );
    let config = temp_path("cache.toml");
    std::fs::write(
        &config,
        config_text(&format!(
            "[cache]\nmax_entry_bytes = 2048\n[compression]\nmin_length = 1\n[auth]\nkeys_file = \"{}\"\n\
             [[routes]]\nname = \"llm\"\npool = \"p\"\nauth = \"key\"\ncache_llm = true\nmatch = {{ path_prefix = \"/v1/\" }}\n\
             [[routes]]\nname = \"web\"\npool = \"p\"\ncache = true\n\
             [pools.p]\nbackends = [{{ address = \"{addr}\" }}]\n",
            keys.display()
        )),
    )
    .unwrap();
    let proxy = start_proxy_from_file(&config).await;
    let backend_hits = || hits.load(Ordering::SeqCst);

    let first = get(&proxy, "/fresh", &[]).await;
    let second = get(&proxy, "/fresh", &[]).await;
    assert_eq!((cache_header(&first), cache_header(&second)), ("miss", "hit"));
    assert_eq!(second.body, first.body, "the stored answer");
    assert_eq!(second.headers["cache-control"], "public, max-age=60");
    assert!(second.headers["age"].to_str().unwrap().parse::<u64>().unwrap() <= 1);
    assert_ne!(
        second.headers["x-request-id"], first.headers["x-request-id"],
        "its own request id"
    );
    assert_eq!(backend_hits(), 1);
    // A stored answer is compressed for a client that takes it, like any other.
    let request = Request::get(url(&proxy, "/fresh")).header("accept-encoding", "gzip");
    let response = client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            response.headers()["x-augur-cache"].to_str().unwrap(),
            response.headers()["content-encoding"].to_str().unwrap()
        ),
        ("hit", "gzip")
    );
    let zipped = response.into_body().collect().await.unwrap().to_bytes();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, first.body);
    // A client that asks for a fresh answer gets one, which then replaces the stored one.
    let fresh = get(&proxy, "/fresh", &[("cache-control", "no-cache")]).await;
    assert_eq!(fresh.body, "fresh 2");
    assert_eq!(get(&proxy, "/fresh", &[]).await.body, "fresh 2");

    for path in ["/private", "/plain", "/big"] {
        let (a, b) = (get(&proxy, path, &[]).await, get(&proxy, path, &[]).await);
        assert_ne!(a.body, b.body, "{path} is never served from the cache");
    }
    let (en, en_again, fr) = (
        get(&proxy, "/vary", &[("accept-language", "en")]).await,
        get(&proxy, "/vary", &[("accept-language", "en")]).await,
        get(&proxy, "/vary", &[("accept-language", "fr")]).await,
    );
    assert_eq!(en.body, en_again.body, "the same language: the stored answer");
    assert!(
        fr.body.starts_with("fr "),
        "another language: its own answer ({})",
        fr.body
    );

    // Deterministic LLM requests: the same body in another spelling is the same request; another
    // tenant, or a sampled request, is not.
    let ask = r#"{"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "2+2?"}]}"#;
    let respelled = r#"{"messages":[{"content":"2+2?","role":"user"}],"model":"m","temperature":0.0}"#;
    let a1 = chat(&proxy, "augur-cache-key-a", ask).await;
    let a2 = chat(&proxy, "augur-cache-key-a", respelled).await;
    assert_eq!(a1.status, StatusCode::OK, "{}", a1.body);
    assert_eq!((cache_header(&a1), cache_header(&a2)), ("miss", "hit"));
    assert_eq!(a1.body, a2.body);
    let b1 = chat(&proxy, "augur-cache-key-b", ask).await;
    assert_eq!(
        cache_header(&b1),
        "miss",
        "one tenant never gets another's answer"
    );
    let sampled = r#"{"model": "m", "temperature": 0.7, "messages": [{"role": "user", "content": "2+2?"}]}"#;
    let (s1, s2) = (
        chat(&proxy, "augur-cache-key-a", sampled).await,
        chat(&proxy, "augur-cache-key-a", sampled).await,
    );
    assert_ne!(s1.body, s2.body);
    assert_eq!(cache_header(&s1), "", "a sampled request is not the cache's");

    let hit = "augur_cache_requests_total{kind=\"http\",result=\"hit\",route=\"web\"}";
    assert_eq!(
        metric(&proxy, hit).await,
        4.0,
        "fresh twice, compressed once, vary once"
    );
    let llm_hit = "augur_cache_requests_total{kind=\"llm\",result=\"hit\",route=\"llm\"}";
    assert_eq!(metric(&proxy, llm_hit).await, 1.0);
    assert!(metric(&proxy, "augur_cache_bytes").await > 0.0);
    proxy.shutdown().await;
}
