//! End-to-end: `cocoon dev`, the README's first command. It must say the network is up only when
//! a request would be answered, answer it, and come back after a crash on the same data directory.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::ChildStdout;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The ports `cocoon dev --instance N` takes (client, proxy stats/workers/clients, worker, ledger).
fn dev_ports(instance: u16) -> [u16; 6] {
    [10000, 11000, 11001, 11002, 12000, 13000].map(|base| base + 10 * instance)
}

/// An instance number whose ports are all free now.
fn free_instance() -> u16 {
    let start = (std::process::id() % 300) as u16;
    (0..300)
        .map(|offset| 100 + (start + offset) % 300)
        .find(|&instance| {
            dev_ports(instance)
                .iter()
                .all(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        })
        .expect("a free dev instance")
}

/// `cocoon dev` with the synthetic engine, its state in `dir`, as instance `instance`.
fn dev_args(dir: &std::path::Path, instance: u16, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["dev", "--engine", "synthetic", "--data-dir"]);
    args.push(dir.display().to_string());
    args.extend(strings(&["--instance", &instance.to_string()]));
    args.extend(strings(extra));
    args
}

/// Reads `cocoon dev`'s standard output until it says how to stop it; returns what it printed.
async fn banner(stdout: ChildStdout) -> String {
    let read = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("dev's stdout");
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops the network") {
                return Ok(printed);
            }
        }
        Err(printed)
    });
    match tokio::time::timeout(Duration::from_secs(60), read).await {
        Ok(Ok(Ok(printed))) => printed,
        Ok(Ok(Err(printed))) => {
            panic!("cocoon dev exited before it was up; it printed:\n{printed}")
        }
        Ok(Err(panicked)) => panic!("reading cocoon dev's output: {panicked}"),
        Err(_) => panic!("cocoon dev was not up within 60 s"),
    }
}

/// One chat request, as the banner suggests; returns the answer's status, receipt header and body.
async fn ask(api: &str) -> (u16, bool, Value) {
    let response = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(&json!({
            "model": "synthetic",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let receipt = response.headers().contains_key("x-cocoon-receipt");
    (status, receipt, response.json().await.unwrap())
}

#[tokio::test]
async fn cocoon_dev_is_ready_for_curl_when_it_says_so_and_comes_back_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let instance = free_instance();
    let [client_port, _, worker_port, client_link_port, _, ledger_port] = dev_ports(instance);
    let args = dev_args(dir.path(), instance, &[]);
    let api = format!("http://127.0.0.1:{client_port}");
    let ledger = format!("http://127.0.0.1:{ledger_port}");

    let (mut dev, stdout) = Node::start_with_stdout(&args);
    let printed = banner(stdout).await;
    assert!(
        printed.contains(&format!("client API (OpenAI-compatible): {api}/v1")),
        "{printed}"
    );
    assert!(printed.contains("curl "), "{printed}");
    // Up means answering: no wait, no retry.
    let (status, receipt, answer) = ask(&api).await;
    assert_eq!(status, 200, "{answer}");
    assert!(receipt, "the answer carries its receipt");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{answer}"
    );
    assert!(
        answer["usage"]["completion_tokens"].as_u64() > Some(0),
        "{answer}"
    );

    // The network found itself through its registry.
    let shown: Value = serde_json::from_str(&cocoon_ok(&[
        "registry", "--ledger", &ledger, "--json", "show",
    ]))
    .unwrap();
    assert_eq!(
        shown["proxies"][0]["worker_endpoint"],
        format!("127.0.0.1:{worker_port}"),
        "{shown}"
    );
    assert_eq!(
        shown["proxies"][0]["client_endpoint"],
        format!("127.0.0.1:{client_link_port}"),
        "{shown}"
    );
    let version = shown["version"].clone();

    // A crash, then the same command on the same directory: the same network, nothing re-registered.
    dev.kill();
    let (_dev, stdout) = Node::start_with_stdout(&args);
    banner(stdout).await;
    let (status, _, answer) = ask(&api).await;
    assert_eq!(status, 200, "{answer}");
    let shown: Value = serde_json::from_str(&cocoon_ok(&[
        "registry", "--ledger", &ledger, "--json", "show",
    ]))
    .unwrap();
    assert_eq!(shown["version"], version, "{shown}");
}

#[tokio::test]
async fn cocoon_dev_runs_the_network_on_the_ton_devnet() {
    if ton_devnet::devnet().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let instance = free_instance();
    let [client_port, _, worker_port, _, _, devnet_port] = dev_ports(instance);
    let args = dev_args(dir.path(), instance, &["--settlement", "ton-devnet"]);
    let api = format!("http://127.0.0.1:{client_port}");
    let (mut dev, stdout) = Node::start_with_stdout(&args);
    let printed = banner(stdout).await;
    let devnet_api = format!("http://127.0.0.1:{devnet_port}/api/v2");
    assert!(printed.contains(&devnet_api), "{printed}");
    let root = printed
        .split_once("root ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the banner names the root")
        .to_owned();

    // An answer, paid on TON: it carries its cost and receipt.
    let (status, receipt, answer) = ask(&api).await;
    assert_eq!(status, 200, "{answer}");
    assert!(receipt, "the answer carries its receipt");
    assert!(answer["usage"]["total_cost"].as_u64() > Some(0), "{answer}");

    // The registry on the root lists the dev proxy the nodes found each other through.
    let shown: Value = serde_json::from_str(&cocoon_ok(&[
        "registry",
        "--settlement",
        "ton-devnet",
        "--ton-api",
        &devnet_api,
        "--ton-root",
        &root,
        "--json",
        "show",
    ]))
    .unwrap();
    assert_eq!(
        shown["proxies"][0]["worker_endpoint"],
        format!("127.0.0.1:{worker_port}"),
        "{shown}"
    );

    // Killed without a chance to clean up, dev leaves no devnet behind.
    dev.kill();
    let started = std::time::Instant::now();
    while TcpListener::bind(("127.0.0.1", devnet_port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the devnet outlived cocoon dev"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
