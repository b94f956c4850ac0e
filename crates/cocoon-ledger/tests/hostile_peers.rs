//! The ledger facing hostile peers, and its client facing a hostile ledger, over real loopback
//! HTTP: bloat, non-JSON rejections, log pages, shutdown under long polls, unbounded answers.

use std::sync::Arc;
use std::time::Duration;

use cocoon_ledger::api::{LogQuery, MAX_LOG_PAGE_BYTES, MAX_RESPONSE_BYTES, MAX_TRANSACTION_BYTES};
use cocoon_ledger::{spawn, ApiError, ClientError, LedgerClient, LedgerHandle};
use cocoon_money::registry::{MAX_IMAGE_HASHES, MAX_MODELS, MAX_NAME_LEN, MAX_REGISTERED_PROXIES};
use cocoon_money::{
    AccountId, Hash32, RegisteredProxy, Registry, Settlement, SignedTransaction, TransactionBody,
};
use cocoon_proto::clock::ManualClock;
use futures::StreamExt;

mod common;

use common::*;

async fn ledger(dir: &tempfile::TempDir) -> LedgerHandle {
    spawn(&config(dir), Arc::new(ManualClock::new(START)))
        .await
        .unwrap()
}

/// Posts `body` as JSON to the transaction endpoint; returns the status and the decoded error.
async fn post_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, ApiError) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/transactions"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let error = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer {status} is not an ApiError ({e}): {text:?}"));
    (status, error)
}

/// A registry at every size limit, with the longest names allowed.
fn largest_registry(owner: AccountId, version: u64) -> Registry {
    let mut registry = Registry::new(owner);
    registry.version = version;
    let name = |i: usize| format!("{i:05}{}", "n".repeat(MAX_NAME_LEN - 5));
    let endpoint = |i: usize, port: u16| format!("{i:05}{}:{port}", "h".repeat(MAX_NAME_LEN - 11));
    registry.proxies = (0..MAX_REGISTERED_PROXIES)
        .map(|i| RegisteredProxy {
            seqno: u64::MAX - i as u64,
            worker_endpoint: endpoint(i, 65_000),
            client_endpoint: endpoint(i, 65_001),
        })
        .collect();
    registry.models = (0..MAX_MODELS)
        .map(|i| (name(i), Hash32([0xee; 32])))
        .collect();
    registry.proxy_image_hashes = (0..MAX_IMAGE_HASHES)
        .map(|i| Hash32([i as u8; 32]))
        .collect();
    registry.worker_image_hashes = registry.proxy_image_hashes.clone();
    registry
}

#[tokio::test]
async fn padded_or_oversized_transactions_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = ledger(&dir).await;
    let url = server.url();
    let client = LedgerClient::new(&url, key(CLIENT)).unwrap();
    client.faucet(1_000).await.unwrap();

    let transfer = TransactionBody::Transfer {
        to: id(OWNER),
        amount: 1,
    };
    let signed = SignedTransaction::sign(&key(CLIENT), 2, transfer.clone()).unwrap();
    let mut envelope = serde_json::to_value(&signed).unwrap();

    // Unknown fields in the envelope, however small.
    envelope["padding"] = "x".repeat(1_000).into();
    let (status, error) = post_raw(&url, "application/json", envelope.to_string().into()).await;
    assert_eq!((status, error.status()), (400, 400), "{error}");

    // Padding inside the signed payload: correctly signed, still refused.
    let payload = format!(
        "{{\"nonce\":2,\"body\":{},\"padding\":\"{}\"}}",
        serde_json::to_string(&transfer).unwrap(),
        "x".repeat(10_000)
    );
    let mut message = b"cocoon-ledger-tx-v1\0".to_vec();
    message.extend_from_slice(id(CLIENT).as_bytes());
    message.extend_from_slice(payload.as_bytes());
    let padded = serde_json::json!({
        "signer": id(CLIENT),
        "payload": payload,
        "signature": cocoon_money::SignatureBytes::from(
            ed25519_dalek::Signer::sign(&key(CLIENT), &message)
        ),
    });
    let (status, error) = post_raw(&url, "application/json", padded.to_string().into()).await;
    assert_eq!(status, 400, "{error}");

    // Over the body limit: a JSON 413 whatever the content.
    let huge = vec![b' '; MAX_TRANSACTION_BYTES + 1];
    let (status, error) = post_raw(&url, "application/json", huge).await;
    assert_eq!(status, 413);
    assert!(matches!(error, ApiError::TooLarge { .. }), "{error}");

    let stats = client.stats().await.unwrap();
    assert_eq!(stats.last_seq, 1, "only the faucet grant is in the log");
    // The canonical transaction itself goes through.
    client.submit_signed(&signed).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bodies_of_the_wrong_type_or_size_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ledger(&dir).await;
    let url = server.url();
    // (Queries, paths, routes and methods: `bad_requests_get_typed_errors` in http_roundtrip.rs.)
    let (status, error) = post_raw(&url, "text/plain", b"{}".to_vec()).await;
    assert_eq!((status, error.status()), (415, 415), "{error}");
    let (status, error) = post_raw(&url, "application/json", b"{not json".to_vec()).await;
    assert_eq!((status, error.status()), (400, 400), "{error}");
    let (status, _) = post_raw(
        &url,
        "application/json",
        vec![b'x'; MAX_TRANSACTION_BYTES + 1],
    )
    .await;
    assert_eq!(status, 413);

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_largest_registry_fits_and_log_pages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ledger(&dir).await;
    let url = server.url();
    let owner = LedgerClient::new(&url, key(OWNER)).unwrap();

    let updates = 2 + MAX_LOG_PAGE_BYTES / (MAX_TRANSACTION_BYTES / 2);
    for version in 2..2 + updates as u64 {
        let registry = largest_registry(id(OWNER), version);
        owner
            .submit(TransactionBody::UpdateRegistry { registry })
            .await
            .unwrap();
    }
    // One more item than allowed is refused.
    let mut registry = largest_registry(id(OWNER), 1_000);
    registry
        .models
        .insert("one-too-many".into(), Hash32([1; 32]));
    assert!(owner
        .submit(TransactionBody::UpdateRegistry { registry })
        .await
        .unwrap_err()
        .rule()
        .is_some());

    let mut after = 0;
    let mut pages = 0;
    while after < updates as u64 {
        let page = owner.log(LogQuery { after, limit: None }).await.unwrap();
        assert!(!page.is_empty());
        let bytes = serde_json::to_vec(&page).unwrap().len();
        assert!(
            bytes <= MAX_LOG_PAGE_BYTES + 64 * 1024,
            "page of {bytes} bytes"
        );
        after = page.last().unwrap().seq;
        pages += 1;
    }
    assert!(
        pages >= 2,
        "{updates} large entries came in {pages} page(s)"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_registry_long_polls_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ledger(&dir).await;
    let url = server.url();
    let watcher = LedgerClient::read_only(&url).unwrap();
    let version = watcher.registry().await.unwrap().version;
    let poll = tokio::spawn(async move {
        watcher
            .registry_answer_newer_than(version, Duration::from_secs(3_600))
            .await
    });
    let reader = LedgerClient::read_only(&url).unwrap();
    while reader.stats().await.unwrap().registry_watchers == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The poll would wait 30 s (the server's cap); shutting down must not wait for it.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown waited for a registry long poll")
        .unwrap();
    let answered = poll.await.unwrap().unwrap();
    assert_eq!(answered.registry.version, version);
}

/// A ledger impostor that answers every request with `body`.
async fn impostor(body: impl Fn() -> axum::body::Body + Clone + Send + Sync + 'static) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { axum::response::Response::new(body()) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_client_reads_no_answer_beyond_its_cap_or_its_deadline() {
    // Declared too long, and streamed (no length) too long.
    let declared = impostor(|| axum::body::Body::from(vec![b'0'; MAX_RESPONSE_BYTES + 1])).await;
    let streamed = impostor(|| {
        let chunk = axum::body::Bytes::from(vec![b'0'; 64 * 1024]);
        let chunks = (0..1 << 14).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        axum::body::Body::from_stream(futures::stream::iter(chunks))
    })
    .await;
    for url in [declared, streamed] {
        let client = LedgerClient::read_only(&url).unwrap();
        assert!(
            matches!(
                client.stats().await,
                Err(ClientError::TooLarge {
                    limit: MAX_RESPONSE_BYTES
                })
            ),
            "{url}"
        );
    }

    // A body that never ends ends at the client's deadline.
    let stalled = impostor(|| {
        let first = Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{"));
        axum::body::Body::from_stream(
            futures::stream::iter([first]).chain(futures::stream::pending()),
        )
    })
    .await;
    let client = LedgerClient::read_only(&stalled)
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .unwrap();
    assert!(matches!(client.stats().await, Err(ClientError::Http(e)) if e.is_timeout()));
}
