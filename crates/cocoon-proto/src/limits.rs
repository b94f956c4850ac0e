//! Limits every hop applies to what a peer (or an engine) sends, and the one rule that turns a
//! request's `max_tokens` / `max_completion_tokens` into the completion-token limit that is
//! reserved, forwarded and enforced.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The largest completion-token limit a request may ask for. Far above any model's context window,
/// far below where a reservation or a counter could overflow.
pub const MAX_COMPLETION_TOKENS: u64 = 1 << 24;

/// The largest single SSE event (from the start of its first line to the blank line that ends it)
/// a hop accepts from its upstream. A real token chunk is well under a kilobyte; a final usage chunk
/// or an error a few.
pub const MAX_SSE_EVENT_BYTES: usize = 1 << 20;

/// The largest non-streamed answer body a hop reads from its upstream.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// One of the two token-limit fields of a request, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenField {
    /// Missing, or `null` (OpenAI treats both alike).
    #[default]
    Absent,
    /// A non-negative integer.
    Count(u64),
    /// Anything else: negative, fractional, a string, an object…
    Invalid,
}

impl TokenField {
    /// The field as a decoded document holds it (`None`: the document has no such field). Never
    /// fails: a value of the wrong type is [`TokenField::Invalid`].
    pub fn read<'de, D: Deserializer<'de>>(value: Option<D>) -> Self {
        value.map_or(TokenField::Absent, |value| {
            TokenField::deserialize(value).unwrap_or(TokenField::Invalid)
        })
    }

    /// The field as an engine's signed integer would carry it.
    pub fn from_i64(value: Option<i64>) -> Self {
        match value {
            None => TokenField::Absent,
            Some(value) => u64::try_from(value).map_or(TokenField::Invalid, TokenField::Count),
        }
    }
}

/// Why a request's token limit is refused; each names the parameter at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLimitError {
    /// Not a non-negative integer.
    NotAnInteger(&'static str),
    /// Zero: nothing could be generated.
    Zero(&'static str),
    /// Above [`MAX_COMPLETION_TOKENS`].
    TooLarge(&'static str, u64),
    /// `max_tokens` and `max_completion_tokens` both given, with different values.
    Conflict {
        /// `max_tokens`.
        max_tokens: u64,
        /// `max_completion_tokens`.
        max_completion_tokens: u64,
    },
}

impl TokenLimitError {
    /// The request parameter at fault.
    pub fn param(&self) -> &'static str {
        match self {
            TokenLimitError::NotAnInteger(param)
            | TokenLimitError::Zero(param)
            | TokenLimitError::TooLarge(param, _) => param,
            TokenLimitError::Conflict { .. } => MAX_COMPLETION_TOKENS_FIELD,
        }
    }
}

impl fmt::Display for TokenLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenLimitError::NotAnInteger(param) => {
                write!(f, "`{param}` must be a positive integer")
            }
            TokenLimitError::Zero(param) => write!(f, "`{param}` must be at least 1"),
            TokenLimitError::TooLarge(param, value) => write!(
                f,
                "`{param}` is {value}; the most a request may ask for is {MAX_COMPLETION_TOKENS}"
            ),
            TokenLimitError::Conflict {
                max_tokens,
                max_completion_tokens,
            } => write!(
                f,
                "`max_completion_tokens` ({max_completion_tokens}) and `max_tokens` ({max_tokens}) \
                 disagree; send one of them (or the same value in both)"
            ),
        }
    }
}

impl std::error::Error for TokenLimitError {}

/// The name of the older field.
pub const MAX_TOKENS_FIELD: &str = "max_tokens";
/// The name of the newer field.
pub const MAX_COMPLETION_TOKENS_FIELD: &str = "max_completion_tokens";

/// The request's completion-token limit: `None` when it sets none.
///
/// The rule, the same at every hop and engine: each field given must be an integer from 1 to
/// [`MAX_COMPLETION_TOKENS`]; when both are given they must be equal (an engine may honour either,
/// so a request that says two things is refused rather than reserved by one and served by the
/// other).
pub fn completion_limit(
    max_tokens: TokenField,
    max_completion_tokens: TokenField,
) -> Result<Option<u64>, TokenLimitError> {
    let max_tokens = checked(MAX_TOKENS_FIELD, max_tokens)?;
    let max_completion_tokens = checked(MAX_COMPLETION_TOKENS_FIELD, max_completion_tokens)?;
    match (max_tokens, max_completion_tokens) {
        (Some(a), Some(b)) if a != b => Err(TokenLimitError::Conflict {
            max_tokens: a,
            max_completion_tokens: b,
        }),
        (a, b) => Ok(a.or(b)),
    }
}

fn checked(param: &'static str, field: TokenField) -> Result<Option<u64>, TokenLimitError> {
    match field {
        TokenField::Absent => Ok(None),
        TokenField::Invalid => Err(TokenLimitError::NotAnInteger(param)),
        TokenField::Count(0) => Err(TokenLimitError::Zero(param)),
        TokenField::Count(n) if n > MAX_COMPLETION_TOKENS => {
            Err(TokenLimitError::TooLarge(param, n))
        }
        TokenField::Count(n) => Ok(Some(n)),
    }
}

/// Reads any JSON value without failing: a field of the wrong type is [`TokenField::Invalid`], so
/// that the caller can name it instead of refusing the whole body with a parser message.
impl<'de> Deserialize<'de> for TokenField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TokenFieldVisitor)
    }
}

struct TokenFieldVisitor;

impl<'de> Visitor<'de> for TokenFieldVisitor {
    type Value = TokenField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<TokenField, E> {
        Ok(TokenField::Count(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<TokenField, E> {
        Ok(TokenField::from_i64(Some(value)))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<TokenField, E> {
        Ok(TokenField::Invalid)
    }

    fn visit_unit<E: de::Error>(self) -> Result<TokenField, E> {
        Ok(TokenField::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<TokenField, E> {
        Ok(TokenField::Absent)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<TokenField, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TokenField, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TokenField::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TokenField, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(TokenField::Invalid)
    }
}

/// Bounds the events of an SSE byte stream: fed each chunk as it arrives, it refuses the stream
/// once one event (its lines up to the blank line that ends it) grows past its limit, so that an
/// event without an end cannot make a parser buffer without bound. It only counts; parsing stays
/// with the SSE parser.
#[derive(Debug, Clone)]
pub struct SseEventLimit {
    limit: usize,
    /// Bytes of the event under way.
    event: usize,
    /// Bytes of its line under way.
    line: usize,
    /// Whether the last byte was `\r` (a `\n` right after it ends the same line).
    after_cr: bool,
}

/// An SSE event grew past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

impl fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an SSE event is larger than {} bytes", self.limit)
    }
}

impl std::error::Error for EventTooLarge {}

impl Default for SseEventLimit {
    fn default() -> Self {
        SseEventLimit::new(MAX_SSE_EVENT_BYTES)
    }
}

impl SseEventLimit {
    /// A limit of `limit` bytes per event.
    pub fn new(limit: usize) -> Self {
        SseEventLimit {
            limit,
            event: 0,
            line: 0,
            after_cr: false,
        }
    }

    /// Counts `chunk`, the next bytes of the stream.
    ///
    /// Only line ends are looked at one by one (found with `memchr`): the text between them is
    /// counted as a whole, since it runs through every chunk of every answer.
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), EventTooLarge> {
        let mut text_start = 0;
        for at in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            self.count_text(at - text_start)?;
            let byte = chunk[at];
            if byte == b'\n' && self.after_cr {
                self.after_cr = false;
            } else {
                if self.line == 0 {
                    // A blank line ends the event.
                    self.event = 0;
                }
                self.line = 0;
                self.after_cr = byte == b'\r';
            }
            text_start = at + 1;
        }
        self.count_text(chunk.len() - text_start)
    }

    /// Counts `len` bytes of a line's text.
    fn count_text(&mut self, len: usize) -> Result<(), EventTooLarge> {
        if len == 0 {
            return Ok(());
        }
        self.after_cr = false;
        self.line = self.line.saturating_add(len);
        self.event = self.event.saturating_add(len);
        if self.event > self.limit {
            return Err(EventTooLarge { limit: self.limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(json: &str) -> TokenField {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn fields_of_any_type_are_read_without_failing() {
        assert_eq!(field("7"), TokenField::Count(7));
        assert_eq!(field("null"), TokenField::Absent);
        for invalid in [
            "-1",
            "1.5",
            "\"7\"",
            "true",
            "[1,[2]]",
            "{\"a\":{\"b\":1}}",
            "1e30",
            "100000000000000000000000",
        ] {
            assert_eq!(field(invalid), TokenField::Invalid, "{invalid}");
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            max_tokens: TokenField,
            #[serde(default)]
            max_completion_tokens: TokenField,
        }
        let fields: Fields =
            serde_json::from_str(r#"{"max_tokens":[1,2],"other":1,"max_completion_tokens":3}"#)
                .unwrap();
        assert_eq!(fields.max_tokens, TokenField::Invalid);
        assert_eq!(fields.max_completion_tokens, TokenField::Count(3));
        let none: Fields = serde_json::from_str("{}").unwrap();
        assert_eq!(none.max_tokens, TokenField::Absent);
    }

    #[test]
    fn the_completion_limit_rule() {
        use TokenField::*;
        assert_eq!(completion_limit(Absent, Absent), Ok(None));
        assert_eq!(completion_limit(Count(5), Absent), Ok(Some(5)));
        assert_eq!(completion_limit(Absent, Count(5)), Ok(Some(5)));
        assert_eq!(completion_limit(Count(5), Count(5)), Ok(Some(5)));
        // The request that killed a network (reserved by one field, served by the other) is
        // refused for its size, and any two fields that disagree for disagreeing.
        let poisoned = completion_limit(Count(1_000_000_000), Count(1)).unwrap_err();
        assert_eq!(
            poisoned,
            TokenLimitError::TooLarge("max_tokens", 1_000_000_000)
        );
        let conflict = completion_limit(Count(1_000), Count(1)).unwrap_err();
        assert_eq!(conflict.param(), "max_completion_tokens");
        assert!(conflict.to_string().contains("disagree"), "{conflict}");
        let huge = completion_limit(Count(1 << 63), Absent).unwrap_err();
        assert_eq!(huge, TokenLimitError::TooLarge("max_tokens", 1 << 63));
        assert_eq!(huge.param(), "max_tokens");
        assert_eq!(
            completion_limit(Absent, Count(u64::MAX))
                .unwrap_err()
                .param(),
            "max_completion_tokens"
        );
        assert_eq!(
            completion_limit(Count(MAX_COMPLETION_TOKENS), Absent),
            Ok(Some(MAX_COMPLETION_TOKENS))
        );
        assert_eq!(
            completion_limit(Count(0), Absent),
            Err(TokenLimitError::Zero("max_tokens"))
        );
        assert_eq!(
            completion_limit(Count(3), Invalid),
            Err(TokenLimitError::NotAnInteger("max_completion_tokens"))
        );
        assert_eq!(TokenField::from_i64(Some(-1)), Invalid);
        assert_eq!(TokenField::from_i64(None), Absent);
    }

    #[test]
    fn events_are_bounded_whatever_their_line_endings() {
        let mut limit = SseEventLimit::new(10);
        // Many events, each under the limit, in any split and with any line ending.
        for chunk in [
            &b"data: 1234\n\n"[..],
            b"data:",
            b" 12\r\n\r\n",
            b"data: 1\r\rdata: 2\n\n",
        ] {
            limit.check(chunk).unwrap();
        }
        // One event of several lines counts as a whole…
        let mut limit = SseEventLimit::new(10);
        limit.check(b"data: 12\n").unwrap();
        assert_eq!(limit.check(b"data: 34\n"), Err(EventTooLarge { limit: 10 }));
        // …and a line that never ends is refused as soon as it passes the limit.
        let mut limit = SseEventLimit::new(10);
        limit.check(b"data: ").unwrap();
        assert!(limit.check(&[b'x'; 5]).is_err());
        // `\r\n` is one line end, not a blank line.
        let mut limit = SseEventLimit::new(10);
        limit.check(b"data: 1\r\n").unwrap();
        assert!(limit.check(b"data: 2\r\n").is_err());
    }

    /// The rule of [`SseEventLimit::check`] applied a byte at a time: the reference the
    /// line-at-a-time version must agree with.
    fn reference_check(limit: &mut SseEventLimit, chunk: &[u8]) -> Result<(), EventTooLarge> {
        for &byte in chunk {
            match byte {
                b'\n' if limit.after_cr => limit.after_cr = false,
                b'\n' | b'\r' => {
                    if limit.line == 0 {
                        limit.event = 0;
                    }
                    limit.line = 0;
                    limit.after_cr = byte == b'\r';
                }
                _ => {
                    limit.after_cr = false;
                    limit.line += 1;
                    limit.event += 1;
                    if limit.event > limit.limit {
                        return Err(EventTooLarge { limit: limit.limit });
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn counts_as_the_byte_at_a_time_rule_does(
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b':'), any::<u8>()],
                    0..40,
                ),
                0..12,
            ),
            limit in 0usize..30,
        ) {
            let mut fast = SseEventLimit::new(limit);
            let mut reference = SseEventLimit::new(limit);
            for chunk in &chunks {
                let (got, expected) = (fast.check(chunk), reference_check(&mut reference, chunk));
                prop_assert_eq!(got, expected);
                if expected.is_err() {
                    break;
                }
                prop_assert_eq!(
                    (fast.event, fast.line, fast.after_cr),
                    (reference.event, reference.line, reference.after_cr)
                );
            }
        }
    }
}
