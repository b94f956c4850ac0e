//! Collateral fetching and caching against a local stand-in for a PCCS (API v4) that serves
//! the fixture collateral (`testdata/tdx/`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use axum::Router;
use cocoon_proto::clock::{Clock, ManualClock};
use cocoon_tee::tdx::{CollateralKey, CollateralSource, PccsConfig, TdxQuoteVerifier};
use cocoon_tee::{QuoteVerifier, TeeError};
use dcap_qvl::QuoteCollateralV3;

const PINNED: u64 = 1_750_500_000;

fn quote() -> Vec<u8> {
    include_bytes!("../testdata/tdx/tdx_quote").to_vec()
}

fn collateral() -> QuoteCollateralV3 {
    serde_json::from_str(include_str!("../testdata/tdx/tdx_quote_collateral.json")).unwrap()
}

struct Pccs {
    collateral: QuoteCollateralV3,
    requests: AtomicUsize,
}

fn chain_header(name: &'static str, pem: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        name,
        HeaderValue::from_str(&urlencoding::encode(pem)).unwrap(),
    );
    h
}

/// Serves the four endpoints the collateral source uses, counting requests.
async fn start_pccs() -> (String, Arc<Pccs>) {
    let state = Arc::new(Pccs {
        collateral: collateral(),
        requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/sgx/certification/v4/pckcrl",
            get(
                |State(s): State<Arc<Pccs>>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    if q.get("encoding").map(String::as_str) != Some("der") {
                        return Err(StatusCode::BAD_REQUEST);
                    }
                    Ok((
                        chain_header(
                            "SGX-PCK-CRL-Issuer-Chain",
                            &s.collateral.pck_crl_issuer_chain,
                        ),
                        s.collateral.pck_crl.clone(),
                    ))
                },
            ),
        )
        .route(
            "/tdx/certification/v4/tcb",
            get(|State(s): State<Arc<Pccs>>| async move {
                s.requests.fetch_add(1, Ordering::SeqCst);
                let c = &s.collateral;
                (
                    chain_header("TCB-Info-Issuer-Chain", &c.tcb_info_issuer_chain),
                    format!(
                        r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                        c.tcb_info,
                        hex::encode(&c.tcb_info_signature)
                    ),
                )
            }),
        )
        .route(
            "/tdx/certification/v4/qe/identity",
            get(|State(s): State<Arc<Pccs>>| async move {
                s.requests.fetch_add(1, Ordering::SeqCst);
                let c = &s.collateral;
                (
                    chain_header(
                        "SGX-Enclave-Identity-Issuer-Chain",
                        &c.qe_identity_issuer_chain,
                    ),
                    format!(
                        r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                        c.qe_identity,
                        hex::encode(&c.qe_identity_signature)
                    ),
                )
            }),
        )
        .route(
            "/sgx/certification/v4/rootcacrl",
            get(|State(s): State<Arc<Pccs>>| async move {
                s.requests.fetch_add(1, Ordering::SeqCst);
                // A PCCS answers with hex-encoded DER.
                hex::encode(&s.collateral.root_ca_crl)
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn verifier(source: Arc<CollateralSource>) -> TdxQuoteVerifier {
    TdxQuoteVerifier::new(source).with_clock(Arc::new(ManualClock::new(PINNED)))
}

#[tokio::test]
async fn missing_collateral_is_reported_then_fetched_by_refresh_and_cached_on_disk() {
    let (url, pccs) = start_pccs().await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = PccsConfig::new(url);
    config.cache_dir = Some(cache.path().to_path_buf());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(PINNED));
    let source =
        Arc::new(CollateralSource::pccs_with_clock(config.clone(), clock.clone()).unwrap());
    let v = verifier(source.clone());

    // Synchronous verification never fetches: it reports the miss...
    let err = v.verify(&quote()).unwrap_err();
    assert!(matches!(err, TeeError::Collateral(_)), "{err:?}");
    assert!(err.to_string().contains("prefetch"), "{err}");
    assert_eq!(pccs.requests.load(Ordering::SeqCst), 0);

    // ...and the next refresh fetches what was missed.
    assert_eq!(source.refresh().await.unwrap(), 1);
    assert_eq!(pccs.requests.load(Ordering::SeqCst), 4);
    let verified = v.verify(&quote()).unwrap();

    // Fresh entries are not fetched again.
    assert_eq!(source.refresh().await.unwrap(), 0);
    source.prefetch(&quote()).await.unwrap();
    assert_eq!(pccs.requests.load(Ordering::SeqCst), 4);

    // A new source over the same directory verifies without any server.
    let mut offline = config;
    offline.url = "http://127.0.0.1:9".into();
    let reloaded = Arc::new(CollateralSource::pccs_with_clock(offline, clock).unwrap());
    assert_eq!(verifier(reloaded).verify(&quote()).unwrap(), verified);
}

#[tokio::test]
async fn prefetch_fetches_once_and_again_after_max_age() {
    let (url, pccs) = start_pccs().await;
    let mut config = PccsConfig::new(url);
    config.max_age = Duration::from_secs(3600);
    let now = Arc::new(ManualClock::new(PINNED));
    let source = CollateralSource::pccs_with_clock(config, now.clone()).unwrap();
    let key = CollateralKey::from_quote(&quote()).unwrap();
    assert_eq!(key.fmspc.len(), 12);

    source.prefetch(&quote()).await.unwrap();
    source.prefetch(&quote()).await.unwrap();
    assert_eq!(pccs.requests.load(Ordering::SeqCst), 4);
    assert_eq!(source.cached(&key).unwrap(), collateral_without_pck_chain());

    now.advance(3600);
    assert_eq!(source.refresh().await.unwrap(), 1);
    assert_eq!(pccs.requests.load(Ordering::SeqCst), 8);
}

fn collateral_without_pck_chain() -> QuoteCollateralV3 {
    QuoteCollateralV3 {
        pck_certificate_chain: None,
        ..collateral()
    }
}

#[tokio::test]
async fn unreachable_pccs_is_a_collateral_error() {
    let source = CollateralSource::pccs(PccsConfig::new("http://127.0.0.1:9")).unwrap();
    let err = source.prefetch(&quote()).await.unwrap_err();
    assert!(matches!(err, TeeError::Collateral(_)), "{err:?}");
}

#[tokio::test]
async fn a_pccs_answer_past_the_size_limit_is_not_read_to_the_end() {
    // A hostile collateral service: an endless body without a declared length.
    let endless = || async {
        let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
        axum::body::Body::from_stream(futures::stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(chunk.clone())
        }))
    };
    let app = Router::new().fallback(get(endless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = CollateralSource::pccs(PccsConfig::new(url)).unwrap();
    let err = source.prefetch(&quote()).await.unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
}
