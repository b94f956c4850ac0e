//! Responses in OpenAI's shapes, used by every HTTP surface so errors look the same at each hop.

use axum::response::{IntoResponse, Response};
use cocoon_proto::{ErrorKind, OpenAiError};
use http::{header, HeaderValue, StatusCode};

use crate::Body;

/// An OpenAI error response of `kind` with `message`, with the kind's HTTP status.
pub fn error_response(kind: ErrorKind, message: impl Into<String>) -> Response {
    openai_error_response(&OpenAiError::new(kind, message))
}

/// The response for an already-built [`OpenAiError`]; the status follows its code.
pub fn openai_error_response(error: &OpenAiError) -> Response {
    let status = error.kind().map(|kind| kind.http_status()).unwrap_or(500);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, error)
}

/// A JSON response with `status`.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode response: {error}"),
        )
            .into_response(),
    }
}

/// `body`, keeping `guard` alive until the body is finished or dropped — so a request slot, a
/// routing reservation or an "active" count lasts exactly as long as the answer streams.
pub fn hold_until_end<G: Send + 'static>(body: Body, guard: G) -> Body {
    use http_body_util::BodyExt;
    Body::new(body.map_frame(move |frame| {
        let _ = &guard;
        frame
    }))
}

/// Reads an OpenAI error out of a peer's error body, or describes the body when it is not one.
///
/// The error keeps the peer's HTTP status: an error whose `code` is not one of ours (an engine's
/// own vocabulary, e.g. vLLM's or Ollama's) takes its kind from the status, so a 400 stays a 400
/// and a 429 a 429 on every hop instead of becoming a 500.
pub fn parse_peer_error(status: StatusCode, body: &[u8]) -> OpenAiError {
    let kind_of_status = || match status.as_u16() {
        400 | 422 => ErrorKind::InvalidRequest,
        401 | 403 => ErrorKind::Unauthorized,
        402 => ErrorKind::InsufficientQuota,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Unavailable,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::BadGateway,
    };
    match serde_json::from_slice::<OpenAiError>(body) {
        Ok(mut error) => {
            if error.kind().is_none() {
                error.error.code = Some(kind_of_status().code().to_owned());
            }
            error
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            OpenAiError::new(
                kind_of_status(),
                format!("upstream answered {status}: {text}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_response_has_status_and_openai_shape() {
        let response = error_response(ErrorKind::ModelNotFound, "no model x");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["error"]["message"], "no model x");
        assert_eq!(value["error"]["code"], "model_not_found");
        assert_eq!(value["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn a_peer_error_in_another_vocabulary_keeps_its_message_and_takes_its_kind_from_the_status() {
        let body =
            br#"{"error": {"message": "overloaded", "type": "rate_limit_error", "code": "busy"}}"#;
        let error = parse_peer_error(StatusCode::TOO_MANY_REQUESTS, body);
        assert_eq!(error.kind(), Some(ErrorKind::RateLimited));
        assert_eq!(error.error.message, "overloaded");
        assert_eq!(error.error.error_type, "rate_limit_error");
        let ours = OpenAiError::new(ErrorKind::ModelNotFound, "no such model");
        let body = serde_json::to_vec(&ours).unwrap();
        assert_eq!(parse_peer_error(StatusCode::BAD_GATEWAY, &body), ours);
    }

    #[test]
    fn peer_error_falls_back_to_status() {
        let error = parse_peer_error(StatusCode::SERVICE_UNAVAILABLE, b"busy");
        assert_eq!(error.kind(), Some(ErrorKind::Unavailable));
        assert!(error.error.message.contains("busy"));
    }
}
