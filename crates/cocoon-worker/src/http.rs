//! What the worker serves to proxies on each link: its announcement and the forwarding path from
//! a proxy's request to the engine and back, metered.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::reply::{error_response, hold_until_end, openai_error_response, parse_peer_error};
use cocoon_node::stats::NodeStats;
use cocoon_node::Body;
use cocoon_proto::headers::{self, MAX_TOKENS, TIMEOUT_MS};
use cocoon_proto::limits::{MAX_ANSWER_BYTES, MAX_COMPLETION_TOKENS_FIELD, MAX_TOKENS_FIELD};
use cocoon_proto::link::{PATH_CHAT, PATH_COMPLETIONS, PATH_WORKER_INFO};
use cocoon_proto::{completion_limit, ErrorKind, OpenAiError, WorkerInfo};
use http::{header, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Duration, Instant};

use crate::engine::Engine;
use crate::engine_request::EngineRequest;
use crate::metering::{metered_answer, metered_stream};
use crate::receipt::ReceiptDraft;
use crate::receipt_signer::ReceiptSigner;
use crate::settlement::PaidLink;
use crate::stated_prices::StatedPrices;

/// The longest a proxy may take to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a request may take when the proxy states no deadline (it always does).
const LONGEST_REQUEST: Duration = Duration::from_secs(3600);

/// Shared state of the forwarding path.
#[derive(Clone)]
pub struct Serving {
    /// What this worker announces.
    pub info: Arc<WorkerInfo>,
    /// Where requests go.
    pub engine: Engine,
    /// One permit per request in flight, `max_active` in all.
    pub slots: Arc<Semaphore>,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// This worker's attested identity.
    pub trust: Arc<NodeTrust>,
    /// Signs answers' receipts, in batches.
    pub receipts: Arc<ReceiptSigner>,
    /// What answers earn at the prices proxies state, taken against the registry's.
    pub stated_prices: Arc<StatedPrices>,
}

/// The router served to proxies on every link.
pub fn link_router(serving: Serving) -> Router {
    Router::new()
        .route(PATH_WORKER_INFO, get(info))
        .route(PATH_CHAT, post(chat))
        .route(PATH_COMPLETIONS, post(completions))
        .fallback(|| async {
            error_response(ErrorKind::NotFound, "no such endpoint on a worker link")
        })
        .with_state(serving)
}

async fn info(State(serving): State<Serving>) -> Json<WorkerInfo> {
    Json(WorkerInfo::clone(&serving.info))
}

/// The link a request came on (every proxy link sets it; absent only when the router is
/// called directly, as in tests, where nothing is paid).
type Link = Option<Extension<PaidLink>>;

async fn chat(
    State(serving): State<Serving>,
    link: Link,
    headers: HeaderMap,
    body: Body,
) -> Response {
    forward(serving, link.map(|l| l.0), PATH_CHAT, headers, body).await
}

async fn completions(
    State(serving): State<Serving>,
    link: Link,
    headers: HeaderMap,
    body: Body,
) -> Response {
    forward(serving, link.map(|l| l.0), PATH_COMPLETIONS, headers, body).await
}

async fn forward(
    serving: Serving,
    link: Option<PaidLink>,
    path: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let active = serving.stats.request_started();
    let fail = |kind: ErrorKind, message: String| {
        serving.stats.record_error(kind);
        error_response(kind, message)
    };
    if let Some(refusal) = link
        .as_ref()
        .and_then(|link| link.settlement.refusal(&link.proxy))
    {
        let mut response = fail(ErrorKind::Unavailable, refusal);
        // Nothing reached the engine: the proxy may send the request to another worker.
        response
            .headers_mut()
            .insert(headers::NOT_PROCESSED, HeaderValue::from_static("1"));
        return response;
    }
    let Ok(permit) = serving.slots.clone().try_acquire_owned() else {
        return fail(
            ErrorKind::RateLimited,
            format!(
                "worker is serving its maximum of {} requests",
                serving.info.max_active
            ),
        );
    };
    let deadline = Instant::now()
        + header_number(&headers, TIMEOUT_MS)
            .map(Duration::from_millis)
            .map_or(LONGEST_REQUEST, |timeout| timeout.min(LONGEST_REQUEST));
    let body_deadline = deadline.min(Instant::now() + BODY_READ_TIMEOUT);
    let bytes = match timeout_at(body_deadline, to_bytes(body, serving.max_body_bytes)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return fail(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    serving.max_body_bytes
                ),
            )
        }
        Err(_) => {
            return fail(
                ErrorKind::Timeout,
                "the request body did not arrive in time".into(),
            )
        }
    };
    let request = match EngineRequest::parse(&bytes) {
        Ok(request) => request,
        Err(error) => return fail(ErrorKind::InvalidRequest, error.to_string()),
    };
    if request.model().as_deref() != Some(serving.info.model.as_str()) {
        return fail(
            ErrorKind::ModelNotFound,
            format!(
                "this worker serves `{}`, not {}",
                serving.info.model,
                request.quoted_model()
            ),
        );
    }
    let limits = match completion_tokens_limit(&headers, &request) {
        Ok(limits) => limits,
        Err(error) => {
            serving.stats.record_error(ErrorKind::InvalidRequest);
            return openai_error_response(&error);
        }
    };
    let limit = limits.total;
    let receipt = ReceiptDraft::new(
        serving.trust.clone(),
        serving.receipts.clone(),
        serving.info.clone(),
        serving.stated_prices.clone(),
        &headers,
        &bytes,
    );
    let receipt =
        match (receipt, link) {
            (Some(draft), Some(link)) => Some(draft.paid_on(link)),
            (None, Some(_)) => return fail(
                ErrorKind::InvalidRequest,
                "the proxy stated no prices (x-cocoon-prices): this worker cannot count what it \
                 is owed"
                    .into(),
            ),
            (draft, None) => draft,
        };
    let stream = request.stream();
    // The engine is asked for exactly what was reserved, in the field every engine reads; and
    // for its usage, which is what the worker is paid by (the client hides it again from
    // applications that did not ask).
    let body = match request.engine_body(limits.per_choice, stream) {
        Ok(body) => body,
        Err(error) => {
            return fail(
                ErrorKind::Internal,
                format!("cannot encode request: {error}"),
            )
        }
    };
    let engine_timeout = || {
        fail(
            ErrorKind::Timeout,
            "the engine did not answer within the request's deadline".into(),
        )
    };
    let response = match timeout_at(deadline, serving.engine.post(path, body.into())).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            let mut response = fail(ErrorKind::BadGateway, error.to_string());
            if !error.reached_engine() {
                // Nothing of the request reached the engine: the proxy may try another worker.
                response
                    .headers_mut()
                    .insert(headers::NOT_PROCESSED, HeaderValue::from_static("1"));
            }
            return response;
        }
        Err(_) => return engine_timeout(),
    };
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        let bytes = timeout_at(deadline, to_bytes(body, MAX_ERROR_BODY))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let error = parse_peer_error(parts.status, &bytes);
        serving
            .stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        return openai_error_response(&error);
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let body = if stream {
        metered_stream(body, serving.stats.clone(), receipt, limit)
    } else {
        match timeout_at(deadline, to_bytes(body, MAX_ANSWER_BYTES)).await {
            Ok(Ok(bytes)) => metered_answer(bytes, &serving.stats, receipt, limit).await,
            Ok(Err(error)) => {
                return fail(
                    ErrorKind::BadGateway,
                    format!(
                        "reading the engine's answer (at most {MAX_ANSWER_BYTES} bytes): {error}"
                    ),
                )
            }
            Err(_) => return engine_timeout(),
        }
    };
    let mut response = hold_until_end(body, (permit, active)).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// Largest error body read from an engine.
const MAX_ERROR_BODY: usize = 1 << 20;

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// An answer's completion-token limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenLimits {
    /// For each choice: what the engine is asked for.
    per_choice: Option<u64>,
    /// For the whole answer (`n` × prompts choices): what is relayed and billed at most.
    total: Option<u64>,
}

/// The most completion tokens this answer may carry: what the proxy reserved for all its choices
/// (`x-cocoon-max-tokens`), and no more than the request itself asks for each (by the one rule of
/// [`completion_limit`]). `None` when neither says.
fn completion_tokens_limit(
    headers: &HeaderMap,
    request: &EngineRequest,
) -> Result<TokenLimits, OpenAiError> {
    let reserved = match headers.get(MAX_TOKENS) {
        None => None,
        Some(_) => Some(header_number(headers, MAX_TOKENS).ok_or_else(|| {
            OpenAiError::new(
                ErrorKind::InvalidRequest,
                format!("`{MAX_TOKENS}` must be a number of tokens"),
            )
        })?),
    };
    let field = |name: &str| request.token_field(name);
    let requested = completion_limit(field(MAX_TOKENS_FIELD), field(MAX_COMPLETION_TOKENS_FIELD))
        .map_err(|error| {
        OpenAiError::new(ErrorKind::InvalidRequest, error.to_string()).with_param(error.param())
    })?;
    let invalid = |param: &str, message: String| {
        OpenAiError::new(ErrorKind::InvalidRequest, message).with_param(param)
    };
    let choices = request
        .choice_fields()
        .choices()
        .map_err(|error| invalid(error.param(), error.to_string()))?;
    let reserved_each = reserved.map(|reserved| reserved / choices);
    if reserved_each == Some(0) {
        return Err(invalid(
            "n",
            format!("the {choices} choices asked for exceed the completion tokens reserved"),
        ));
    }
    let per_choice = match (reserved_each, requested) {
        (Some(reserved), Some(requested)) => Some(reserved.min(requested)),
        (reserved, requested) => reserved.or(requested),
    };
    Ok(TokenLimits {
        per_choice,
        total: per_choice.map(|each| each.saturating_mul(choices)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, SyntheticParams};
    use cocoon_node::trailers::read_usage;
    use http_body_util::BodyExt;
    use serde_json::json;
    use sha2::Digest;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn serving(max_active: u32) -> Serving {
        let trust = NodeTrust::new(
            &cocoon_node::attestation::AttestationArgs {
                tee: cocoon_tee::AttestationKind::Fake,
                image_label: "test-worker".into(),
                cert_lifetime_secs: 3600,
                pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
            },
            "worker",
            [("model".to_owned(), "synthetic".to_owned())].into(),
        )
        .await
        .unwrap();
        let stats = NodeStats::new("worker");
        Serving {
            info: Arc::new(WorkerInfo {
                protocol_version: cocoon_proto::PROTOCOL_VERSION,
                model: "synthetic".into(),
                model_hash: None,
                coefficient: 1000,
                max_active,
                engine: Some(cocoon_proto::EngineKind::Synthetic),
                honours: cocoon_proto::EngineKind::Synthetic.honours(),
                context_length: None,
                started_at: 0,
            }),
            engine: Engine::InProcess(synthetic::router(SyntheticParams {
                chunk_bytes: 4,
                interval: Duration::ZERO,
                flush_each_chunk: false,
            })),
            slots: Arc::new(Semaphore::new(max_active as usize)),
            stats: stats.clone(),
            max_body_bytes: 1024,
            receipts: ReceiptSigner::start(trust.clone(), stats, Duration::from_millis(2)),
            trust,
            stated_prices: Arc::new(StatedPrices::new(
                tokio::sync::watch::channel(Arc::new(cocoon_money::Prices::default())).1,
            )),
        }
    }

    fn post(path: &str, body: &str) -> http::Request<Body> {
        http::Request::post(path)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn streams_with_usage_even_when_the_caller_did_not_ask() {
        let response = link_router(serving(1).await)
            .oneshot(post(
                PATH_CHAT,
                r#"{"model":"synthetic","stream":true,"max_tokens":2}"#,
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let collected = response.into_body().collect().await.unwrap();
        let usage = read_usage(collected.trailers().unwrap()).unwrap();
        assert_eq!(usage.completion_tokens, 2);
    }

    #[tokio::test]
    async fn answers_end_with_a_receipt_signed_by_the_worker_when_priced() {
        use cocoon_proto::headers;
        use cocoon_receipt::{AnswerText, WorkerReceipt};
        let state = serving(2).await;
        let prices = cocoon_money::Prices::default();
        for stream in [false, true] {
            let body = format!(r#"{{"model":"synthetic","stream":{stream},"max_tokens":3}}"#);
            let mut request = post(PATH_CHAT, &body);
            request.headers_mut().insert(
                headers::PRICES,
                serde_json::to_string(&prices).unwrap().parse().unwrap(),
            );
            request
                .headers_mut()
                .insert(headers::REQUEST_ID, "r-7".parse().unwrap());
            let response = link_router(state.clone()).oneshot(request).await.unwrap();
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().unwrap().clone();
            let answer = AnswerText::from_transcript(&collected.to_bytes());
            assert_eq!(answer.text(), "x".repeat(12), "stream: {stream}");
            let receipt = WorkerReceipt::from_wire(
                trailers[headers::RECEIPT_RECORD].to_str().unwrap(),
                trailers[headers::RECEIPT_WORKER_CERTIFICATE]
                    .to_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                receipt.signer().unwrap(),
                state.trust.identity().claims().public_key
            );
            let record = &receipt.answer;
            assert_eq!(record.request_id, "r-7");
            assert_eq!(record.response_sha256.0, answer.sha256());
            assert_eq!(
                record.request_sha256.0,
                <[u8; 32]>::from(sha2::Sha256::digest(body.as_bytes()))
            );
            assert_eq!(record.usage, read_usage(&trailers).unwrap());
            let cost = cocoon_money::price(&record.usage, 1000, &prices).unwrap();
            assert_eq!(record.charge, cost.client_price);
            assert_eq!(record.worker_image_hash, state.trust.image_hash());
        }
        // Unpriced requests (nobody bills them) get no receipt.
        let response = link_router(state)
            .oneshot(post(PATH_CHAT, r#"{"model":"synthetic"}"#))
            .await
            .unwrap();
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected
            .trailers()
            .unwrap()
            .get(headers::RECEIPT_RECORD)
            .is_none());
    }

    #[tokio::test]
    async fn the_certificate_the_proxy_holds_is_left_out_of_the_receipt() {
        use cocoon_proto::headers;
        let state = serving(2).await;
        let own = cocoon_money::Hash32(state.trust.identity().fingerprint()).to_string();
        let other = cocoon_money::Hash32([7; 32]).to_string();
        for (held, sent) in [
            (Some(own.as_str()), false),
            (Some(&other), true),
            (None, true),
        ] {
            let mut request = post(PATH_CHAT, r#"{"model":"synthetic","max_tokens":2}"#);
            let request_headers = request.headers_mut();
            let prices = serde_json::to_string(&cocoon_money::Prices::default()).unwrap();
            request_headers.insert(headers::PRICES, prices.parse().unwrap());
            if let Some(held) = held {
                request_headers.insert(headers::HELD_CERTIFICATE, held.parse().unwrap());
            }
            let response = link_router(state.clone()).oneshot(request).await.unwrap();
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().unwrap();
            assert!(trailers.contains_key(headers::RECEIPT_RECORD), "{held:?}");
            let certificate = trailers.contains_key(headers::RECEIPT_WORKER_CERTIFICATE);
            assert_eq!(certificate, sent, "{held:?}");
        }
    }

    #[tokio::test]
    async fn the_engine_is_asked_for_no_more_than_the_proxy_reserved() {
        let state = serving(2).await;
        for stream in [false, true] {
            // The body asks for more than the proxy reserved (a client that lies to it).
            let body = format!(
                r#"{{"model":"synthetic","stream":{stream},"max_completion_tokens":1000}}"#
            );
            let mut request = post(PATH_CHAT, &body);
            request
                .headers_mut()
                .insert(MAX_TOKENS, http::HeaderValue::from_static("2"));
            let response = link_router(state.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let collected = response.into_body().collect().await.unwrap();
            let usage = read_usage(collected.trailers().unwrap()).unwrap();
            assert_eq!(usage.completion_tokens, 2, "stream: {stream}");
            let text = cocoon_receipt::AnswerText::from_transcript(&collected.to_bytes());
            assert_eq!(text.text(), "x".repeat(8), "stream: {stream}");
        }
        // Limits that disagree, or a reservation that is not a number, are refused.
        let conflict = post(
            PATH_CHAT,
            r#"{"model":"synthetic","max_completion_tokens":1,"max_tokens":1000}"#,
        );
        let response = link_router(state.clone()).oneshot(conflict).await.unwrap();
        assert_eq!(response.status(), 400);
        let mut garbled = post(PATH_CHAT, r#"{"model":"synthetic"}"#);
        garbled
            .headers_mut()
            .insert(MAX_TOKENS, http::HeaderValue::from_static("-1"));
        let response = link_router(state).oneshot(garbled).await.unwrap();
        assert_eq!(response.status(), 400);
    }

    #[test]
    fn each_choice_gets_the_limit_and_the_answer_all_of_them() {
        let limits = |reserved: Option<&'static str>, body: serde_json::Value| {
            let mut headers = HeaderMap::new();
            if let Some(reserved) = reserved {
                headers.insert(MAX_TOKENS, http::HeaderValue::from_static(reserved));
            }
            let body = body.to_string();
            completion_tokens_limit(&headers, &EngineRequest::parse(body.as_bytes()).unwrap())
        };
        // The proxy reserved 10 for each of 3 choices.
        assert_eq!(
            limits(Some("30"), json!({"n": 3, "max_tokens": 10})),
            Ok(TokenLimits {
                per_choice: Some(10),
                total: Some(30)
            })
        );
        // Two prompts, two choices each, no limit in the body: the reservation is shared out.
        assert_eq!(
            limits(Some("400"), json!({"n": 2, "prompt": ["a", "b"]})),
            Ok(TokenLimits {
                per_choice: Some(100),
                total: Some(400)
            })
        );
        // A body asking for more choices than were reserved for gets no more in total.
        assert_eq!(
            limits(Some("10"), json!({"n": 4, "max_tokens": 10})),
            Ok(TokenLimits {
                per_choice: Some(2),
                total: Some(8)
            })
        );
        let refused = limits(Some("2"), json!({"n": 3})).unwrap_err();
        assert_eq!(refused.error.param.as_deref(), Some("n"));
        let refused = limits(None, json!({"n": 0})).unwrap_err();
        assert_eq!(refused.error.param.as_deref(), Some("n"));
    }

    #[tokio::test]
    async fn refuses_other_models_bad_json_big_bodies_and_excess_load() {
        let state = serving(1).await;
        let router = link_router(state.clone());
        let wrong = router
            .clone()
            .oneshot(post(PATH_CHAT, r#"{"model":"gpt-4"}"#))
            .await
            .unwrap();
        assert_eq!(wrong.status(), 404);
        let bad = router
            .clone()
            .oneshot(post(PATH_CHAT, "{nope"))
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let big = router
            .clone()
            .oneshot(post(PATH_CHAT, &"x".repeat(2048)))
            .await
            .unwrap();
        assert_eq!(big.status(), 413);
        // Hold the only slot with a stream that is not read yet.
        let held = router
            .clone()
            .oneshot(post(PATH_CHAT, r#"{"model":"synthetic","stream":true}"#))
            .await
            .unwrap();
        let busy = router
            .clone()
            .oneshot(post(PATH_CHAT, r#"{"model":"synthetic"}"#))
            .await
            .unwrap();
        assert_eq!(busy.status(), 429);
        drop(held);
        let free = router
            .oneshot(post(PATH_CHAT, r#"{"model":"synthetic"}"#))
            .await
            .unwrap();
        assert_eq!(free.status(), 200);
        assert_eq!(
            state.slots.available_permits(),
            0,
            "the answer holds its slot until read"
        );
    }
}
