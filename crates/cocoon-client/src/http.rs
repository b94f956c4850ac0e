//! The app-facing HTTP API: OpenAI's `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`, plus `GET /v1/attestation` (what the proxy proved) and the node surfaces
//! (`/healthz`, `/stats`, `/jsonstats`, `/metrics`).
//!
//! Requests are read with a size limit (so that the 413 is OpenAI JSON too) and checked by
//! [`crate::request`] before they cost anything upstream; answers from the proxy are read with a
//! size limit and under the request's deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use cocoon_money::AccountId;
use cocoon_node::link::per_request;
use cocoon_node::reply::{json_response, parse_peer_error};
use cocoon_node::stats::{ActiveRequest, NodeStats};
use cocoon_node::trailers::read_usage;
use cocoon_node::Body;
use cocoon_proto::headers::{
    COEFFICIENT, ENGINE_PARAMS, ERROR, HELD_CERTIFICATE, HELD_WORKER_CERTIFICATES, MAX_COEFFICIENT,
    MODEL_HASH, RECEIPT, REQUEST_ID, TIMEOUT_MS, WORKER_IMAGE,
};
use cocoon_proto::limits::{MAX_ANSWER_BYTES, MAX_SSE_EVENT_BYTES};
use cocoon_proto::link::{PATH_CHAT, PATH_COMPLETIONS};
use cocoon_proto::{ErrorKind, OpenAiError};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tokio::time::Instant;
use tower_http::cors::CorsLayer;

use crate::api_key::authorized;
use crate::edge::{new_request_id, with_request_id, RequestId};
use crate::held_certificate::HeldCertificate;
use crate::link::{unix_seconds, ProxyLinks};
use crate::payment::{PaymentError, SentRequest};
use crate::request::{prepare, Defaults, Endpoint, Prepared};
use crate::stream::{rewrite_sse, SseOptions};

/// OpenAI's model listing, answered from the proxy's [`ModelList`](cocoon_proto::link::ModelList).
pub const PATH_V1_MODELS: &str = "/v1/models";
/// OpenAI's model retrieval; the id may hold `/` (as Hugging Face names do).
pub const PATH_V1_MODEL: &str = "/v1/models/{*id}";
/// The proxy's verified attestation, as JSON.
pub const PATH_ATTESTATION: &str = "/v1/attestation";
/// Closes this client's channel with its current proxy at once, with the proxy's release; the
/// proxy serves this wallet no more (see [`crate::payment::Payer::close_with_release`]).
pub const PATH_CLOSE: &str = "/cocoon/v1/close";

/// Extra time past the request's deadline before the client gives up on its own, so that the
/// proxy's more precise timeout error normally arrives first.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// Most of an upstream error body that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A request failure, answered to the app as OpenAI error JSON with `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", error.error.message)]
pub struct Failure {
    /// The HTTP status the app sees.
    pub status: StatusCode,
    /// The body the app sees.
    pub error: OpenAiError,
}

impl Failure {
    /// A failure of `kind`, with the kind's status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::from_u16(kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error: OpenAiError::new(kind, message),
        }
    }

    /// An invalid-request failure naming the field at fault.
    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut failure = Failure::new(ErrorKind::InvalidRequest, message);
        failure.error = failure.error.with_param(param);
        failure
    }

    /// What the error counts as in the stats.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind().unwrap_or(ErrorKind::BadGateway)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json_response(self.status, &self.error)
    }
}

/// Everything the API handlers share.
pub struct Api {
    /// The proxy links.
    pub links: Arc<ProxyLinks>,
    /// The node's counters.
    pub stats: Arc<NodeStats>,
    /// Accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Values for requests that do not set their own.
    pub defaults: Defaults,
    /// Whether non-streamed answers carry their receipt in `x-cocoon-receipt`.
    pub receipt_header: bool,
    /// Checks each answer's charge and pays for it.
    pub payer: Arc<crate::payment::Payer>,
}

/// The whole HTTP surface: the OpenAI API (behind the API keys) and `stats_routes` (open, so
/// monitoring needs no key), every answer with an `x-request-id`, and `cors` when configured.
pub fn router(api: Arc<Api>, stats_routes: Router, cors: Option<CorsLayer>) -> Router {
    let openai = Router::new()
        .route(PATH_CHAT, post(chat))
        .route(PATH_COMPLETIONS, post(completions))
        .route(PATH_V1_MODELS, get(crate::models::models))
        .route(PATH_V1_MODEL, get(crate::models::model))
        .route(PATH_ATTESTATION, get(attestation))
        .route(PATH_CLOSE, post(close))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_api_key))
        .with_state(api);
    let app = openai
        .merge(stats_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // CORS outside the API keys: a browser's preflight carries no key.
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.layer(middleware::from_fn(with_request_id))
}

async fn require_api_key(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    match authorized(request.headers(), &api.api_keys) {
        Ok(()) => next.run(request).await,
        Err(failure) => {
            api.stats.record_error(failure.kind());
            failure.into_response()
        }
    }
}

async fn not_found(method: Method, uri: http::Uri) -> Response {
    Failure::new(
        ErrorKind::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: http::Uri) -> Response {
    let mut failure = Failure::new(
        ErrorKind::InvalidRequest,
        format!("{method} is not allowed on {}", uri.path()),
    );
    failure.status = StatusCode::METHOD_NOT_ALLOWED;
    failure.into_response()
}

async fn chat(State(api): State<Arc<Api>>, request: Request) -> Response {
    api.complete(Endpoint::Chat, request).await
}

async fn completions(State(api): State<Arc<Api>>, request: Request) -> Response {
    api.complete(Endpoint::Completions, request).await
}

async fn attestation(State(api): State<Arc<Api>>) -> Response {
    let Some(link) = api.links.current() else {
        return no_proxy().into_response();
    };
    let peer = &link.peer;
    json_response(
        StatusCode::OK,
        &json!({
            "proxy": link.proxy,
            "connected_at": unix_seconds(link.connected_at),
            "kind": peer.kind,
            "image_hash": peer.image_hash.to_string(),
            "measurements": peer.measurements,
            "cert_fingerprint": hex::encode(peer.cert_fingerprint),
            "public_key": hex::encode(peer.public_key),
            "role": peer.claims.role,
            "attributes": peer.claims.attributes,
            "not_after": unix_seconds(peer.not_after),
        }),
    )
}

async fn close(State(api): State<Arc<Api>>) -> Response {
    let Some(link) = api.links.current() else {
        return no_proxy().into_response();
    };
    match api.payer.close_with_release(&link).await {
        Ok(closed) => json_response(StatusCode::OK, &closed),
        Err(error) => {
            api.stats.record_error(error.kind());
            Failure::new(error.kind(), error.to_string()).into_response()
        }
    }
}

pub(crate) fn no_proxy() -> Failure {
    Failure::new(
        ErrorKind::Unavailable,
        "no proxy link is up; the client keeps trying to connect",
    )
}

fn timed_out() -> Failure {
    Failure::new(
        ErrorKind::Timeout,
        "the request did not finish within its timeout",
    )
}

impl Api {
    /// Serves one completion request end to end, counting it in the stats.
    async fn complete(&self, endpoint: Endpoint, request: Request) -> Response {
        let active = self.stats.request_started();
        match self.forward(endpoint, request, active).await {
            Ok(response) => response,
            Err(failure) => {
                self.stats.record_error(failure.kind());
                failure.into_response()
            }
        }
    }

    async fn forward(
        &self,
        endpoint: Endpoint,
        request: Request,
        active: ActiveRequest,
    ) -> Result<Response, Failure> {
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let prepared = prepare(endpoint, &body, self.defaults)?;
        // The app's request id (or the fresh one) names the request on every hop.
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(new_request_id, |id| id.0.clone());
        let deadline = Instant::now() + prepared.timeout + DEADLINE_GRACE;
        tracing::debug!(?request_id, model = %prepared.model, stream = prepared.stream, "forwarding");

        let (response, proxy, held_certificate) =
            tokio::time::timeout_at(deadline, self.send(endpoint, &prepared, &request_id))
                .await
                .map_err(|_| timed_out())??;
        self.stats.record_first_byte(active.started().elapsed());

        let status = response.status();
        if !status.is_success() {
            // A refusal's `Retry-After` (whole seconds; anything else is dropped) goes on too.
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .filter(|value| value.to_str().is_ok_and(|text| text.parse::<u64>().is_ok()))
                .cloned();
            // The proxy's error is already OpenAI-shaped: pass it on with its status.
            let bytes = tokio::time::timeout_at(
                deadline,
                Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
            let failure = Failure {
                status,
                error: parse_peer_error(status, &bytes),
            };
            let Some(retry_after) = retry_after else {
                return Err(failure);
            };
            self.stats.record_error(failure.kind());
            let mut answer = failure.into_response();
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
            return Ok(answer);
        }

        let mut answer = Response::builder().status(StatusCode::OK);
        if let Some(headers) = answer.headers_mut() {
            headers.insert(REQUEST_ID, request_id.clone());
            for name in [COEFFICIENT, WORKER_IMAGE, MODEL_HASH] {
                if let Some(value) = response.headers().get(name) {
                    headers.insert(name, value.clone());
                }
            }
        }
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let is_sse = content_type
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));

        let body = if is_sse {
            answer = answer
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache");
            let payer = self.payer.clone();
            let max_coefficient = prepared.max_coefficient;
            let sent = SentRequest::new(&request_id, &prepared.body);
            Body::from_stream(rewrite_sse(
                response.into_body(),
                SseOptions {
                    include_usage: prepared.include_usage,
                    deadline,
                    stats: self.stats.clone(),
                    active,
                    max_event_bytes: MAX_SSE_EVENT_BYTES,
                    held_certificate: Some(held_certificate),
                    on_success: Some(Box::new(move |trailers, receipt| {
                        payer.settle_answer(proxy, &sent, trailers, receipt, max_coefficient)
                    })),
                },
            ))
        } else {
            let collected = read_answer(response.into_body(), deadline, MAX_ANSWER_BYTES).await?;
            let trailers = collected.trailers().cloned().map(|mut trailers| {
                held_certificate.complete(&mut trailers);
                trailers
            });
            let mut bytes = collected.to_bytes();
            if let Some(trailers) = &trailers {
                if let Some(error) = trailers.get(ERROR) {
                    let error = parse_peer_error(StatusCode::BAD_GATEWAY, error.as_bytes());
                    return Err(Failure {
                        status: error
                            .kind()
                            .and_then(|kind| StatusCode::from_u16(kind.http_status()).ok())
                            .unwrap_or(StatusCode::BAD_GATEWAY),
                        error,
                    });
                }
                if let Some(usage) = read_usage(trailers) {
                    self.stats.record_tokens(&usage);
                }
                let receipt = crate::stream::receipt_of(trailers);
                self.payer.settle_answer(
                    proxy,
                    &SentRequest::new(&request_id, &prepared.body),
                    Some(trailers),
                    receipt.as_ref(),
                    prepared.max_coefficient,
                );
                if let Some(priced) = crate::stream::with_cost(&bytes, trailers) {
                    bytes = priced;
                }
                if let Some(receipt) = receipt.filter(|_| self.receipt_header) {
                    answer = answer.header(RECEIPT, receipt.to_header());
                }
            }
            answer = answer.header(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            Body::from(bytes)
        };
        answer.body(body).map_err(|error| {
            Failure::new(
                ErrorKind::Internal,
                format!("cannot build the answer: {error}"),
            )
        })
    }

    /// Sends the request on the most preferred live link of a proxy this client still pays. A
    /// link found closed before sending is skipped for the next one: nothing reached that proxy,
    /// so the request cannot run twice. Returns the answer, the proxy that gives it and what the
    /// client holds of that proxy's certificate.
    async fn send(
        &self,
        endpoint: Endpoint,
        prepared: &Prepared,
        request_id: &HeaderValue,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            AccountId,
            Arc<HeldCertificate>,
        ),
        Failure,
    > {
        // Checked names only ([`cocoon_proto::capabilities::is_param_name`]): a plain header value.
        let engine_params =
            HeaderValue::from_str(&prepared.engine_params.join(",")).map_err(|_| {
                Failure::new(
                    ErrorKind::Internal,
                    "engine parameters are not a header value",
                )
            })?;
        let mut stopped = None;
        for link in self.links.live_links() {
            let Some(proxy) = crate::payment::proxy_account(&link) else {
                continue;
            };
            if let Some(why) = self.payer.stopped(&proxy) {
                stopped = Some(why);
                continue;
            }
            let mut sender = link.sender.clone();
            if sender.ready().await.is_err() {
                continue;
            }
            let payment = match self.payer.request_headers(&link).await {
                Ok(payment) => payment,
                // A receipt checked just now failed: this proxy is not used any more.
                Err(PaymentError::Stopped(why)) => {
                    stopped = Some(why);
                    continue;
                }
                Err(error) => {
                    return Err(Failure::new(
                        error.kind(),
                        format!("cannot pay proxy {}: {error}", link.proxy),
                    ))
                }
            };
            let mut request = http::Request::builder()
                .method(Method::POST)
                .uri(endpoint.path())
                .header(header::CONTENT_TYPE, "application/json")
                .header(REQUEST_ID, per_request(request_id.clone()))
                .header(ENGINE_PARAMS, engine_params.clone())
                .header(MAX_COEFFICIENT, prepared.max_coefficient)
                .header(TIMEOUT_MS, prepared.timeout.as_millis().to_string())
                .body(Body::from(prepared.body.clone()))
                .map_err(|error| {
                    Failure::new(
                        ErrorKind::Internal,
                        format!("cannot build the link request: {error}"),
                    )
                })?;
            request.headers_mut().extend(
                payment
                    .into_iter()
                    .map(|(name, value)| (http::HeaderName::from_static(name), value)),
            );
            let held = &link.held_certificate;
            if let Some(value) = held.request_header() {
                request.headers_mut().insert(HELD_CERTIFICATE, value);
            }
            if let Some(value) = held.workers_header() {
                request
                    .headers_mut()
                    .insert(HELD_WORKER_CERTIFICATES, value);
            }
            let response = sender.send_request(request).await.map_err(|error| {
                Failure::new(
                    ErrorKind::BadGateway,
                    format!("the link to proxy {} failed: {error}", link.proxy),
                )
            })?;
            return Ok((response, proxy, link.held_certificate.clone()));
        }
        Err(match stopped {
            Some(why) => Failure::new(
                ErrorKind::Unavailable,
                format!("this client stopped paying the only proxies it reaches: {why}"),
            ),
            None => no_proxy(),
        })
    }
}

/// Reads a non-streamed answer from the proxy: at most `limit` bytes, before `deadline`.
async fn read_answer<B>(
    body: B,
    deadline: Instant,
    limit: usize,
) -> Result<http_body_util::Collected<Bytes>, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(timed_out()),
        Ok(Ok(collected)) => Ok(collected),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(Failure::new(
            ErrorKind::BadGateway,
            format!("the answer is larger than {limit} bytes"),
        )),
        Ok(Err(error)) => Err(Failure::new(
            ErrorKind::BadGateway,
            format!("the answer broke off: {error}"),
        )),
    }
}

/// Reads the app's body, refusing more than `limit` bytes with an OpenAI-shaped 413.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => Err(Failure::new(
            ErrorKind::InvalidRequest,
            format!("cannot read the request body: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_from_the_proxy_are_read_within_a_size_and_a_deadline() {
        let later = Instant::now() + Duration::from_secs(60);
        let big = read_answer(Body::from(vec![b'x'; 11]), later, 10)
            .await
            .unwrap_err();
        assert_eq!(big.status, StatusCode::BAD_GATEWAY);
        assert!(big.error.error.message.contains("larger than 10"), "{big}");
        let fits = read_answer(Body::from(vec![b'x'; 10]), later, 10).await;
        assert_eq!(fits.unwrap().to_bytes().len(), 10);
        // An answer that never ends is given up at the deadline.
        let endless =
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let soon = Instant::now() + Duration::from_millis(10);
        let late = read_answer(endless, soon, 10).await.unwrap_err();
        assert_eq!(late.error.kind(), Some(ErrorKind::Timeout));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_413() {
        let headers = HeaderMap::new();
        let failure = read_body(&headers, Body::from(vec![b'x'; 11]), 10)
            .await
            .unwrap_err();
        assert_eq!(failure.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(failure.error.kind(), Some(ErrorKind::PayloadTooLarge));
        let ok = read_body(&headers, Body::from(vec![b'x'; 10]), 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        // A declared length over the limit is refused before reading anything.
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        let failure = read_body(&declared, Body::empty(), 10).await.unwrap_err();
        assert_eq!(failure.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
