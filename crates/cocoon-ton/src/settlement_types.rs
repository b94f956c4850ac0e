//! The rules' types the TON backend implements `Settlement` for, imported in this one place so
//! that moving them to another crate changes one word here.

pub use cocoon_money::rules::MAX_FAUCET_GRANT;
pub use cocoon_money::settlement::REGISTRY_POLL_INTERVAL;
pub use cocoon_money::{
    Account, AccountId, Amount, ClientContract, ContractStatus, Hash32, Outcome, Prices,
    ProxyContract, Receipt, RegisteredProxy, Registry, RegistryAuthority, RuleError, Settlement,
    SettlementBackend, SettlementError, SignedVoucher, TransactionBody, Voucher, VoucherIds,
    VoucherKind, WorkerContract,
};
