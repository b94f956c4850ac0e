//! What the proxy serves to clients on each link: the models it can route to and the two
//! OpenAI endpoints, which go down the request path ([`crate::forward`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cocoon_money::{AccountId, SignedVoucher};
use cocoon_node::reply::{error_response, json_response};
use cocoon_node::stats::NodeStats;
use cocoon_node::Body;
use cocoon_proto::link::{
    ModelList, PATH_BILLING, PATH_CHAT, PATH_COMPLETIONS, PATH_MODELS, PATH_PAYMENT, PATH_RELEASE,
};
use cocoon_proto::ErrorKind;
use cocoon_ratls::PeerIdentity;
use http::HeaderMap;

use crate::billing::BillingError;
use crate::forward::{forward, Forwarding};

/// The router served to clients on every link.
pub fn client_router(state: Forwarding) -> Router {
    Router::new()
        .route(PATH_MODELS, get(models))
        .route(PATH_CHAT, post(chat))
        .route(PATH_COMPLETIONS, post(completions))
        .route(PATH_BILLING, get(billing))
        .route(PATH_PAYMENT, post(payment))
        .route(PATH_RELEASE, post(release))
        .fallback(|| async {
            error_response(ErrorKind::NotFound, "no such endpoint on a client link")
        })
        .with_state(state)
}

async fn models(State(state): State<Forwarding>) -> Json<ModelList> {
    Json(state.routing.models())
}

/// The client's attested peer identity, attached to every request by the link layer.
type Peer = Option<Extension<Arc<PeerIdentity>>>;

/// The wallet a request is billed to, proven by the request (see
/// [`crate::billing::Billing::paying_client`]).
fn paying_client(
    state: &Forwarding,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<AccountId, BillingError> {
    let peer = peer.as_ref().map(|Extension(peer)| peer.as_ref());
    state.billing.paying_client(peer, headers)
}

fn refuse(stats: &NodeStats, error: &BillingError) -> Response {
    stats.record_error(error.kind());
    error_response(error.kind(), error.to_string())
}

async fn chat(
    State(state): State<Forwarding>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match paying_client(&state, &peer, &headers) {
        Ok(client) => forward(state, PATH_CHAT, client, headers, body).await,
        Err(error) => refuse(&state.stats, &error),
    }
}

async fn completions(
    State(state): State<Forwarding>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match paying_client(&state, &peer, &headers) {
        Ok(client) => forward(state, PATH_COMPLETIONS, client, headers, body).await,
        Err(error) => refuse(&state.stats, &error),
    }
}

/// The client's bill, with the newest payment of its own the proxy holds.
async fn billing(State(state): State<Forwarding>, peer: Peer, headers: HeaderMap) -> Response {
    let statement = paying_client(&state, &peer, &headers)
        .and_then(|client| state.billing.client_statement(client));
    match statement {
        Ok(statement) => json_response(http::StatusCode::OK, &statement),
        Err(error) => refuse(&state.stats, &error),
    }
}

/// Largest payment body: a voucher's JSON is under 400 bytes.
const MAX_PAYMENT_BYTES: usize = 4096;

/// A payment the client sends while no request carries it.
async fn payment(
    State(state): State<Forwarding>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = match paying_client(&state, &peer, &headers) {
        Ok(client) => client,
        Err(error) => return refuse(&state.stats, &error),
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAYMENT_BYTES).await else {
        return error_response(
            ErrorKind::PayloadTooLarge,
            "a payment is one voucher".to_owned(),
        );
    };
    let accepted = serde_json::from_slice::<SignedVoucher>(&bytes)
        .map_err(|e| BillingError::BadPayment(format!("unreadable voucher: {e}")))
        .and_then(|voucher| state.billing.accept_payment(client, voucher));
    let accepted = match accepted {
        Ok(()) => state.billing.payments_written().await,
        refused => refused,
    };
    match accepted {
        Ok(()) => http::StatusCode::NO_CONTENT.into_response(),
        Err(error) => refuse(&state.stats, &error),
    }
}

/// The client's release for closing its channel at once (see
/// [`crate::billing::Billing::release`]); from the first ask on, it is served no more.
async fn release(State(state): State<Forwarding>, peer: Peer, headers: HeaderMap) -> Response {
    let client = match paying_client(&state, &peer, &headers) {
        Ok(client) => client,
        Err(error) => return refuse(&state.stats, &error),
    };
    match state.billing.release(client).await {
        Ok(release) => json_response(http::StatusCode::OK, &release),
        Err(error) => refuse(&state.stats, &error),
    }
}
