//! Routes with `auth = "jwt"` through the real proxy: tokens signed by a key of the JWKS file, for
//! the configured issuer and audience, let in with their tenant's limits; every other token is
//! turned away with 401, whatever its header claims; the JWKS file reloads when it changes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use augur_proxy::Running;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::backends::spawn;
use crate::harness::*;

const ISSUER: &str = "https://login.example.test/";

/// An ES256 signing key and its public half as a JWK.
struct SigningKey {
    kid: &'static str,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn signing_key(kid: &'static str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // The uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    SigningKey {
        kid,
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(key: &SigningKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn claims(tenant: &str) -> serde_json::Value {
    json!({ "iss": ISSUER, "aud": "augur", "exp": now() + 600, "sub": "svc-1", "tenant": tenant })
}

fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    let set = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    replace_file(path, &set.to_string());
}

async fn call(proxy: &Running, token: Option<&str>) -> Reply {
    let mut request = Request::get(url(proxy, "/echo"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(&client(), request.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_the_providers_keys_get_in_with_their_tenants_limits_and_no_other_does() {
    let backend = spawn("b").await;
    let (k1, k2, stranger) = (signing_key("k1"), signing_key("k2"), signing_key("k1"));
    let jwks = temp_path("jwks.json");
    write_jwks(&jwks, &[&k1]);
    let keys = temp_path("jwt-keys.toml");
    replace_file(&keys, "[tenants.alpha]\nlimits = { requests_per_minute = 3 }\n");
    let config = temp_path("jwt.toml");
    std::fs::write(
        &config,
        config_text(&format!(
            "[auth]\nkeys_file = \"{}\"\ncheck_interval = \"200ms\"\n\
             [auth.jwt]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = [\"augur\"]\n\
             [[routes]]\npool = \"p\"\nauth = \"jwt\"\n[pools.p]\nbackends = {}\n",
            keys.display(),
            jwks.display(),
            backends_toml(&[(&backend, 1)])
        )),
    )
    .unwrap();
    let proxy = start_proxy_from_file(&config).await;

    let ok = call(&proxy, Some(&token(&k1, claims("beta")))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(
        ok.json()["headers"].get("authorization").is_none(),
        "the token never reaches the backend"
    );

    let missing = call(&proxy, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["www-authenticate"], "Bearer realm=\"augur\"");

    let refused = |claims: serde_json::Value| token(&k1, claims);
    let mut expired = claims("beta");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_audience = claims("beta");
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = claims("beta");
    wrong_issuer["iss"] = json!("https://evil.example.test/");
    let mut no_tenant = claims("beta");
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let mut no_expiry = claims("beta");
    no_expiry.as_object_mut().unwrap().remove("exp");
    // Signed with HS256 under the public key's bytes as a secret, and unsigned: the key says ES256.
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("beta"),
        &EncodingKey::from_secret(k1.jwk.to_string().as_bytes()),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims("beta").to_string())
    );
    let cases = [
        ("expired", refused(expired), "ExpiredSignature"),
        ("wrong audience", refused(wrong_audience), "InvalidAudience"),
        ("wrong issuer", refused(wrong_issuer), "InvalidIssuer"),
        ("no tenant", refused(no_tenant), "tenant"),
        ("no expiry", refused(no_expiry), "exp"),
        (
            "forged with another key of the same kid",
            token(&stranger, claims("beta")),
            "InvalidSignature",
        ),
        (
            "a key the set does not hold",
            token(&k2, claims("beta")),
            "does not hold",
        ),
        ("HS256 under the public key", confused, "InvalidAlgorithm"),
        ("alg none", unsigned, "malformed"),
        ("not a token", "augur-not-a-jwt".to_owned(), "malformed"),
    ];
    for (what, bad, why) in cases {
        let reply = call(&proxy, Some(&bad)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.body);
        assert_eq!(
            reply.headers["www-authenticate"], "Bearer realm=\"augur\", error=\"invalid_token\"",
            "{what}"
        );
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{what}: {message}");
    }
    assert_eq!(backend.hits(), 1, "no refused token reached the backend");

    // A token's tenant counts against that tenant's limits in the keys file.
    let alpha = token(&k1, claims("alpha"));
    for i in 0..3 {
        assert_eq!(
            call(&proxy, Some(&alpha)).await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    let limited = call(&proxy, Some(&alpha)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
    assert!(limited.body.contains("tenant"), "{}", limited.body);
    assert_eq!(
        metric(&proxy, "augur_gate_admitted_total{tenant=\"alpha\"}").await,
        3.0
    );

    // The provider rotates its keys: the file is read again and k2's tokens get in, k1's do not.
    write_jwks(&jwks, &[&k2]);
    let rotated = token(&k2, claims("beta"));
    eventually(
        Duration::from_secs(5),
        "the new key set is in force",
        async || call(&proxy, Some(&rotated)).await.status == StatusCode::OK,
    )
    .await;
    assert_eq!(
        call(&proxy, Some(&token(&k1, claims("beta")))).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A broken file is refused and the keys in force stay.
    replace_file(&jwks, "{\"keys\": [");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(call(&proxy, Some(&rotated)).await.status, StatusCode::OK);
    assert!(metric(&proxy, "augur_keys_reloads_total{result=\"failure\"}").await >= 1.0);
    proxy.shutdown().await;
}
