//! End-to-end: what each of a proxy's ports accepts. Each port has its own weakest attestation kind
//! and allow-list, the role a certificate claims is checked on every port, and listing a TDX image
//! never admits a `fake` quote that copies its measurements (anyone can sign one).

use std::time::{Duration, Instant};

use crate::common::*;
use cocoon_tee::fake::measurements_from_label;
use cocoon_tee::AttestationKind;

/// How long a refusal may take to show: a dial, a handshake, a log line.
const WITHIN: Duration = Duration::from_secs(30);

/// The image hash a real TDX guest with the measurements of `fake` label `label` would have: what a
/// production registry lists.
fn tdx_image_hash(label: &str) -> String {
    measurements_from_label(label)
        .image_hash(AttestationKind::Tdx)
        .to_string()
}

/// A proxy (as [`proxy`] starts one) whose log the test can wait on.
fn logged_proxy(extra: &[&str]) -> (Node, ProxyAddrs) {
    let addrs = proxy_addrs(&[]);
    let launch = Launch {
        capture_stderr: true,
        ..Launch::default()
    };
    let node = Node::launch(&proxy_args(&addrs, extra), launch);
    (node, addrs)
}

/// Waits until `node` (started by [`logged_proxy`]) has logged a line containing every one of
/// `needles`: a refusal's reason is only in the proxy's log.
async fn wait_for_log(node: &Node, needles: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let found = node
            .stderr_lines()
            .into_iter()
            .find(|line| needles.iter().all(|needle| line.contains(needle)));
        if let Some(line) = found {
            return line;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the proxy did not log {needles:?} within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the client at `api` has its link to a proxy up.
async fn until_client_linked(api: &str) {
    // Not `/healthz`: a client is not ready until a worker is routable, and here none is.
    let started = Instant::now();
    loop {
        let stats = match http().get(format!("{api}/jsonstats")).send().await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if stats["details"]["proxies"][0]["up"] == true {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the client never linked: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn weak_clients_on_the_client_port_never_admit_weak_workers_on_the_worker_port() {
    let (proxy_node, proxy) = logged_proxy(&[
        "--min-client-tee",
        "fake",
        "--min-worker-tee",
        "tdx",
        "--allow-worker-image",
        &tdx_image_hash("test-worker"),
    ]);
    // A `fake` worker whose quote carries the production image's measurements.
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    until_client_linked(&api).await;
    wait_for_log(
        &proxy_node,
        &[
            "link refused or lost",
            "attestation kind fake is below the policy's minimum tdx",
        ],
    )
    .await;
    assert_eq!(proxy_workers(&proxy).await, Vec::<serde_json::Value>::new());
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    let attestation = &stats["details"]["attestation"];
    assert_eq!(attestation["min_peer_tee"]["worker"], "tdx", "{stats}");
    assert_eq!(attestation["min_peer_tee"]["client"], "fake", "{stats}");
    assert_eq!(
        attestation["weak_peer_minimum"],
        serde_json::json!(["client"]),
        "{stats}"
    );
}

#[tokio::test]
async fn a_fake_worker_copying_a_tdx_images_measurements_is_not_that_image() {
    // Even where the worker port accepts `fake` (a development proxy), a `tdx` entry admits no
    // `fake` quote: the allow-list names the kind along with the image.
    let (proxy_node, proxy) =
        logged_proxy(&["--allow-worker-image", &tdx_image_hash("test-worker")]);
    let (_worker, _) = worker(&proxy, &[]);
    let refusal = format!(
        "image hash {} is not in the allowed list",
        image_hash("test-worker")
    );
    wait_for_log(&proxy_node, &["link refused or lost", &refusal]).await;
    assert_eq!(proxy_workers(&proxy).await, Vec::<serde_json::Value>::new());
}

#[tokio::test]
async fn a_certificate_claiming_another_role_is_refused_on_each_port() {
    let (proxy_node, proxy) = logged_proxy(&[]);
    // A client dials the worker port, a worker the client port; each attests its own role.
    let (_client, _) = client_on(&proxy, Some(&proxy.workers), &[]);
    let (_worker, _) = worker_on(&proxy, Some(&proxy.clients), &[]);
    wait_for_log(
        &proxy_node,
        &[
            "link refused or lost",
            r#"claims the role "client", but this link accepts only "worker""#,
        ],
    )
    .await;
    wait_for_log(
        &proxy_node,
        &[
            "link refused or lost",
            r#"claims the role "worker", but this link accepts only "client""#,
        ],
    )
    .await;
    assert_eq!(proxy_workers(&proxy).await, Vec::<serde_json::Value>::new());
}

#[tokio::test]
async fn a_worker_whose_attested_engine_is_outside_its_tee_needs_the_proxys_consent() {
    // The host chose the engine URL (a command line is not measured), so the proxy judges the URL
    // the worker attested. Nothing listens there: the proxy decides at the link, before any prompt.
    let remote = [
        "--engine",
        "http://10.255.255.1:9",
        "--model",
        "m",
        "--allow-remote-engine",
    ];
    let (proxy_node, proxy) = logged_proxy(&[]);
    let (_worker, _) = worker(&proxy, &remote);
    wait_for_log(
        &proxy_node,
        &[
            "link refused or lost",
            r#"claims engine "http://10.255.255.1:9", outside its TEE"#,
        ],
    )
    .await;
    assert_eq!(proxy_workers(&proxy).await, Vec::<serde_json::Value>::new());

    let (_consenting_node, consenting) = logged_proxy(&["--accept-remote-engines"]);
    let (_admitted, _) = worker(&consenting, &remote);
    wait_for_port(&consenting.stats);
    let started = Instant::now();
    while proxy_workers(&consenting).await.is_empty() {
        assert!(started.elapsed() < WITHIN, "the worker was never admitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
