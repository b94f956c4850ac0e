//! Errors in OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`), with the HTTP
//! status each kind maps to, so every hop reports failures the way OpenAI clients expect.

use serde::{Deserialize, Serialize};

/// What went wrong, independent of wording. Each kind has one HTTP status and one OpenAI `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed: bad JSON, a missing or invalid field (400).
    InvalidRequest,
    /// The prompt does not fit the model's context window (400).
    ContextLength,
    /// Missing or wrong API key (401).
    Unauthorized,
    /// The client's balance cannot cover the request (429, as OpenAI answers a spent quota, so
    /// SDKs raise their rate-limit error; `type` and `code` are `insufficient_quota`).
    InsufficientQuota,
    /// No such model is served (404).
    ModelNotFound,
    /// No route for this path (404).
    NotFound,
    /// The request body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The target is at capacity (429).
    RateLimited,
    /// Something failed inside the network (500).
    Internal,
    /// A peer (proxy, worker, engine) failed or went away (502).
    BadGateway,
    /// No worker (or proxy) can serve the request now (503).
    Unavailable,
    /// The request did not finish within its timeout (504).
    Timeout,
}

impl ErrorKind {
    /// Every kind, for iterating (counters per kind, parsing codes).
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLength,
        ErrorKind::Unauthorized,
        ErrorKind::InsufficientQuota,
        ErrorKind::ModelNotFound,
        ErrorKind::NotFound,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::Internal,
        ErrorKind::BadGateway,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
    ];

    /// The HTTP status code this kind is reported with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::InsufficientQuota => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// OpenAI's `error.type` for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextLength
            | ErrorKind::ModelNotFound
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal | ErrorKind::BadGateway => "server_error",
            ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Timeout => "timeout",
        }
    }

    /// OpenAI's `error.code` for this kind.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ContextLength => "context_length_exceeded",
            ErrorKind::Unauthorized => "invalid_api_key",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Internal => "internal_error",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::Unavailable => "no_capacity",
            ErrorKind::Timeout => "timeout",
        }
    }

    /// The kind for a `code` string, as read back from a peer's error body.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// The inner object of an OpenAI error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable explanation.
    pub message: String,
    /// OpenAI's error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The request field at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// Machine-readable code, e.g. `model_not_found`.
    #[serde(default)]
    pub code: Option<String>,
}

/// An OpenAI-shaped error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiError {
    /// The error itself.
    pub error: ErrorBody,
}

impl OpenAiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        OpenAiError {
            error: ErrorBody {
                message: message.into(),
                error_type: kind.openai_type().to_owned(),
                param: None,
                code: Some(kind.code().to_owned()),
            },
        }
    }

    /// The same error, naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    /// The kind, recovered from `code` (peers' errors travel as JSON).
    pub fn kind(&self) -> Option<ErrorKind> {
        self.error.code.as_deref().and_then(ErrorKind::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for kind in ErrorKind::ALL {
            assert_eq!(OpenAiError::new(kind, "x").kind(), Some(kind));
        }
    }

    #[test]
    fn statuses_match_openai_conventions() {
        assert_eq!(ErrorKind::InvalidRequest.http_status(), 400);
        assert_eq!(ErrorKind::InsufficientQuota.http_status(), 429);
        assert_eq!(ErrorKind::InsufficientQuota.code(), "insufficient_quota");
        assert_eq!(ErrorKind::ModelNotFound.http_status(), 404);
        assert_eq!(ErrorKind::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorKind::Unavailable.http_status(), 503);
        assert_eq!(ErrorKind::Timeout.http_status(), 504);
    }
}
