//! What simulated LLM requests say: a prompt stand-in that renders to the same chat messages every
//! time, and the LoRA adapter asked for, so that the proxy's index and the simulated servers' KV
//! caches hash exactly the bytes they would see in production.
//!
//! Text is made of four-character words ("abc "), one per token, so a prompt's token count is its
//! length over four, the estimate the proxy makes of a real prompt.

use augur_engine::prefix::{PromptBlocks, INDEX_BLOCK_BYTES};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Characters per token of the rendered text.
pub const CHARS_PER_TOKEN: usize = 4;
/// Bytes per KV-cache block of the simulated servers: vLLM's default block of 16 tokens.
pub const NODE_BLOCK_BYTES: usize = 16 * CHARS_PER_TOKEN;

/// A prompt's blocks as a simulated server caches them.
pub type NodeBlocks = PromptBlocks<NODE_BLOCK_BYTES>;
/// A prompt's blocks as the proxy's prefix index sees them.
pub type IndexBlocks = PromptBlocks<INDEX_BLOCK_BYTES>;

/// A request's prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prompt {
    /// Text shared with no other request; never rendered, as it can hit no cache.
    #[default]
    Unique,
    /// A tenant's long document as the system message, then a question about it.
    Document {
        /// Whose document.
        tenant: u32,
        /// Its length.
        document_tokens: u32,
        /// Which question.
        question: u64,
        /// The question's length.
        question_tokens: u32,
    },
    /// Turn `turn` (from 0) of chat session `session`: the session's system message, every earlier
    /// turn's question and answer, then the new question.
    Turn {
        /// Which session.
        session: u32,
        /// Which turn.
        turn: u16,
        /// The system message's length.
        system_tokens: u16,
        /// Mean length of one question or answer.
        message_tokens: u16,
    },
}

const ROLE_SYSTEM: &str = "system";
const ROLE_USER: &str = "user";
const ROLE_ASSISTANT: &str = "assistant";

impl Prompt {
    /// Calls `message` with each chat message (role, content) in order; `text` is scratch space.
    pub fn for_each_message(&self, text: &mut String, mut message: impl FnMut(&str, &str)) {
        match *self {
            Self::Unique => {}
            Self::Document {
                tenant,
                document_tokens,
                question,
                question_tokens,
            } => {
                words(seed(&[1, u64::from(tenant)]), document_tokens, text);
                message(ROLE_SYSTEM, text);
                words(seed(&[2, question]), question_tokens, text);
                message(ROLE_USER, text);
            }
            Self::Turn {
                session,
                turn,
                system_tokens,
                ..
            } => {
                words(seed(&[3, u64::from(session)]), u32::from(system_tokens), text);
                message(ROLE_SYSTEM, text);
                for t in 0..=turn {
                    let (question, answer) = self.turn_lengths(t);
                    words(seed(&[4, u64::from(session), u64::from(t)]), question, text);
                    message(ROLE_USER, text);
                    if t < turn {
                        words(seed(&[5, u64::from(session), u64::from(t)]), answer, text);
                        message(ROLE_ASSISTANT, text);
                    }
                }
            }
        }
    }

    /// The question's and the answer's length in turn `t` of a session: half to one and a half
    /// times the mean, fixed by the session and turn.
    fn turn_lengths(&self, t: u16) -> (u32, u32) {
        let Self::Turn {
            session,
            message_tokens,
            ..
        } = *self
        else {
            return (0, 0);
        };
        let h = seed(&[6, u64::from(session), u64::from(t)]);
        let mean = u64::from(message_tokens.max(1));
        let length = |bits: u64| (mean / 2 + bits % (mean + 1)) as u32;
        (length(h), length(h >> 32))
    }

    /// Prompt tokens: the messages' contents, as rendered.
    pub fn tokens(&self) -> u32 {
        match *self {
            Self::Unique => 0,
            Self::Document {
                document_tokens,
                question_tokens,
                ..
            } => document_tokens + question_tokens,
            Self::Turn {
                turn, system_tokens, ..
            } => {
                let turns: u32 = (0..=turn)
                    .map(|t| {
                        let (question, answer) = self.turn_lengths(t);
                        question + if t < turn { answer } else { 0 }
                    })
                    .sum();
                u32::from(system_tokens) + turns
            }
        }
    }

    /// Whether the prompt has text worth hashing (any but [`Prompt::Unique`]).
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Unique)
    }
}

/// The name of the model a request asks for: the base model, or one of its LoRA adapters.
pub fn model_name(adapter: Option<u16>) -> String {
    adapter.map_or_else(|| "base".to_owned(), |a| format!("lora-{a}"))
}

/// Hashes a request's prompt into a server's blocks and the proxy index's blocks in one pass.
pub fn hash_prompt(
    prompt: &Prompt,
    adapter: Option<u16>,
    text: &mut String,
    node: &mut NodeBlocks,
    index: &mut IndexBlocks,
) {
    let model = model_name(adapter);
    node.reset(model.as_bytes());
    index.reset(model.as_bytes());
    prompt.for_each_message(text, |role, content| {
        node.push_message(role.as_bytes(), content.as_bytes());
        index.push_message(role.as_bytes(), content.as_bytes());
    });
}

/// Writes `tokens` four-character words drawn from `seed` into `out` (replacing its content).
fn words(seed: u64, tokens: u32, out: &mut String) {
    out.clear();
    out.reserve(tokens as usize * CHARS_PER_TOKEN);
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..tokens {
        let bits: u32 = rng.random();
        for shift in [0, 5, 10] {
            out.push(char::from(b'a' + ((bits >> shift) % 26) as u8));
        }
        out.push(' ');
    }
}

fn seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15, |h, &p| {
        (h ^ p).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(29)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(prompt: &Prompt) -> (usize, Vec<String>) {
        let mut text = String::new();
        let mut chars = 0;
        let mut roles = Vec::new();
        prompt.for_each_message(&mut text, |role, content| {
            chars += content.len();
            roles.push(role.to_owned());
        });
        (chars, roles)
    }

    #[test]
    fn a_prompt_renders_to_its_token_count() {
        let turn = Prompt::Turn {
            session: 7,
            turn: 3,
            system_tokens: 100,
            message_tokens: 40,
        };
        let (chars, roles) = rendered(&turn);
        assert_eq!(chars, turn.tokens() as usize * CHARS_PER_TOKEN);
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant",
                "user"
            ]
        );
        let doc = Prompt::Document {
            tenant: 1,
            document_tokens: 6000,
            question: 9,
            question_tokens: 120,
        };
        assert_eq!(rendered(&doc).0, 6120 * CHARS_PER_TOKEN);
    }

    #[test]
    fn the_next_turn_extends_the_last_one() {
        let turn = |t| Prompt::Turn {
            session: 3,
            turn: t,
            system_tokens: 64,
            message_tokens: 64,
        };
        let (mut text, mut node, mut index) = (String::new(), NodeBlocks::new(b""), IndexBlocks::new(b""));
        hash_prompt(&turn(2), None, &mut text, &mut node, &mut index);
        let earlier = node.hashes().to_vec();
        hash_prompt(&turn(3), None, &mut text, &mut node, &mut index);
        let later = node.hashes().to_vec();
        // Turn 2's messages start turn 3's, so every whole block of its prompt starts turn 3's.
        assert!(later.len() > earlier.len());
        assert_eq!(later[..earlier.len()], earlier[..]);
        // Another adapter shares no block.
        hash_prompt(&turn(3), Some(1), &mut text, &mut node, &mut index);
        assert!(node.hashes().iter().all(|h| !later.contains(h)));
    }
}
