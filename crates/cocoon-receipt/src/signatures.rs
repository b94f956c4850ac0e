//! A receipt's two signatures, checked one receipt at a time or many receipts at once.
//!
//! [`Receipt::signatures`](crate::Receipt::signatures) gathers what the two signatures cover and
//! the keys that must have made them; [`ReceiptSignatures::verify`] checks them alone
//! (`verify_strict`, as [`Receipt::verify`](crate::Receipt::verify) does), and [`verify_batch`]
//! checks many receipts with one multi-scalar multiplication (ed25519-dalek's batch
//! verification), falling back to one receipt at a time to find which failed.
//!
//! What a batch accepts beyond `verify_strict`: a signature whose `R` is of small order or
//! carries a torsion component. Only the signing key's holder can make one (the signature
//! equation still has to hold for that key), so it proves nothing the key's holder did not sign;
//! keys of small order, which would let anyone sign, are refused before any check.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::ReceiptError;

/// One signature, the bytes it covers and the key that must have made it.
#[derive(Debug, Clone)]
struct Signed {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    /// `worker` or `proxy`.
    which: &'static str,
}

impl Signed {
    fn verify(&self) -> Result<(), ReceiptError> {
        self.key
            .verify_strict(&self.message, &self.signature)
            .map_err(|_| ReceiptError::BadSignature(self.which))
    }
}

/// What makes two signatures the same check: key, signature and message.
type SignedKey<'a> = (&'a [u8; 32], [u8; 64], &'a [u8]);

/// A receipt's worker and proxy signatures, ready to be checked.
#[derive(Debug, Clone)]
pub struct ReceiptSignatures {
    signed: [Signed; 2],
}

impl ReceiptSignatures {
    /// The worker's signature over `worker_message` and the proxy's over `proxy_message`.
    pub(crate) fn new(
        worker: (&VerifyingKey, Vec<u8>, &str),
        proxy: (&VerifyingKey, Vec<u8>, &str),
    ) -> Result<Self, ReceiptError> {
        let signed = |(key, message, signature_hex): (&VerifyingKey, Vec<u8>, &str),
                      which: &'static str| {
            let mut bytes = [0u8; 64];
            hex::decode_to_slice(signature_hex, &mut bytes)
                .map_err(|_| ReceiptError::BadSignature(which))?;
            if key.is_weak() {
                return Err(ReceiptError::BadSignature(which));
            }
            Ok(Signed {
                key: *key,
                message,
                signature: Signature::from_bytes(&bytes),
                which,
            })
        };
        Ok(ReceiptSignatures {
            signed: [signed(worker, "worker")?, signed(proxy, "proxy")?],
        })
    }

    /// Checks both signatures, each on its own (strict Ed25519).
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.signed.iter().try_for_each(Signed::verify)
    }
}

/// Checks every receipt's signatures: all in one batch, and when the batch fails, each receipt
/// alone, so that one bad receipt refuses only itself. The verdicts are in `receipts`' order.
///
/// Receipts of one signed batch of answers carry the same two signatures over the same root:
/// each distinct (key, message, signature) is checked once.
pub fn verify_batch(receipts: &[&ReceiptSignatures]) -> Vec<Result<(), ReceiptError>> {
    let mut distinct: Vec<&Signed> = Vec::new();
    let mut place: HashMap<SignedKey<'_>, usize> = HashMap::new();
    let places: Vec<[usize; 2]> = receipts
        .iter()
        .map(|receipt| {
            receipt.signed.each_ref().map(|signed| {
                let key = (
                    signed.key.as_bytes(),
                    signed.signature.to_bytes(),
                    signed.message.as_slice(),
                );
                *place.entry(key).or_insert_with(|| {
                    distinct.push(signed);
                    distinct.len() - 1
                })
            })
        })
        .collect();
    let messages: Vec<&[u8]> = distinct.iter().map(|s| s.message.as_slice()).collect();
    let signatures: Vec<Signature> = distinct.iter().map(|s| s.signature).collect();
    let keys: Vec<VerifyingKey> = distinct.iter().map(|s| s.key).collect();
    // One receipt's two signatures alone are checked strictly; so is every signature of a failed
    // batch.
    if distinct.len() > 2 && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return receipts.iter().map(|_| Ok(())).collect();
    }
    let verified: Vec<bool> = distinct.iter().map(|s| s.verify().is_ok()).collect();
    places
        .iter()
        .map(|pair| match pair.iter().find(|&&at| !verified[at]) {
            Some(&at) => Err(ReceiptError::BadSignature(distinct[at].which)),
            None => Ok(()),
        })
        .collect()
}
