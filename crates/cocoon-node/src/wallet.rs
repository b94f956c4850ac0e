//! A node's long-lived wallet key: the Ed25519 key of its ledger account, kept sealed in its data
//! directory so that only the same image can use it after a restart (clients, and workers without
//! a payout account; a proxy keeps none: it names its operator's account and a voucher key made at
//! each start).
//!
//! Peers learn a node's wallet from its attested RA-TLS claims (attribute [`WALLET_ATTRIBUTE`]).
//! Claims are self-asserted by clients (they run outside TEEs), so a client also proves it holds
//! the named wallet's key: [`wallet_proof`], a signature by the wallet key over its current
//! certificate's key, which the proxy checks ([`check_wallet_proof`]) before serving anyone on
//! that wallet; and a client's money moves only with payment vouchers its wallet key signs. A
//! worker may name an account it does not hold the key of (its owner's payout account): naming
//! it only sends that account money.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_money::AccountId;
use cocoon_ratls::PeerIdentity;
use cocoon_tee::sealed::TdxHostSealingKeySource;
use cocoon_tee::{
    AttestationKind, FakeSealingKeySource, SealedKeyStore, SealingKeySource, TeeError,
};
use ed25519_dalek::SigningKey;

use crate::attestation::{own_image_hash, AttestationArgs, TrustError};

/// Claims attribute carrying the node's wallet address (64 hex digits).
pub const WALLET_ATTRIBUTE: &str = "wallet";
/// Claims attribute carrying the key a proxy signs this start's vouchers with (64 hex digits):
/// a worker takes a voucher on a proxy's link only if this attested key signed it.
pub const VOUCHER_KEY_ATTRIBUTE: &str = "voucher_key";
/// File of the sealed wallet key inside a node's data directory.
pub const WALLET_FILE: &str = "wallet.sealed";
/// File of the host secret the `none`/`fake` TEE seals with, inside the data directory.
pub const HOST_SECRET_FILE: &str = "host-secret";

/// Why a wallet key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The data directory could not be created.
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node's image hash could not be established.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Sealing or unsealing failed (another image, a corrupted file, no seal service).
    #[error("wallet key: {0}")]
    Sealed(#[from] TeeError),
}

/// Opens the wallet key in `data_dir`, creating and sealing a fresh one on first use.
///
/// The `none` and `fake` TEEs seal with a host secret in the same directory (which binds the key
/// to the image but not to hardware: development only); `tdx` needs the host seal service.
pub fn open_wallet(data_dir: &Path, args: &AttestationArgs) -> Result<SigningKey, WalletError> {
    std::fs::create_dir_all(data_dir).map_err(|source| WalletError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    // The wallet key is sealed to the image hash peers see.
    let image_hash = own_image_hash(args)?;
    let sealing: Arc<dyn SealingKeySource> = match args.tee {
        AttestationKind::None | AttestationKind::Fake => Arc::new(FakeSealingKeySource::open(
            data_dir.join(HOST_SECRET_FILE),
            image_hash,
        )?),
        AttestationKind::Tdx => Arc::new(TdxHostSealingKeySource::new(image_hash)),
    };
    Ok(SealedKeyStore::new(data_dir.join(WALLET_FILE), sealing).load_or_create()?)
}

/// Claims attributes `base` plus the wallet `account` (the account the node is billed or paid in).
pub fn with_wallet(
    mut base: BTreeMap<String, String>,
    account: AccountId,
) -> BTreeMap<String, String> {
    base.insert(WALLET_ATTRIBUTE.to_owned(), account.to_string());
    base
}

/// The wallet address an attested peer named in its claims, if it named one.
pub fn peer_wallet(peer: &PeerIdentity) -> Option<&str> {
    peer.claims
        .attributes
        .get(WALLET_ATTRIBUTE)
        .map(String::as_str)
}

/// The voucher key an attested proxy named in its claims, if it named a valid one.
pub fn peer_voucher_key(peer: &PeerIdentity) -> Option<AccountId> {
    peer.claims
        .attributes
        .get(VOUCHER_KEY_ATTRIBUTE)?
        .parse()
        .ok()
}

/// Domain tag of [`wallet_proof`]: such a signature is never a transaction's or a voucher's.
const WALLET_PROOF_DOMAIN: &[u8] = b"cocoon-wallet-proof-v1\0";

/// Proof that the holder of `wallet` speaks through the RA-TLS key `certificate_key`: the
/// wallet's signature (hex) over a domain tag and that key. It names one certificate key, so it
/// is worthless to anyone who does not also hold that certificate's key (the TLS handshake proves
/// that).
pub fn wallet_proof(wallet: &SigningKey, certificate_key: &[u8; 32]) -> String {
    use ed25519_dalek::Signer;
    let message = [WALLET_PROOF_DOMAIN, certificate_key].concat();
    hex::encode(wallet.sign(&message).to_bytes())
}

/// Whether `proof` (hex, from [`wallet_proof`]) is `wallet`'s strict signature over
/// `certificate_key`.
pub fn check_wallet_proof(wallet: &AccountId, certificate_key: &[u8; 32], proof: &str) -> bool {
    let mut signature = [0u8; 64];
    if hex::decode_to_slice(proof, &mut signature).is_err() {
        return false;
    }
    let message = [WALLET_PROOF_DOMAIN, certificate_key].concat();
    wallet
        .verify_strict(
            &message,
            &ed25519_dalek::Signature::from_bytes(&signature).into(),
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(label: &str) -> AttestationArgs {
        AttestationArgs {
            tee: AttestationKind::Fake,
            image_label: label.to_owned(),
            cert_lifetime_secs: 3_600,
            pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
        }
    }

    #[test]
    fn a_wallet_proof_names_one_certificate_key_and_one_wallet() {
        let wallet = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let proof = wallet_proof(&wallet, &[1; 32]);
        assert!(check_wallet_proof(
            &AccountId::from(&wallet),
            &[1; 32],
            &proof
        ));
        assert!(!check_wallet_proof(
            &AccountId::from(&wallet),
            &[2; 32],
            &proof
        ));
        assert!(!check_wallet_proof(
            &AccountId::from(&other),
            &[1; 32],
            &proof
        ));
        assert!(!check_wallet_proof(
            &AccountId::from(&wallet),
            &[1; 32],
            "zz"
        ));
        assert!(!check_wallet_proof(&AccountId::from(&wallet), &[1; 32], ""));
    }

    #[test]
    fn the_same_image_reopens_the_same_key_and_another_image_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_wallet(dir.path(), &fake("a")).unwrap();
        let again = open_wallet(dir.path(), &fake("a")).unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        assert!(matches!(
            open_wallet(dir.path(), &fake("b")),
            Err(WalletError::Sealed(_))
        ));
        let attributes = with_wallet(BTreeMap::new(), AccountId::from(&first));
        assert_eq!(
            attributes[WALLET_ATTRIBUTE],
            hex::encode(first.verifying_key().to_bytes())
        );
    }
}
