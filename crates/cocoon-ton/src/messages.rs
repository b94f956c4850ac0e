//! The bodies of every message the Cocoon contracts take, in the exact TL-B of docs/contracts.md,
//! built with `tonlib-core` cells. Unit tests compare each with the body the JS wrappers of the
//! sandbox tests build (`contracts/vectors.js`), cell hash for cell hash.

use num_bigint::BigUint;
use tonlib_core::cell::{ArcCell, Cell, CellBuilder, TonCellError};
use tonlib_core::message::{CommonMsgInfo, TonMessage, TransferMessage};
use tonlib_core::TonAddress;

use crate::contracts::Deployment;

/// An internal message a wallet sends: `value` nano-TON and `body` to `to`, deploying `deploy`
/// there with it when given. Bounceable when `bounce`: a refusal returns the value (less gas).
pub fn internal_message(
    to: &TonAddress,
    value: u64,
    bounce: bool,
    body: Cell,
    deploy: Option<&Deployment>,
) -> Result<ArcCell, TonCellError> {
    let mut info = CommonMsgInfo::new_default_internal(to, &BigUint::from(value));
    if let CommonMsgInfo::InternalMessage(message) = &mut info {
        message.bounce = bounce;
    }
    let mut message = TransferMessage::new(info, body.to_arc());
    if let Some(deploy) = deploy {
        message.with_state_init_ref(&deploy.state_init_cell()?);
    }
    let cell = message
        .build()
        .map_err(|e| TonCellError::CellBuilderError(e.to_string()))?;
    Ok(cell.to_arc())
}

/// A signed cumulative statement as messages carry it: kind, proxy and counterparty are filled
/// in by the contract that checks the signature, so they are not sent.
///
/// `signed_amount$_ cumulative:uint64 seqno:uint64 is_final:Bool signature:bits512 = SignedAmount;`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedAmount {
    /// The cumulative amount, nano-TON.
    pub cumulative: u64,
    /// The voucher's sequence number.
    pub seqno: u64,
    /// Whether it is final (a release).
    pub is_final: bool,
    /// Ed25519 signature over `Voucher::signing_bytes`.
    pub signature: [u8; 64],
}

impl SignedAmount {
    fn store(&self, builder: &mut CellBuilder) -> Result<(), TonCellError> {
        builder
            .store_u64(64, self.cumulative)?
            .store_u64(64, self.seqno)?
            .store_bit(self.is_final)?
            .store_slice(&self.signature)?;
        Ok(())
    }
}

/// Op codes (the first 32 bits of each body).
pub mod op {
    /// Channel: `open_channel`.
    pub const OPEN_CHANNEL: u32 = 0x4343_0001;
    /// Channel: `top_up`.
    pub const TOP_UP: u32 = 0x4343_0002;
    /// Channel: `withdraw`.
    pub const WITHDRAW: u32 = 0x4343_0003;
    /// Channel: `pay`.
    pub const PAY: u32 = 0x4343_0004;
    /// Channel: `close`.
    pub const CLOSE: u32 = 0x4343_0005;
    /// Channel: `close_with_release`.
    pub const CLOSE_WITH_RELEASE: u32 = 0x4343_0006;
    /// Channel: `finish_close`.
    pub const FINISH_CLOSE: u32 = 0x4343_0007;
    /// Proxy → channel: `release_verified`.
    pub const RELEASE_VERIFIED: u32 = 0x4350_0003;
    /// Proxy: `open_proxy`.
    pub const OPEN_PROXY: u32 = 0x4351_0001;
    /// Proxy: `add_stake`.
    pub const ADD_STAKE: u32 = 0x4351_0002;
    /// Proxy: `authorize_key`.
    pub const AUTHORIZE_KEY: u32 = 0x4351_0003;
    /// Proxy: `revoke_key`.
    pub const REVOKE_KEY: u32 = 0x4351_0004;
    /// Proxy: `withdraw_commission`.
    pub const WITHDRAW_COMMISSION: u32 = 0x4351_0005;
    /// Proxy: `start_close`.
    pub const START_PROXY_CLOSE: u32 = 0x4351_0006;
    /// Proxy: `finish_close`.
    pub const FINISH_PROXY_CLOSE: u32 = 0x4351_0007;
    /// Proxy: `claim`.
    pub const CLAIM: u32 = 0x4351_0008;
    /// Channel → proxy: `channel_payment`.
    pub const CHANNEL_PAYMENT: u32 = 0x4350_0001;
    /// Channel → proxy: `verify_release`.
    pub const VERIFY_RELEASE: u32 = 0x4350_0002;
    /// Root: `update_registry`.
    pub const UPDATE_REGISTRY: u32 = 0x4352_0001;
}

/// A message to a client channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// `open_channel amount:uint64 stake:uint64` (owner).
    Open {
        /// Deposit, stake included.
        amount: u64,
        /// Part of it locked.
        stake: u64,
    },
    /// `top_up amount:uint64` (owner).
    TopUp {
        /// Amount added.
        amount: u64,
    },
    /// `withdraw amount:uint64` (owner).
    Withdraw {
        /// Amount taken back.
        amount: u64,
    },
    /// `pay voucher:SignedAmount` (anyone): applies the client's `client_pay` voucher.
    Pay(SignedAmount),
    /// `close` (owner).
    Close,
    /// `close_with_release release:SignedAmount` (owner): the proxy's final `client_charge`.
    CloseWithRelease(SignedAmount),
    /// `finish_close` (owner).
    FinishClose,
    /// `release_verified client_key:uint256 cumulative:uint64` (the proxy contract only).
    ReleaseVerified {
        /// The client key.
        client_key: [u8; 32],
        /// The verified release's cumulative.
        cumulative: u64,
    },
}

impl ChannelMessage {
    /// The message body.
    pub fn body(&self) -> Result<Cell, TonCellError> {
        let mut b = CellBuilder::new();
        match self {
            ChannelMessage::Open { amount, stake } => {
                b.store_u32(32, op::OPEN_CHANNEL)?
                    .store_u64(64, *amount)?
                    .store_u64(64, *stake)?;
            }
            ChannelMessage::TopUp { amount } => {
                b.store_u32(32, op::TOP_UP)?.store_u64(64, *amount)?;
            }
            ChannelMessage::Withdraw { amount } => {
                b.store_u32(32, op::WITHDRAW)?.store_u64(64, *amount)?;
            }
            ChannelMessage::Pay(voucher) => {
                b.store_u32(32, op::PAY)?;
                voucher.store(&mut b)?;
            }
            ChannelMessage::Close => {
                b.store_u32(32, op::CLOSE)?;
            }
            ChannelMessage::CloseWithRelease(release) => {
                b.store_u32(32, op::CLOSE_WITH_RELEASE)?;
                release.store(&mut b)?;
            }
            ChannelMessage::FinishClose => {
                b.store_u32(32, op::FINISH_CLOSE)?;
            }
            ChannelMessage::ReleaseVerified {
                client_key,
                cumulative,
            } => {
                b.store_u32(32, op::RELEASE_VERIFIED)?
                    .store_slice(client_key)?
                    .store_u64(64, *cumulative)?;
            }
        }
        b.build()
    }
}

/// A message to a proxy contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMessage {
    /// `open_proxy stake:uint64 voucher_key:uint256` (owner).
    Open {
        /// Stake locked.
        stake: u64,
        /// The key that signs vouchers.
        voucher_key: [u8; 32],
    },
    /// `add_stake amount:uint64` (owner).
    AddStake {
        /// Amount added.
        amount: u64,
    },
    /// `authorize_key key:uint256` (owner).
    AuthorizeKey {
        /// The new current key.
        key: [u8; 32],
    },
    /// `revoke_key key:uint256` (owner).
    RevokeKey {
        /// An earlier key.
        key: [u8; 32],
    },
    /// `withdraw_commission amount:uint64` (owner).
    WithdrawCommission {
        /// Amount taken from the pool.
        amount: u64,
    },
    /// `start_close` (owner).
    StartClose,
    /// `finish_close` (owner).
    FinishClose,
    /// `claim worker:uint256 voucher:SignedAmount` (anyone): pays `0:worker`.
    Claim {
        /// The worker's payee account id (workchain 0).
        worker: [u8; 32],
        /// The `worker_pay` voucher.
        voucher: SignedAmount,
    },
    /// `channel_payment amount:uint64 client_key:uint256` (a channel).
    ChannelPayment {
        /// Amount paid in.
        amount: u64,
        /// The paying client key.
        client_key: [u8; 32],
    },
    /// `verify_release client_key:uint256 release:SignedAmount` (a channel).
    VerifyRelease {
        /// The client key.
        client_key: [u8; 32],
        /// The final `client_charge` voucher.
        release: SignedAmount,
    },
}

impl ProxyMessage {
    /// The message body.
    pub fn body(&self) -> Result<Cell, TonCellError> {
        let mut b = CellBuilder::new();
        match self {
            ProxyMessage::Open { stake, voucher_key } => {
                b.store_u32(32, op::OPEN_PROXY)?
                    .store_u64(64, *stake)?
                    .store_slice(voucher_key)?;
            }
            ProxyMessage::AddStake { amount } => {
                b.store_u32(32, op::ADD_STAKE)?.store_u64(64, *amount)?;
            }
            ProxyMessage::AuthorizeKey { key } => {
                b.store_u32(32, op::AUTHORIZE_KEY)?.store_slice(key)?;
            }
            ProxyMessage::RevokeKey { key } => {
                b.store_u32(32, op::REVOKE_KEY)?.store_slice(key)?;
            }
            ProxyMessage::WithdrawCommission { amount } => {
                b.store_u32(32, op::WITHDRAW_COMMISSION)?
                    .store_u64(64, *amount)?;
            }
            ProxyMessage::StartClose => {
                b.store_u32(32, op::START_PROXY_CLOSE)?;
            }
            ProxyMessage::FinishClose => {
                b.store_u32(32, op::FINISH_PROXY_CLOSE)?;
            }
            ProxyMessage::Claim { worker, voucher } => {
                b.store_u32(32, op::CLAIM)?.store_slice(worker)?;
                voucher.store(&mut b)?;
            }
            ProxyMessage::ChannelPayment { amount, client_key } => {
                b.store_u32(32, op::CHANNEL_PAYMENT)?
                    .store_u64(64, *amount)?
                    .store_slice(client_key)?;
            }
            ProxyMessage::VerifyRelease {
                client_key,
                release,
            } => {
                b.store_u32(32, op::VERIFY_RELEASE)?
                    .store_slice(client_key)?;
                release.store(&mut b)?;
            }
        }
        b.build()
    }
}

/// `update_registry version:uint64 owner:MsgAddressInt params:^RegistryParams
/// lists:^RegistryLists` (the registry owner's wallet): replaces the whole registry.
#[derive(Debug, Clone)]
pub struct UpdateRegistry {
    /// Must exceed the current version.
    pub version: u64,
    /// The owner from now on (may hand the registry on).
    pub owner: TonAddress,
    /// `params` (see [`crate::registry_cells::RegistryParams`]).
    pub params: Cell,
    /// `lists` (see [`crate::registry_cells::RegistryLists`]).
    pub lists: Cell,
}

impl UpdateRegistry {
    /// The message body.
    pub fn body(&self) -> Result<Cell, TonCellError> {
        CellBuilder::new()
            .store_u32(32, op::UPDATE_REGISTRY)?
            .store_u64(64, self.version)?
            .store_raw_address(&self.owner)?
            .store_child(self.params.clone())?
            .store_child(self.lists.clone())?
            .build()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tonlib_core::cell::BagOfCells;

    use super::*;

    /// What `contracts/vectors.js` printed.
    pub(crate) fn js_vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../testdata/js_vectors.json")).unwrap()
    }

    /// The hash of a hex BOC of `js_vectors()`.
    pub(crate) fn js_hash(hex_boc: &serde_json::Value) -> [u8; 32] {
        let bytes = hex::decode(hex_boc.as_str().unwrap()).unwrap();
        *BagOfCells::parse(&bytes)
            .unwrap()
            .single_root()
            .unwrap()
            .cell_hash()
            .as_slice()
            .first_chunk()
            .unwrap()
    }

    pub(crate) fn bytes(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    pub(crate) fn address(byte: u8) -> TonAddress {
        TonAddress::from_hex_str(&format!("0:{}", hex::encode([byte; 32]))).unwrap()
    }

    const SIGNED: SignedAmount = SignedAmount {
        cumulative: 1234,
        seqno: 7,
        is_final: true,
        signature: [0x5a; 64],
    };

    #[test]
    fn every_body_is_the_one_the_js_wrappers_build() {
        let vectors = js_vectors();
        let channel = [
            (
                "open_channel",
                ChannelMessage::Open {
                    amount: 5_000_000_000,
                    stake: 1_000_000_000,
                },
            ),
            ("top_up", ChannelMessage::TopUp { amount: 42 }),
            ("withdraw", ChannelMessage::Withdraw { amount: 43 }),
            ("pay", ChannelMessage::Pay(SIGNED)),
            ("close", ChannelMessage::Close),
            (
                "close_with_release",
                ChannelMessage::CloseWithRelease(SIGNED),
            ),
            ("finish_close", ChannelMessage::FinishClose),
            (
                "release_verified",
                ChannelMessage::ReleaseVerified {
                    client_key: bytes(0xaa),
                    cumulative: 1234,
                },
            ),
        ];
        let proxy = [
            (
                "open_proxy",
                ProxyMessage::Open {
                    stake: 10_000_000_000,
                    voucher_key: bytes(0xaa),
                },
            ),
            ("add_stake", ProxyMessage::AddStake { amount: 44 }),
            (
                "authorize_key",
                ProxyMessage::AuthorizeKey { key: bytes(0xab) },
            ),
            ("revoke_key", ProxyMessage::RevokeKey { key: bytes(0xac) }),
            (
                "withdraw_commission",
                ProxyMessage::WithdrawCommission { amount: 45 },
            ),
            ("start_proxy_close", ProxyMessage::StartClose),
            ("finish_proxy_close", ProxyMessage::FinishClose),
            (
                "claim",
                ProxyMessage::Claim {
                    worker: bytes(0xbb),
                    voucher: SIGNED,
                },
            ),
            (
                "channel_payment",
                ProxyMessage::ChannelPayment {
                    amount: 46,
                    client_key: bytes(0xaa),
                },
            ),
            (
                "verify_release",
                ProxyMessage::VerifyRelease {
                    client_key: bytes(0xaa),
                    release: SIGNED,
                },
            ),
        ];
        let built = channel
            .iter()
            .map(|(name, m)| (*name, m.body().unwrap()))
            .chain(proxy.iter().map(|(name, m)| (*name, m.body().unwrap())));
        let mut count = 0;
        for (name, cell) in built {
            assert_eq!(
                cell.cell_hash().as_slice(),
                js_hash(&vectors["bodies"][name]),
                "{name}"
            );
            count += 1;
        }
        assert_eq!(count, vectors["bodies"].as_object().unwrap().len());
    }
}
