//! TDX verification against a real quote and its Intel DCAP collateral
//! (`testdata/tdx/`, see its README for their origin).

use std::sync::Arc;

use cocoon_proto::clock::{ManualClock, SystemClock};
use cocoon_tee::tdx::{CollateralSource, TdxQuoteVerifier, INTEL_ROOT_KEY_IDS};
use cocoon_tee::{AttestationKind, Quote, QuoteVerifier, TeeError, Verifier};
use dcap_qvl::{QuoteCollateralV3, TcbStatus};
use sha2::Digest;

/// Inside the collateral's validity window (2025-06-21).
const PINNED: u64 = 1_750_500_000;
/// TDX v4 quote layout: 48-byte header, then the TD report body (MRTD at body offset 136).
const HEADER_LEN: usize = 48;
const MRTD_OFFSET: usize = HEADER_LEN + 136;

fn quote() -> Vec<u8> {
    include_bytes!("../testdata/tdx/tdx_quote").to_vec()
}

fn collateral() -> QuoteCollateralV3 {
    serde_json::from_str(include_str!("../testdata/tdx/tdx_quote_collateral.json")).unwrap()
}

fn verifier_at(now: u64) -> TdxQuoteVerifier {
    TdxQuoteVerifier::new(Arc::new(CollateralSource::fixed(collateral())))
        .with_clock(Arc::new(ManualClock::new(now)))
}

fn reason(err: TeeError) -> String {
    match err {
        TeeError::QuoteRejected { kind, reason } => {
            assert_eq!(kind, AttestationKind::Tdx);
            reason
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_nodes_own_quote_gives_the_image_hash_peers_verify() {
    let q = quote();
    let own = cocoon_tee::tdx::unverified_measurements(&q).unwrap();
    let verified = verifier_at(PINNED).verify(&q).unwrap();
    assert_eq!(own, verified.measurements);
    assert_eq!(own.image_hash(AttestationKind::Tdx), verified.image_hash);
    assert!(cocoon_tee::tdx::unverified_measurements(&q[..100]).is_err());
}

#[test]
fn verifies_at_pinned_time_with_measurements_from_the_td_report() {
    let q = quote();
    let v = verifier_at(PINNED).verify_detailed(&q).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.root_key_id, INTEL_ROOT_KEY_IDS[0]);
    let vq = &v.quote;
    assert_eq!(vq.kind, AttestationKind::Tdx);
    // The verdict holds only as long as the collateral it was judged with.
    assert!(vq.valid_until.is_some_and(|until| until > PINNED), "{vq:?}");
    // Fields come straight from the TD report body.
    assert_eq!(&vq.measurements.mrtd[..], &q[MRTD_OFFSET..MRTD_OFFSET + 48]);
    let body = HEADER_LEN;
    assert_eq!(
        &vq.measurements.td_attributes[..],
        &q[body + 120..body + 128]
    );
    assert_eq!(&vq.measurements.xfam[..], &q[body + 128..body + 136]);
    let rtmr0 = body + 328;
    for (i, r) in vq.measurements.rtmr.iter().enumerate() {
        assert_eq!(&r[..], &q[rtmr0 + 48 * i..rtmr0 + 48 * (i + 1)], "RTMR{i}");
    }
    assert_eq!(&vq.report_data[..], &q[body + 520..body + 584]);
    // The image hash is the canonical 400-byte range TDATTRIBUTES..RTMR3 of the body.
    assert_eq!(
        &vq.measurements.canonical_bytes()[..],
        &q[body + 120..body + 520]
    );
    // A TDX image hash is SHA-256 of exactly those bytes, as an external tool computes it.
    let external: [u8; 32] = sha2::Sha256::digest(&q[body + 120..body + 520]).into();
    assert_eq!(vq.image_hash.0, external);
    assert_eq!(
        vq.image_hash,
        vq.measurements.image_hash(AttestationKind::Tdx)
    );
}

#[test]
fn plugs_into_the_core_verifier() {
    let verifier = Verifier::new().with_tdx(Arc::new(verifier_at(PINNED)));
    let verified = verifier
        .verify(&Quote {
            kind: AttestationKind::Tdx,
            bytes: quote(),
        })
        .unwrap();
    assert_eq!(verified.kind, AttestationKind::Tdx);
}

#[test]
fn rejected_today_because_collateral_is_stale() {
    let err = TdxQuoteVerifier::new(Arc::new(CollateralSource::fixed(collateral())))
        .with_clock(Arc::new(SystemClock))
        .verify(&quote())
        .unwrap_err();
    let reason = reason(err);
    // At today's date the fixture's CRLs are past their nextUpdate.
    assert!(reason.contains("CrlExpired"), "{reason}");
}

#[test]
fn rejected_with_a_flipped_byte_in_the_td_report_body() {
    for offset in [MRTD_OFFSET, HEADER_LEN + 328, HEADER_LEN + 583] {
        let mut q = quote();
        q[offset] ^= 0x01;
        let err = verifier_at(PINNED).verify(&q).unwrap_err();
        reason(err);
    }
}

#[test]
fn rejected_when_the_root_key_id_is_not_allowed() {
    let mut other = INTEL_ROOT_KEY_IDS[0];
    other[0] ^= 0xff;
    let err = verifier_at(PINNED)
        .with_root_key_ids(vec![other])
        .verify(&quote())
        .unwrap_err();
    let reason = reason(err);
    assert!(reason.contains("allow-list"), "{reason}");
}

#[test]
fn truncated_and_garbage_quotes_are_rejected_without_panicking() {
    let q = quote();
    let v = verifier_at(PINNED);
    // The fixture ends in zero padding after the signed data, which is not checked; cut
    // inside the header, the report body, the signature and the certification data.
    for len in [0, 10, 48, 600, 700, 1500, 4000] {
        assert!(v.verify(&q[..len]).is_err(), "length {len}");
    }
    assert!(v.verify(&[0xAB; 5006]).is_err());
}
