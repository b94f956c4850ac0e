//! The worker's inference engine, behind one interface: an OpenAI-compatible HTTP service, either a
//! server reached over HTTP (vLLM, SGLang, llama.cpp, Ollama…) or a router running in-process (the
//! embedded llama.cpp engine, or the synthetic one). Either way the worker speaks OpenAI JSON to
//! it, so one forwarding path serves all engines.

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use cocoon_node::Body;
use http::{header, HeaderValue, Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

/// Why the engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine URL is not a valid `http://host:port[/prefix]` URL.
    #[error("engine URL `{0}` is invalid: {1}")]
    BadUrl(String, String),
    /// The engine could not be connected to: the request never reached it.
    #[error("engine at {0} is unreachable: {1}")]
    Unreachable(String, String),
    /// The engine had the request and failed before answering (its connection broke): the request
    /// may be what broke it.
    #[error("engine at {0} failed while it had the request: {1}")]
    Failed(String, String),
}

impl EngineError {
    /// Whether the engine received the request. One that did not can be sent to another worker;
    /// one that did may have been broken by the request, which must then go nowhere else.
    pub fn reached_engine(&self) -> bool {
        matches!(self, EngineError::Failed(..))
    }
}

/// An OpenAI-compatible engine.
#[derive(Clone)]
pub enum Engine {
    /// A server reached over HTTP/1.1 with pooled connections.
    Http {
        /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000`.
        base: String,
        /// Pooled HTTP client (boxed: it is large, and cloned with the engine).
        client: Box<Client<HttpConnector, Body>>,
    },
    /// A router served in this process.
    InProcess(Router),
}

impl Engine {
    /// An engine reached at `base` (`http://host:port`, optionally with a path prefix).
    pub fn http(base: &str) -> Result<Engine, EngineError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|error: http::uri::InvalidUri| {
            EngineError::BadUrl(base.clone(), error.to_string())
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(EngineError::BadUrl(
                base,
                "expected http://host:port (engines are local to the TEE; TLS is not needed)"
                    .into(),
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Engine::Http {
            base,
            client: Box::new(client),
        })
    }

    /// POSTs an OpenAI JSON body to `path` (e.g. `/v1/chat/completions`).
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Response<Body>, EngineError> {
        match self {
            Engine::Http { base, client } => {
                let request = json_request(&format!("{base}{path}"), body)
                    .map_err(|error| EngineError::BadUrl(base.clone(), error.to_string()))?;
                let response = client.request(request).await.map_err(|error| {
                    let why = error_chain(&error);
                    if error.is_connect() {
                        EngineError::Unreachable(base.clone(), why)
                    } else {
                        EngineError::Failed(base.clone(), why)
                    }
                })?;
                Ok(response.map(Body::new))
            }
            Engine::InProcess(router) => {
                let request = json_request(path, body)
                    .map_err(|error| EngineError::BadUrl(path.to_owned(), error.to_string()))?;
                match router.clone().oneshot(request).await {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                }
            }
        }
    }
}

fn json_request(uri: &str, body: Bytes) -> Result<Request<Body>, http::Error> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(Body::from(body))
}

/// The error and its causes on one line (hyper's top-level messages alone say little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_urls_that_are_not_plain_http() {
        assert!(matches!(
            Engine::http("ftp://x"),
            Err(EngineError::BadUrl(..))
        ));
        assert!(matches!(
            Engine::http("not a url"),
            Err(EngineError::BadUrl(..))
        ));
        assert!(Engine::http("http://127.0.0.1:8000/").is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_reported_with_its_address() {
        // Port 9 (discard) is closed on loopback in test environments.
        let engine = Engine::http("http://127.0.0.1:9").unwrap();
        let error = engine
            .post("/v1/completions", Bytes::from("{}"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
        assert!(!error.reached_engine());
    }

    #[tokio::test]
    async fn an_engine_that_breaks_while_it_has_the_request_is_told_apart() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // An engine that reads the request and dies without answering.
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
        });
        let engine = Engine::http(&format!("http://{addr}")).unwrap();
        let error = engine
            .post("/v1/completions", Bytes::from("{}"))
            .await
            .unwrap_err();
        assert!(error.reached_engine(), "{error}");
        assert!(
            error.to_string().contains("while it had the request"),
            "{error}"
        );
    }
}
