//! What wraps every answer of the client's HTTP surface: an `x-request-id` (the app's own when it
//! sent a sane one, else a fresh one; OpenAI SDKs read it into `_request_id`), and CORS for the
//! browser origins the operator allows (none by default, so browsers may not call the client).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The request-id header OpenAI's API answers with and its SDKs read.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest app-supplied request id echoed; a longer one is replaced.
pub const MAX_REQUEST_ID: usize = 128;

/// The id of the request being served, for the handlers (the link's `x-cocoon-request-id` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

/// Whether an app-supplied request id may be echoed: 1 to [`MAX_REQUEST_ID`] of ASCII letters,
/// digits and `-_.:` (nothing a log or a header could be tricked with).
pub fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh request id: 128 random bits in hex, prefixed like OpenAI's.
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&format!("req_{:032x}", rand::random::<u128>()))
        .unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

/// Middleware: picks the request's id, hands it to the handler, and puts it on the answer.
pub async fn with_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|value| is_sane_request_id(value.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Why a `--cors-origin` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--cors-origin `{0}` is not an origin like https://app.example.com (or `*`)")]
pub struct BadOrigin(pub String);

/// The CORS layer for `origins`, or `None` when there are none (no CORS headers at all). `*`
/// allows every origin. Requests carry the API key as a header, never as a cookie, so
/// credentials are not allowed.
pub fn cors(origins: &[String]) -> Result<Option<CorsLayer>, BadOrigin> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/');
                HeaderValue::from_str(origin)
                    .ok()
                    .filter(|_| valid)
                    .ok_or_else(|| BadOrigin(origin.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            // OpenAI's browser SDK sends its own `x-stainless-*` headers besides these.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                X_REQUEST_ID,
                header::CONTENT_TYPE,
                HeaderName::from_static(cocoon_proto::headers::REQUEST_ID),
                HeaderName::from_static(cocoon_proto::headers::COEFFICIENT),
                HeaderName::from_static(cocoon_proto::headers::WORKER_IMAGE),
                HeaderName::from_static(cocoon_proto::headers::MODEL_HASH),
                HeaderName::from_static(cocoon_proto::headers::RECEIPT),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_echoed() {
        assert!(is_sane_request_id(b"req_123-abc.DEF:9"));
        assert!(is_sane_request_id(&[b'a'; MAX_REQUEST_ID]));
        assert!(!is_sane_request_id(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!is_sane_request_id(b""));
        assert!(!is_sane_request_id(b"a b"));
        assert!(!is_sane_request_id(b"a\"b"));
        assert!(!is_sane_request_id("é".as_bytes()));
        let fresh = new_request_id();
        assert!(is_sane_request_id(fresh.as_bytes()));
        assert_ne!(fresh, new_request_id());
    }

    #[test]
    fn origins_must_be_origins() {
        assert!(cors(&[]).unwrap().is_none());
        assert!(cors(&["https://app.example.com".into()]).unwrap().is_some());
        assert!(cors(&["*".into()]).unwrap().is_some());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a\nb",
        ] {
            assert_eq!(cors(&[bad.into()]).unwrap_err(), BadOrigin(bad.into()));
        }
    }
}
