//! gRPC health checks (`grpc.health.v1.Health/Check`), spoken by hand: the request and the answer
//! are a few bytes of protobuf, not worth a code generator.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};

use super::super::{Backend, Pool};
use crate::message::reply;

/// The health service's method.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// Most of an answer read: a health answer is a few bytes.
const MAX_ANSWER: usize = 4 * 1024;
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// One check of `service` at `backend`: passes on `SERVING` with `grpc-status` 0 in time.
pub(super) async fn probe(pool: &Pool, backend: &Backend, service: &str, timeout: Duration) -> bool {
    let address = backend.address.as_str();
    let scheme = crate::pool::connector::scheme(&pool.config);
    let Ok(request) = Request::post(format!("{scheme}://{address}{CHECK_PATH}"))
        .header(HOST, address)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .header(TE, HeaderValue::from_static("trailers"))
        .header(USER_AGENT, HeaderValue::from_static("augur-health-check"))
        .version(crate::pool::connector::version(&pool.config))
        .body(reply::full(framed(&request_message(service))))
    else {
        return false;
    };
    let exchange = async {
        let response = pool.client.request(request).await.ok()?;
        if !response.status().is_success() {
            return Some(false);
        }
        // A trailers-only answer carries grpc-status in its headers.
        let head_status = response.headers().get("grpc-status").cloned();
        let collected = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .ok()?;
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(head_status);
        let ok = status.is_some_and(|s| s == "0");
        Some(ok && unframed(&collected.to_bytes()).is_some_and(|m| serving_status(m) == Some(SERVING)))
    };
    matches!(tokio::time::timeout(timeout, exchange).await, Ok(Some(true)))
}

/// `HealthCheckRequest { service }`: field 1, a string (omitted when empty, as protobuf does).
fn request_message(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC message on the wire: uncompressed flag, big-endian length, the message.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The first message of a gRPC body, if it is whole and uncompressed.
fn unframed(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then_some(())?;
    rest.get(4..4 + len)
}

/// `HealthCheckResponse.status` (field 1, a varint); absent means `UNKNOWN` (0).
fn serving_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let key = read_varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = read_varint(&mut message)?,
            (_, 0) => {
                read_varint(&mut message)?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            // Fixed-width fields: not in this message; skip them by their width.
            (_, 1) => message = message.get(8..)?,
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_the_wire_format() {
        assert_eq!(request_message(""), b"");
        assert_eq!(request_message("ab"), b"\x0a\x02ab");
        assert_eq!(&framed(b"\x08\x01")[..], b"\0\0\0\0\x02\x08\x01");
        assert_eq!(unframed(b"\0\0\0\0\x02\x08\x01"), Some(&b"\x08\x01"[..]));
        assert_eq!(unframed(b"\x01\0\0\0\x02\x08\x01"), None, "compressed");
        assert_eq!(unframed(b"\0\0\0\0\x09\x08"), None, "cut short");
        assert_eq!(serving_status(b"\x08\x01"), Some(SERVING));
        assert_eq!(serving_status(b"\x08\x02"), Some(2), "NOT_SERVING");
        assert_eq!(serving_status(b""), Some(0), "UNKNOWN is the default");
        assert_eq!(
            serving_status(b"\x12\x01x\x08\x01"),
            Some(SERVING),
            "unknown fields skipped"
        );
        assert_eq!(serving_status(b"\x08"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_answer_is_read_without_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = unframed(&body).map(serving_status);
            let _ = serving_status(&body);
        }
    }
}
