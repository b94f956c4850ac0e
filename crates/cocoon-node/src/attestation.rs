//! A node's attested identity and the policy it applies to peers, built from its configuration.
//!
//! The identity (an RA-TLS certificate binding a fresh key to a quote) is renewed at half its
//! lifetime. Which peer images are accepted is the role's business (a proxy has one list for
//! workers and one for clients), so each role builds its [`LivePolicy`]s with
//! [`NodeTrust::peer_policy`]; they follow the registry, so a revoked image is refused at the next
//! handshake and drops the links already up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use cocoon_money::ImageRole;
use cocoon_ratls::{Acceptor, Connector, Identity, RatlsError, SharedIdentity, MAX_VALIDITY};
use cocoon_tee::tdx::{CollateralSource, PccsConfig, TdxQuoteVerifier, INTEL_PCS_URL};
use cocoon_tee::{
    AttestationKind, Attester, FakeAttester, ImageHash, NoneAttester, Policy, TeeError, Verifier,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::registry::{LivePolicy, RegistryWatch};

/// How a node attests itself and what it accepts from peers.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct AttestationArgs {
    /// How this node proves what it runs: `none` (development only), `fake` (a software TDX
    /// stand-in that still runs every check) or `tdx` (inside an Intel TDX guest).
    #[arg(long, default_value = "fake", value_name = "KIND")]
    pub tee: AttestationKind,
    /// Label from which the `fake` TEE derives this node's image measurements; nodes with the same
    /// label have the same image hash.
    #[arg(long, default_value = "cocoon-dev", value_name = "LABEL")]
    pub image_label: String,
    /// Lifetime of this node's RA-TLS certificate in seconds (at most two days: peers refuse longer
    /// ones); it is renewed at half of it.
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    pub cert_lifetime_secs: u64,
    /// Base URL of Intel's PCS or of a PCCS, where the DCAP collateral that `tdx` quotes (this
    /// node's and its peers') are verified with is fetched; it is cached and refreshed in the
    /// background.
    #[arg(long, default_value = INTEL_PCS_URL, value_name = "URL")]
    #[serde(default = "default_pccs_url")]
    pub pccs_url: String,
}

fn default_pccs_url() -> String {
    INTEL_PCS_URL.to_owned()
}

/// How often the collateral cache is refreshed (entries that are due, and those peers' quotes
/// missed); a peer whose collateral was missing is verifiable after the next refresh.
const COLLATERAL_REFRESH: Duration = Duration::from_secs(5);

/// Why a node's attestation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The TEE refused to attest, or our own quote does not verify.
    #[error("attestation: {0}")]
    Tee(#[from] TeeError),
    /// The certificate or TLS configuration could not be built.
    #[error("RA-TLS: {0}")]
    Ratls(#[from] RatlsError),
    /// A configured image hash is not 32 bytes of hex.
    #[error("`{0}` is not an image hash (64 hex digits)")]
    BadImageHash(String),
}

/// A node's attested identity, its peer policy, and the verifier both sides use.
pub struct NodeTrust {
    identity: SharedIdentity,
    /// The weakest kind each peer role's policy accepts, for `/jsonstats`.
    peer_minimums: Mutex<BTreeMap<String, AttestationKind>>,
    collateral: Arc<CollateralSource>,
    verifier: Arc<Verifier>,
    attester: Arc<dyn Attester>,
    image_hash: ImageHash,
    role: String,
    attributes: BTreeMap<String, String>,
    lifetime: Duration,
}

impl NodeTrust {
    /// Attests this node as `role` with `attributes` in its claims (model name, model hash…). A
    /// `tdx` node first fetches the collateral its own quote needs.
    pub async fn new(
        args: &AttestationArgs,
        role: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<Arc<Self>, TrustError> {
        let attester = attester_for(args)?;
        let collateral = Arc::new(CollateralSource::pccs(PccsConfig::new(&args.pccs_url))?);
        let tdx = TdxQuoteVerifier::new(collateral.clone());
        let verifier = Arc::new(Verifier::new().with_tdx(Arc::new(tdx)));
        // Peers refuse certificates living longer than `MAX_VALIDITY`.
        let lifetime = Duration::from_secs(args.cert_lifetime_secs)
            .clamp(Duration::from_secs(60), MAX_VALIDITY);
        let identity = Identity::generate(attester.as_ref(), role, attributes.clone(), lifetime)?;
        if identity.quote().kind == AttestationKind::Tdx {
            collateral.prefetch(&identity.quote().bytes).await?;
        }
        // Our own quote must verify with the checks peers will run: fail at start, not at every peer.
        let own = verifier.verify(identity.quote())?;
        Ok(Arc::new(NodeTrust {
            identity: Arc::new(ArcSwap::from_pointee(identity)),
            peer_minimums: Mutex::default(),
            collateral,
            verifier,
            attester,
            image_hash: own.image_hash,
            role: role.to_owned(),
            attributes,
            lifetime,
        }))
    }

    /// This node's image hash, as peers will see it.
    pub fn image_hash(&self) -> ImageHash {
        self.image_hash
    }

    /// The verifier of peers' quotes (with TDX collateral when configured).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The current certificate and key.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.load_full()
    }

    /// The policy for peers in `role` (see [`LivePolicy::new`]): the `flag_images` (hex image
    /// hashes) when given, else the registry's list, attested at least as strongly as `min_kind`.
    pub fn peer_policy(
        &self,
        flag_images: &[String],
        registry: &RegistryWatch,
        role: ImageRole,
        min_kind: AttestationKind,
    ) -> Result<LivePolicy, TrustError> {
        let images = parse_images(flag_images)?;
        self.record_minimum(&role.to_string(), min_kind);
        Ok(LivePolicy::new(images, registry, role, min_kind))
    }

    /// A fixed policy for peers claiming `peer_role`, accepting `flag_images` (empty: any image)
    /// attested at least as strongly as `min_kind`, for peers the registry does not list.
    pub fn fixed_peer_policy(
        &self,
        peer_role: &str,
        flag_images: &[String],
        min_kind: AttestationKind,
    ) -> Result<LivePolicy, TrustError> {
        let allowed_image_hashes = parse_images(flag_images)?;
        self.record_minimum(peer_role, min_kind);
        Ok(LivePolicy::fixed(
            peer_role,
            Policy {
                allowed_image_hashes,
                min_kind,
            },
        ))
    }

    /// Notes the weakest kind accepted from `peer_role`, and says loudly when it is below `tdx`:
    /// such peers prove nothing (a `fake` quote can be made by anyone).
    fn record_minimum(&self, peer_role: &str, min_kind: AttestationKind) {
        if min_kind < AttestationKind::Tdx {
            tracing::warn!(
                peer_role,
                min_kind = %min_kind,
                "accepting peers in the `{peer_role}` role attested only as `{min_kind}`: they prove \
                 nothing about what they run (development only; production needs `tdx`)"
            );
        }
        if let Ok(mut minimums) = self.peer_minimums.lock() {
            minimums.insert(peer_role.to_owned(), min_kind);
        }
    }

    /// What `/jsonstats` shows of this node's attestation: its own kind and image, the weakest
    /// kind accepted from each peer role, and whether any of those is below `tdx`.
    pub fn stats(&self) -> serde_json::Value {
        let minimums = self
            .peer_minimums
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let weak: Vec<&String> = minimums
            .iter()
            .filter(|(_, kind)| **kind < AttestationKind::Tdx)
            .map(|(role, _)| role)
            .collect();
        serde_json::json!({
            "tee": self.identity.load().quote().kind,
            "image_hash": self.image_hash.to_string(),
            "min_peer_tee": minimums,
            "weak_peer_minimum": weak,
        })
    }

    /// A dialer presenting this identity and checking peers with `policy`.
    pub fn connector(&self, policy: &LivePolicy) -> Result<Connector, TrustError> {
        Ok(Connector::new(
            self.identity.clone(),
            policy.shared(),
            self.verifier.clone(),
            policy.peer_role(),
        )?)
    }

    /// A listener-side handshaker presenting this identity and checking peers with `policy`.
    pub fn acceptor(&self, policy: &LivePolicy) -> Result<Acceptor, TrustError> {
        Ok(Acceptor::new(
            self.identity.clone(),
            policy.shared(),
            self.verifier.clone(),
            policy.peer_role(),
        )?)
    }

    /// Until `shutdown`: renews the certificate at half its lifetime, and keeps the TDX
    /// collateral cache fresh (refetching due entries and those peers' quotes missed).
    pub fn spawn_renewal(self: &Arc<Self>, shutdown: CancellationToken) {
        let rotation = cocoon_ratls::spawn_rotation(
            self.identity.clone(),
            self.attester.clone(),
            self.role.clone(),
            self.attributes.clone(),
            self.lifetime,
        );
        let collateral = self.collateral.clone();
        let refresh = tokio::spawn(async move {
            loop {
                tokio::time::sleep(COLLATERAL_REFRESH).await;
                match collateral.refresh().await {
                    Ok(0) => {}
                    Ok(fetched) => tracing::info!(fetched, "TDX collateral refreshed"),
                    Err(error) => tracing::warn!(%error, "refreshing TDX collateral failed"),
                }
            }
        });
        tokio::spawn(async move {
            shutdown.cancelled().await;
            rotation.abort();
            refresh.abort();
        });
    }
}

/// Parses hex image hashes given on the command line.
fn parse_images(texts: &[String]) -> Result<BTreeSet<ImageHash>, TrustError> {
    texts
        .iter()
        .map(|text| {
            text.trim()
                .parse::<ImageHash>()
                .map_err(|_| TrustError::BadImageHash(text.clone()))
        })
        .collect()
}

/// The image hash `args` give this node, as peers will see it.
pub fn own_image_hash(args: &AttestationArgs) -> Result<ImageHash, TrustError> {
    image_hash_of_own(&attester_for(args)?.quote(&[0u8; 64])?)
}

/// The image hash of this node's own `quote`. A `tdx` quote's measurements are read from it
/// without DCAP collateral: it comes from our own TD, and a TD that cannot reach Intel's PCS must
/// still be able to name its image (peers verify it fully). Other kinds are verified as peers do.
fn image_hash_of_own(quote: &cocoon_tee::Quote) -> Result<ImageHash, TrustError> {
    Ok(match quote.kind {
        AttestationKind::Tdx => {
            cocoon_tee::tdx::unverified_measurements(&quote.bytes)?.image_hash(AttestationKind::Tdx)
        }
        AttestationKind::None | AttestationKind::Fake => Verifier::new().verify(quote)?.image_hash,
    })
}

/// The attester `args` select (`tdx` fails clearly outside a TD guest).
pub fn attester_for(args: &AttestationArgs) -> Result<Arc<dyn Attester>, TrustError> {
    Ok(match args.tee {
        AttestationKind::None => Arc::new(NoneAttester),
        AttestationKind::Fake => Arc::new(FakeAttester::from_label(&args.image_label)),
        AttestationKind::Tdx => Arc::new(cocoon_tee::tsm::TdxAttester::open_default()?),
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn a_tdx_nodes_own_image_hash_needs_no_collateral() {
        // A real TDX quote (v4): 48-byte header, then the TD report body whose bytes 120..520 are
        // what a TDX image hash covers.
        let bytes = include_bytes!("../../cocoon-tee/testdata/tdx/tdx_quote").to_vec();
        let expected: [u8; 32] = Sha256::digest(&bytes[48 + 120..48 + 520]).into();
        let quote = cocoon_tee::Quote {
            kind: AttestationKind::Tdx,
            bytes,
        };
        assert_eq!(image_hash_of_own(&quote).unwrap(), ImageHash(expected));
    }

    #[test]
    fn a_fake_nodes_own_image_hash_is_its_fake_one() {
        let attester = FakeAttester::from_label("own");
        let quote = attester.quote(&[0; 64]).unwrap();
        assert_eq!(image_hash_of_own(&quote).unwrap(), attester.image_hash());
    }
}
