//! Ledger transactions: what an account may ask the ledger to do, and the Ed25519 envelope that
//! proves the account asked.
//!
//! The envelope carries the exact JSON text that was signed (`payload`), so verification never
//! depends on re-serialising to the same bytes. That text must also be canonical — exactly what
//! [`SignedTransaction::sign`] writes for the decoded transaction: no unknown fields, no padding,
//! no alternative spellings — so what the ledger stores forever is as small as the operation.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Hash32, IdError, SignatureBytes};
use crate::registry::{Amount, Registry};
use crate::voucher::SignedVoucher;

/// Domain separation: a transaction signature can never be mistaken for a voucher signature.
const TX_DOMAIN: &[u8] = b"cocoon-ledger-tx-v1\0";

/// One operation on the ledger. The signer of the enclosing [`Transaction`] is the acting account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransactionBody {
    /// Development faucet: create `amount` in the signer's account (only when the faucet is on).
    Mint {
        /// Amount to create.
        amount: Amount,
    },
    /// Move `amount` from the signer's account to `to`.
    Transfer {
        /// Receiving account.
        to: AccountId,
        /// Amount to move.
        amount: Amount,
    },
    /// Open (or reopen) the signer's proxy contract, locking `stake` from the signer's account.
    OpenProxy {
        /// Stake to lock; at least the registry's `min_proxy_stake`.
        stake: Amount,
        /// The key that signs this proxy's vouchers (its node key; may equal the signer).
        voucher_key: AccountId,
    },
    /// Add to the signer's proxy stake.
    AddProxyStake {
        /// Amount to add.
        amount: Amount,
    },
    /// Record the proxy's database position so a rolled-back database can be detected. No node
    /// sends it any more (see docs/money.md); kept so that ledgers holding commits stay readable.
    CommitProxyState {
        /// The proxy's own state sequence number; must exceed the last committed one.
        seqno: u64,
        /// Hash of the proxy's ledger state at `seqno`.
        state_hash: Hash32,
    },
    /// Move `amount` of collected client funds from the signer's proxy pool to the signer.
    WithdrawCommission {
        /// Amount to withdraw.
        amount: Amount,
    },
    /// Begin closing the signer's proxy contract; stake and pool return after the delay.
    StartProxyClose,
    /// Finish closing the signer's proxy contract once `proxy_delay_before_close` has passed.
    FinishProxyClose,
    /// Open (or reopen) the signer's client contract with `proxy`, depositing `amount`.
    OpenClient {
        /// The proxy contract.
        proxy: AccountId,
        /// Amount deposited, stake included.
        amount: Amount,
        /// Part of `amount` locked as stake; at least the registry's `min_client_stake`.
        stake: Amount,
    },
    /// Add funds to the signer's client contract with `proxy`.
    TopUp {
        /// The proxy contract.
        proxy: AccountId,
        /// Amount to add.
        amount: Amount,
    },
    /// Take back funds above the stake from the signer's client contract with `proxy`.
    WithdrawClient {
        /// The proxy contract.
        proxy: AccountId,
        /// Amount to withdraw.
        amount: Amount,
    },
    /// Apply a proxy's client-charge voucher (anyone may submit it).
    Charge {
        /// The proxy's voucher for what the client owes in total.
        voucher: SignedVoucher,
    },
    /// Pay a worker from the proxy contract with the proxy's worker-pay voucher (anyone may submit).
    Claim {
        /// The proxy's voucher for what the worker has earned in total.
        voucher: SignedVoucher,
    },
    /// Close the signer's client contract with `proxy`: at once with the proxy's final voucher;
    /// without it, the part above the stake now and the stake after `client_delay_before_close`.
    CloseClient {
        /// The proxy contract.
        proxy: AccountId,
        /// The proxy's final client-charge voucher, if the client has one.
        #[serde(default)]
        final_voucher: Option<SignedVoucher>,
    },
    /// Collect the remaining stake of a client contract whose close delay has passed.
    FinishClientClose {
        /// The proxy contract.
        proxy: AccountId,
    },
    /// Replace the registry document (signer must be the current owner; version must increase).
    UpdateRegistry {
        /// The new document.
        registry: Registry,
    },
    /// Let `key` sign the vouchers of the signer's (open) proxy contract from now on; the keys
    /// authorized before stay valid, up to [`crate::rules::MAX_PROXY_VOUCHER_KEYS`] in all (the
    /// oldest beyond it is evicted). A proxy node makes its key at each start and the contract's
    /// owner authorizes it with this.
    AuthorizeProxyKey {
        /// The proxy node's voucher key.
        key: AccountId,
    },
    /// Stop honouring vouchers signed by `key`, an earlier (not the current) voucher key of the
    /// signer's proxy contract: for a key that leaked. Its unclaimed vouchers become worthless.
    RevokeProxyKey {
        /// The key to revoke.
        key: AccountId,
    },
}

/// A verified transaction: who acts, with which nonce, doing what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The acting account.
    pub signer: AccountId,
    /// Must exceed the account's last used nonce; a replay is rejected.
    pub nonce: u64,
    /// The operation.
    pub body: TransactionBody,
}

/// What the signer signs (as JSON text).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    nonce: u64,
    body: TransactionBody,
}

/// A transaction as sent over the wire and kept in the ledger's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTransaction {
    /// The acting account (its public key).
    pub signer: AccountId,
    /// JSON text of `{ "nonce": …, "body": … }`, exactly as signed.
    pub payload: String,
    /// Ed25519 signature over a domain tag, the signer and the payload bytes.
    pub signature: SignatureBytes,
}

/// Why a signed transaction could not be built or verified.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The signer is not a valid Ed25519 key, or is a weak (small-order) one.
    #[error("signer is not a valid, non-weak Ed25519 public key")]
    BadSigner,
    /// The signature does not verify.
    #[error("transaction signature does not verify")]
    BadSignature,
    /// The payload is not a well-formed transaction.
    #[error("malformed transaction payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// The payload decodes, but is not the one canonical text of what it decodes to (extra
    /// whitespace or fields, another key order, escapes): refused so nobody can pad the log.
    #[error("transaction payload is not canonical JSON (sign it with SignedTransaction::sign)")]
    NotCanonical,
}

fn signing_bytes(signer: &AccountId, payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(TX_DOMAIN.len() + 32 + payload.len());
    out.extend_from_slice(TX_DOMAIN);
    out.extend_from_slice(signer.as_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

impl SignedTransaction {
    /// Builds and signs a transaction for the account of `key`.
    pub fn sign(
        key: &SigningKey,
        nonce: u64,
        body: TransactionBody,
    ) -> Result<Self, TransactionError> {
        let signer = AccountId::from(key);
        let payload = serde_json::to_string(&Payload { nonce, body })?;
        let signature = key.sign(&signing_bytes(&signer, &payload)).into();
        Ok(Self {
            signer,
            payload,
            signature,
        })
    }

    /// Checks the signature (strictly: weak keys and malleated signatures are refused), decodes
    /// the payload and checks that it is canonical.
    pub fn verify(&self) -> Result<Transaction, TransactionError> {
        self.signer
            .verify_strict(&signing_bytes(&self.signer, &self.payload), &self.signature)
            .map_err(|e| match e {
                IdError::BadSignature => TransactionError::BadSignature,
                _ => TransactionError::BadSigner,
            })?;
        let payload: Payload = serde_json::from_str(&self.payload)?;
        if serde_json::to_string(&payload)? != self.payload {
            return Err(TransactionError::NotCanonical);
        }
        Ok(Transaction {
            signer: self.signer,
            nonce: payload.nonce,
            body: payload.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_transaction_verifies_and_decodes() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let body = TransactionBody::Transfer {
            to: AccountId([8; 32]),
            amount: 12,
        };
        let signed = SignedTransaction::sign(&key, 7, body.clone()).unwrap();
        let tx = signed.verify().unwrap();
        assert_eq!(tx.signer, AccountId::from(&key));
        assert_eq!(tx.nonce, 7);
        assert_eq!(tx.body, body);
    }

    #[test]
    fn tampered_payload_or_foreign_signer_is_rejected() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let signed = SignedTransaction::sign(&key, 1, TransactionBody::StartProxyClose).unwrap();

        let mut tampered = signed.clone();
        tampered.payload = tampered.payload.replace("1", "2");
        assert!(matches!(
            tampered.verify(),
            Err(TransactionError::BadSignature)
        ));

        let mut foreign = signed;
        foreign.signer = AccountId::from(&SigningKey::from_bytes(&[5; 32]));
        assert!(matches!(
            foreign.verify(),
            Err(TransactionError::BadSignature)
        ));
    }

    #[test]
    fn a_weak_signer_cannot_sign_with_the_identity_signature() {
        use crate::ids::{FORGED_SIGNATURE, WEAK_KEY};
        let payload = serde_json::to_string(&Payload {
            nonce: 1,
            body: TransactionBody::Transfer {
                to: AccountId::from(&SigningKey::from_bytes(&[4; 32])),
                amount: 1_000,
            },
        })
        .unwrap();
        let forged = SignedTransaction {
            signer: WEAK_KEY,
            payload,
            signature: FORGED_SIGNATURE,
        };
        assert!(matches!(forged.verify(), Err(TransactionError::BadSigner)));
    }

    #[test]
    fn non_canonical_payloads_are_refused_even_when_signed() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let signer = AccountId::from(&key);
        let canonical = SignedTransaction::sign(&key, 3, TransactionBody::StartProxyClose)
            .unwrap()
            .payload;
        let padded = [
            format!("{canonical}{}", " ".repeat(1000)),
            canonical.replacen('{', "{\"padding\":\"xxxxxxxx\",", 1),
            canonical.replace(
                "\"type\":\"start_proxy_close\"",
                "\"type\":\"start_proxy_close\",\"pad\":[1,2,3]",
            ),
            canonical.replace("3", "3.0"),
            canonical.replace(':', ": "),
        ];
        for payload in padded {
            let signature = key.sign(&signing_bytes(&signer, &payload)).into();
            let tx = SignedTransaction {
                signer,
                payload: payload.clone(),
                signature,
            };
            assert!(tx.verify().is_err(), "accepted {payload}");
        }
    }
}
