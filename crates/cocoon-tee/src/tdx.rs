//! Real Intel TDX quote verification with Intel DCAP collateral.
//!
//! [`TdxQuoteVerifier`] checks a TDX quote (v4 or v5) with the `dcap-qvl` crate: the PCK
//! certificate chain up to the Intel SGX Root CA, the CRLs, the QE report and its identity,
//! the quote signature over the TD report, and the platform's TCB level. It then checks that
//! the root CA's key id is on an allow-list and returns the TD report's measurements.
//!
//! Verification runs inside rustls' certificate-verifier callback, so it is synchronous and
//! never touches the network: it uses collateral already held by a [`CollateralSource`].
//! Callers fill that source beforehand with the async [`CollateralSource::prefetch`] (for a
//! quote) or [`CollateralSource::refresh`] (for every platform seen so far, including those
//! whose collateral was missing at verification time).

use std::fmt;
use std::sync::Arc;

use cocoon_proto::clock::{Clock, SystemClock};
use dcap_qvl::configs::RingConfig;
use dcap_qvl::quote::{Quote as DcapQuote, Report, TDReport10};
use dcap_qvl::verify::QuoteVerifier as DcapVerifier;
use dcap_qvl::{QuotePolicy, TcbStatus};

use crate::{AttestationKind, Measurements, QuoteVerifier, TeeError, VerifiedQuote};

/// Key ids of the Intel root CAs whose certificate chains are accepted: SHA-384 over the
/// root certificate's raw public key (the uncompressed P-256 point), as Intel's QVL reports
/// it in `root_key_id`.
///
/// The one entry is the Intel SGX Root CA (CN=Intel SGX Root CA, valid 2018-05-21 to
/// 2049-12-31, SHA-256 fingerprint `44:A0:19:6B:…:B6:74:D3`), published at
/// <https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.der>
/// and embedded in `dcap-qvl` 0.7.1 as `src/TrustedRootCA.der`. The value was computed with
/// `openssl x509 -inform der -pubkey -noout | openssl ec -pubin -outform der | tail -c 65 |
/// openssl dgst -sha384`; the fixture test checks that `dcap-qvl` reports the same id.
pub const INTEL_ROOT_KEY_IDS: [[u8; 48]; 1] = [[
    0x46, 0xe4, 0x03, 0xbd, 0x34, 0xf0, 0x5a, 0x3f, 0x28, 0x17, 0xab, 0x9b, 0xad, 0xca, 0xac, 0xc7,
    0xff, 0xc9, 0x8e, 0x0f, 0x26, 0x10, 0x08, 0xcd, 0x30, 0xda, 0xe9, 0x36, 0xca, 0xce, 0x18, 0xd5,
    0xdc, 0xf5, 0x8e, 0xef, 0x31, 0x46, 0x36, 0x13, 0xde, 0x15, 0x70, 0xd5, 0x16, 0x20, 0x09, 0x93,
]];

/// Intel's Provisioning Certification Service; a PCCS caching proxy serves the same API.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";

/// The Intel SGX Root CA's CRL (its certificate's CRL distribution point), used when the
/// collateral service has no `rootcacrl` endpoint (Intel's PCS has none).
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// `tee_type` of a TDX quote header.
const TEE_TYPE_TDX: u32 = 0x81;

mod collateral;

use collateral::next_update;
pub use collateral::{CollateralKey, CollateralSource, PccsConfig};

/// Which TCB statuses and TD attributes a [`TdxQuoteVerifier`] accepts.
#[derive(Debug, Clone)]
pub struct TdxPolicy {
    /// TCB statuses accepted besides `UpToDate` (which is always accepted).
    /// `Revoked` is never accepted.
    pub extra_statuses: Vec<TcbStatus>,
    /// Accept debug TDs (their memory is readable by the host). Never in production.
    pub allow_debug: bool,
    /// Accept platforms whose PCK certificate says SMT (hyper-threading) is enabled.
    pub allow_smt: bool,
    /// Accept platforms whose PCK certificate marks a dynamic platform or cached keys
    /// (multi-package platforms registered with Intel).
    pub allow_multi_package_flags: bool,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            extra_statuses: Vec::new(),
            allow_debug: false,
            // Cloud TDX hosts commonly run with SMT and as registered multi-package
            // platforms; Intel's default appraisal treats these flags as information.
            allow_smt: true,
            allow_multi_package_flags: true,
        }
    }
}

/// What a TDX quote proved, with the DCAP details behind it.
#[derive(Debug, Clone)]
pub struct TdxVerification {
    /// The contents handed to the rest of Cocoon.
    pub quote: VerifiedQuote,
    /// The platform's merged TCB status.
    pub tcb_status: TcbStatus,
    /// Intel security advisories that apply to the platform.
    pub advisory_ids: Vec<String>,
    /// Which collateral was used.
    pub collateral_key: CollateralKey,
    /// Key id of the root CA the chain ended in.
    pub root_key_id: [u8; 48],
}

/// Verifies raw TDX quotes with DCAP collateral; plug into [`crate::Verifier::with_tdx`].
pub struct TdxQuoteVerifier {
    collateral: Arc<CollateralSource>,
    clock: Arc<dyn Clock>,
    root_ca_der: Option<Vec<u8>>,
    root_key_ids: Vec<[u8; 48]>,
    policy: TdxPolicy,
}

impl fmt::Debug for TdxQuoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TdxQuoteVerifier")
            .field("collateral", &self.collateral)
            .field("root_key_ids", &self.root_key_ids.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl TdxQuoteVerifier {
    /// A verifier using `collateral`, the system clock, Intel's root CA with the
    /// [`INTEL_ROOT_KEY_IDS`] allow-list and the default [`TdxPolicy`].
    pub fn new(collateral: Arc<CollateralSource>) -> Self {
        Self {
            collateral,
            clock: Arc::new(SystemClock),
            root_ca_der: None,
            root_key_ids: INTEL_ROOT_KEY_IDS.to_vec(),
            policy: TdxPolicy::default(),
        }
    }

    /// Uses `clock` as the verification time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the root key id allow-list.
    pub fn with_root_key_ids(mut self, ids: Vec<[u8; 48]>) -> Self {
        self.root_key_ids = ids;
        self
    }

    /// Anchors chains at another root CA certificate (DER) instead of Intel's; it must still
    /// pass the root key id allow-list.
    pub fn with_root_ca_der(mut self, der: Vec<u8>) -> Self {
        self.root_ca_der = Some(der);
        self
    }

    /// Replaces the TCB and TD attribute policy.
    pub fn with_policy(mut self, policy: TdxPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Verifies a raw TDX quote and returns the details alongside the [`VerifiedQuote`].
    pub fn verify_detailed(&self, quote_bytes: &[u8]) -> Result<TdxVerification, TeeError> {
        let quote = DcapQuote::parse(quote_bytes)
            .map_err(|e| rejected(format!("malformed quote: {e:#}")))?;
        if quote.header.tee_type != TEE_TYPE_TDX {
            return Err(rejected(format!(
                "not a TDX quote (tee type {:#x})",
                quote.header.tee_type
            )));
        }
        let key = CollateralKey::from_parsed(&quote)?;
        let collateral = self.collateral.cached(&key)?;
        let valid_until = next_update(&collateral)?;
        let now = self.clock.now();
        let mut policy = QuotePolicy::strict(now)
            .allow_smt(self.policy.allow_smt)
            .allow_dynamic_platform(self.policy.allow_multi_package_flags)
            .allow_cached_keys(self.policy.allow_multi_package_flags);
        for status in &self.policy.extra_statuses {
            policy = policy.allow_status(*status);
        }
        let root = match &self.root_ca_der {
            Some(der) => DcapVerifier::new(der.clone()),
            None => DcapVerifier::new_prod(),
        };
        let claims = root
            .with_config::<RingConfig>()
            .allow_debug(self.policy.allow_debug)
            .verify_with_policy(quote_bytes, &collateral, now, &policy)
            .map_err(|e| rejected(format!("{e:#}")))?;
        let root_key_id: [u8; 48] = claims
            .platform
            .root_key_id
            .as_slice()
            .try_into()
            .map_err(|_| rejected("root key id is not 48 bytes".into()))?;
        if !self.root_key_ids.contains(&root_key_id) {
            return Err(rejected(format!(
                "root CA key id {} is not in the allow-list",
                hex::encode(root_key_id)
            )));
        }
        let report = td_report(&claims.report)?;
        let measurements = measurements_of(report);
        Ok(TdxVerification {
            quote: VerifiedQuote {
                kind: AttestationKind::Tdx,
                image_hash: measurements.image_hash(AttestationKind::Tdx),
                measurements,
                report_data: report.report_data,
                valid_until: Some(valid_until),
            },
            tcb_status: claims.tcb.status,
            advisory_ids: claims.tcb.advisory_ids,
            collateral_key: key,
            root_key_id,
        })
    }
}

impl QuoteVerifier for TdxQuoteVerifier {
    fn verify(&self, quote_bytes: &[u8]) -> Result<VerifiedQuote, TeeError> {
        self.verify_detailed(quote_bytes).map(|v| v.quote)
    }
}

/// The measurements in a TDX quote, read **without verifying it**: only for a node's own quote,
/// fresh from its own TD (so that `cocoon attest image-hash --tee tdx` works inside a TD without
/// reaching Intel's PCS). Never use it on a peer's quote: that is [`TdxQuoteVerifier`]'s job.
pub fn unverified_measurements(quote_bytes: &[u8]) -> Result<Measurements, TeeError> {
    let quote =
        DcapQuote::parse(quote_bytes).map_err(|e| rejected(format!("malformed quote: {e:#}")))?;
    if quote.header.tee_type != TEE_TYPE_TDX {
        return Err(rejected(format!(
            "not a TDX quote (tee type {:#x})",
            quote.header.tee_type
        )));
    }
    Ok(measurements_of(td_report(&quote.report)?))
}

fn measurements_of(report: &TDReport10) -> Measurements {
    Measurements {
        td_attributes: report.td_attributes,
        xfam: report.xfam,
        mrtd: report.mr_td,
        mr_config_id: report.mr_config_id,
        mr_owner: report.mr_owner,
        mr_owner_config: report.mr_owner_config,
        rtmr: [report.rt_mr0, report.rt_mr1, report.rt_mr2, report.rt_mr3],
    }
}

/// The TDX 1.0 part of any TD report body (1.5 bodies extend it).
fn td_report(report: &Report) -> Result<&TDReport10, TeeError> {
    match report {
        Report::TD10(r) => Ok(r),
        Report::TD15(r) => Ok(&r.base),
        Report::TD15Ex(r) => Ok(&r.base.base),
        Report::SgxEnclave(_) => Err(rejected("an SGX enclave report, not a TD report".into())),
    }
}

pub(super) fn rejected(reason: String) -> TeeError {
    TeeError::QuoteRejected {
        kind: AttestationKind::Tdx,
        reason,
    }
}
