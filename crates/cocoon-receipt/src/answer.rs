//! The text of an answer, as a receipt names it: for every choice in `index` order, its `content`
//! (chat) or `text` (completions), concatenated. A streamed answer gives the same text as the
//! same answer not streamed, so one digest covers both, and anyone holding the answer — the JSON
//! body, the SSE transcript, or just the text — can recompute it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Collects an answer's text while it passes (a stream's chunks, or a whole answer).
#[derive(Debug, Default, Clone)]
pub struct AnswerText {
    choices: BTreeMap<u64, String>,
}

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
}

impl AnswerText {
    /// An empty answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one JSON object: a whole answer, or one streamed chunk. Anything that is not an
    /// answer's shape (`[DONE]`, an error object) adds nothing.
    pub fn add_json(&mut self, json: &[u8]) {
        let Ok(shape) = serde_json::from_slice::<Shape>(json) else {
            return;
        };
        for choice in shape.choices {
            let text = choice
                .delta
                .and_then(|d| d.content)
                .or_else(|| choice.message.and_then(|m| m.content))
                .or(choice.text);
            if let Some(text) = text {
                self.choices
                    .entry(choice.index)
                    .or_default()
                    .push_str(&text);
            }
        }
    }

    /// The text of every choice, in index order, concatenated.
    pub fn text(&self) -> String {
        self.choices.values().map(String::as_str).collect()
    }

    /// SHA-256 of [`AnswerText::text`].
    pub fn sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for text in self.choices.values() {
            hasher.update(text.as_bytes());
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
    fn escaped_text_is_read_as_text() {
        let mut answer = AnswerText::new();
        answer.add_json(br#"{"choices":[{"delta":{"content":"a\n\"b\" \u00e9"}}]}"#);
        assert_eq!(answer.text(), "a\n\"b\" é");
    }
}
