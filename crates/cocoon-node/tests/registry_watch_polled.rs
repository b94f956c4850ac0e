//! The registry watch on a backend that can only be polled (as a chain is): a node follows the
//! owner's new versions through `Settlement`'s polling default, without the ledger's long poll.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cocoon_ledger::{LedgerClient, LedgerConfig};
use cocoon_money::{
    Account, AccountId, ClientContract, Hash32, ImageRole, ProxyContract, Receipt, Registry,
    RegistryAnswer, RegistryEdit, Settlement, SettlementBackend, SettlementError, TransactionBody,
    WorkerContract,
};
use cocoon_node::registry::RegistryWatch;
use cocoon_node::registry_trust::RegistryTrust;
use ed25519_dalek::SigningKey;
use tokio_util::sync::CancellationToken;

/// The local ledger seen through the trait's required reads only: its long poll is hidden, so
/// the watch polls.
struct PolledOnly(LedgerClient);

#[async_trait]
impl Settlement for PolledOnly {
    fn account_id(&self) -> Option<AccountId> {
        self.0.account_id()
    }

    async fn execute(&self, body: TransactionBody) -> Result<Receipt, SettlementError> {
        self.0.execute(body).await
    }

    async fn registry(&self) -> Result<Registry, SettlementError> {
        self.0.registry().await
    }

    async fn registry_answer(&self) -> Result<RegistryAnswer, SettlementError> {
        self.0.registry_answer().await
    }

    fn registry_poll_interval(&self) -> Duration {
        Duration::from_millis(50)
    }

    async fn account(&self, id: AccountId) -> Result<Account, SettlementError> {
        self.0.account(id).await
    }

    async fn proxy_contract(
        &self,
        proxy: AccountId,
    ) -> Result<Option<ProxyContract>, SettlementError> {
        self.0.proxy_contract(proxy).await
    }

    async fn client_contract(
        &self,
        proxy: AccountId,
        client: AccountId,
    ) -> Result<Option<ClientContract>, SettlementError> {
        self.0.client_contract(proxy, client).await
    }

    async fn worker_contract(
        &self,
        proxy: AccountId,
        worker: AccountId,
    ) -> Result<Option<WorkerContract>, SettlementError> {
        self.0.worker_contract(proxy, worker).await
    }
}

struct PolledBackend(String);

impl SettlementBackend for PolledBackend {
    fn connect(&self, key: Option<SigningKey>) -> Result<Arc<dyn Settlement>, SettlementError> {
        let client = match key {
            Some(key) => LedgerClient::new(&self.0, key),
            None => LedgerClient::read_only(&self.0),
        };
        let client = client.map_err(|error| SettlementError::Backend(error.to_string()))?;
        Ok(Arc::new(PolledOnly(client)))
    }

    fn location(&self) -> &str {
        &self.0
    }
}

async fn edit(owner: &LedgerClient, edit: RegistryEdit) {
    let current = owner.registry().await.unwrap();
    let mut next = current.edited(&edit).unwrap();
    next.version = current.version + 1;
    owner.update_registry(next).await.unwrap();
}

#[tokio::test]
async fn a_node_follows_the_registry_on_a_backend_it_can_only_poll() {
    let dir = tempfile::tempdir().unwrap();
    let owner_key = SigningKey::from_bytes(&[7; 32]);
    let config = LedgerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("ledger.sqlite3"),
        owner: Some(AccountId::from(&owner_key)),
        ..LedgerConfig::default()
    };
    let ledger = cocoon_ledger::spawn(&config, Arc::new(cocoon_proto::clock::SystemClock))
        .await
        .unwrap();
    let owner = LedgerClient::new(&ledger.url(), owner_key.clone()).unwrap();
    let image = |n: u8| RegistryEdit::AllowImage {
        role: ImageRole::Worker,
        hash: Hash32([n; 32]),
    };
    // The node reads only versions the owner signed: the genesis one is not.
    edit(&owner, image(1)).await;

    let shutdown = CancellationToken::new();
    let trust = RegistryTrust::Pinned {
        owner: AccountId::from(&owner_key),
        data_dir: None,
    };
    let watch = RegistryWatch::start(&PolledBackend(ledger.url()), trust, shutdown.clone())
        .await
        .unwrap();
    let mut version = watch.derive(|registry| registry.version);
    let first = **version.borrow_and_update();

    edit(&owner, image(2)).await;
    tokio::time::timeout(Duration::from_secs(10), version.changed())
        .await
        .expect("the polled watch sees the new version")
        .unwrap();
    assert_eq!(**version.borrow(), first + 1);
    assert!(watch
        .current()
        .images(ImageRole::Worker)
        .contains(&Hash32([2; 32])));
    // It polled: no watch was ever held open on the ledger.
    assert_eq!(owner.stats().await.unwrap().registry_watchers, 0);
    shutdown.cancel();
    ledger.shutdown().await.unwrap();
}
