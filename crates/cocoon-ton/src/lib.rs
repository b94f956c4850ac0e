//! TON access for Cocoon's settlement: a client of the TON HTTP API v2 ([`api`]) and one sender
//! per wallet ([`sender`]) that signs v5r1 external messages with a short validity and watches
//! the chain until each is applied or can no longer be.
//!
//! The contracts and the `Settlement` backend over them build on this (issue #12); the devnet in
//! `contracts/devnet/` serves the same API for tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod code;
pub mod sender;

pub use api::{AccountState, GetMethodResult, TonApi, TonApiError, Transaction, TxId};
pub use sender::{SendError, WalletSender};
pub use tonlib_core::TonAddress;
