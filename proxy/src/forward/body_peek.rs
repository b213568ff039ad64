//! What an OpenAI-style request body says about itself (the `model` it asks for, its prompt length,
//! `max_tokens`), read by peeking at most a configured number of bytes. The body then goes on to the
//! backend unchanged: the peeked prefix first, then the rest as it streams.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use augur_engine::prefix::{PromptBlocks, INDEX_BLOCK_BYTES};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use serde_json::Value;
use sha2::Digest;

use crate::error::ProxyError;
use crate::message::body::{BoxError, ProxyBody};

/// Longest `model` name recorded in telemetry. Real names are tens of bytes; a client can send up to
/// the peek limit, and every attempt's row (and the writer's queue) would carry all of it.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Characters per prompt token, the usual rule of thumb for English text and code.
const CHARS_PER_TOKEN: usize = 4;

/// What one request's body says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeekedBody {
    /// The `model` asked for.
    pub model: Option<String>,
    /// Estimated prompt tokens (characters / 4 of `prompt` or the messages' contents).
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` (or `max_completion_tokens`) asked for.
    pub max_tokens: Option<u32>,
    /// For a whole body asking for `temperature` 0 (a deterministic answer): the SHA-256 of its
    /// canonical form (keys sorted, no spaces), what the LLM response cache keys on.
    pub deterministic_digest: Option<[u8; 32]>,
    /// The chained hashes of the prompt's blocks, seeded with the model's name, when asked for and
    /// the body was read whole (empty otherwise): what prefix-aware policies score.
    pub prompt_blocks: Vec<u64>,
}

/// The first bytes of a body, and the rest of it if there is more.
pub struct Prefix {
    /// Up to the limit asked for (whole frames, so possibly a little more).
    pub bytes: Bytes,
    /// The rest of the body, or `None` when `bytes` is all of it.
    pub rest: Option<ProxyBody>,
}

impl PeekedBody {
    /// The `model` to record in telemetry: `None` for a name longer than [`MAX_MODEL_NAME_BYTES`],
    /// which no route serves.
    pub fn model_to_record(&self) -> Option<&str> {
        self.model.as_deref().filter(|m| m.len() <= MAX_MODEL_NAME_BYTES)
    }

    /// Estimated tokens the request occupies at its backend: prompt plus `max_tokens`, where known.
    pub fn estimated_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens.unwrap_or(0)) + u64::from(self.max_tokens.unwrap_or(0))
    }
}

impl Prefix {
    /// The whole body again, unchanged: the prefix, then the rest as it streams.
    pub fn into_body(self) -> ProxyBody {
        Prefixed {
            prefix: Some(self.bytes),
            rest: self.rest,
        }
        .boxed()
    }
}

/// Reads `body` until at least `limit` bytes or its end, each frame within `idle`.
pub async fn read_prefix(mut body: ProxyBody, limit: usize, idle: Duration) -> Result<Prefix, ProxyError> {
    let mut prefix = BytesMut::new();
    while prefix.len() < limit {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| ProxyError::BadRequest(format!("request body idle for more than {idle:?}")))?;
        match frame {
            None => {
                return Ok(Prefix {
                    bytes: prefix.freeze(),
                    rest: None,
                })
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    prefix.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(ProxyError::BadRequest(e.to_string())),
        }
    }
    Ok(Prefix {
        bytes: prefix.freeze(),
        rest: Some(body),
    })
}

/// Reads up to `limit` bytes of `body` and returns the hints found (with the prompt's block hashes
/// when `hash_prompt`) and the whole body to send on.
pub async fn peek(
    body: ProxyBody,
    limit: usize,
    idle: Duration,
    hash_prompt: bool,
) -> Result<(PeekedBody, ProxyBody), ProxyError> {
    let prefix = read_prefix(body, limit, idle).await?;
    let hints = match prefix.rest {
        None => parse(&prefix.bytes, hash_prompt),
        Some(_) => PeekedBody {
            model: scan_model(&prefix.bytes),
            ..PeekedBody::default()
        },
    };
    Ok((hints, prefix.into_body()))
}

/// Hints from a whole JSON body (and its prompt's block hashes when `hash_prompt`); a body that is
/// not JSON has none.
fn parse(body: &[u8], hash_prompt: bool) -> PeekedBody {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return PeekedBody::default();
    };
    let text_len = |v: &Value| match v {
        Value::String(s) => s.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.as_str()
                    .or_else(|| p["text"].as_str())
                    .map_or(0, |s| s.chars().count())
            })
            .sum(),
        _ => 0,
    };
    let prompt_chars = match (&json["prompt"], json["messages"].as_array()) {
        (Value::Null, Some(messages)) => Some(messages.iter().map(|m| text_len(&m["content"])).sum()),
        (Value::Null, None) => None,
        (prompt, _) => Some(text_len(prompt)),
    };
    let max_tokens = json["max_tokens"]
        .as_u64()
        .or_else(|| json["max_completion_tokens"].as_u64());
    let model = json["model"].as_str();
    let prompt_blocks = if hash_prompt {
        let mut blocks = PromptBlocks::<INDEX_BLOCK_BYTES>::new(model.unwrap_or_default().as_bytes());
        blocks.push_openai(&json);
        blocks.hashes().to_vec()
    } else {
        Vec::new()
    };
    PeekedBody {
        model: model.map(str::to_owned),
        prompt_tokens: prompt_chars.map(|c: usize| (c / CHARS_PER_TOKEN) as u32),
        max_tokens: max_tokens.map(|n| n.min(u64::from(u32::MAX)) as u32),
        deterministic_digest: (json["temperature"].as_f64() == Some(0.0)).then(|| canonical_digest(json)),
        prompt_blocks,
    }
}

/// The SHA-256 of `json` in canonical form: keys sorted (serde_json's maps are ordered), no
/// spaces, and whole numbers written as integers (`0.0` as `0`).
fn canonical_digest(mut json: Value) -> [u8; 32] {
    fn whole_numbers_as_integers(value: &mut Value) {
        match value {
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                    *value = Value::from(f as i64);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
            Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
            _ => {}
        }
    }
    whole_numbers_as_integers(&mut json);
    let canonical = serde_json::to_vec(&json).expect("a parsed value serializes");
    sha2::Sha256::digest(&canonical).into()
}

/// The `"model": "..."` of a JSON prefix too long to read whole (OpenAI clients put `model` first).
fn scan_model(prefix: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(prefix).ok().or_else(|| {
        // A multi-byte character may be cut at the end of the prefix: drop the broken tail.
        let valid = std::str::from_utf8(prefix).err()?.valid_up_to();
        std::str::from_utf8(&prefix[..valid]).ok()
    })?;
    let after_key = &text[text.find("\"model\"")? + "\"model\"".len()..];
    let value = after_key
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = value.find('"')?;
    (!value[..end].contains('\\')).then(|| value[..end].to_owned())
}

pin_project! {
    /// A body that yields `prefix` first, then whatever `rest` still has.
    struct Prefixed {
        prefix: Option<Bytes>,
        #[pin]
        rest: Option<ProxyBody>,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(prefix) = this.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match this.rest.as_mut().as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + prefix);
                }
                total
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_completions_and_chat_bodies() {
        let completion = br#"{"model": "llama-3-8b", "prompt": "12345678", "max_tokens": 64}"#;
        assert_eq!(
            parse(completion, false),
            PeekedBody {
                model: Some("llama-3-8b".into()),
                prompt_tokens: Some(2),
                max_tokens: Some(64),
                deterministic_digest: None,
                prompt_blocks: Vec::new(),
            }
        );
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}],"max_completion_tokens":5}"#;
        assert_eq!(
            parse(chat, false),
            PeekedBody {
                model: Some("m".into()),
                prompt_tokens: Some(2),
                max_tokens: Some(5),
                deterministic_digest: None,
                prompt_blocks: Vec::new(),
            }
        );
        assert_eq!(parse(b"not json", false), PeekedBody::default());
    }

    #[test]
    fn the_prompt_is_hashed_in_blocks_seeded_by_the_model_when_asked() {
        let body = |model: &str, document: &str| {
            serde_json::json!({ "model": model, "messages": [{ "role": "system", "content": document }] })
                .to_string()
        };
        let document = "d".repeat(4 * INDEX_BLOCK_BYTES);
        let blocks = parse(body("m", &document).as_bytes(), true).prompt_blocks;
        let mut expected = PromptBlocks::<INDEX_BLOCK_BYTES>::new(b"m");
        expected.push_message(b"system", document.as_bytes());
        assert_eq!(blocks, expected.hashes());
        assert_eq!(
            blocks.len(),
            4,
            "the system role's 8 bytes leave a partial fifth block"
        );
        assert_ne!(
            parse(body("other", &document).as_bytes(), true).prompt_blocks,
            blocks
        );
        assert!(parse(body("m", &document).as_bytes(), false)
            .prompt_blocks
            .is_empty());
    }

    #[test]
    fn a_deterministic_body_is_known_by_its_canonical_form() {
        let a = parse(
            br#"{"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}"#,
            false,
        );
        let b = parse(
            br#"{"messages":[{"content":"hi","role":"user"}],"temperature":0.0,"model":"m"}"#,
            false,
        );
        assert!(a.deterministic_digest.is_some());
        assert_eq!(
            a.deterministic_digest, b.deterministic_digest,
            "same request, other spelling"
        );
        let other = parse(
            br#"{"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "ho"}]}"#,
            false,
        );
        assert_ne!(a.deterministic_digest, other.deterministic_digest);
        let sampled = parse(br#"{"model": "m", "temperature": 0.7, "messages": []}"#, false);
        assert_eq!(sampled.deterministic_digest, None);
        assert_eq!(
            parse(br#"{"model": "m"}"#, false).deterministic_digest,
            None,
            "no temperature: sampled"
        );
    }

    #[test]
    fn an_overlong_model_name_is_not_recorded() {
        let named = |model: String| PeekedBody {
            model: Some(model),
            ..PeekedBody::default()
        };
        let long = "m".repeat(MAX_MODEL_NAME_BYTES + 1);
        assert_eq!(named(long).model_to_record(), None);
        let fits = "m".repeat(MAX_MODEL_NAME_BYTES);
        assert_eq!(named(fits.clone()).model_to_record(), Some(fits.as_str()));
    }

    #[test]
    fn finds_the_model_in_a_prefix() {
        assert_eq!(
            scan_model(br#"{ "model" : "mistral-7b", "prompt": "a very long"#).as_deref(),
            Some("mistral-7b")
        );
        assert_eq!(scan_model(br#"{"prompt": "no model yet"#), None);
        assert_eq!(scan_model(br#"{"model": "cut-off"#), None);
    }

    proptest::proptest! {
        /// Any body, JSON or not, whole or cut anywhere, is read without panicking; a `model`
        /// found is always one the body holds.
        #[test]
        fn any_body_is_read_without_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            cut in 0usize..200,
        ) {
            let chat = br#"{"model":"m-1","messages":[{"role":"user","content":"hi"}],"max_tokens":9}"#;
            for bytes in [&body[..], &chat[..cut.min(chat.len())]] {
                let peeked = parse(bytes, false);
                if let Some(model) = scan_model(bytes) {
                    proptest::prop_assert!(String::from_utf8_lossy(bytes).contains(&model));
                }
                let _ = peeked.estimated_tokens();
            }
        }
    }
}
