//! Prompt prefixes: chained hashes of a prompt's fixed-size blocks, and an approximate index, per
//! backend, of the blocks it has lately been sent.
//!
//! An LLM server keeps the KV cache of the prompts it has processed in blocks, and a request whose
//! prompt starts with blocks already cached skips their prefill (vLLM's automatic prefix caching).
//! Each block's hash covers the block and, through its parent's hash, everything before it, so equal
//! hashes at position `i` mean equal prompts up to the end of block `i`, as in vLLM and the Gateway
//! API inference extension's prefix plugin. The chain starts from the model's (or LoRA adapter's)
//! name: two adapters never share KV.

mod lru;

use std::sync::{Mutex, PoisonError};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub use lru::BlockLru;

/// Bytes per block of the proxy's prefix index: 64 tokens at the usual 4 characters per token.
pub const INDEX_BLOCK_BYTES: usize = 256;

/// Prompt bytes per token the index assumes: the usual 4 characters per token of English text,
/// which is also what the extension's auto-tuning takes.
pub const CHARS_PER_TOKEN: usize = 4;

/// Tokens per block of the proxy's prefix index.
pub const TOKENS_PER_INDEX_BLOCK: usize = INDEX_BLOCK_BYTES / CHARS_PER_TOKEN;

/// The largest index a server's reported cache may size: 2^22 blocks (a 268-million-token cache),
/// so a server that reports nonsense cannot make the proxy reserve gigabytes.
pub const MAX_INDEX_BLOCKS: usize = 1 << 22;

/// Blocks of a prompt that are hashed at most (the first 256 KiB at the index's block size); a
/// longer prompt's tail is not indexed, which bounds a hostile body's cost.
pub const MAX_PROMPT_BLOCKS: usize = 1024;

/// Blocks a backend's index holds until the server says how large its cache is: the inference
/// extension's default LRU capacity per server.
pub const DEFAULT_INDEX_BLOCKS: usize = 31_250;

/// The chained block hashes of one prompt, fed as it is read: whole blocks only (a partial last
/// block is never cached by a server either), at most [`MAX_PROMPT_BLOCKS`] of them.
///
/// `BYTES` is the block size: [`INDEX_BLOCK_BYTES`] for the proxy's index, a server's own block
/// size (vLLM: 16 tokens) for a simulated server's cache.
#[derive(Debug, Clone)]
pub struct PromptBlocks<const BYTES: usize> {
    hashes: Vec<u64>,
    pending: [u8; BYTES],
    pending_len: usize,
    parent: u64,
}

impl<const BYTES: usize> PromptBlocks<BYTES> {
    /// An empty prompt of the model (or adapter) named `scope`.
    pub fn new(scope: &[u8]) -> Self {
        Self {
            hashes: Vec::new(),
            pending: [0; BYTES],
            pending_len: 0,
            parent: xxh3_64(scope),
        }
    }

    /// Empties the prompt for reuse (keeping its buffer), now of the model named `scope`.
    pub fn reset(&mut self, scope: &[u8]) {
        self.hashes.clear();
        self.pending_len = 0;
        self.parent = xxh3_64(scope);
    }

    /// Appends prompt bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.hashes.len() < MAX_PROMPT_BLOCKS {
            if self.pending_len == 0 && bytes.len() >= BYTES {
                // Whole blocks straight from the input, without copying them.
                let (block, rest) = bytes.split_at(BYTES);
                self.seal(block);
                bytes = rest;
                continue;
            }
            let take = (BYTES - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len == BYTES {
                let block = self.pending;
                self.seal(&block);
                self.pending_len = 0;
            }
        }
    }

    /// Appends one chat message: its role and content, each ended by a newline, so that the same
    /// conversation always gives the same bytes and a role change is never read as content.
    pub fn push_message(&mut self, role: &[u8], content: &[u8]) {
        self.push(role);
        self.push(b"\n");
        self.push(content);
        self.push(b"\n");
    }

    /// Appends the prompt of an OpenAI-style request body: each of `messages`' role and text content
    /// (a string, or the `text` of its parts), or else `prompt` (a string, or an array of strings).
    pub fn push_openai(&mut self, body: &serde_json::Value) {
        use serde_json::Value;
        if let Some(messages) = body["messages"].as_array() {
            for message in messages {
                let role = message["role"].as_str().unwrap_or("").as_bytes();
                self.push(role);
                self.push(b"\n");
                match &message["content"] {
                    Value::String(text) => self.push(text.as_bytes()),
                    Value::Array(parts) => {
                        for text in parts.iter().filter_map(|p| p["text"].as_str()) {
                            self.push(text.as_bytes());
                        }
                    }
                    _ => {}
                }
                self.push(b"\n");
            }
            return;
        }
        match &body["prompt"] {
            Value::String(text) => self.push(text.as_bytes()),
            Value::Array(parts) => {
                for text in parts.iter().filter_map(Value::as_str) {
                    self.push(text.as_bytes());
                }
            }
            _ => {}
        }
    }

    fn seal(&mut self, block: &[u8]) {
        // Zero marks an empty slot of an index; a hash that happens to be zero becomes one.
        let hash = xxh3_64_with_seed(block, self.parent).max(1);
        self.hashes.push(hash);
        self.parent = hash;
    }

    /// The hashes of the whole blocks so far, in prompt order.
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }
}

/// Which prompt blocks a backend has lately been sent: an LRU of block hashes, written by the
/// request path after each pick and read by the next picks, without allocating.
///
/// Like the inference extension's approximate prefix index it records what was sent, not what the
/// server kept. Its budget is what makes it track the server: sized to the server's KV cache
/// ([`set_server_cache`](Self::set_server_cache), from `vllm:cache_config_info`, as the extension's
/// auto-tuning does), it forgets a prefix about when the server evicts it; left at the default, it
/// keeps prefixes the server has long dropped.
#[derive(Debug)]
pub struct PrefixIndex {
    lru: Mutex<BlockLru>,
}

impl PrefixIndex {
    /// An index of at most `blocks` blocks.
    pub fn new(blocks: usize) -> Self {
        Self {
            lru: Mutex::new(BlockLru::new(blocks)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlockLru> {
        // The set is plain data, each operation complete before the lock is released.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that a prompt with these blocks was sent to the backend.
    pub fn record(&self, blocks: &[u64]) {
        self.lock().touch(blocks);
    }

    /// How many of the prompt's leading blocks the backend holds, in about ten lookups for 24 KB.
    pub fn matched(&self, blocks: &[u64]) -> usize {
        self.lock().cached_prefix(blocks)
    }

    /// The most blocks the index holds.
    pub fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    /// Sizes the index to a server whose KV cache holds `tokens` tokens, at
    /// [`TOKENS_PER_INDEX_BLOCK`] a block.
    pub fn set_server_cache(&self, tokens: u64) {
        let blocks = usize::try_from(tokens / TOKENS_PER_INDEX_BLOCK as u64).unwrap_or(usize::MAX);
        let blocks = blocks.clamp(1, MAX_INDEX_BLOCKS);
        let mut lru = self.lock();
        if lru.capacity() != blocks {
            lru.set_capacity(blocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks<const B: usize>(scope: &str, parts: &[&[u8]]) -> Vec<u64> {
        let mut p = PromptBlocks::<B>::new(scope.as_bytes());
        for part in parts {
            p.push(part);
        }
        p.hashes().to_vec()
    }

    #[test]
    fn hashes_depend_on_the_bytes_not_on_how_they_were_fed() {
        let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let whole = blocks::<64>("m", &[&text]);
        let pieces = blocks::<64>("m", &[&text[..10], &text[10..100], &text[100..]]);
        assert_eq!(whole, pieces);
        assert_eq!(whole.len(), 1000 / 64, "a partial last block is not hashed");
        // Chained: a change in block 3 changes every hash from block 3 on, and none before.
        let mut changed = text.clone();
        changed[3 * 64 + 5] = b'!';
        let other = blocks::<64>("m", &[&changed]);
        assert_eq!(whole[..3], other[..3]);
        assert!(whole[3..].iter().zip(&other[3..]).all(|(a, b)| a != b));
        // Another model (or adapter) shares nothing.
        let adapter = blocks::<64>("lora-1", &[&text]);
        assert!(whole.iter().zip(&adapter).all(|(a, b)| a != b));
    }

    #[test]
    fn a_chat_body_hashes_as_its_messages_pushed_one_by_one() {
        let system = "s".repeat(300);
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": [{ "type": "text", "text": "what is " }, { "type": "text", "text": "x".repeat(200) }] },
            ],
        });
        let mut from_body = PromptBlocks::<64>::new(b"m");
        from_body.push_openai(&body);
        let mut by_hand = PromptBlocks::<64>::new(b"m");
        by_hand.push_message(b"system", system.as_bytes());
        by_hand.push_message(b"user", format!("what is {}", "x".repeat(200)).as_bytes());
        assert_eq!(from_body.hashes(), by_hand.hashes());
        assert_eq!(from_body.hashes().len(), (7 + 301 + 5 + 209) / 64);
        let mut completion = PromptBlocks::<64>::new(b"m");
        completion.push_openai(&serde_json::json!({ "prompt": "y".repeat(130) }));
        assert_eq!(completion.hashes().len(), 2);
    }

    #[test]
    fn a_long_prompt_is_hashed_up_to_the_bound() {
        let text = vec![b'x'; (MAX_PROMPT_BLOCKS + 10) * 16];
        assert_eq!(blocks::<16>("m", &[&text]).len(), MAX_PROMPT_BLOCKS);
    }

    #[test]
    fn the_index_counts_the_leading_blocks_a_backend_was_sent() {
        let index = PrefixIndex::new(4096);
        let shared: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut first = shared.clone();
        first.extend_from_slice(&[1; 1024]);
        let mut second = shared.clone();
        second.extend_from_slice(&[2; 1024]);
        let (first, second) = (blocks::<256>("m", &[&first]), blocks::<256>("m", &[&second]));
        assert_eq!(index.matched(&first), 0);
        index.record(&first);
        assert_eq!(index.matched(&first), first.len());
        assert_eq!(
            index.matched(&second),
            4096 / 256,
            "the shared document's blocks, not the question's"
        );
        assert_eq!(index.matched(&[]), 0);
    }

    #[test]
    fn an_index_sized_to_its_server_forgets_what_the_server_evicted() {
        let index = PrefixIndex::new(DEFAULT_INDEX_BLOCKS);
        // A server of 6,400 tokens: 100 blocks of the index.
        index.set_server_cache(6_400);
        assert_eq!(index.capacity(), 100);
        let document = |n: u8| blocks::<256>("m", &[&[n; 256 * 40]]);
        let (a, b, c) = (document(1), document(2), document(3));
        index.record(&a);
        index.record(&b);
        assert_eq!(index.matched(&a), 40);
        // A third document does not fit beside both: the least recent, `a`, loses its tail.
        index.record(&c);
        assert_eq!(index.matched(&a), 20);
        assert_eq!((index.matched(&b), index.matched(&c)), (40, 40));
        index.set_server_cache(u64::MAX);
        assert_eq!(index.capacity(), MAX_INDEX_BLOCKS, "a server's report is bounded");
    }
}
