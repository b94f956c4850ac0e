//! Payment vouchers: cumulative, monotonic statements signed by the party whose money moves.
//!
//! A voucher says "under proxy contract P, counterparty X has paid (or earned) a total of
//! `cumulative` so far; this is statement number `seqno`". Settlement applies only a voucher with a
//! higher seqno than the last applied one (and a cumulative amount not below it), moving just the
//! difference, so replays and reordering are harmless.
//!
//! Who signs: a client pays with [`VoucherKind::ClientPay`] vouchers signed by its own wallet key
//! (the client account id is that key), a proxy pays workers with [`VoucherKind::WorkerPay`]
//! vouchers signed by its voucher key. A proxy's [`VoucherKind::ClientCharge`] statement moves no
//! money: marked final, it only releases a closing client at once (see `rules::client_channel`).

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, IdError, SignatureBytes};
use crate::registry::Amount;

/// Domain separation: a voucher signature can never be mistaken for a transaction signature.
const VOUCHER_DOMAIN: &[u8] = b"cocoon-voucher-v1\0";

/// Which side of the proxy a voucher settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoucherKind {
    /// The proxy's statement of what a client has paid; marked final, it releases a closing
    /// client at once. It never moves the client's money.
    ClientCharge,
    /// What the proxy owes a worker (applied to the worker contract).
    WorkerPay,
    /// What a client has authorized the proxy to collect, signed by the client's own wallet key
    /// (applied to the client contract).
    ClientPay,
}

/// The two ids a voucher names: its proxy contract and its counterparty's (the client's channel
/// or the worker's payee). What they are depends on the settlement backend
/// ([`crate::Settlement::voucher_ids`]): the accounts themselves on the local ledger; on TON the
/// contracts' own ids (the proxy contract, the client's channel, the worker's wallet), since a
/// contract checks the voucher against itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherIds {
    /// What the voucher's `proxy` field holds.
    pub proxy: AccountId,
    /// What its `counterparty` field holds.
    pub counterparty: AccountId,
}

impl VoucherIds {
    /// The ids as the local ledger names them: the proxy's and the counterparty's accounts.
    pub fn accounts(proxy: AccountId, counterparty: AccountId) -> Self {
        Self {
            proxy,
            counterparty,
        }
    }
}

/// The statement a proxy signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voucher {
    /// Which contract kind this settles.
    pub kind: VoucherKind,
    /// The proxy contract (its owner account).
    pub proxy: AccountId,
    /// The client or worker account.
    pub counterparty: AccountId,
    /// Total amount charged or earned so far, in nano-units.
    pub cumulative: Amount,
    /// Statement number, strictly increasing per (proxy, kind, counterparty).
    pub seqno: u64,
    /// Set on the proxy's last voucher for a client who is closing; lets the client close at once.
    pub is_final: bool,
}

/// A voucher with the proxy's Ed25519 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedVoucher {
    /// The statement.
    pub voucher: Voucher,
    /// Signature by the proxy contract's voucher key over [`Voucher::signing_bytes`].
    pub signature: SignatureBytes,
}

/// Why a voucher's signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    /// The expected signer is not a valid Ed25519 key, or is a weak (small-order) one.
    #[error("voucher key is not a valid, non-weak Ed25519 public key")]
    BadKey,
    /// The signature does not verify under the expected key.
    #[error("voucher signature does not verify")]
    BadSignature,
}

impl Voucher {
    /// The exact bytes signed: a domain tag then every field at fixed width, so no two vouchers
    /// share an encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(VOUCHER_DOMAIN.len() + 1 + 32 + 32 + 8 + 8 + 1);
        out.extend_from_slice(VOUCHER_DOMAIN);
        out.push(match self.kind {
            VoucherKind::ClientCharge => 1,
            VoucherKind::WorkerPay => 2,
            VoucherKind::ClientPay => 3,
        });
        out.extend_from_slice(self.proxy.as_bytes());
        out.extend_from_slice(self.counterparty.as_bytes());
        out.extend_from_slice(&self.cumulative.to_be_bytes());
        out.extend_from_slice(&self.seqno.to_be_bytes());
        out.push(u8::from(self.is_final));
        out
    }

    /// A client's payment: the client of `key` authorizes `cumulative` in total (statement
    /// `seqno`) on the channel `ids` name ([`crate::Settlement::voucher_ids`] of
    /// [`VoucherKind::ClientPay`]), signed with that key.
    pub fn client_pay(
        key: &SigningKey,
        ids: VoucherIds,
        cumulative: Amount,
        seqno: u64,
    ) -> SignedVoucher {
        Voucher {
            kind: VoucherKind::ClientPay,
            proxy: ids.proxy,
            counterparty: ids.counterparty,
            cumulative,
            seqno,
            is_final: false,
        }
        .sign(key)
    }

    /// The ids this voucher names.
    pub fn ids(&self) -> VoucherIds {
        VoucherIds {
            proxy: self.proxy,
            counterparty: self.counterparty,
        }
    }

    /// Signs the voucher (with the key of whoever's money it moves).
    pub fn sign(self, key: &SigningKey) -> SignedVoucher {
        let signature = key.sign(&self.signing_bytes()).into();
        SignedVoucher {
            voucher: self,
            signature,
        }
    }
}

impl SignedVoucher {
    /// Checks the signature against `key` (the proxy contract's voucher key), strictly: a weak
    /// key or a malleated signature is refused.
    pub fn verify(&self, key: &AccountId) -> Result<(), VoucherError> {
        key.verify_strict(&self.voucher.signing_bytes(), &self.signature)
            .map_err(|e| match e {
                IdError::BadSignature => VoucherError::BadSignature,
                _ => VoucherError::BadKey,
            })
    }
}

/// A proxy's voucher-signing side: its contract id and the key its contract names.
pub struct VoucherSigner {
    key: SigningKey,
    proxy: AccountId,
}

impl std::fmt::Debug for VoucherSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("VoucherSigner")
            .field("proxy", &self.proxy)
            .field("voucher_key", &self.voucher_key())
            .finish()
    }
}

impl VoucherSigner {
    /// Signs for proxy contract `proxy` with `key` (the contract's `voucher_key`).
    pub fn new(key: SigningKey, proxy: AccountId) -> Self {
        Self { key, proxy }
    }

    /// The public key to register as the contract's `voucher_key`.
    pub fn voucher_key(&self) -> AccountId {
        AccountId::from(&self.key)
    }

    /// A client-charge statement: `client` has paid `cumulative` in total (statement `seqno`).
    /// It moves no money; `is_final` marks the release that lets the client close at once.
    pub fn client_charge(
        &self,
        client: AccountId,
        cumulative: Amount,
        seqno: u64,
        is_final: bool,
    ) -> SignedVoucher {
        Voucher {
            kind: VoucherKind::ClientCharge,
            proxy: self.proxy,
            counterparty: client,
            cumulative,
            seqno,
            is_final,
        }
        .sign(&self.key)
    }

    /// A worker-pay voucher: `worker` has earned `cumulative` in total (statement `seqno`).
    pub fn worker_pay(&self, worker: AccountId, cumulative: Amount, seqno: u64) -> SignedVoucher {
        Voucher {
            kind: VoucherKind::WorkerPay,
            proxy: self.proxy,
            counterparty: worker,
            cumulative,
            seqno,
            is_final: false,
        }
        .sign(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voucher() -> Voucher {
        Voucher {
            kind: VoucherKind::ClientCharge,
            proxy: AccountId([1; 32]),
            counterparty: AccountId([2; 32]),
            cumulative: 500,
            seqno: 3,
            is_final: false,
        }
    }

    #[test]
    fn signed_voucher_verifies_under_its_key_only() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let other = SigningKey::from_bytes(&[6; 32]);
        let signed = voucher().sign(&key);
        signed.verify(&AccountId::from(&key)).unwrap();
        assert_eq!(
            signed.verify(&AccountId::from(&other)),
            Err(VoucherError::BadSignature)
        );
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let id = AccountId::from(&key);
        let signed = voucher().sign(&key);
        let tamper: [fn(&mut Voucher); 6] = [
            |v| v.kind = VoucherKind::ClientPay,
            |v| v.cumulative += 1,
            |v| v.seqno += 1,
            |v| v.kind = VoucherKind::WorkerPay,
            |v| v.counterparty = AccountId([9; 32]),
            |v| v.is_final = true,
        ];
        for change in tamper {
            let mut forged = signed;
            change(&mut forged.voucher);
            assert_eq!(forged.verify(&id), Err(VoucherError::BadSignature));
        }
    }

    #[test]
    fn signer_produces_vouchers_its_key_verifies() {
        let signer = VoucherSigner::new(SigningKey::from_bytes(&[5; 32]), AccountId([1; 32]));
        let charge = signer.client_charge(AccountId([2; 32]), 10, 1, true);
        let pay = signer.worker_pay(AccountId([3; 32]), 8, 1);
        charge.verify(&signer.voucher_key()).unwrap();
        pay.verify(&signer.voucher_key()).unwrap();
        assert_eq!(charge.voucher.kind, VoucherKind::ClientCharge);
        assert!(charge.voucher.is_final);
        assert_eq!(pay.voucher.kind, VoucherKind::WorkerPay);
        assert_eq!(pay.voucher.proxy, AccountId([1; 32]));
    }

    #[test]
    fn json_round_trip_keeps_the_signature_valid() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let signed = voucher().sign(&key);
        let back: SignedVoucher =
            serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
        back.verify(&AccountId::from(&key)).unwrap();
    }

    #[test]
    fn a_weak_voucher_key_signs_nothing() {
        use crate::ids::{FORGED_SIGNATURE, WEAK_KEY};
        let forged = SignedVoucher {
            voucher: voucher(),
            signature: FORGED_SIGNATURE,
        };
        assert_eq!(forged.verify(&WEAK_KEY), Err(VoucherError::BadKey));
    }

    #[test]
    fn unknown_fields_and_loose_hex_are_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let json = serde_json::to_string(&voucher().sign(&key)).unwrap();
        assert!(serde_json::from_str::<SignedVoucher>(&json).is_ok());
        for bad in [
            json.replacen('{', "{\"padding\":\"x\",", 1),
            json.replace("\"is_final\":false", "\"is_final\":false,\"extra\":1"),
            json.replace("\"is_final\":false,", "")
                .replace(",\"is_final\":false", ""),
            json.replacen("0101", "0A01", 1),
            json.replace(&"02".repeat(32), &format!(" {}", "02".repeat(32))),
        ] {
            assert!(
                serde_json::from_str::<SignedVoucher>(&bad).is_err(),
                "accepted {bad}"
            );
        }
    }
}
