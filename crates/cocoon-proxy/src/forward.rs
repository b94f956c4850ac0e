//! The request path: a client's request is read, routed to a worker, and its answer relayed back
//! frame by frame, under the request's deadline, with the worker's usage counted from its trailer.
//!
//! Money touches the path at two points only: the worst case is reserved against the client's
//! balance before a worker is chosen (429 `insufficient_quota` when it cannot be covered), and the actual usage is
//! charged durably when the worker's usage trailer arrives, before that frame is released. That
//! frame also carries the worker's receipt on, countersigned ([`crate::receipt`]). An answer whose
//! client hangs up just before its end is still read to the usage trailer and charged. The
//! answer's way back is `relay.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cocoon_node::link::per_request;
use cocoon_node::reply::{error_response, openai_error_response, parse_peer_error};
use cocoon_node::stats::NodeStats;
use cocoon_node::Body;
use cocoon_proto::{headers, ErrorKind, OpenAiError};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::billing::{self, Billing};
use crate::receipt::Countersigner;
use crate::relay::{ClientHolds, Meter, Relay};
use crate::request_check::{
    invalid_request, refused_reservation, request_needs, reserved_completion_tokens, RoutedFields,
};
use crate::routing::{RouteError, Routing, WorkerLink};

/// Largest error body read from a worker.
const MAX_ERROR_BODY: usize = 1 << 20;
/// Price limit for requests that do not state one: any worker.
const NO_PRICE_LIMIT: u32 = u32::MAX;

/// What the request path needs.
#[derive(Clone)]
pub struct Forwarding {
    /// Workers by model.
    pub routing: Arc<Routing>,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub max_request: Duration,
    /// Reservations and charges.
    pub billing: Arc<Billing>,
    /// Countersigns workers' receipts.
    pub receipts: Arc<Countersigner>,
}

/// The longest a client may take to send a request's body (and at most the request's timeout).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Forwards one client request on `path` to a worker, billing `client` (the wallet its attestation
/// names, proven by the request).
pub async fn forward(
    state: Forwarding,
    path: &'static str,
    client: cocoon_money::AccountId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let active = state.stats.request_started();
    let fail = |kind: ErrorKind, message: String| {
        state.stats.record_error(kind);
        error_response(kind, message)
    };
    let reply_failure = |error: OpenAiError| {
        state
            .stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        openai_error_response(&error)
    };
    let max_coefficient = header_number(&headers, headers::MAX_COEFFICIENT)
        .map(|value| u32::try_from(value).unwrap_or(u32::MAX))
        .unwrap_or(NO_PRICE_LIMIT);
    let timeout = header_number(&headers, headers::TIMEOUT_MS)
        .map(Duration::from_millis)
        .unwrap_or(state.max_request)
        .min(state.max_request);
    let deadline = Instant::now() + timeout;
    let request_id = headers.get(headers::REQUEST_ID).cloned();
    let body_deadline = deadline.min(Instant::now() + BODY_READ_TIMEOUT);
    let bytes =
        match tokio::time::timeout_at(body_deadline, to_bytes(body, state.max_body_bytes)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return fail(
                    ErrorKind::PayloadTooLarge,
                    format!("request body is larger than {} bytes", state.max_body_bytes),
                )
            }
            Err(_) => {
                return fail(
                    ErrorKind::Timeout,
                    "the request body did not arrive in time".into(),
                )
            }
        };
    let fields = match serde_json::from_slice::<RoutedFields>(&bytes) {
        Ok(fields) => fields,
        Err(error) => return fail(ErrorKind::InvalidRequest, format!("invalid JSON: {error}")),
    };
    let Some(serde_json::Value::String(model)) = &fields.model else {
        return reply_failure(invalid_request(
            "model",
            "`model` (a string) is required".into(),
        ));
    };
    let model = model.clone();
    // Checked before anything is reserved: an impossible limit is the request's fault (400), not
    // a shortage of funds.
    let max_tokens = match reserved_completion_tokens(&fields, state.billing.default_max_tokens()) {
        Ok(max_tokens) => max_tokens,
        Err(error) => return reply_failure(error),
    };

    let needs = match request_needs(&fields, &headers) {
        Ok(needs) => needs,
        Err(error) => return reply_failure(error),
    };
    // A model nobody serves, a parameter no engine honours, a limit no context fits: reported as
    // such, whether or not the client could pay.
    if let Err(error) = state.routing.check(&model, &needs) {
        return reply_failure(error.to_openai());
    }
    let Some(dearest) = state.routing.dearest(&model) else {
        return refuse_route(&state.stats, &RouteError::UnknownModel(model));
    };
    // Reserve before any worker sees the request: a client that cannot pay costs no engine work.
    let coefficient = billing::reservation_coefficient(max_coefficient, Some(dearest));
    let prompt_tokens = billing::prompt_tokens_bound(bytes.len());
    let reservation = match state
        .billing
        .reserve(client, prompt_tokens, max_tokens, coefficient)
        .await
    {
        Ok(reservation) => reservation,
        Err(error) => return reply_failure(refused_reservation(&error, max_tokens)),
    };

    // A worker that fails before it answers (its link, or a 5xx) or is busy (429: its slots are
    // shared with other proxies) gets the request again elsewhere: nothing has reached the client
    // yet, and usage is only charged from a finished answer. If no other worker can take it, the
    // client hears the first worker's answer. Busy is not a failure of the worker.
    let mut failed: Option<(u64, OpenAiError)> = None;
    let prices = HeaderValue::from_str(
        &serde_json::to_string(reservation.prices().as_ref()).unwrap_or_default(),
    )
    .ok();
    let (slot, response) = loop {
        let chosen = match &failed {
            // The first try waits its turn if every worker is busy; a retry takes what is free.
            None => {
                state
                    .routing
                    .acquire(&model, max_coefficient, &needs, client, deadline)
                    .await
            }
            Some((worker, _)) => {
                state
                    .routing
                    .choose(&model, max_coefficient, &needs, Some(*worker))
            }
        };
        let slot = match chosen {
            Ok(slot) => slot,
            Err(route) => {
                return match failed {
                    Some((_, error)) => reply_failure(error),
                    None => refuse_route(&state.stats, &route),
                }
            }
        };
        let mut request = Request::post(path)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Body::from(bytes.clone()))
            .expect("static request parts are valid");
        if let Some(id) = &request_id {
            request
                .headers_mut()
                .insert(headers::REQUEST_ID, per_request(id.clone()));
        }
        let request_headers = request.headers_mut();
        if let Some(prices) = &prices {
            ask_for_receipt(&slot.worker, prices, request_headers);
        }
        request_headers.insert(headers::MAX_TOKENS, HeaderValue::from(max_tokens));
        let remaining = deadline.saturating_duration_since(Instant::now());
        request_headers.insert(
            headers::TIMEOUT_MS,
            HeaderValue::from(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)),
        );
        match tokio::time::timeout_at(deadline, attempt(&slot.worker, request)).await {
            Ok(Attempt::Answered(response)) if !retry_elsewhere(&response) => {
                break (slot, response)
            }
            Ok(Attempt::Lost(error)) => {
                // The worker had the request when its link failed: the request may be what broke
                // it, so no other worker gets it.
                slot.worker.record_failure();
                return reply_failure(OpenAiError::new(
                    ErrorKind::BadGateway,
                    format!("the worker's link failed while it had the request (not retried elsewhere): {error}"),
                ));
            }
            Ok(outcome) => {
                let busy = matches!(&outcome, Attempt::Answered(response) if response.status() == StatusCode::TOO_MANY_REQUESTS);
                if !busy {
                    slot.worker.record_failure();
                }
                let error = match outcome {
                    Attempt::Answered(response) => {
                        let status = response.status();
                        let body = read_error_body(response.into_body(), deadline).await;
                        parse_peer_error(status, &body)
                    }
                    Attempt::NotSent(error) | Attempt::Lost(error) => OpenAiError::new(
                        ErrorKind::BadGateway,
                        format!("the worker's link was closed before the request: {error}"),
                    ),
                };
                if failed.is_some() {
                    return reply_failure(error);
                }
                tracing::warn!(worker = slot.worker.id, error = %error.error.message, "worker failed before answering; retrying elsewhere");
                failed = Some((slot.worker.id, error));
            }
            Err(_) => {
                return fail(
                    ErrorKind::Timeout,
                    format!(
                        "no answer within the request's timeout of {} ms",
                        timeout.as_millis()
                    ),
                )
            }
        }
    };
    state.stats.record_first_byte(active.started().elapsed());
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        if parts.status.is_server_error() {
            slot.worker.record_failure();
        }
        let bytes = read_error_body(body, deadline).await;
        let error = parse_peer_error(parts.status, &bytes);
        state
            .stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        return openai_error_response(&error);
    }
    let worker = slot.worker.clone();
    // Links refuse workers without a wallet, so this holds for every routed worker.
    let Some(worker_wallet) = billing::wallet_of(&worker.peer) else {
        return fail(
            ErrorKind::BadGateway,
            "the worker's attestation names no wallet".into(),
        );
    };
    let meter = Meter {
        billing: state.billing.clone(),
        reservation: Some(reservation),
        worker_wallet,
        worker: worker.clone(),
        receipts: state.receipts.clone(),
        request_id: request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default()
            .into(),
        client_holds: ClientHolds::of(&headers),
    };
    let relay = Relay::new(
        body,
        meter,
        (deadline, timeout),
        state.stats.clone(),
        slot,
        active,
    );
    let mut answer = Response::new(Body::new(relay));
    let answer_headers = answer.headers_mut();
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        answer_headers.insert(header::CONTENT_TYPE, content_type.clone());
    }
    answer_headers.insert(
        headers::COEFFICIENT,
        HeaderValue::from(worker.info.coefficient),
    );
    if let Ok(image) = HeaderValue::from_str(&worker.peer.image_hash.to_string()) {
        answer_headers.insert(headers::WORKER_IMAGE, image);
    }
    if let Some(hash) = worker
        .info
        .model_hash
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        answer_headers.insert(headers::MODEL_HASH, hash);
    }
    answer.into_response()
}

/// The answer to a request no worker was found for; a refusal a later try may pass says when, in
/// `Retry-After`.
fn refuse_route(stats: &NodeStats, route: &RouteError) -> Response {
    stats.record_error(route.kind());
    let mut response = openai_error_response(&route.to_openai());
    if let Some(seconds) = route.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// How one try at a worker ended.
enum Attempt {
    /// The worker answered (any status).
    Answered(http::Response<Incoming>),
    /// The link was closed before the request left: another worker may have it.
    NotSent(hyper::Error),
    /// The link failed while the worker had the request.
    Lost(hyper::Error),
}

/// Sends `request` to `worker`, telling apart a link found closed before sending from one that
/// failed with the request under way.
async fn attempt(worker: &WorkerLink, request: Request<Body>) -> Attempt {
    let mut sender = worker.sender.clone();
    if let Err(error) = sender.ready().await {
        return Attempt::NotSent(error);
    }
    match sender.send_request(request).await {
        Ok(response) => Attempt::Answered(response),
        // hyper cancels requests its connection closed before sending them.
        Err(error) if error.is_canceled() => Attempt::NotSent(error),
        Err(error) => Attempt::Lost(error),
    }
}

/// A worker's error body: at most [`MAX_ERROR_BODY`] bytes, read before `deadline`; empty when it
/// does not come.
async fn read_error_body(body: Incoming, deadline: Instant) -> Bytes {
    tokio::time::timeout_at(deadline, to_bytes(Body::new(body), MAX_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Whether a worker's answer means another worker should get the request: the worker is busy
/// (429), or failed (5xx) saying its engine never had the request. A 5xx after the engine had it
/// is not retried: the request may be what broke the engine, and would break the next one too.
fn retry_elsewhere<B>(response: &Response<B>) -> bool {
    let status = response.status();
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && response.headers().contains_key(headers::NOT_PROCESSED))
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Asks `worker` for a receipt at `prices`, and tells it the certificate of its link the proxy
/// already holds, if it does ([`headers::HELD_CERTIFICATE`]).
pub(crate) fn ask_for_receipt(worker: &WorkerLink, prices: &HeaderValue, request: &mut HeaderMap) {
    request.insert(headers::PRICES, prices.clone());
    if worker.held_certificate().is_some() {
        let fingerprint = cocoon_money::Hash32(worker.peer.cert_fingerprint).to_string();
        request.insert(
            headers::HELD_CERTIFICATE,
            HeaderValue::from_str(&fingerprint).expect("hex is a header value"),
        );
    }
}
