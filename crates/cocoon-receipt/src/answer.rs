//! The text of an answer, as a receipt names it: for every choice in `index` order, its `content`
//! (chat) or `text` (completions), and the tool calls it made (id, function name, arguments). A
//! streamed answer gives the same text as the same answer not streamed, so one digest covers
//! both, and anyone holding the answer — the JSON body or the SSE transcript — can recompute it.
//!
//! The digest of an answer with one choice and no tool call is the SHA-256 of its text, as it
//! always was (receipts of such answers stay verifiable). Any other answer is hashed in a framed
//! form ([`AnswerText::sha256`]), so that choices and calls cannot be run together: "AB" in one
//! choice never hashes like "A" and "B" in two, nor a call like text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Collects an answer's text while it passes (a stream's chunks, or a whole answer).
#[derive(Debug, Default, Clone)]
pub struct AnswerText {
    choices: BTreeMap<u64, Choice>,
}

/// What one choice said.
#[derive(Debug, Default, Clone)]
struct Choice {
    text: String,
    calls: BTreeMap<u64, Call>,
}

/// One tool call of a choice (streamed ones arrive in pieces, each appended).
#[derive(Debug, Default, Clone)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// Prefix of the framed digest, so it can never equal the digest of some plain text's frame.
const FRAMED_DOMAIN: &[u8] = b"cocoon-answer/v2\n";

/// The parts of an answer or chunk that carry text; everything else is skipped unread.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceShape<'a>>,
}

#[derive(Deserialize)]
struct ChoiceShape<'a> {
    #[serde(default)]
    index: u64,
    #[serde(default, borrow)]
    message: Option<Content<'a>>,
    #[serde(default, borrow)]
    delta: Option<Content<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<CallShape<'a>>,
}

#[derive(Deserialize)]
struct CallShape<'a> {
    #[serde(default)]
    index: u64,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionShape<'a>>,
}

#[derive(Deserialize)]
struct FunctionShape<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl AnswerText {
    /// An empty answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one JSON object: a whole answer, or one streamed chunk. Anything that is not an
    /// answer's shape (`[DONE]`, an error object) adds nothing. Returns whether it added output
    /// (some non-empty text or a tool call), so a meter that reads the chunk for its text need
    /// not parse it again to tell a token from bookkeeping.
    pub fn add_json(&mut self, json: &[u8]) -> bool {
        let Ok(shape) = serde_json::from_slice::<Shape>(json) else {
            return false;
        };
        let mut added = false;
        for choice in shape.choices {
            let (content, calls) = match choice.delta.or(choice.message) {
                Some(content) => (content.content, content.tool_calls),
                None => (None, Vec::new()),
            };
            let text = content.or(choice.text);
            if text.is_none() && calls.is_empty() {
                continue;
            }
            added |= !calls.is_empty() || text.as_ref().is_some_and(|text| !text.is_empty());
            let entry = self.choices.entry(choice.index).or_default();
            if let Some(text) = text {
                entry.text.push_str(&text);
            }
            for call in calls {
                let slot = entry.calls.entry(call.index).or_default();
                if let Some(id) = call.id {
                    slot.id.push_str(&id);
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        slot.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        slot.arguments.push_str(&arguments);
                    }
                }
            }
        }
        added
    }

    /// The text of every choice, in index order, concatenated (tool calls not included).
    pub fn text(&self) -> String {
        self.choices.values().map(|c| c.text.as_str()).collect()
    }

    /// The answer's digest: the SHA-256 of its text when it has at most one choice and no tool
    /// call; otherwise the SHA-256 of a framed form — a domain prefix, then for each choice its
    /// index, its text, and its tool calls (index, id, name, arguments), every number as 8
    /// big-endian bytes and every string preceded by its length so.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let plain = self.choices.len() <= 1 && self.choices.values().all(|c| c.calls.is_empty());
        if plain {
            for choice in self.choices.values() {
                hasher.update(choice.text.as_bytes());
            }
            return hasher.finalize().into();
        }
        let string = |hasher: &mut Sha256, s: &str| {
            hasher.update((s.len() as u64).to_be_bytes());
            hasher.update(s.as_bytes());
        };
        hasher.update(FRAMED_DOMAIN);
        hasher.update((self.choices.len() as u64).to_be_bytes());
        for (index, choice) in &self.choices {
            hasher.update(index.to_be_bytes());
            string(&mut hasher, &choice.text);
            hasher.update((choice.calls.len() as u64).to_be_bytes());
            for (index, call) in &choice.calls {
                hasher.update(index.to_be_bytes());
                string(&mut hasher, &call.id);
                string(&mut hasher, &call.name);
                string(&mut hasher, &call.arguments);
            }
        }
        hasher.finalize().into()
    }

    /// The text of an answer as an app received it: a JSON answer, or an SSE transcript (every
    /// `data:` line is read; other lines are skipped).
    pub fn from_transcript(bytes: &[u8]) -> Self {
        let mut answer = AnswerText::new();
        let text = String::from_utf8_lossy(bytes);
        if text.trim_start().starts_with('{') {
            answer.add_json(text.trim().as_bytes());
            return answer;
        }
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data:") {
                answer.add_json(data.trim_start().as_bytes());
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_and_the_same_answer_whole_have_one_text() {
        let whole =
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}]}"#;
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                      : a comment\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let a = AnswerText::from_transcript(whole);
        let b = AnswerText::from_transcript(stream.as_bytes());
        assert_eq!(a.text(), "Hello");
        assert_eq!(b.text(), "Hello");
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(a.sha256(), <[u8; 32]>::from(Sha256::digest(b"Hello")));
    }

    #[test]
    fn choices_are_joined_in_index_order_and_completions_count() {
        let mut answer = AnswerText::new();
        answer.add_json(br#"{"choices":[{"index":1,"text":"B"}]}"#);
        answer.add_json(br#"{"choices":[{"index":0,"text":"A"}]}"#);
        answer.add_json(br#"{"choices":[{"index":1,"text":"b"}]}"#);
        answer.add_json(b"[DONE]");
        answer.add_json(br#"{"error":{"message":"x"}}"#);
        assert_eq!(answer.text(), "ABb");
    }

    #[test]
    fn choices_cannot_be_run_together_nor_calls_passed_off_as_text() {
        let digest = |json: &[u8]| {
            let mut answer = AnswerText::new();
            answer.add_json(json);
            answer.sha256()
        };
        let one = digest(br#"{"choices":[{"index":0,"text":"AB"}]}"#);
        let two = digest(br#"{"choices":[{"index":0,"text":"A"},{"index":1,"text":"B"}]}"#);
        let split = digest(br#"{"choices":[{"index":0,"text":"AB"},{"index":1,"text":""}]}"#);
        assert_eq!(one, <[u8; 32]>::from(Sha256::digest(b"AB")));
        assert_ne!(one, two);
        assert_ne!(two, split);
        let call = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#;
        let other_arguments = br#"{"choices":[{"index":0,"message":{"content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":2}"}}]}}]}"#;
        assert_ne!(digest(call), digest(other_arguments));
        assert_ne!(
            digest(call),
            digest(br#"{"choices":[{"index":0,"message":{"content":""}}]}"#)
        );
    }

    #[test]
    fn a_streamed_tool_call_hashes_like_the_whole_one() {
        let whole = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},
            "finish_reason":"tool_calls"}]}"#;
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\": \"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
            data: [DONE]\n\n";
        let a = AnswerText::from_transcript(whole);
        let b = AnswerText::from_transcript(stream.as_bytes());
        assert_eq!(a.sha256(), b.sha256());
        // The call is covered: the same answer as plain empty text hashes otherwise.
        assert_ne!(a.sha256(), <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn escaped_text_is_read_as_text() {
        let mut answer = AnswerText::new();
        answer.add_json(br#"{"choices":[{"delta":{"content":"a\n\"b\" \u00e9"}}]}"#);
        assert_eq!(answer.text(), "a\n\"b\" é");
    }
}
