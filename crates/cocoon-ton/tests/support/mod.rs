//! The local TON devnet (`contracts/devnet/`, a real TVM behind the TON HTTP API v2) for the
//! tests, started as a Node process. Without `contracts/node_modules` (`scripts/setup.sh`
//! installs it) the tests say so and pass, except on CI (`CI` set).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cocoon_ton::{RegistryParams, TonAddress};
use ed25519_dalek::SigningKey;

/// A running devnet, stopped when dropped.
pub struct Devnet {
    child: Child,
    pub url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn devnet() -> Option<Devnet> {
    let contracts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    if !contracts.join("node_modules/@ton/sandbox").is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "contracts/node_modules is missing (run scripts/setup.sh)"
        );
        eprintln!("skipped: contracts/node_modules is missing (run scripts/setup.sh)");
        return None;
    }
    let mut child = Command::new("node")
        .args(["devnet/server.js", "--listen", "127.0.0.1:0"])
        .current_dir(&contracts)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("devnet listening on ")
        .unwrap_or_else(|| panic!("unexpected devnet output {line:?}"))
        .to_owned();
    Some(Devnet { child, url })
}

/// One nano-TON's billion.
pub const TON: u64 = 1_000_000_000;

/// The registry terms of the tests: delays 600 s (client) and 3600 s (proxy), minimum stakes 1 and
/// 2 TON.
pub fn test_params() -> RegistryParams {
    RegistryParams {
        client_delay_before_close: 600,
        proxy_delay_before_close: 3600,
        min_client_stake: TON,
        min_proxy_stake: 2 * TON,
        ..RegistryParams::default()
    }
}

/// POSTs `body` to the devnet's `path` and returns the result of its `{ok: true}` answer.
async fn post(devnet: &Devnet, path: &str, body: serde_json::Value) -> serde_json::Value {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/{path}", devnet.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    answer["result"].clone()
}

/// Credits `amount` nano-TON to `address` from the devnet's faucet.
pub async fn faucet(devnet: &Devnet, address: &TonAddress, amount: u64) {
    let body =
        serde_json::json!({"address": address.to_base64_url(), "amount": amount.to_string()});
    post(devnet, "devnet/faucet", body).await;
}

pub fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

/// The devnet's root for `owner`, deployed with `params` (POST /devnet/deploy-root).
pub async fn deploy_root(
    devnet: &Devnet,
    owner: &TonAddress,
    params: &RegistryParams,
) -> TonAddress {
    let body = serde_json::json!({
        "owner": owner.to_hex(),
        "params": {
            "client_delay_before_close": params.client_delay_before_close,
            "proxy_delay_before_close": params.proxy_delay_before_close,
            "min_client_stake": params.min_client_stake.to_string(),
            "min_proxy_stake": params.min_proxy_stake.to_string(),
        },
    });
    let result = post(devnet, "devnet/deploy-root", body).await;
    TonAddress::from_hex_str(result["address"].as_str().unwrap()).unwrap()
}

/// The devnet's root with [`test_params`], owned by the v5r1 wallet of `owner`.
pub async fn test_root(devnet: &Devnet, owner: &SigningKey) -> TonAddress {
    let wallet = cocoon_ton::contracts::wallet_address(&owner.verifying_key().to_bytes()).unwrap();
    deploy_root(devnet, &wallet, &test_params()).await
}

/// Moves the devnet's chain time `seconds` forward.
pub async fn advance(devnet: &Devnet, seconds: u64) {
    post(
        devnet,
        "devnet/advance",
        serde_json::json!({ "seconds": seconds }),
    )
    .await;
}
