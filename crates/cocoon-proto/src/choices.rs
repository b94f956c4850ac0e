//! How many choices an answer holds: `n` for each prompt (a legacy completion may send a list of
//! prompts), or `best_of` where that is larger (an engine generates `best_of` sequences and
//! returns the best `n`, and bills them all). The completion-token limit applies to each, so the
//! proxy reserves, and the worker relays and bills, up to that many times the limit.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::limits::TokenField;

/// Most choices (`n` × prompts) one request may ask for, on every hop.
pub const MAX_ANSWER_CHOICES: u64 = 128;

/// The fields of a request that decide how many choices its answer has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ChoiceFields {
    /// `n`.
    #[serde(default)]
    pub n: TokenField,
    /// `best_of` (legacy completions): sequences generated, of which `n` are returned.
    #[serde(default)]
    pub best_of: TokenField,
    /// `prompt`, counted.
    #[serde(default)]
    pub prompt: PromptCount,
}

/// Why a request's `n` is refused (the parameter at fault is always `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoicesError {
    /// `n` is not an integer of at least 1.
    Invalid,
    /// `n` × prompts is above [`MAX_ANSWER_CHOICES`].
    TooMany(u64),
}

impl ChoicesError {
    /// The request parameter at fault.
    pub fn param(&self) -> &'static str {
        "n"
    }
}

impl fmt::Display for ChoicesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChoicesError::Invalid => write!(f, "`n` and `best_of` must be integers of at least 1"),
            ChoicesError::TooMany(n) => write!(
                f,
                "a request may ask for at most {MAX_ANSWER_CHOICES} choices (n × prompts), not {n}"
            ),
        }
    }
}

impl std::error::Error for ChoicesError {}

impl ChoiceFields {
    /// The number of sequences generated: the larger of `n` and `best_of` (1 when absent), times
    /// the number of prompts.
    pub fn choices(&self) -> Result<u64, ChoicesError> {
        let count = |field: TokenField| match field {
            TokenField::Absent => Ok(1),
            TokenField::Count(n) if n >= 1 => Ok(n),
            _ => Err(ChoicesError::Invalid),
        };
        let n = count(self.n)?.max(count(self.best_of)?);
        let total = n.saturating_mul(self.prompt.0);
        if total > MAX_ANSWER_CHOICES {
            return Err(ChoicesError::TooMany(total));
        }
        Ok(total)
    }
}

/// How many prompts a `prompt` field holds: a list of strings or of token lists holds one per
/// element; a string, a list of token ids, or anything else is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptCount(pub u64);

impl Default for PromptCount {
    fn default() -> Self {
        PromptCount(1)
    }
}

impl<'de> Deserialize<'de> for PromptCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PromptVisitor)
    }
}

struct PromptVisitor;

impl<'de> Visitor<'de> for PromptVisitor {
    type Value = PromptCount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prompt")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptCount, A::Error> {
        let mut count: u64 = 0;
        let mut token_ids = false;
        while let Some(element) = seq.next_element::<Element>()? {
            count = count.saturating_add(1);
            token_ids |= element.0;
        }
        Ok(PromptCount(if token_ids { 1 } else { count.max(1) }))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<PromptCount, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(PromptCount(1))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }

    fn visit_unit<E: de::Error>(self) -> Result<PromptCount, E> {
        Ok(PromptCount(1))
    }
}

/// One element of a prompt list: whether it is a number (then the list is one prompt of token
/// ids). Its contents are skipped.
struct Element(bool);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a prompt element")
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
                Ok(Element(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                Ok(Element(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                Ok(Element(true))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Element, E> {
                Ok(Element(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
                Ok(Element(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element(false))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Element(false))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(json: &str) -> Result<u64, ChoicesError> {
        serde_json::from_str::<ChoiceFields>(json)
            .unwrap()
            .choices()
    }

    #[test]
    fn n_times_the_prompts() {
        assert_eq!(choices("{}"), Ok(1));
        assert_eq!(choices(r#"{"n":null}"#), Ok(1));
        assert_eq!(choices(r#"{"n":3,"messages":[]}"#), Ok(3));
        assert_eq!(choices(r#"{"prompt":"a"}"#), Ok(1));
        assert_eq!(choices(r#"{"prompt":["a","b"],"n":2}"#), Ok(4));
        assert_eq!(choices(r#"{"prompt":[[1,2],[3]]}"#), Ok(2));
        // A list of token ids is one prompt.
        assert_eq!(choices(r#"{"prompt":[1,2,3],"n":2}"#), Ok(2));
        assert_eq!(choices(r#"{"prompt":[]}"#), Ok(1));
    }

    #[test]
    fn best_of_counts_every_sequence_generated() {
        // An engine generates `best_of` sequences and bills them all, returning `n`.
        assert_eq!(choices(r#"{"best_of":5}"#), Ok(5));
        assert_eq!(choices(r#"{"n":2,"best_of":5}"#), Ok(5));
        assert_eq!(choices(r#"{"n":3,"best_of":1}"#), Ok(3));
        assert_eq!(choices(r#"{"best_of":4,"prompt":["a","b"]}"#), Ok(8));
        assert_eq!(choices(r#"{"best_of":0}"#), Err(ChoicesError::Invalid));
        assert_eq!(
            choices(r#"{"best_of":129}"#),
            Err(ChoicesError::TooMany(129))
        );
    }

    #[test]
    fn bad_or_excessive_n_is_refused_naming_n() {
        for json in [r#"{"n":0}"#, r#"{"n":-1}"#, r#"{"n":1.5}"#, r#"{"n":"2"}"#] {
            assert_eq!(choices(json), Err(ChoicesError::Invalid), "{json}");
        }
        assert_eq!(
            choices(r#"{"n":18446744073709551615,"prompt":["a","b"]}"#),
            Err(ChoicesError::TooMany(u64::MAX))
        );
        assert_eq!(choices(r#"{"n":129}"#), Err(ChoicesError::TooMany(129)));
        assert_eq!(ChoicesError::Invalid.param(), "n");
    }
}
