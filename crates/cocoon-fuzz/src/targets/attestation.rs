//! RA-TLS certificates, their claims, and the quotes inside them (fake and real TDX).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use cocoon_proto::clock::ManualClock;
use cocoon_ratls::{inspect_certificate, verify_certificate, Claims, Identity};
use cocoon_tee::tdx::{CollateralKey, CollateralSource, TdxQuoteVerifier};
use cocoon_tee::{AttestationKind, FakeAttester, NoneAttester, Policy, Quote, Verifier};

use crate::{Format, Target};

/// A real TDX quote and the collateral it verifies with (`cocoon-tee/testdata/tdx`).
const TDX_QUOTE_BYTES: &[u8] = include_bytes!("../../../cocoon-tee/testdata/tdx/tdx_quote");
const TDX_COLLATERAL: &str =
    include_str!("../../../cocoon-tee/testdata/tdx/tdx_quote_collateral.json");
/// Inside the collateral's validity window.
const TDX_PINNED_TIME: u64 = 1_750_500_000;

fn identity(attester: &dyn cocoon_tee::Attester, role: &str, attrs: &[(&str, &str)]) -> Identity {
    let attributes: BTreeMap<String, String> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Identity::generate(attester, role, attributes, Duration::from_secs(3600))
        .expect("a fake identity")
}

/// Certificates of each role and kind, as nodes present them in handshakes.
pub(crate) fn certificates() -> Vec<Vec<u8>> {
    vec![
        identity(
            &FakeAttester::from_label("worker"),
            "worker",
            &[("model", "smol"), ("model_hash", &"ab".repeat(32))],
        )
        .certificate_der()
        .to_vec(),
        identity(&FakeAttester::from_label("proxy"), "proxy", &[])
            .certificate_der()
            .to_vec(),
        identity(&NoneAttester, "client", &[("wallet", &"cd".repeat(32))])
            .certificate_der()
            .to_vec(),
    ]
}

fn tdx_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let collateral = serde_json::from_str(TDX_COLLATERAL).expect("the fixture's collateral");
        let tdx = TdxQuoteVerifier::new(Arc::new(CollateralSource::fixed(collateral)))
            .with_clock(Arc::new(ManualClock::new(TDX_PINNED_TIME)));
        Verifier::new().with_tdx(Arc::new(tdx))
    })
}

/// `inspect_certificate` and the full `verify_certificate` on a handshake's certificate.
pub const CERTIFICATE: Target = Target {
    name: "certificate",
    seeds: certificates,
    run: |der| {
        let _ = inspect_certificate(der);
        let _ = verify_certificate(
            der,
            &Verifier::new(),
            &Policy::any_image(AttestationKind::None),
            SystemTime::now(),
        );
    },
    format: Format::Bytes,
};

/// The claims extension (JSON).
pub const CLAIMS: Target = Target {
    name: "claims",
    seeds: || {
        certificates()
            .iter()
            .filter_map(|der| inspect_certificate(der).ok())
            .map(|c| c.claims_json)
            .collect()
    },
    run: |bytes| {
        let _ = Claims::from_json(bytes);
    },
    format: Format::Json,
};

/// The quote extension: its header, then the kind's verifier (fake, none, TDX).
pub const QUOTE: Target = Target {
    name: "quote",
    seeds: || {
        let report = [7u8; 64];
        let mut seeds: Vec<Vec<u8>> = [
            &FakeAttester::from_label("w") as &dyn cocoon_tee::Attester,
            &NoneAttester,
        ]
        .iter()
        .map(|a| a.quote(&report).expect("a quote").to_bytes())
        .collect();
        seeds.push(
            Quote {
                kind: AttestationKind::Tdx,
                bytes: TDX_QUOTE_BYTES.to_vec(),
            }
            .to_bytes(),
        );
        seeds
    },
    run: |bytes| {
        if let Ok(quote) = Quote::from_bytes(bytes) {
            let _ = tdx_verifier().verify(&quote);
        }
    },
    format: Format::Bytes,
};

/// A raw TDX quote through DCAP verification with real collateral, and the collateral key read
/// from its PCK certificate.
pub const TDX_QUOTE: Target = Target {
    name: "tdx-quote",
    seeds: || vec![TDX_QUOTE_BYTES.to_vec()],
    run: |bytes| {
        let _ = CollateralKey::from_quote(bytes);
        let _ = tdx_verifier().verify(&Quote {
            kind: AttestationKind::Tdx,
            bytes: bytes.to_vec(),
        });
    },
    format: Format::Bytes,
};
