//! Signing of hint webhooks: HMAC-SHA256 over `"{timestamp}.{body}"`, sent as
//! `x-augur-signature: sha256=<hex>` beside `x-augur-timestamp: <unix seconds>`. Signing the timestamp
//! lets a receiver reject a replayed request without keeping every id it has seen.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-augur-signature";
/// Header carrying the signing time, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-augur-timestamp";
const SCHEME: &str = "sha256=";

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header is absent or unreadable.
    #[error("missing or malformed `{0}` header")]
    Malformed(&'static str),
    /// The signature does not match the body and timestamp under this secret.
    #[error("signature does not verify: the secret differs from the sender's, or the body or timestamp was altered")]
    BadSignature,
    /// The timestamp is too far from now.
    #[error("stale timestamp: signed {age_s} s from now, more than the {max_age_s} s allowed (a replay, or clocks apart)")]
    Stale {
        /// Seconds between signing and now (either way).
        age_s: u64,
        /// The most allowed.
        max_age_s: u64,
    },
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `x-augur-signature` value for `body` signed at `timestamp_unix_s`.
pub fn sign(secret: &[u8], timestamp_unix_s: u64, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp_unix_s.to_string(), body)
        .finalize()
        .into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SCHEME}{hex}")
}

/// Checks a request's signature (constant time) and then that its timestamp is within `max_age_s`
/// of `now_unix_s`.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix_s: u64,
    max_age_s: u64,
) -> Result<(), Rejection> {
    let timestamp = timestamp.ok_or(Rejection::Malformed(TIMESTAMP_HEADER))?;
    let signed_at: u64 = timestamp
        .parse()
        .map_err(|_| Rejection::Malformed(TIMESTAMP_HEADER))?;
    let tag = signature
        .and_then(|s| s.strip_prefix(SCHEME))
        .and_then(decode_hex)
        .ok_or(Rejection::Malformed(SIGNATURE_HEADER))?;
    mac(secret, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| Rejection::BadSignature)?;
    let age_s = now_unix_s.abs_diff(signed_at);
    if age_s > max_age_s {
        return Err(Rejection::Stale { age_s, max_age_s });
    }
    Ok(())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_signature_and_rejects_tampering_wrong_keys_and_stale_times() {
        let body = br#"{"id":"a"}"#;
        let signature = sign(b"s3cret", 1_000, body);
        let check = |secret: &[u8], ts: &str, sig: &str, body: &[u8], now| {
            verify(secret, Some(ts), Some(sig), body, now, 300)
        };
        assert_eq!(check(b"s3cret", "1000", &signature, body, 1_100), Ok(()));
        assert_eq!(
            check(b"other", "1000", &signature, body, 1_100),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(b"s3cret", "1001", &signature, body, 1_100),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(b"s3cret", "1000", &signature, b"{}", 1_100),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(b"s3cret", "1000", &signature, body, 1_400),
            Err(Rejection::Stale {
                age_s: 400,
                max_age_s: 300
            })
        );
        assert_eq!(
            verify(b"s3cret", None, Some(&signature), body, 1_000, 300),
            Err(Rejection::Malformed(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(b"s3cret", "1000", "sha256=zz", body, 1_000),
            Err(Rejection::Malformed(SIGNATURE_HEADER))
        );
    }
}
