//! The trailers that end every answer on a link: `x-cocoon-usage` on success, `x-cocoon-error`
//! when the answer failed after its headers were sent.

use cocoon_proto::{headers, OpenAiError, TokenUsage};
use http::{HeaderMap, HeaderValue};

/// Trailers reporting `usage`.
pub fn usage_trailers(usage: &TokenUsage) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(value) = json_value(usage) {
        map.insert(headers::USAGE, value);
    }
    map
}

/// Trailers reporting that the answer failed with `error`.
pub fn error_trailers(error: &OpenAiError) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(value) = json_value(error) {
        map.insert(headers::ERROR, value);
    }
    map
}

/// The usage reported in `trailers`, if any.
pub fn read_usage(trailers: &HeaderMap) -> Option<TokenUsage> {
    serde_json::from_slice(trailers.get(headers::USAGE)?.as_bytes()).ok()
}

/// The failure reported in `trailers`, if any.
pub fn read_error(trailers: &HeaderMap) -> Option<OpenAiError> {
    serde_json::from_slice(trailers.get(headers::ERROR)?.as_bytes()).ok()
}

fn json_value<T: serde::Serialize>(value: &T) -> Option<HeaderValue> {
    // JSON escapes control characters, so the only bytes left are visible ASCII and UTF-8, which
    // HTTP/2 header values carry as opaque octets.
    let text = serde_json::to_vec(value).ok()?;
    HeaderValue::from_bytes(&text)
        .ok()
        .map(crate::link::per_request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_proto::ErrorKind;

    #[test]
    fn usage_and_errors_round_trip_through_trailers() {
        let usage = TokenUsage {
            prompt_tokens: 7,
            completion_tokens: 9,
            ..TokenUsage::default()
        };
        assert_eq!(read_usage(&usage_trailers(&usage)), Some(usage));
        let error = OpenAiError::new(ErrorKind::BadGateway, "worker went away — mid-stream");
        let trailers = error_trailers(&error);
        assert_eq!(read_error(&trailers), Some(error));
        assert_eq!(read_usage(&trailers), None);
    }
}
