//! What the proxy serves to clients on each link: the models it can route to and the two
//! OpenAI endpoints, which go down the request path ([`crate::forward`]).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_node::reply::error_response;
use cocoon_node::Body;
use cocoon_proto::link::{ModelList, PATH_CHAT, PATH_COMPLETIONS, PATH_MODELS};
use cocoon_proto::ErrorKind;
use http::HeaderMap;

use crate::forward::{forward, Forwarding};

/// The router served to clients on every link.
pub fn client_router(state: Forwarding) -> Router {
    Router::new()
        .route(PATH_MODELS, get(models))
        .route(PATH_CHAT, post(chat))
        .route(PATH_COMPLETIONS, post(completions))
        .fallback(|| async { error_response(ErrorKind::NotFound, "no such endpoint on a client link") })
        .with_state(state)
}

async fn models(State(state): State<Forwarding>) -> Json<ModelList> {
    Json(state.routing.models())
}

async fn chat(State(state): State<Forwarding>, headers: HeaderMap, body: Body) -> Response {
    forward(state, PATH_CHAT, headers, body).await
}

async fn completions(State(state): State<Forwarding>, headers: HeaderMap, body: Body) -> Response {
    forward(state, PATH_COMPLETIONS, headers, body).await
}
