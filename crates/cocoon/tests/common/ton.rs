//! Test networks that settle on TON: the local devnet with a Cocoon root, and reading what a
//! network's contracts hold.

use std::sync::Arc;

use super::{free_addr, strings, test_owner_key, ton_devnet, ProxyAddrs, Settler};

/// A read-only handle on what `network` settles on: its ledger, or its root on TON.
pub async fn settlement_of(network: &ProxyAddrs) -> Arc<dyn cocoon_money::Settlement> {
    use cocoon_money::SettlementBackend;
    if network.ton.is_empty() {
        return cocoon_ledger::LocalLedger::new(&network.ledger)
            .connect(None)
            .unwrap();
    }
    let at = network.ton.iter().position(|flag| flag == "--ton-root");
    let root = network.ton[at.unwrap() + 1].parse().unwrap();
    let api = cocoon_ton::TonApi::new(&network.ledger, None).unwrap();
    let backend = cocoon_ton::TonBackend::connect_root(api, root)
        .await
        .unwrap();
    backend.connect(None).unwrap()
}

/// A fresh TON devnet with a Cocoon root owned by the test owner's wallet (the terms of a new
/// local ledger; the owner's wallet funded), and addresses and a data directory for a proxy on
/// it. `None` (the test passes, saying why) without `contracts/node_modules`, except on CI.
pub async fn proxy_addrs_on_ton() -> Option<ProxyAddrs> {
    let devnet = ton_devnet::devnet()?;
    let owner = test_owner_key();
    let registry = cocoon_money::Registry::new(cocoon_money::AccountId::from(&owner));
    let root = cocoon_ton::devnet::deploy_root(&devnet.url, &registry)
        .await
        .unwrap();
    let owner_wallet =
        cocoon_ton::contracts::wallet_address(&owner.verifying_key().to_bytes()).unwrap();
    ton_devnet::faucet(&devnet, &owner_wallet, 1_000 * ton_devnet::TON).await;
    let api = format!("{}/api/v2", devnet.url);
    let dir = tempfile::tempdir().unwrap();
    Some(ProxyAddrs {
        workers: free_addr(),
        clients: free_addr(),
        stats: free_addr(),
        ton: strings(&[
            "--settlement",
            "ton-devnet",
            "--ton-api",
            &api,
            "--ton-root",
            &root.to_hex(),
        ]),
        ledger: api,
        data_dir: dir.path().to_owned(),
        registry_owner: String::new(),
        settler: Settler::Devnet(devnet),
        _data_dir: dir,
    })
}
