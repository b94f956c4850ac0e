//! What the worker serves to proxies on each link: its announcement and the forwarding path from
//! a proxy's request to the engine and back, metered.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::reply::{error_response, hold_until_end, openai_error_response, parse_peer_error};
use cocoon_node::stats::NodeStats;
use cocoon_node::Body;
use cocoon_proto::link::{PATH_CHAT, PATH_COMPLETIONS, PATH_WORKER_INFO};
use cocoon_proto::{ErrorKind, WorkerInfo};
use http::{header, HeaderMap};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::metering::{metered_answer, metered_stream};
use crate::receipt::ReceiptDraft;

/// Largest error or non-streamed answer read from an engine.
const MAX_ENGINE_ANSWER: usize = 64 << 20;

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
    /// This worker's attested identity, which signs receipts.
    pub trust: Arc<NodeTrust>,
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

async fn chat(State(serving): State<Serving>, headers: HeaderMap, body: Body) -> Response {
    forward(serving, PATH_CHAT, headers, body).await
}

async fn completions(State(serving): State<Serving>, headers: HeaderMap, body: Body) -> Response {
    forward(serving, PATH_COMPLETIONS, headers, body).await
}

async fn forward(serving: Serving, path: &'static str, headers: HeaderMap, body: Body) -> Response {
    let active = serving.stats.request_started();
    let fail = |kind: ErrorKind, message: String| {
        serving.stats.record_error(kind);
        error_response(kind, message)
    };
    let Ok(permit) = serving.slots.clone().try_acquire_owned() else {
        return fail(
            ErrorKind::RateLimited,
            format!(
                "worker is serving its maximum of {} requests",
                serving.info.max_active
            ),
        );
    };
    let Ok(bytes) = to_bytes(body, serving.max_body_bytes).await else {
        return fail(
            ErrorKind::PayloadTooLarge,
            format!(
                "request body is larger than {} bytes",
                serving.max_body_bytes
            ),
        );
    };
    let mut request: Value = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return fail(
                ErrorKind::InvalidRequest,
                "request body must be a JSON object".into(),
            )
        }
        Err(error) => return fail(ErrorKind::InvalidRequest, format!("invalid JSON: {error}")),
    };
    if request["model"].as_str() != Some(serving.info.model.as_str()) {
        return fail(
            ErrorKind::ModelNotFound,
            format!(
                "this worker serves `{}`, not {}",
                serving.info.model, request["model"]
            ),
        );
    }
    let receipt = ReceiptDraft::new(
        serving.trust.clone(),
        serving.info.clone(),
        &headers,
        &bytes,
    );
    let stream = request["stream"].as_bool().unwrap_or(false);
    if stream {
        // Usage is what the worker is paid by: always ask for it; the client hides it again from
        // applications that did not ask.
        match request.get_mut("stream_options") {
            Some(Value::Object(options)) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            _ => request["stream_options"] = json!({"include_usage": true}),
        }
    }
    let body = match serde_json::to_vec(&request) {
        Ok(body) => body,
        Err(error) => {
            return fail(
                ErrorKind::Internal,
                format!("cannot encode request: {error}"),
            )
        }
    };
    let response = match serving.engine.post(path, body.into()).await {
        Ok(response) => response,
        Err(error) => return fail(ErrorKind::BadGateway, error.to_string()),
    };
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        let bytes = to_bytes(body, MAX_ENGINE_ANSWER).await.unwrap_or_default();
        let error = parse_peer_error(parts.status, &bytes);
        serving
            .stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        return openai_error_response(&error);
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let body = if stream {
        metered_stream(body, serving.stats.clone(), receipt)
    } else {
        match to_bytes(body, MAX_ENGINE_ANSWER).await {
            Ok(bytes) => metered_answer(bytes, &serving.stats, receipt),
            Err(error) => {
                return fail(
                    ErrorKind::BadGateway,
                    format!("reading the engine's answer: {error}"),
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, SyntheticParams};
    use cocoon_node::trailers::read_usage;
    use http_body_util::BodyExt;
    use sha2::Digest;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn serving(max_active: u32) -> Serving {
        Serving {
            info: Arc::new(WorkerInfo {
                protocol_version: cocoon_proto::PROTOCOL_VERSION,
                model: "synthetic".into(),
                model_hash: None,
                coefficient: 1000,
                max_active,
            }),
            engine: Engine::InProcess(synthetic::router(SyntheticParams {
                chunk_bytes: 4,
                interval: Duration::ZERO,
            })),
            slots: Arc::new(Semaphore::new(max_active as usize)),
            stats: NodeStats::new("worker"),
            max_body_bytes: 1024,
            trust: NodeTrust::new(
                &cocoon_node::attestation::AttestationArgs {
                    tee: cocoon_tee::AttestationKind::Fake,
                    image_label: "test-worker".into(),
                    min_peer_tee: cocoon_tee::AttestationKind::Fake,
                    cert_lifetime_secs: 3600,
                    pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
                },
                "worker",
                [("model".to_owned(), "synthetic".to_owned())].into(),
            )
            .await
            .unwrap(),
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
        let prices = cocoon_ledger::Prices::default();
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
            let cost = cocoon_ledger::price(&record.usage, 1000, &prices).unwrap();
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
