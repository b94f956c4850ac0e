//! End-to-end: a node believes only the registry owner it pins. A stub ledger (an axum server in
//! the test) serves genuine owner-signed registry versions and then others: a registry signed by
//! another key, and an older genuine one, also to a client restarted on its data directory. The
//! client refuses them and keeps the last good version.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cocoon_money::{AccountId, Registry, RegistryAnswer};
use ed25519_dalek::SigningKey;
use serde_json::Value;

/// A ledger that answers `GET /v1/registry` (any query) with whatever the test set.
struct StubLedger {
    url: String,
    answer: Arc<Mutex<RegistryAnswer>>,
}

impl StubLedger {
    async fn start(first: RegistryAnswer) -> StubLedger {
        let answer = Arc::new(Mutex::new(first));
        let app = Router::new()
            .route(
                "/v1/registry",
                get(
                    |State(answer): State<Arc<Mutex<RegistryAnswer>>>| async move {
                        Json(answer.lock().unwrap().clone())
                    },
                ),
            )
            .with_state(answer.clone());
        let url = serve_on_loopback(app).await;
        StubLedger { url, answer }
    }

    fn serve(&self, answer: RegistryAnswer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// Version `version` of a registry owned by `owner`, in an update signed by `signer`.
fn signed(owner: &SigningKey, signer: &SigningKey, version: u64) -> RegistryAnswer {
    let mut registry = Registry::new(AccountId::from(owner));
    registry.version = version;
    RegistryAnswer::signed(registry, signer, version).unwrap()
}

/// A client that follows the stub's registry, pinning `owner`, with its state in `data_dir`.
fn client_of(ledger: &StubLedger, owner: &SigningKey, data_dir: &str) -> (Node, String) {
    let listen = free_addr();
    let owner = AccountId::from(owner).to_string();
    let args = ClientArgs {
        ledger: &ledger.url,
        registry_owner: &owner,
        listen: &listen,
        data_dir,
    };
    (
        Node::start(&args.args(None, &[])),
        format!("http://{listen}"),
    )
}

/// The client's `/jsonstats` details once `ready` holds for them.
async fn until_details(api: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("{api}/jsonstats")).send().await {
            if let Ok(stats) = response.json::<Value>().await {
                if ready(&stats["details"]) {
                    return stats["details"].clone();
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the client at {api} never got to: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_version(api: &str, version: u64) -> Value {
    until_details(api, &format!("registry version {version}"), |details| {
        details["registry_version"] == version
    })
    .await
}

/// Waits until the client has refused more than `before` versions; returns its details.
async fn until_refused(api: &str, before: u64) -> Value {
    until_details(api, "a refused registry", |details| {
        details["registry"]["refused"].as_u64().unwrap_or(0) > before
    })
    .await
}

#[tokio::test]
async fn a_registry_signed_by_another_key_or_older_is_refused_and_the_last_good_one_kept() {
    let (owner, stranger) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    let ledger = StubLedger::start(signed(&owner, &owner, 2)).await;
    let dir = tempfile::tempdir().unwrap();
    let (_client, api) = client_of(&ledger, &owner, &dir.path().display().to_string());
    until_version(&api, 2).await;

    // Another key's registry, newer: refused, version 2 stays.
    ledger.serve(signed(&stranger, &stranger, 3));
    let details = until_refused(&api, 0).await;
    assert_eq!(details["registry_version"], 2, "{details}");
    let reason = details["registry"]["last_refusal"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("not by the pinned owner"), "{details}");

    // The owner's document under another signature: refused too.
    let mut forged = signed(&owner, &stranger, 3);
    forged.signed_update.as_mut().unwrap().signer = AccountId::from(&owner);
    ledger.serve(forged);
    let details = until_refused(&api, 1).await;
    assert_eq!(details["registry_version"], 2, "{details}");

    // The owner's next version is taken; then a replay of an older genuine one is refused.
    ledger.serve(signed(&owner, &owner, 4));
    let refused = until_version(&api, 4).await["registry"]["refused"]
        .as_u64()
        .unwrap();
    ledger.serve(signed(&owner, &owner, 3));
    let details = until_refused(&api, refused).await;
    assert_eq!(details["registry_version"], 4, "{details}");
    let reason = details["registry"]["last_refusal"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("older"), "{details}");
}

#[tokio::test]
async fn a_restarted_node_refuses_a_registry_older_than_the_one_it_accepted_before() {
    let owner = SigningKey::from_bytes(&[1; 32]);
    let ledger = StubLedger::start(signed(&owner, &owner, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let (mut client, api) = client_of(&ledger, &owner, &data_dir);
    until_version(&api, 3).await;
    client.kill();

    // The ledger rolls back to a genuine older version while the client is down.
    ledger.serve(signed(&owner, &owner, 2));
    let (_client, api) = client_of(&ledger, &owner, &data_dir);
    let details = until_refused(&api, 0).await;
    assert_eq!(
        details["registry_version"], 3,
        "the client runs on the version it kept: {details}"
    );
    let reason = details["registry"]["last_refusal"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("older"), "{details}");
}
