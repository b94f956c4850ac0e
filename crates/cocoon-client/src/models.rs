//! OpenAI's model endpoints, answered from the proxy's [`ModelList`]: `GET /v1/models` and
//! `GET /v1/models/{id}` (404 `model_not_found` for a model no worker serves now). `created` is
//! when the model became available: the earliest start among the workers serving it now.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cocoon_node::link::get_json;
use cocoon_node::reply::json_response;
use cocoon_proto::link::{ModelEntry, ModelList, PATH_MODELS};
use cocoon_proto::ErrorKind;
use http::StatusCode;
use serde_json::{json, Value};

use crate::http::{no_proxy, Api, Failure};

/// `GET /v1/models`.
pub(crate) async fn models(State(api): State<Arc<Api>>) -> Response {
    match model_list(&api).await {
        Ok(list) => {
            let data: Vec<Value> = list.models.iter().map(model_json).collect();
            json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET /v1/models/{id}`.
pub(crate) async fn model(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match model_list(&api).await {
        Ok(list) => match list.models.iter().find(|model| model.id == id) {
            Some(model) => json_response(StatusCode::OK, &model_json(model)),
            None => {
                let mut failure = Failure::new(
                    ErrorKind::ModelNotFound,
                    format!("the model `{id}` does not exist or no worker serves it now"),
                );
                failure.error = failure.error.with_param("model");
                failure.into_response()
            }
        },
        Err(failure) => failure.into_response(),
    }
}

async fn model_list(api: &Api) -> Result<ModelList, Failure> {
    let link = api.links.current().ok_or_else(no_proxy)?;
    get_json::<ModelList>(&link.sender, PATH_MODELS)
        .await
        .map_err(|error| {
            Failure::new(
                ErrorKind::BadGateway,
                format!("the proxy did not list its models: {error}"),
            )
        })
}

/// One model in OpenAI's shape, with Cocoon's routing facts beside it.
fn model_json(model: &ModelEntry) -> Value {
    json!({
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "cocoon",
        "context_length": model.context_length,
        "workers": model.workers,
        "min_coefficient": model.min_coefficient,
        "max_coefficient": model.max_coefficient,
        "free_slots": model.free_slots,
    })
}
