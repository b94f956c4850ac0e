//! End-to-end: the registry on the ledger is the network's source of truth. Nodes started without
//! `--proxy` or allow-list flags find the proxy and judge images from it, and `cocoon registry`
//! changes (revoked images and models, removed proxies) take effect on live links within seconds.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Waits until the proxy has `count` workers linked.
async fn until_workers(proxy: &ProxyAddrs, count: usize, within: Duration) {
    let started = Instant::now();
    while proxy_workers(proxy).await.len() != count {
        assert!(
            started.elapsed() < within,
            "the proxy did not get to {count} workers within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn chat_status(api: &str) -> u16 {
    post_chat(api, &chat(2, false))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A registry owner's key (made with `cocoon registry keygen`) and the ledger it edits.
struct Owner {
    key: String,
    ledger: String,
}

impl Owner {
    /// A new owner key in `dir`; returns the key file's path and the owner's account.
    fn keygen(dir: &std::path::Path) -> (String, String) {
        let key = dir.join("owner.key").display().to_string();
        let account = cocoon_ok(&["registry", "keygen", &key]);
        (key, account.trim().to_owned())
    }

    /// `cocoon registry --ledger … --owner-key … ARGS…`: success, stdout, stderr.
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let owner_args = [
            "registry",
            "--ledger",
            &self.ledger,
            "--owner-key",
            &self.key,
        ];
        cocoon(&[&owner_args[..], args].concat())
    }

    /// A change that must be accepted.
    fn change(&self, args: &[&str]) {
        let (ok, _, stderr) = self.run(args);
        assert!(ok, "cocoon registry {args:?}: {stderr}");
    }
}

/// A proxy on a ledger whose registry is owned by a key made in `dir`.
fn proxy_with_owner(dir: &std::path::Path) -> (Node, ProxyAddrs, Owner) {
    let (key, account) = Owner::keygen(dir);
    let (node, proxy) = proxy_on_ledger(&["--owner", &account], &[]);
    let owner = Owner {
        key,
        ledger: proxy.ledger.clone(),
    };
    (node, proxy, owner)
}

#[tokio::test]
async fn revoked_images_and_removed_proxies_drop_live_links_and_return_when_listed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_proxy, proxy, owner) = proxy_with_owner(dir.path());
    let change = |args: &[&str]| owner.change(args);
    let add_proxy = [
        "add-proxy",
        "--worker-endpoint",
        &proxy.workers,
        "--client-endpoint",
        &proxy.clients,
    ];
    let worker_image = image_hash("test-worker");
    let spare_image = image_hash("spare-worker");
    for image in [&worker_image, &spare_image] {
        change(&["allow-image", "--role", "worker", image]);
    }
    change(&add_proxy);
    let shown: Value = serde_json::from_str(&cocoon_ok(&[
        "registry",
        "--ledger",
        &proxy.ledger,
        "--json",
        "show",
    ]))
    .unwrap();
    assert_eq!(shown["version"], 4, "{shown}");
    assert_eq!(
        shown["proxies"][0]["client_endpoint"],
        proxy.clients.as_str()
    );

    // Neither node is told where the proxy is: both read it from the registry.
    let (_worker, _) = worker_on(&proxy, None, &[]);
    let (_client, api) = client_on(&proxy, None, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(chat_status(&api).await, 200);

    change(&["revoke-image", "--role", "worker", &worker_image]);
    until_workers(&proxy, 0, Duration::from_secs(5)).await;
    assert_eq!(
        chat_status(&api).await,
        404,
        "no worker serves the model any more"
    );
    // It stays out: its redials are refused at the handshake.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(proxy_workers(&proxy).await.is_empty());

    change(&["allow-image", "--role", "worker", &worker_image]);
    until_workers(&proxy, 1, Duration::from_secs(15)).await;
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(chat_status(&api).await, 200);

    // A proxy taken off the registry loses the links of nodes that found it there.
    change(&["remove-proxy", "1"]);
    until_workers(&proxy, 0, Duration::from_secs(5)).await;
    let started = Instant::now();
    while chat_status(&api).await != 503 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the client still uses a proxy the registry no longer lists"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Registered again (with a new seqno), it is found again.
    change(&add_proxy);
    until_workers(&proxy, 1, Duration::from_secs(15)).await;
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(chat_status(&api).await, 200);
}

#[tokio::test]
async fn an_engine_urls_weights_are_attested_and_revoking_its_model_drops_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (_proxy, proxy, owner) = proxy_with_owner(dir.path());
    let change = |args: &[&str]| owner.change(args);
    // The weights an engine serves, as a snapshot directory; and a copy with one file changed.
    let weights = dir.path().join("weights");
    let tampered = dir.path().join("tampered");
    for (path, config) in [
        (&weights, "{\"layers\": 30}"),
        (&tampered, "{\"layers\": 31}"),
    ] {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("model.safetensors"), [7u8; 4096]).unwrap();
        std::fs::write(path.join("config.json"), config).unwrap();
    }
    let weights_arg = weights.display().to_string();
    let tampered_arg = tampered.display().to_string();
    let hash = cocoon_ok(&["attest", "model-hash", &weights_arg]);
    let hash = hash.trim();
    assert_eq!(hash.len(), 64, "{hash}");
    let described: Value = serde_json::from_str(&cocoon_ok(&[
        "attest",
        "model-hash",
        &weights_arg,
        "--json",
    ]))
    .unwrap();
    assert_eq!(described["model_hash"], hash);
    assert_eq!(described["path"], weights_arg.as_str());
    change(&["allow-model", "synthetic", hash]);
    // A second model, so that revoking the first leaves a list (an empty one allows any model).
    change(&["allow-model", "other", &"ab".repeat(32)]);

    // Both workers forward to one engine over HTTP, as they would to vLLM.
    let engine = free_addr();
    let _engine = Node::start(&[
        "synthetic-engine".to_owned(),
        "--listen".to_owned(),
        engine.clone(),
    ]);
    wait_for_port(&engine);
    let engine_url = format!("http://{engine}");
    let url_worker = |weights: &str| {
        worker(
            &proxy,
            &[
                "--engine",
                &engine_url,
                "--model",
                "synthetic",
                "--model-path",
                weights,
            ],
        )
    };
    let (_worker, worker_stats) = url_worker(&weights_arg);
    let (_impostor, _) = url_worker(&tampered_arg);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(chat_status(&api).await, 200);
    let stats = get_json(&format!("http://{worker_stats}/jsonstats")).await;
    assert_eq!(stats["details"]["model_hash"], hash, "{stats}");
    // The worker with changed weights is refused, however often it dials.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy_workers(&proxy).await.len(), 1);

    change(&["revoke-model", "synthetic"]);
    until_workers(&proxy, 0, Duration::from_secs(5)).await;
    assert_eq!(chat_status(&api).await, 404);

    change(&["allow-model", "synthetic", hash]);
    until_workers(&proxy, 1, Duration::from_secs(15)).await;
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(chat_status(&api).await, 200);
}

#[tokio::test]
async fn registry_changes_need_the_owner_and_refuse_to_open_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let (key, account) = Owner::keygen(dir.path());
    let (ledger_node, ledger) = ledger(dir.path(), &["--owner", &account]);
    let owner = Owner {
        key,
        ledger: ledger.clone(),
    };
    let image = image_hash("only-worker");

    let (ok, _, stderr) = cocoon(&[
        "registry",
        "--ledger",
        &ledger,
        "allow-image",
        "--role",
        "worker",
        &image,
    ]);
    assert!(!ok);
    assert!(stderr.contains("--owner-key"), "{stderr}");

    let stranger = dir.path().join("stranger.key");
    let stranger_arg = stranger.display().to_string();
    cocoon_ok(&["registry", "keygen", &stranger_arg]);
    let (ok, _, stderr) = cocoon(&[
        "registry",
        "--ledger",
        &ledger,
        "--owner-key",
        &stranger_arg,
        "allow-image",
        "--role",
        "worker",
        &image,
    ]);
    assert!(!ok);
    assert!(stderr.contains("not the registry owner"), "{stderr}");

    owner.change(&["allow-image", "--role", "worker", &image]);
    let (ok, _, stderr) = owner.run(&["revoke-image", "--role", "worker", &image]);
    assert!(!ok, "revoking the last image would allow any image");
    assert!(stderr.contains("allows anything"), "{stderr}");
    let (ok, _, stderr) = owner.run(&["set-price", "--worker-fee-per-token", "999999999"]);
    assert!(!ok);
    assert!(stderr.contains("exceeds price_per_token"), "{stderr}");
    owner.change(&["set-price", "--price-per-token", "2000"]);
    let shown = cocoon_ok(&["registry", "--ledger", &ledger, "show"]);
    assert!(shown.contains("version: 3"), "{shown}");
    assert!(shown.contains("2000 per token to clients"), "{shown}");
    assert!(shown.contains(&image), "{shown}");
    drop(ledger_node);
}

#[tokio::test]
async fn a_ledger_stops_at_once_on_ctrl_c_while_nodes_watch_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger_node, url) = ledger(dir.path(), &[]);
    // Watch for the version after the current one, as nodes do.
    let version = get_json(&format!("{url}/v1/stats")).await["registry_version"]
        .as_u64()
        .unwrap();
    let watch = tokio::spawn(
        http()
            .get(format!(
                "{url}/v1/registry?newer_than={version}&wait_secs=30"
            ))
            .send(),
    );
    let started = Instant::now();
    while get_json(&format!("{url}/v1/stats")).await["registry_watchers"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the long poll never reached the ledger"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger_node.interrupt();
    // Well before the 30 s the long poll would otherwise hold it.
    let status = ledger_node
        .exit_within(Duration::from_secs(10))
        .expect("the ledger waited for a registry long poll");
    assert!(status.success(), "{status}");
    watch.abort();
}
