//! What the proxy serves to clients on each link: the models it can route to and the two
//! OpenAI endpoints, which go down the request path ([`crate::forward`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cocoon_node::reply::{error_response, json_response};
use cocoon_node::Body;
use cocoon_proto::link::{ModelList, PATH_BILLING, PATH_CHAT, PATH_COMPLETIONS, PATH_MODELS};
use cocoon_proto::ErrorKind;
use cocoon_ratls::PeerIdentity;
use http::HeaderMap;

use crate::billing::{wallet_of, BillingError};
use crate::forward::{forward, Forwarding};

/// The router served to clients on every link.
pub fn client_router(state: Forwarding) -> Router {
    Router::new()
        .route(PATH_MODELS, get(models))
        .route(PATH_CHAT, post(chat))
        .route(PATH_COMPLETIONS, post(completions))
        .route(PATH_BILLING, get(billing))
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

/// The wallet the client's attestation names.
fn client_wallet(peer: Peer) -> Option<cocoon_ledger::AccountId> {
    peer.and_then(|Extension(peer)| wallet_of(&peer))
}

async fn chat(
    State(state): State<Forwarding>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    forward(state, PATH_CHAT, client_wallet(peer), headers, body).await
}

async fn completions(
    State(state): State<Forwarding>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    forward(state, PATH_COMPLETIONS, client_wallet(peer), headers, body).await
}

/// The client's bill with the proxy's voucher for it.
async fn billing(State(state): State<Forwarding>, peer: Peer) -> Response {
    let statement = client_wallet(peer)
        .ok_or(BillingError::NoWallet)
        .and_then(|client| state.billing.client_statement(client));
    match statement {
        Ok(statement) => json_response(http::StatusCode::OK, &statement),
        Err(error) => error_response(error.kind(), error.to_string()),
    }
}
