//! The initial data of the root, proxy and channel contracts, their state-inits, and so their
//! addresses, computed exactly as the contracts and their deployers do (`hash(StateInit{code,
//! data})` in workchain 0). A node deals only with the address these give for the registry's
//! stake and delay, so a contract deployed with weaker terms is another address it never serves.

use std::sync::Arc;

use tonlib_core::cell::{ArcCell, Cell, CellBuilder, TonCellError};
use tonlib_core::tlb_types::block::state_init::StateInit;
use tonlib_core::tlb_types::tlb::TLB;
use tonlib_core::TonAddress;

use tonlib_core::wallet::mnemonic::KeyPair;
use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::wallet_version::WalletVersion;

use crate::code::{ContractCode, CLIENT_CHANNEL, PROXY, ROOT};
use crate::registry_cells::{RegistryLists, RegistryParams};

/// The workchain every Cocoon contract lives in.
pub const WORKCHAIN: i32 = 0;

/// The address of the v5r1 wallet (workchain 0, default wallet id) of Ed25519 public key `key`:
/// the wallet an account id stands for on TON.
pub fn wallet_address(key: &[u8; 32]) -> Result<TonAddress, TonCellError> {
    let key_pair = KeyPair {
        public_key: key.to_vec(),
        secret_key: Vec::new(),
    };
    Ok(TonWallet::new(WalletVersion::V5R1, key_pair)?.address)
}

/// The 256-bit account id of `address` (its hash part; Cocoon contracts are all in workchain 0).
pub fn account_id(address: &TonAddress) -> [u8; 32] {
    address.hash_part.clone().into()
}

/// The workchain-0 address of account id `id`.
pub fn address_of(id: &[u8; 32]) -> TonAddress {
    TonAddress::new(WORKCHAIN, (*id).into())
}

/// A contract's code and initial data: what deploys it, and what its address is the hash of.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The code.
    pub code: ArcCell,
    /// The initial data.
    pub data: ArcCell,
}

impl Deployment {
    fn new(code: &ContractCode, data: Cell) -> Result<Self, TonCellError> {
        Ok(Self {
            code: code.cell()?,
            data: Arc::new(data),
        })
    }

    /// The contract's address.
    pub fn address(&self) -> Result<TonAddress, TonCellError> {
        TonAddress::derive(WORKCHAIN, self.code.clone(), self.data.clone())
    }

    /// The `StateInit` a deploying message carries.
    pub fn state_init(&self) -> StateInit {
        StateInit::new(self.code.clone(), self.data.clone())
    }

    /// The `StateInit` as a cell.
    pub fn state_init_cell(&self) -> Result<ArcCell, TonCellError> {
        Ok(Arc::new(self.state_init().to_cell()?))
    }
}

/// The initial data of a contract that holds nothing yet: `^params`, then fields of `widths` bits,
/// all zero (status closed, no amounts, empty dictionaries).
fn unused_contract(params: Cell, widths: &[usize]) -> Result<Cell, TonCellError> {
    let mut data = CellBuilder::new();
    data.store_child(params)?;
    for &bits in widths {
        data.store_u64(bits, 0)?;
    }
    data.build()
}

/// The terms of a client × proxy channel: `params:^(proxy owner client_key min_stake
/// close_delay)`, then a closed channel with nothing in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTerms {
    /// The proxy contract.
    pub proxy: TonAddress,
    /// The client's wallet.
    pub owner: TonAddress,
    /// The client key (signs `client_pay` vouchers).
    pub client_key: [u8; 32],
    /// The registry's `min_client_stake`.
    pub min_stake: u64,
    /// The registry's `client_delay_before_close`, seconds.
    pub close_delay: u32,
}

impl ChannelTerms {
    /// Code and initial data.
    pub fn deployment(&self) -> Result<Deployment, TonCellError> {
        let params = CellBuilder::new()
            .store_raw_address(&self.proxy)?
            .store_raw_address(&self.owner)?
            .store_slice(&self.client_key)?
            .store_u64(64, self.min_stake)?
            .store_u32(32, self.close_delay)?
            .build()?;
        // status:uint2 release_at:uint32 balance stake charged collected voucher_seqno:uint64
        let data = unused_contract(params, &[2, 32, 64, 64, 64, 64, 64])?;
        Deployment::new(&CLIENT_CHANNEL, data)
    }
}

/// The terms of a proxy contract: `params:^(owner root min_stake close_delay)`, then a closed
/// contract with no keys and no workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTerms {
    /// The operator's wallet.
    pub owner: TonAddress,
    /// The root (registry) it belongs to.
    pub root: TonAddress,
    /// The registry's `min_proxy_stake`.
    pub min_stake: u64,
    /// The registry's `proxy_delay_before_close`, seconds.
    pub close_delay: u32,
}

impl ProxyTerms {
    /// Code and initial data.
    pub fn deployment(&self) -> Result<Deployment, TonCellError> {
        let params = CellBuilder::new()
            .store_raw_address(&self.owner)?
            .store_raw_address(&self.root)?
            .store_u64(64, self.min_stake)?
            .store_u32(32, self.close_delay)?
            .build()?;
        // status:uint2 release_at:uint32 stake pool:uint64 next_key_index:uint32, then the keys and
        // workers dictionaries, empty (one 0 bit each)
        let data = unused_contract(params, &[2, 32, 64, 64, 32, 1, 1])?;
        Deployment::new(&PROXY, data)
    }
}

/// The root at version 0: `owner version:uint64 params:^RegistryParams lists:^RegistryLists`.
#[derive(Debug, Clone)]
pub struct RootTerms {
    /// The registry owner's wallet.
    pub owner: TonAddress,
    /// The initial parameters.
    pub params: RegistryParams,
    /// The initial lists.
    pub lists: RegistryLists,
}

impl RootTerms {
    /// Code and initial data.
    pub fn deployment(&self) -> Result<Deployment, TonCellError> {
        let data = CellBuilder::new()
            .store_raw_address(&self.owner)?
            .store_u64(64, 0)?
            .store_child(self.params.cell()?)?
            .store_child(self.lists.cell()?)?
            .build()?;
        Deployment::new(&ROOT, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::tests::{address, bytes, js_vectors};
    use crate::registry_cells::tests::{sample_lists, sample_params};

    #[test]
    fn addresses_are_the_ones_the_js_deployers_compute() {
        let vectors = js_vectors();
        let channel = ChannelTerms {
            proxy: address(0x33),
            owner: address(0x44),
            client_key: bytes(0xaa),
            min_stake: 1_000_000_000,
            close_delay: 600,
        };
        let proxy = ProxyTerms {
            owner: address(0x11),
            root: address(0x22),
            min_stake: 10_000_000_000,
            close_delay: 3600,
        };
        let root = RootTerms {
            owner: address(0x11),
            params: sample_params(),
            lists: sample_lists(),
        };
        let raw = |d: Deployment| d.address().unwrap().to_hex();
        assert_eq!(
            raw(channel.deployment().unwrap()),
            vectors["addresses"]["channel"]
        );
        assert_eq!(
            raw(proxy.deployment().unwrap()),
            vectors["addresses"]["proxy"]
        );
        assert_eq!(
            raw(root.deployment().unwrap()),
            vectors["addresses"]["root"]
        );

        // Weaker terms are another address.
        let shorter = ChannelTerms {
            close_delay: 1,
            ..channel.clone()
        };
        assert_ne!(
            shorter.deployment().unwrap().address().unwrap(),
            channel.deployment().unwrap().address().unwrap()
        );
    }
}
