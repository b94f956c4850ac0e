//! Randomized tests of the decoders a peer reaches: [`SignedTransaction`] (JSON envelope, then
//! [`SignedTransaction::verify`]) and [`SignedVoucher`]. They must never panic, must refuse what
//! is not canonical, and must never accept a changed input as a different valid one.
//!
//! Each property runs `COCOON_FUZZ_CASES` cases (default 256, fast enough for `cargo test`):
//! `COCOON_FUZZ_CASES=1000000 cargo test -p cocoon-ledger --test decoder_fuzz` (dependencies are
//! optimised even in test builds).

use cocoon_money::{
    AccountId, Hash32, Registry, SignedTransaction, SignedVoucher, TransactionBody, Voucher,
    VoucherKind,
};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("COCOON_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Shrinking a million-case run is not worth the time; the failing input is printed.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

fn key() -> impl Strategy<Value = SigningKey> {
    any::<[u8; 32]>().prop_map(|seed| SigningKey::from_bytes(&seed))
}

fn account() -> impl Strategy<Value = AccountId> {
    key().prop_map(|k| AccountId::from(&k))
}

fn voucher() -> impl Strategy<Value = Voucher> {
    (
        any::<bool>(),
        account(),
        account(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(charge, proxy, counterparty, cumulative, seqno, is_final)| Voucher {
                kind: if charge {
                    VoucherKind::ClientCharge
                } else {
                    VoucherKind::WorkerPay
                },
                proxy,
                counterparty,
                cumulative,
                seqno,
                is_final,
            },
        )
}

fn signed_voucher() -> impl Strategy<Value = (SignedVoucher, AccountId)> {
    (voucher(), key()).prop_map(|(v, k)| (v.sign(&k), AccountId::from(&k)))
}

fn body() -> impl Strategy<Value = TransactionBody> {
    use TransactionBody as B;
    prop_oneof![
        any::<u64>().prop_map(|amount| B::Mint { amount }),
        (account(), any::<u64>()).prop_map(|(to, amount)| B::Transfer { to, amount }),
        (any::<u64>(), account())
            .prop_map(|(stake, voucher_key)| B::OpenProxy { stake, voucher_key }),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(seqno, h)| B::CommitProxyState {
            seqno,
            state_hash: Hash32(h)
        }),
        Just(B::StartProxyClose),
        Just(B::FinishProxyClose),
        account().prop_map(|key| B::AuthorizeProxyKey { key }),
        account().prop_map(|key| B::RevokeProxyKey { key }),
        (account(), any::<u64>(), any::<u64>()).prop_map(|(proxy, amount, stake)| {
            B::OpenClient {
                proxy,
                amount,
                stake,
            }
        }),
        signed_voucher().prop_map(|(voucher, _)| B::Charge { voucher }),
        (account(), proptest::option::of(signed_voucher())).prop_map(|(proxy, v)| {
            B::CloseClient {
                proxy,
                final_voucher: v.map(|(v, _)| v),
            }
        }),
        (account(), any::<u64>(), "[a-z0-9/:.-]{1,20}").prop_map(|(owner, version, model)| {
            let mut registry = Registry::new(owner);
            registry.version = version;
            registry.models.insert(model, Hash32([7; 32]));
            B::UpdateRegistry { registry }
        }),
    ]
}

fn signed_transaction() -> impl Strategy<Value = (SigningKey, SignedTransaction)> {
    (key(), any::<u64>(), body()).prop_map(|(k, nonce, body)| {
        let tx = SignedTransaction::sign(&k, nonce, body).unwrap();
        (k, tx)
    })
}

/// What the ledger does with a request body: decode the envelope, then verify it.
fn ledger_accepts(bytes: &[u8]) -> Option<cocoon_money::Transaction> {
    serde_json::from_slice::<SignedTransaction>(bytes)
        .ok()?
        .verify()
        .ok()
}

/// Signs `payload` as-is for `key`, the way a hostile but key-holding sender could.
fn sign_raw(key: &SigningKey, payload: String) -> SignedTransaction {
    let signer = AccountId::from(key);
    let mut message = b"cocoon-ledger-tx-v1\0".to_vec();
    message.extend_from_slice(signer.as_bytes());
    message.extend_from_slice(payload.as_bytes());
    SignedTransaction {
        signer,
        payload,
        signature: key.sign(&message).into(),
    }
}

/// The ways a signer could re-spell its own payload; each must be refused although signed.
#[derive(Debug, Clone)]
enum Respelling {
    Whitespace(usize),
    UnknownField(String),
    UppercaseHex(usize),
    Truncate(usize),
    Duplicate,
}

fn respelling() -> impl Strategy<Value = Respelling> {
    prop_oneof![
        any::<usize>().prop_map(Respelling::Whitespace),
        "[a-z_]{1,12}".prop_map(Respelling::UnknownField),
        any::<usize>().prop_map(Respelling::UppercaseHex),
        any::<usize>().prop_map(Respelling::Truncate),
        Just(Respelling::Duplicate),
    ]
}

fn respell(payload: &str, how: &Respelling) -> String {
    let at = |i: usize| {
        let boundaries: Vec<usize> = (0..=payload.len())
            .filter(|&b| payload.is_char_boundary(b))
            .collect();
        boundaries[i % boundaries.len()]
    };
    match how {
        Respelling::Whitespace(i) => {
            let i = at(*i);
            format!("{} {}", &payload[..i], &payload[i..])
        }
        Respelling::UnknownField(name) => payload.replacen('{', &format!("{{\"{name}\":0,"), 1),
        Respelling::UppercaseHex(i) => {
            let hex: Vec<usize> = payload
                .char_indices()
                .filter(|(_, c)| matches!(c, 'a'..='f'))
                .map(|(i, _)| i)
                .collect();
            match hex.get(i % hex.len().max(1)) {
                Some(&j) => {
                    let mut s = payload.to_owned();
                    s.replace_range(j..=j, &payload[j..=j].to_uppercase());
                    s
                }
                None => format!("{payload} "),
            }
        }
        Respelling::Truncate(i) => payload[..at(*i)].to_owned(),
        Respelling::Duplicate => payload.replacen("\"nonce\":", "\"nonce\":0,\"nonce\":", 1),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_decode_to_a_valid_transaction(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        prop_assert!(ledger_accepts(&bytes).is_none());
        let _ = serde_json::from_slice::<SignedVoucher>(&bytes);
    }

    #[test]
    fn arbitrary_text_in_the_envelope_never_panics(
        signer in account(), payload in ".{0,300}", signature in any::<[u8; 32]>()
    ) {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&signature);
        let envelope = serde_json::json!({
            "signer": signer, "payload": payload, "signature": hex::encode(sig)
        });
        prop_assert!(ledger_accepts(envelope.to_string().as_bytes()).is_none());
    }

    #[test]
    fn a_signed_transaction_is_accepted_exactly_as_written(
        (key, tx) in signed_transaction(),
        flip in any::<(usize, u8)>(),
        how in respelling(),
    ) {
        let original = tx.verify().unwrap();
        let wire = serde_json::to_vec(&tx).unwrap();
        prop_assert_eq!(ledger_accepts(&wire), Some(original.clone()));

        // Any changed byte of the envelope is refused, or (never seen) decodes to the same thing.
        let mut changed = wire.clone();
        let (i, x) = (flip.0 % changed.len(), flip.1.max(1));
        changed[i] ^= x;
        if let Some(tx) = ledger_accepts(&changed) {
            prop_assert_eq!(tx, original.clone());
        }

        // An unknown field in the envelope is refused.
        let mut padded = serde_json::to_value(&tx).unwrap();
        padded["pad"] = "x".into();
        prop_assert!(ledger_accepts(padded.to_string().as_bytes()).is_none());

        // The signer's own re-spellings of the payload are refused although correctly signed,
        // unless they spell another transaction canonically (a changed model name, say).
        let respelled = respell(&tx.payload, &how);
        if respelled != tx.payload {
            if let Ok(other) = sign_raw(&key, respelled.clone()).verify() {
                prop_assert_ne!(&other, &original);
                let canonical = SignedTransaction::sign(&key, other.nonce, other.body).unwrap();
                prop_assert_eq!(canonical.payload, respelled);
            }
        }
    }

    #[test]
    fn a_signed_voucher_decodes_exactly_as_written(
        (voucher, key) in signed_voucher(),
        flip in any::<(usize, u8)>(),
        field in "x_[a-z_]{0,10}",
    ) {
        let wire = serde_json::to_vec(&voucher).unwrap();
        let back: SignedVoucher = serde_json::from_slice(&wire).unwrap();
        prop_assert_eq!(back, voucher);
        back.verify(&key).unwrap();

        let mut changed = wire.clone();
        let (i, x) = (flip.0 % changed.len(), flip.1.max(1));
        changed[i] ^= x;
        if let Ok(other) = serde_json::from_slice::<SignedVoucher>(&changed) {
            if other.verify(&key).is_ok() {
                prop_assert_eq!(other, voucher);
            }
        }

        let mut padded = serde_json::to_value(voucher).unwrap();
        padded[field.as_str()] = 0.into();
        prop_assert!(serde_json::from_value::<SignedVoucher>(padded.clone()).is_err());
        padded.as_object_mut().unwrap().remove(field.as_str());
        padded["voucher"].as_object_mut().unwrap().remove("is_final");
        prop_assert!(serde_json::from_value::<SignedVoucher>(padded).is_err());
    }
}
