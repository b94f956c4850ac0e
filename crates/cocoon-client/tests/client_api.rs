//! The client against an in-process fake proxy: a real RA-TLS acceptor on loopback serving a small
//! router on the link, and the client's API driven with reqwest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cocoon_client::{start, ClientConfig, RunningClient};
use cocoon_ledger::LocalLedger;
use cocoon_money::Settlement;
use cocoon_node::attestation::{AttestationArgs, NodeTrust};
use cocoon_node::link::serve;
use cocoon_node::reply::error_response;
use cocoon_node::Body;
use cocoon_proto::headers::{
    COEFFICIENT, ERROR, MAX_COEFFICIENT, MODEL_HASH, REQUEST_ID, TIMEOUT_MS, USAGE, WORKER_IMAGE,
};
use cocoon_proto::link::{ModelEntry, ModelList, PATH_CHAT, PATH_COMPLETIONS, PATH_MODELS};
use cocoon_proto::{ErrorKind, OpenAiError};
use cocoon_tee::AttestationKind;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MODEL: &str = "test-model";
const WORKER_IMAGE_HEX: &str = "ab";
const MODEL_HASH_HEX: &str = "cd";
const CHUNK_1: &str = r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
const CHUNK_2: &str = r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#;
const USAGE_CHUNK: &str =
    r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
const USAGE_TRAILER: &str = r#"{"prompt_tokens":3,"completion_tokens":2}"#;

fn attestation(label: &str) -> AttestationArgs {
    AttestationArgs {
        tee: AttestationKind::Fake,
        image_label: label.to_owned(),
        cert_lifetime_secs: 3600,
        pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
    }
}

/// What the fake proxy saw of one request.
struct Seen {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct FakeProxy {
    coefficient: u32,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Told when an answer's body is dropped (the client went away).
    dropped: mpsc::UnboundedSender<()>,
}

struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

struct ProxyHandle {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    dropped: mpsc::UnboundedReceiver<()>,
}

/// Starts a fake proxy whose answers carry `coefficient`, so tests can tell proxies apart.
async fn fake_proxy(coefficient: u32) -> ProxyHandle {
    // A proxy names the wallet its clients pay.
    let wallet = cocoon_money::AccountId::from(&ed25519_dalek::SigningKey::from_bytes(&[0x22; 32]));
    let attributes = cocoon_node::wallet::with_wallet(BTreeMap::new(), wallet);
    let trust = NodeTrust::new(&attestation("fake-proxy"), "proxy", attributes)
        .await
        .unwrap();
    let acceptor = Arc::new(
        trust
            .acceptor(
                &trust
                    .fixed_peer_policy("client", &[], AttestationKind::Fake)
                    .unwrap(),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = FakeProxy {
        coefficient,
        seen: seen.clone(),
        dropped: dropped_tx,
    };
    let router = Router::new()
        .route(PATH_MODELS, get(models))
        .route(PATH_CHAT, post(complete))
        .route(PATH_COMPLETIONS, post(complete))
        .with_state(state);
    tokio::spawn(async move {
        let _trust = trust;
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                if let Ok((tls, _peer)) = acceptor.accept(tcp).await {
                    let never = CancellationToken::new();
                    let _ = serve(tls, router, &never, Duration::ZERO).await;
                }
            });
        }
    });
    ProxyHandle {
        address,
        seen,
        dropped,
    }
}

async fn models() -> Json<ModelList> {
    Json(ModelList {
        models: vec![ModelEntry {
            id: MODEL.to_owned(),
            workers: 2,
            min_coefficient: 1000,
            max_coefficient: 1500,
            free_slots: 7,
            created: 1_700_000_000,
            context_length: Some(8192),
        }],
    })
}

fn data(text: &str) -> Result<Frame<Bytes>, std::convert::Infallible> {
    Ok(Frame::data(Bytes::from(format!("data: {text}\n\n"))))
}

fn trailer(name: &'static str, value: &str) -> Result<Frame<Bytes>, std::convert::Infallible> {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_str(value).unwrap());
    Ok(Frame::trailers(map))
}

async fn complete(State(proxy): State<FakeProxy>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    proxy.seen.lock().unwrap().push(Seen { headers, body });
    let frames = match model.as_str() {
        MODEL => {
            if stream {
                vec![
                    data(CHUNK_1),
                    data(CHUNK_2),
                    data(USAGE_CHUNK),
                    data("[DONE]"),
                    trailer(USAGE, USAGE_TRAILER),
                ]
            } else {
                let answer = json!({"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}]});
                vec![
                    Ok(Frame::data(Bytes::from(answer.to_string()))),
                    trailer(USAGE, USAGE_TRAILER),
                ]
            }
        }
        "dies" => {
            let error = OpenAiError::new(ErrorKind::BadGateway, "the worker went away");
            vec![
                data(CHUNK_1),
                trailer(ERROR, &serde_json::to_string(&error).unwrap()),
            ]
        }
        "endless" => {
            // A token every 20 ms forever; the signal fires when the body is dropped.
            let signal = DropSignal(proxy.dropped.clone());
            let ticks = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((data(CHUNK_1), ()))
            })
            .map(move |frame| {
                let _ = &signal;
                frame
            });
            return answer(&proxy, true, Body::new(StreamBody::new(ticks)));
        }
        "busy" => {
            return error_response(
                ErrorKind::Unavailable,
                "no worker for model busy at coefficient ≤ 1000 (cheapest is 2000)",
            )
        }
        _ => return error_response(ErrorKind::ModelNotFound, format!("no model {model}")),
    };
    answer(
        &proxy,
        stream,
        Body::new(StreamBody::new(futures::stream::iter(frames))),
    )
}

fn answer(proxy: &FakeProxy, stream: bool, body: Body) -> Response {
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    (
        [
            ("content-type", content_type.to_owned()),
            (COEFFICIENT, proxy.coefficient.to_string()),
            (WORKER_IMAGE, WORKER_IMAGE_HEX.to_owned()),
            (MODEL_HASH, MODEL_HASH_HEX.to_owned()),
        ],
        body,
    )
        .into_response()
}

struct Client {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    running: Option<RunningClient>,
    /// The ledger the client reads the registry from.
    _ledger: cocoon_ledger::LedgerHandle,
    /// The client's wallet and the ledger's database live here for the test's lifetime.
    _data_dir: tempfile::TempDir,
}

/// A ledger on a free port with a default registry (any image, no registered proxies).
async fn ledger(dir: &std::path::Path) -> cocoon_ledger::LedgerHandle {
    let config = cocoon_ledger::LedgerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("ledger.sqlite3"),
        owner: Some(cocoon_money::AccountId::from(&owner_key())),
        ..cocoon_ledger::LedgerConfig::default()
    };
    let ledger = cocoon_ledger::spawn(&config, Arc::new(cocoon_proto::clock::SystemClock))
        .await
        .unwrap();
    // Clients read only versions the owner signed; the genesis one is not.
    let owner = cocoon_ledger::LedgerClient::new(&ledger.url(), owner_key()).unwrap();
    let mut registry = owner.registry().await.unwrap();
    registry.version += 1;
    owner
        .submit(cocoon_money::TransactionBody::UpdateRegistry { registry })
        .await
        .unwrap();
    ledger
}

/// The key that owns the test ledgers' registry.
fn owner_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x11; 32])
}

impl Client {
    async fn start(proxies: Vec<String>, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
        let data_dir = tempfile::tempdir().unwrap();
        let ledger = ledger(data_dir.path()).await;
        let mut config = ClientConfig {
            listen: "127.0.0.1:0".to_owned(),
            ledger: ledger.url(),
            proxy: proxies,
            registry_owner: cocoon_money::AccountId::from(&owner_key()).to_string(),
            data_dir: data_dir.path().to_owned(),
            attestation: attestation("test-client"),
            min_peer_tee: AttestationKind::Fake,
            // The fake proxy sends no receipts, which a paying client would refuse to pay for
            // (payments are tested end to end in `cocoon`'s `client_payments`).
            test_only_withhold_payments: true,
            ..ClientConfig::default()
        };
        config.api_key.clear();
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let backend = LocalLedger::new(&config.ledger);
        let running = start(config, &backend, shutdown.clone()).await.unwrap();
        Client {
            base: format!("http://{}", running.local_addr),
            http: reqwest::Client::new(),
            shutdown,
            running: Some(running),
            _ledger: ledger,
            _data_dir: data_dir,
        }
    }

    /// Waits until a proxy link is up (the models listing answers).
    async fn until_linked(&self) {
        for _ in 0..200 {
            let response = self.get("/jsonstats").await;
            let stats: Value = response.json().await.unwrap();
            if stats["connected_peers"].as_i64() > Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no proxy link within 10 s");
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), running.wait())
            .await
            .expect("the client stops after shutdown")
            .unwrap();
    }
}

fn chat_body(model: &str, extra: Value) -> String {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body.to_string()
}

async fn error_of(response: reqwest::Response) -> (StatusCode, OpenAiError) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let text = response.text().await.unwrap();
    let error =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not OpenAI error JSON: {text}"));
    (status, error)
}

#[tokio::test]
async fn streaming_chat_passes_through_with_cocoon_headers_and_without_the_usage_chunk() {
    let mut proxy = fake_proxy(1500).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    let body = chat_body(
        MODEL,
        json!({"stream": true, "max_coefficient": 1200, "timeout": 5}),
    );
    let response = client.post(PATH_CHAT, body).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers[COEFFICIENT], "1500");
    assert_eq!(headers[WORKER_IMAGE], WORKER_IMAGE_HEX);
    assert_eq!(headers[MODEL_HASH], MODEL_HASH_HEX);
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        format!("data: {CHUNK_1}\n\ndata: {CHUNK_2}\n\ndata: [DONE]\n\n")
    );

    // The proxy got the settings as headers and a body without them.
    {
        let seen = proxy.seen.lock().unwrap();
        let request = &seen[0];
        assert_eq!(request.headers[MAX_COEFFICIENT], "1200");
        assert_eq!(request.headers[TIMEOUT_MS], "5000");
        assert_eq!(request.headers[REQUEST_ID], headers[REQUEST_ID]);
        assert!(request.body.get("max_coefficient").is_none());
        assert!(request.body.get("timeout").is_none());
        assert_eq!(request.body["messages"][0]["content"], "hi");
    }

    // Asking for usage keeps the usage chunk; defaults apply when the app sets nothing.
    let body = chat_body(
        MODEL,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let text = client.post(PATH_CHAT, body).await.text().await.unwrap();
    assert_eq!(
        text,
        format!("data: {CHUNK_1}\n\ndata: {CHUNK_2}\n\ndata: {USAGE_CHUNK}\n\ndata: [DONE]\n\n")
    );
    {
        let seen = proxy.seen.lock().unwrap();
        assert_eq!(seen[1].headers[MAX_COEFFICIENT], "4000");
        assert_eq!(seen[1].headers[TIMEOUT_MS], "300000");
    }

    // Tokens from the usage trailers are counted.
    let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
    assert_eq!(stats["tokens"]["completion"], 4);
    assert_eq!(stats["details"]["proxies"][0]["up"], true);
    assert!(proxy.dropped.try_recv().is_err());
    client.stop().await;
}

#[tokio::test]
async fn non_streaming_chat_and_completions_answer_json() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    let response = client.post(PATH_CHAT, chat_body(MODEL, json!({}))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[COEFFICIENT], "1000");
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello");

    let body = json!({"model": MODEL, "prompt": "Once upon"}).to_string();
    let response = client.post(PATH_COMPLETIONS, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
    assert_eq!(proxy.seen.lock().unwrap()[1].body["prompt"], "Once upon");
    // Usage from the trailers of whole (non-streamed) answers is counted too.
    let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
    assert_eq!(stats["tokens"]["completion"], 4);
    client.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_fitting_statuses() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |config| {
        config.max_body_bytes = 1024;
    })
    .await;
    client.until_linked().await;

    let (status, error) = error_of(client.post(PATH_CHAT, "{oops").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error.kind(), Some(ErrorKind::InvalidRequest));

    let (status, error) = error_of(client.post(PATH_CHAT, r#"{"model":"m"}"#).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error.error.param.as_deref(), Some("messages"));

    let body = chat_body(MODEL, json!({"n": "two"}));
    let (status, error) = error_of(client.post(PATH_CHAT, body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error.error.param.as_deref(), Some("n"));

    let body = chat_body(MODEL, json!({"stream": 1}));
    let (_, error) = error_of(client.post(PATH_CHAT, body).await).await;
    assert_eq!(error.error.param.as_deref(), Some("stream"));

    let (_, error) = error_of(client.post(PATH_COMPLETIONS, r#"{"model":"m"}"#).await).await;
    assert_eq!(error.error.param.as_deref(), Some("prompt"));

    let big = chat_body(MODEL, json!({"padding": "x".repeat(2000)}));
    let (status, error) = error_of(client.post(PATH_CHAT, big).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error.kind(), Some(ErrorKind::PayloadTooLarge));

    // Errors decided by the proxy pass through with their status.
    let (status, error) =
        error_of(client.post(PATH_CHAT, chat_body("nope", json!({}))).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error.kind(), Some(ErrorKind::ModelNotFound));
    let (status, error) =
        error_of(client.post(PATH_CHAT, chat_body("busy", json!({}))).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.error.message.contains("cheapest is 2000"));

    let (status, error) = error_of(client.get("/v1/nothing").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error.kind(), Some(ErrorKind::NotFound));

    // Nothing invalid reached the proxy.
    assert_eq!(proxy.seen.lock().unwrap().len(), 2);
    let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
    assert_eq!(stats["errors"]["invalid_request"], 5);
    client.stop().await;
}

#[tokio::test]
async fn api_keys_guard_the_openai_routes_only() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |config| {
        config.api_key = vec!["sk-test".to_owned()];
    })
    .await;
    client.until_linked().await;
    let url = format!("{}{PATH_CHAT}", client.base);
    let body = chat_body(MODEL, json!({}));

    let response = client
        .http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error.kind(), Some(ErrorKind::Unauthorized));

    let response = client
        .http
        .post(&url)
        .bearer_auth("sk-wrong")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let response = client
        .http
        .post(&url)
        .bearer_auth("sk-test")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = client.get("/v1/models").await;
    assert_eq!(response.status(), 401);
    // Monitoring needs no key (this fake proxy names no wallet, so the client is not ready).
    assert_eq!(client.get("/jsonstats").await.status(), 200);
    assert_eq!(client.get("/healthz").await.status(), 503);
    let metrics = client.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("cocoon_requests_total"), "{metrics}");
    client.stop().await;
}

#[tokio::test]
async fn models_and_attestation_come_from_the_proxy() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    let models: Value = client.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["workers"], 2);
    assert_eq!(models["data"][0]["min_coefficient"], 1000);
    assert_eq!(models["data"][0]["max_coefficient"], 1500);

    let attestation: Value = client.get("/v1/attestation").await.json().await.unwrap();
    assert_eq!(attestation["proxy"], proxy.address.to_string());
    assert_eq!(attestation["kind"], "fake");
    assert_eq!(attestation["role"], "proxy");
    let expected = NodeTrust::new(&attestation_args_for_proxy(), "proxy", BTreeMap::new())
        .await
        .unwrap()
        .image_hash()
        .to_string();
    assert_eq!(attestation["image_hash"], expected);
    assert_eq!(attestation["cert_fingerprint"].as_str().unwrap().len(), 64);
    assert!(attestation["measurements"].is_object());
    client.stop().await;
}

fn attestation_args_for_proxy() -> AttestationArgs {
    attestation("fake-proxy")
}

#[tokio::test]
async fn a_worker_dying_mid_stream_ends_the_app_stream_with_an_error_event() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    let body = chat_body("dies", json!({"stream": true}));
    let response = client.post(PATH_CHAT, body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0], format!("data: {CHUNK_1}"));
    let error: OpenAiError =
        serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error.error.message, "the worker went away");
    assert!(!text.contains("[DONE]"));
    client.stop().await;
}

#[tokio::test]
async fn an_app_going_away_cancels_the_stream_upstream() {
    let mut proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    let body = chat_body("endless", json!({"stream": true}));
    let mut response = client.post(PATH_CHAT, body).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(response);
    tokio::time::timeout(Duration::from_secs(5), proxy.dropped.recv())
        .await
        .expect("the proxy's answer is dropped once the app goes away")
        .unwrap();
    client.stop().await;
}

#[tokio::test]
async fn the_timeout_ends_a_stream_with_a_timeout_error() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |_| {}).await;
    client.until_linked().await;

    // The fake proxy ignores the deadline; the client's own backstop (deadline + 1 s) ends it.
    let body = chat_body("endless", json!({"stream": true, "timeout": 0.2}));
    let response = client.post(PATH_CHAT, body).await;
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let error: OpenAiError = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error.kind(), Some(ErrorKind::Timeout));
    client.stop().await;
}

#[tokio::test]
async fn no_proxy_link_means_503() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = unused.local_addr().unwrap().to_string();
    drop(unused);
    let client = Client::start(vec![address], |_| {}).await;

    let (status, error) = error_of(client.post(PATH_CHAT, chat_body(MODEL, json!({}))).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error.kind(), Some(ErrorKind::Unavailable));
    assert_eq!(client.get("/v1/models").await.status(), 503);
    assert_eq!(client.get("/v1/attestation").await.status(), 503);
    let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
    assert_eq!(stats["details"]["proxies"][0]["up"], false);
    client.stop().await;
}

#[tokio::test]
async fn the_first_healthy_proxy_is_preferred() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = unused.local_addr().unwrap().to_string();
    drop(unused);
    let first = fake_proxy(1111).await;
    let second = fake_proxy(2222).await;
    let client = Client::start(
        vec![dead, first.address.to_string(), second.address.to_string()],
        |_| {},
    )
    .await;
    // Wait for both live links, so preference (not dialing order) decides.
    for _ in 0..200 {
        let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
        if stats["connected_peers"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let response = client.post(PATH_CHAT, chat_body(MODEL, json!({}))).await;
        assert_eq!(response.headers()[COEFFICIENT], "1111");
    }
    assert!(second.seen.lock().unwrap().is_empty());
    client.stop().await;
}

#[tokio::test]
async fn a_taken_port_fails_start_clearly() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let config = ClientConfig {
        listen: taken.local_addr().unwrap().to_string(),
        registry_owner: cocoon_money::AccountId::from(&owner_key()).to_string(),
        data_dir: data_dir.path().to_owned(),
        attestation: attestation("test-client"),
        min_peer_tee: AttestationKind::Fake,
        ..ClientConfig::default()
    };
    let backend = LocalLedger::new(&config.ledger);
    let error = match start(config, &backend, CancellationToken::new()).await {
        Ok(_) => panic!("started on a taken port"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("cannot listen on"), "{error:#}");
}

#[tokio::test]
async fn a_proxy_outside_the_allowed_images_is_refused() {
    let proxy = fake_proxy(1000).await;
    let client = Client::start(vec![proxy.address.to_string()], |config| {
        config.allow_proxy_image = vec!["00".repeat(32)];
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = error_of(client.post(PATH_CHAT, chat_body(MODEL, json!({}))).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let stats: Value = client.get("/jsonstats").await.json().await.unwrap();
    let last_error = stats["details"]["proxies"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(!last_error.is_empty(), "{stats}");
    assert!(proxy.seen.lock().unwrap().is_empty());
    client.stop().await;
}
