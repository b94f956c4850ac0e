//! The API client and the wallet sender against the local TON devnet (`contracts/devnet/`, a real
//! TVM behind the TON HTTP API v2), started as a Node process. Without `contracts/node_modules`
//! (`scripts/setup.sh` installs it) these tests say so and pass, except on CI (`CI` set).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cocoon_ton::{TonAddress, TonApi, WalletSender};
use ed25519_dalek::SigningKey;
use num_bigint::BigUint;
use tonlib_core::cell::{ArcCell, Cell};
use tonlib_core::message::{CommonMsgInfo, TonMessage, TransferMessage};

/// A running devnet, stopped when dropped.
struct Devnet {
    child: Child,
    url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn devnet() -> Option<Devnet> {
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

async fn faucet(devnet: &Devnet, address: &TonAddress, amount: u64) {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/devnet/faucet", devnet.url))
        .json(
            &serde_json::json!({"address": address.to_base64_url(), "amount": amount.to_string()}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
}

fn transfer(to: &TonAddress, amount: u64) -> ArcCell {
    let mut info = CommonMsgInfo::new_default_internal(to, &BigUint::from(amount));
    if let CommonMsgInfo::InternalMessage(message) = &mut info {
        message.bounce = false;
    }
    TransferMessage::new(info, Cell::default().to_arc())
        .build()
        .unwrap()
        .to_arc()
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

#[tokio::test]
async fn a_wallet_deploys_and_sends_each_message_exactly_once() {
    let Some(devnet) = devnet() else { return };
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    let sender = WalletSender::new(api.clone(), &key(7))
        .unwrap()
        .with_poll_interval(Duration::from_millis(50));
    let payee = WalletSender::new(api.clone(), &key(8)).unwrap();
    let payee = payee.address().clone();

    let fresh = api.account(sender.address()).await.unwrap();
    assert_eq!(fresh.status, "uninitialized");
    assert_eq!(fresh.last_transaction, None);
    faucet(&devnet, sender.address(), 5_000_000_000).await;
    assert_eq!(
        api.account(sender.address()).await.unwrap().balance,
        5_000_000_000
    );

    // The first message deploys the wallet (seqno 0), the second uses seqno 1.
    let first = sender
        .send(&[transfer(&payee, 1_000_000_000)])
        .await
        .unwrap();
    assert_eq!(first.exit_code, Some(0));
    assert_eq!(
        api.account(sender.address()).await.unwrap().status,
        "active"
    );
    sender.send(&[transfer(&payee, 500_000_000)]).await.unwrap();
    // Both arrived, less the payee's storage fee (a nano-TON or so).
    let received = api.account(&payee).await.unwrap().balance;
    assert!(
        (1_499_000_000..=1_500_000_000).contains(&received),
        "{received}"
    );
    let seqno = api
        .run_get_method(sender.address(), "seqno", &[])
        .await
        .unwrap();
    assert_eq!(seqno.int(0).unwrap(), 2);

    // The wallet's history: the faucet's credit and both messages, newest first, pageable.
    let history = api.transactions(sender.address(), 10, None).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[0].id.lt > history[1].id.lt);
    let older = api
        .transactions(sender.address(), 10, Some(&history[1].id))
        .await
        .unwrap();
    assert_eq!(older, history[1..].to_vec());
}

#[tokio::test]
async fn the_devnets_errors_arrive_typed() {
    let Some(devnet) = devnet() else { return };
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    let error = api.send_boc(b"not a bag of cells").await.unwrap_err();
    assert!(
        matches!(&error, cocoon_ton::TonApiError::Api { code: 416, .. }),
        "{error}"
    );
    let nobody = WalletSender::new(api.clone(), &key(9)).unwrap();
    let result = api
        .run_get_method(nobody.address(), "seqno", &[])
        .await
        .unwrap();
    assert_eq!(
        result.exit_code, -13,
        "an undeployed account has no get-methods"
    );
    assert!(TonApi::new("ftp://example", None).is_err());
}
