//! What a receipt's signatures cover, and signing and checking one.
//!
//! Version 2 signs the root of the Merkle tree over a batch of answers ([`crate::merkle`]);
//! version 1 signed each record. Each signature's message starts with a domain prefix of its own,
//! so no signature of one kind passes for another.

use cocoon_ratls::Identity;
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::{merkle, AnswerRecord, Inclusion, ReceiptError, RECEIPT_VERSION};

const WORKER_DOMAIN: &[u8] = b"cocoon-receipt/v1/worker\n";
const PROXY_DOMAIN: &[u8] = b"cocoon-receipt/v1/proxy\n";
const WORKER_BATCH_DOMAIN: &[u8] = b"cocoon-receipt/v2/worker-batch\n";
const PROXY_BATCH_DOMAIN: &[u8] = b"cocoon-receipt/v2/proxy-batch\n";

/// Why a receipt of `version` (neither 1 nor [`RECEIPT_VERSION`]) is not read.
pub(crate) fn unreadable_version(version: u32) -> ReceiptError {
    ReceiptError::Malformed(format!(
        "version {version} (this build reads 1 and {RECEIPT_VERSION})"
    ))
}

/// `message` signed with `identity`'s key, in hex.
pub(crate) fn sign(identity: &Identity, message: &[u8]) -> String {
    hex::encode(identity.signing_key().sign(message).to_bytes())
}

/// Checks one signature (hex) strictly.
pub(crate) fn check_signature(
    key: &[u8; 32],
    signature_hex: &str,
    message: &[u8],
    which: &'static str,
) -> Result<(), ReceiptError> {
    let bad = || ReceiptError::BadSignature(which);
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut bytes).map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| bad())?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

/// What a receipt's two signatures cover after their domain prefixes: the root of the answer's
/// batch (version 2), or the record itself (version 1).
pub(crate) struct Covered {
    worker_domain: &'static [u8],
    proxy_domain: &'static [u8],
    bytes: Vec<u8>,
}

impl Covered {
    pub(crate) fn of(
        version: u32,
        answer: &AnswerRecord,
        batch: Option<&Inclusion>,
    ) -> Result<Self, ReceiptError> {
        let record = record_bytes(answer);
        match (version, batch) {
            (1, None) => Ok(Covered {
                worker_domain: WORKER_DOMAIN,
                proxy_domain: PROXY_DOMAIN,
                bytes: record,
            }),
            (2, Some(batch)) => {
                let root = batch
                    .root(merkle::leaf_hash(&record))
                    .map_err(|error| ReceiptError::Malformed(error.to_string()))?;
                Ok(Covered::batch(batch.size, &root))
            }
            (1, Some(_)) => Err(ReceiptError::Malformed(
                "a version 1 receipt has no batch".into(),
            )),
            (2, None) => Err(ReceiptError::Malformed(
                "a version 2 receipt needs its batch proof".into(),
            )),
            _ => Err(unreadable_version(version)),
        }
    }

    /// A batch's: its size and root. The size is signed too because an inclusion proof is only
    /// meaningful for one tree size (the same path can reach the same root in a tree of another
    /// size).
    pub(crate) fn batch(size: u32, root: &[u8; 32]) -> Self {
        Covered {
            worker_domain: WORKER_BATCH_DOMAIN,
            proxy_domain: PROXY_BATCH_DOMAIN,
            bytes: [size.to_be_bytes().as_slice(), root].concat(),
        }
    }

    pub(crate) fn worker_message(&self) -> Vec<u8> {
        [self.worker_domain, &self.bytes].concat()
    }

    pub(crate) fn proxy_message(&self, worker_signature: &str) -> Vec<u8> {
        [self.proxy_domain, &self.bytes, worker_signature.as_bytes()].concat()
    }
}

/// The bytes of a record as signed (and as a batch's leaf).
pub(crate) fn record_bytes(answer: &AnswerRecord) -> Vec<u8> {
    // A struct of plain fields always serialises.
    serde_json::to_vec(answer).unwrap_or_default()
}
