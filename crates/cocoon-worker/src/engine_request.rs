//! A request as the worker passes it on to its engine, parsed once and at the top level only: the
//! few fields the worker reads (the model, `stream`, the token limits and choice counts) are
//! decoded; every other value (messages, tools, …) stays the bytes the proxy sent, checked to be
//! JSON but never decoded into a tree nor encoded again.

use std::collections::BTreeMap;
use std::fmt;

use cocoon_proto::choices::PromptCount;
use cocoon_proto::limits::{MAX_COMPLETION_TOKENS_FIELD, MAX_TOKENS_FIELD};
use cocoon_proto::{ChoiceFields, TokenField};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest text of a field the worker quotes back in an error.
const MAX_QUOTED_BYTES: usize = 128;

/// A request body's top-level fields. A key sent twice counts once, with its last value — as the
/// engines' JSON parsers read it — and the engine is sent it once, so what the worker checks is
/// what the engine reads.
pub struct EngineRequest<'a> {
    fields: BTreeMap<String, &'a RawValue>,
}

/// Why a body is not a request.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON (or nested deeper than the parser allows).
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
}

impl<'a> EngineRequest<'a> {
    /// Reads `body`'s top-level fields.
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let fields = match serde_json::from_slice(body) {
            Ok(fields) => fields,
            Err(error) if error.is_data() => return Err(BodyError::NotAnObject),
            Err(error) => return Err(BodyError::Json(error)),
        };
        // Values kept raw are only skipped, at any depth; an engine's own parser may recurse
        // on them (and overflow its stack), so the nesting is bounded as decoding would bound it.
        serde_json::from_slice::<Nesting>(body).map_err(BodyError::Json)?;
        Ok(EngineRequest { fields })
    }

    /// The `model` named, if it is a string.
    pub fn model(&self) -> Option<String> {
        self.decode(self.fields.get("model")?)
    }

    /// The `model` field as sent, for an error message (shortened when long).
    pub fn quoted_model(&self) -> String {
        match self.fields.get("model").map(|raw| raw.get()) {
            None => "null".into(),
            Some(text) if text.len() <= MAX_QUOTED_BYTES => text.into(),
            Some(text) => format!("a value of {} bytes", text.len()),
        }
    }

    /// Whether the request asks for a stream (`stream: true`).
    pub fn stream(&self) -> bool {
        self.fields
            .get("stream")
            .and_then(|raw| self.decode(raw))
            .unwrap_or(false)
    }

    /// A completion-token limit field, read as every hop reads it.
    pub fn token_field(&self, name: &str) -> TokenField {
        TokenField::read(self.fields.get(name).copied())
    }

    /// The fields that say how many sequences the engine generates.
    pub fn choice_fields(&self) -> ChoiceFields {
        let prompt = match self.fields.get("prompt") {
            None => Ok(PromptCount::default()),
            Some(raw) => PromptCount::deserialize(*raw),
        };
        // A prompt that cannot be counted counts as one, as a request without one.
        ChoiceFields {
            n: self.token_field("n"),
            best_of: self.token_field("best_of"),
            prompt: prompt.unwrap_or_default(),
        }
    }

    /// The body for the engine: the limit in the one field every engine reads (`max_tokens`,
    /// `max_completion_tokens` removed) when `max_tokens` is given, and for a stream
    /// `stream_options.include_usage` on (the worker is paid by the usage). Every other field
    /// goes as it came.
    pub fn engine_body(
        &self,
        max_tokens: Option<u64>,
        include_usage: bool,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let mut out: BTreeMap<&str, &RawValue> = self
            .fields
            .iter()
            .map(|(name, raw)| (name.as_str(), *raw))
            .collect();
        let max_tokens = max_tokens
            .map(|limit| RawValue::from_string(limit.to_string()))
            .transpose()?;
        if let Some(limit) = &max_tokens {
            out.remove(MAX_COMPLETION_TOKENS_FIELD);
            out.insert(MAX_TOKENS_FIELD, limit);
        }
        let options = include_usage
            .then(|| self.stream_options_with_usage())
            .transpose()?;
        if let Some(options) = &options {
            out.insert("stream_options", options);
        }
        serde_json::to_vec(&out)
    }

    /// The request's `stream_options` (if an object) with `include_usage: true`.
    fn stream_options_with_usage(&self) -> Result<Box<RawValue>, serde_json::Error> {
        let mut options: Map<String, Value> = self
            .fields
            .get("stream_options")
            .and_then(|raw| self.decode(raw))
            .unwrap_or_default();
        options.insert("include_usage".into(), Value::Bool(true));
        serde_json::value::to_raw_value(&options)
    }

    fn decode<T: Deserialize<'a>>(&self, raw: &'a RawValue) -> Option<T> {
        T::deserialize(raw).ok()
    }
}

/// A JSON value walked and dropped as it is read: nothing is kept, but nesting deeper than
/// serde_json's recursion limit (128) fails, as it would when decoded.
struct Nesting;

impl<'de> Deserialize<'de> for Nesting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Nesting)
    }
}

impl<'de> Visitor<'de> for Nesting {
    type Value = Nesting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Nesting, E> {
        Ok(Nesting)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nesting, A::Error> {
        while seq.next_element::<Nesting>()?.is_some() {}
        Ok(Nesting)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Nesting, A::Error> {
        while map.next_entry::<IgnoredAny, Nesting>()?.is_some() {}
        Ok(Nesting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_body(body: &str, max_tokens: Option<u64>, include_usage: bool) -> Value {
        let request = EngineRequest::parse(body.as_bytes()).unwrap();
        serde_json::from_slice(&request.engine_body(max_tokens, include_usage).unwrap()).unwrap()
    }

    #[test]
    fn only_the_limit_and_the_usage_option_change_and_the_rest_goes_as_sent() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"x\""}],
            "max_completion_tokens":50,"stream":true,"stream_options":{"other":1},"tools":[]}"#;
        let sent = engine_body(body, Some(7), true);
        let mut expected: Value = serde_json::from_str(body).unwrap();
        let fields = expected.as_object_mut().unwrap();
        fields.remove("max_completion_tokens");
        fields.insert("max_tokens".into(), 7.into());
        fields.insert(
            "stream_options".into(),
            serde_json::json!({"other":1,"include_usage":true}),
        );
        assert_eq!(sent, expected);
        // Nothing to change: the same fields.
        let plain = r#"{"model":"m","prompt":"p","max_tokens":3}"#;
        assert_eq!(
            engine_body(plain, None, false),
            serde_json::from_str::<Value>(plain).unwrap()
        );
        // A `stream_options` that is not an object is replaced.
        assert_eq!(
            engine_body(r#"{"stream":true,"stream_options":"x"}"#, None, true)["stream_options"],
            serde_json::json!({"include_usage":true})
        );
    }

    #[test]
    fn fields_are_read_as_every_hop_reads_them() {
        let request = EngineRequest::parse(
            br#"{"model":"m","stream":true,"n":2,"prompt":["a","b"],"max_tokens":null}"#,
        )
        .unwrap();
        assert_eq!(request.model().as_deref(), Some("m"));
        assert!(request.stream());
        assert_eq!(request.token_field("max_tokens"), TokenField::Absent);
        assert_eq!(request.choice_fields().choices(), Ok(4));
        let odd = EngineRequest::parse(br#"{"model":5,"stream":"yes","n":{"a":1}}"#).unwrap();
        assert_eq!(odd.model(), None);
        assert_eq!(odd.quoted_model(), "5");
        assert!(!odd.stream());
        assert!(odd.choice_fields().choices().is_err());
    }

    #[test]
    fn hostile_bodies_are_refused_or_read_as_the_engine_reads_them() {
        // Repeated keys: the last one counts, and the engine is sent only that one, so it cannot
        // be asked for more than the worker checked.
        let request =
            EngineRequest::parse(br#"{"max_tokens":1,"model":"a","max_tokens":900,"model":"b"}"#)
                .unwrap();
        assert_eq!(request.model().as_deref(), Some("b"));
        assert_eq!(request.token_field("max_tokens"), TokenField::Count(900));
        let sent = String::from_utf8(request.engine_body(Some(5), false).unwrap()).unwrap();
        assert_eq!(sent.matches("max_tokens").count(), 1, "{sent}");
        assert_eq!(sent, r#"{"max_tokens":5,"model":"b"}"#);
        // Nested past the parser's limit (in a value the worker does not read, too), cut off,
        // not an object, not UTF-8: refused.
        let deep = format!(
            r#"{{"model":"m","messages":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        for body in [
            deep.as_bytes(),
            br#"{"model":"m","messages":[{"#,
            b"\xff\xfe{}",
            b"",
        ] {
            let outcome = EngineRequest::parse(body).map(|_| ());
            assert!(
                matches!(outcome, Err(BodyError::Json(_))),
                "{outcome:?} for {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
        for body in [&b"[1,2]"[..], b"\"model\"", b"null", b"7"] {
            assert!(matches!(
                EngineRequest::parse(body),
                Err(BodyError::NotAnObject)
            ));
        }
        // Nesting that decoding allows is allowed.
        let nested = format!(r#"{{"messages":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(EngineRequest::parse(nested.as_bytes()).is_ok());
        // A huge field is passed on without being decoded, and never quoted back whole.
        let huge = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(1 << 20));
        let request = EngineRequest::parse(huge.as_bytes()).unwrap();
        assert_eq!(
            request.quoted_model(),
            format!("a value of {} bytes", (1 << 20) + 2)
        );
        assert_eq!(request.engine_body(None, false).unwrap().len(), huge.len());
    }
}
