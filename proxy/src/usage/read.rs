//! Reads the tokens a response used as its body streams past, without holding the body back: the
//! client gets every frame as it arrives, and the reader keeps only what it needs (the tail of a
//! JSON body, the line of an event stream it is in).
//!
//! - A JSON response (`application/json`) carries OpenAI's `usage` object near its end: the reader
//!   keeps the last [`JSON_TAIL_BYTES`] and parses the last `"usage"` key in them when the body ends.
//! - An event stream (`text/event-stream`) carries a `usage` object in a chunk when the client asked
//!   for it (`stream_options.include_usage`); the last one seen wins. Without one, every chunk
//!   carrying text counts as one output token, which is how OpenAI-compatible servers stream.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// How much of a JSON body's end is kept to find its `usage`.
pub const JSON_TAIL_BYTES: usize = 16 * 1024;

/// Longest event-stream line read; a longer one is skipped (and counted as no token).
pub const MAX_SSE_LINE_BYTES: usize = 256 * 1024;

/// What a response used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, when the response said.
    pub input_tokens: Option<u32>,
    /// Completion tokens.
    pub output_tokens: u32,
    /// Whether the response said so or the proxy counted.
    pub source: UsageSource,
}

/// Where a [`Usage`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The response's own `usage`.
    Reported,
    /// Counted by the proxy: one output token per streamed chunk with text.
    Counted,
}

impl UsageSource {
    /// Its name in telemetry, metrics and the usage summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Counted => "counted",
        }
    }
}

/// OpenAI's `usage` (and Anthropic's names for the same counts).
#[derive(Debug, Deserialize)]
struct UsageObject {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

impl UsageObject {
    fn usage(&self) -> Option<Usage> {
        let output = self.completion_tokens?;
        Some(Usage {
            input_tokens: self.prompt_tokens.map(saturate),
            output_tokens: saturate(output),
            source: UsageSource::Reported,
        })
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A streamed chunk, as far as usage goes: the `usage` it may carry, and whether it carries text.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    usage: Option<UsageObject>,
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Completions (not chat) stream `text`.
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

impl Chunk<'_> {
    /// Whether the chunk streams some output (text, reasoning or a tool call's part).
    fn has_output(&self) -> bool {
        let text = |t: &Option<std::borrow::Cow<'_, str>>| t.as_deref().is_some_and(|t| !t.is_empty());
        self.choices.iter().any(|c| {
            text(&c.text)
                || c.delta
                    .as_ref()
                    .is_some_and(|d| text(&d.content) || text(&d.reasoning_content) || d.tool_calls.is_some())
        })
    }
}

/// Reads one response's usage as its body passes.
#[derive(Debug)]
pub enum UsageReader {
    /// A JSON body: its tail.
    Json(Vec<u8>),
    /// An event stream.
    Events(EventReader),
}

impl UsageReader {
    /// A reader for a response of `content_type`, or `None` for one that carries no usage.
    pub fn for_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Some(Self::Events(EventReader::default()))
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json(Vec::new()))
        } else {
            None
        }
    }

    /// The next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) {
        match self {
            Self::Json(tail) => keep_tail(tail, data),
            Self::Events(events) => events.feed(data),
        }
    }

    /// What the body said it used, or counted, once it has ended.
    pub fn finish(self) -> Option<Usage> {
        match self {
            Self::Json(tail) => usage_in_json_tail(&tail),
            Self::Events(mut events) => {
                // A last line without its newline still counts.
                events.end_line();
                events.usage()
            }
        }
    }
}

/// Appends `data` to `tail`, keeping only the last [`JSON_TAIL_BYTES`]. The buffer grows to twice
/// that before its front is dropped, so each byte is moved at most once.
fn keep_tail(tail: &mut Vec<u8>, data: &[u8]) {
    let data = &data[data.len().saturating_sub(JSON_TAIL_BYTES)..];
    if tail.len() + data.len() > 2 * JSON_TAIL_BYTES {
        let keep = JSON_TAIL_BYTES.saturating_sub(data.len());
        tail.drain(..tail.len() - keep.min(tail.len()));
    }
    tail.extend_from_slice(data);
}

/// The last `"usage": {...}` object in `tail` that is a key (not text inside a string, where its
/// quotes would be escaped).
fn usage_in_json_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = tail.len();
    while let Some(at) = find_last(&tail[..end], KEY) {
        end = at;
        if at > 0 && tail[at - 1] == b'\\' {
            continue;
        }
        let rest = &tail[at + KEY.len()..];
        let rest = trim_start(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut de = serde_json::Deserializer::from_slice(trim_start(rest));
        if let Ok(object) = UsageObject::deserialize(&mut de) {
            return object.usage();
        }
    }
    None
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

/// Reads an event stream line by line.
#[derive(Debug, Default)]
pub struct EventReader {
    /// The line being read, when it does not end in the bytes fed so far.
    line: Vec<u8>,
    /// The line being read is too long: skipped to its end.
    skipping: bool,
    /// The last `usage` the stream reported.
    reported: Option<Usage>,
    /// Chunks with output.
    counted: u32,
}

impl EventReader {
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(newline);
            data = &rest[1..];
            if self.line.is_empty() && !self.skipping {
                self.read_line(line);
            } else {
                self.append(line);
                self.end_line();
            }
        }
        self.append(data);
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > MAX_SSE_LINE_BYTES {
            self.line = Vec::new();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if !self.skipping {
            self.read_line(&line);
        }
        self.skipping = false;
        // Keep the allocation for the next long line.
        self.line = line;
        self.line.clear();
    }

    fn read_line(&mut self, line: &[u8]) {
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = trim_start(payload.strip_suffix(b"\r").unwrap_or(payload));
        if payload.is_empty() || payload == b"[DONE]" {
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(payload) else {
            return;
        };
        if let Some(usage) = chunk.usage.as_ref().and_then(UsageObject::usage) {
            self.reported = Some(usage);
        }
        if chunk.has_output() {
            self.counted = self.counted.saturating_add(1);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.reported.or((self.counted > 0).then_some(Usage {
            input_tokens: None,
            output_tokens: self.counted,
            source: UsageSource::Counted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content_type: &str, frames: &[&[u8]]) -> Option<Usage> {
        let mut reader = UsageReader::for_content_type(content_type).expect("a usage-bearing type");
        for frame in frames {
            reader.feed(frame);
        }
        reader.finish()
    }

    #[test]
    fn a_json_body_usage_split_across_frames() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46},"system_fingerprint":"fp"}"#;
        let (a, b) = body.split_at(150);
        let usage = read("application/json; charset=utf-8", &[a, b]).unwrap();
        assert_eq!(usage.input_tokens, Some(12));
        assert_eq!(usage.output_tokens, 34);
        assert_eq!(usage.source, UsageSource::Reported);
    }

    #[test]
    fn a_long_json_body_keeps_only_its_tail() {
        let mut reader = UsageReader::for_content_type("application/json").unwrap();
        reader.feed(br#"{"choices":[{"message":{"content":""#);
        let filler = vec![b'a'; 10_000];
        for _ in 0..100 {
            reader.feed(&filler);
        }
        reader.feed(br#""}}],"usage":{"input_tokens":5,"output_tokens":7}}"#);
        let UsageReader::Json(tail) = &reader else {
            unreachable!()
        };
        assert!(tail.len() <= 2 * JSON_TAIL_BYTES);
        assert_eq!(reader.finish().unwrap().output_tokens, 7);
    }

    #[test]
    fn a_json_body_without_usage_says_nothing() {
        assert_eq!(read("application/json", &[br#"{"usage": null}"#]), None);
        assert_eq!(read("application/json", &[br#"{"data": [1, 2]}"#]), None);
        assert!(UsageReader::for_content_type("text/plain").is_none());
    }

    #[test]
    fn a_stream_reports_its_last_usage_chunk() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        // Every split point: a line may end in any frame.
        for at in 0..stream.len() {
            let (a, b) = stream.split_at(at);
            let usage = read("text/event-stream", &[a, b]).unwrap();
            assert_eq!(
                (usage.input_tokens, usage.output_tokens),
                (Some(3), 2),
                "split at {at}"
            );
            assert_eq!(usage.source, UsageSource::Reported);
        }
    }

    #[test]
    fn a_stream_without_usage_counts_its_chunks_with_text() {
        let mut frames = Vec::new();
        for i in 0..50 {
            frames.push(format!("data: {{\"choices\":[{{\"text\":\"t{i}\"}}]}}\n\n"));
        }
        frames.push("data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\ndata: [DONE]\n\n".into());
        let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
        let usage = read("text/event-stream", &frames).unwrap();
        assert_eq!(usage.output_tokens, 50);
        assert_eq!((usage.input_tokens, usage.source), (None, UsageSource::Counted));
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_stream_goes_on() {
        let mut reader = UsageReader::for_content_type("text/event-stream").unwrap();
        reader.feed(b"data: {\"choices\":[{\"text\":\"");
        reader.feed(&vec![b'x'; MAX_SSE_LINE_BYTES + 1]);
        reader.feed(b"\"}]}\n\ndata: {\"choices\":[{\"text\":\"y\"}]}\n\n");
        assert_eq!(reader.finish().unwrap().output_tokens, 1);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(frames: Vec<Vec<u8>>, sse: bool) {
            let content_type = if sse { "text/event-stream" } else { "application/json" };
            let mut reader = UsageReader::for_content_type(content_type).unwrap();
            for frame in &frames {
                reader.feed(frame);
            }
            let _ = reader.finish();
        }
    }
}
