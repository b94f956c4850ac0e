//! DCAP collateral for TDX verification: fetched from a PCCS or Intel's PCS ahead of time,
//! cached in memory and on disk, refreshed before its `nextUpdate`, and served synchronously to
//! the verifier (which runs inside rustls' callback and never touches the network).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dcap_qvl::configs::RingConfig;
use dcap_qvl::quote::Quote as DcapQuote;
use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use cocoon_proto::clock::{Clock, SystemClock};

use crate::TeeError;

use super::{rejected, INTEL_ROOT_CA_CRL_URL};

/// Most platforms whose missing collateral is remembered for the next refresh.
const MAX_WANTED: usize = 64;

/// Identifies the collateral a quote needs: its platform family (FMSPC) and the PCK CA
/// (`processor` or `platform`) that issued its PCK certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CollateralKey {
    /// FMSPC as 12 uppercase hex digits.
    pub fmspc: String,
    /// PCK CA id as used in PCS URLs: `processor` or `platform`.
    pub ca: String,
}

impl CollateralKey {
    /// Reads the key from a raw quote's embedded PCK certificate.
    pub fn from_quote(quote_bytes: &[u8]) -> Result<Self, TeeError> {
        let quote = DcapQuote::parse(quote_bytes).map_err(|e| rejected(format!("{e:#}")))?;
        Self::from_parsed(&quote)
    }

    pub(super) fn from_parsed(quote: &DcapQuote) -> Result<Self, TeeError> {
        let fmspc = dcap_qvl::intel::quote_fmspc_with::<RingConfig>(quote)
            .map_err(|e| rejected(format!("cannot read FMSPC from the PCK certificate: {e:#}")))?;
        let ca = dcap_qvl::intel::quote_ca_with::<RingConfig>(quote)
            .map_err(|e| rejected(format!("cannot read the PCK CA: {e:#}")))?;
        Ok(Self {
            fmspc: hex::encode_upper(fmspc),
            ca: ca.as_id_str().to_owned(),
        })
    }

    fn file_name(&self) -> String {
        format!("{}-{}.json", self.fmspc, self.ca)
    }
}

impl fmt::Display for CollateralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FMSPC {} ({} CA)", self.fmspc, self.ca)
    }
}

/// Where collateral comes from and how long it is kept.
#[derive(Debug, Clone)]
pub struct PccsConfig {
    /// Base URL of a PCCS or of Intel's PCS, e.g. `https://pccs.example:8081`.
    pub url: String,
    /// Directory for the on-disk cache (one JSON file per FMSPC and CA); `None` keeps the
    /// cache in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Refetch collateral this long after fetching it even if it is still valid, so new
    /// revocations (CRLs) are seen. It is refetched anyway when its `nextUpdate` passes.
    pub max_age: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Accept any TLS certificate from the collateral service. Local PCCS installs often use
    /// self-signed certificates; the collateral itself is signed by Intel and verified, so
    /// this only exposes the cache to denial of service, not to forged collateral.
    pub accept_invalid_certs: bool,
}

impl PccsConfig {
    /// Defaults for `url`: no disk cache, 12 h maximum age, 30 s timeout, TLS checked.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cache_dir: None,
            max_age: Duration::from_secs(12 * 3600),
            request_timeout: Duration::from_secs(30),
            accept_invalid_certs: false,
        }
    }
}

/// One cached collateral bundle, as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedCollateral {
    key: CollateralKey,
    /// When it was fetched (Unix seconds).
    fetched_at: u64,
    /// Earliest `nextUpdate` of its TCB info and QE identity (Unix seconds).
    next_update: u64,
    collateral: QuoteCollateralV3,
}

impl CachedCollateral {
    fn refresh_due(&self, now: u64, max_age: Duration) -> bool {
        let by_age = self.fetched_at.saturating_add(max_age.as_secs());
        now >= by_age.min(self.next_update)
    }
}

enum Mode {
    /// One collateral bundle for every quote (tests, offline deployments).
    Fixed(Box<QuoteCollateralV3>),
    /// Fetched from a PCCS/PCS and cached by FMSPC.
    Pccs(Box<PccsState>),
}

struct PccsState {
    config: PccsConfig,
    http: reqwest::Client,
    entries: RwLock<HashMap<CollateralKey, CachedCollateral>>,
    /// Keys that verification asked for but did not find; [`CollateralSource::refresh`]
    /// fetches them.
    wanted: Mutex<HashSet<CollateralKey>>,
}

/// Intel DCAP collateral for TDX verification: fetched ahead of time, then served
/// synchronously to [`TdxQuoteVerifier`](crate::tdx::TdxQuoteVerifier).
pub struct CollateralSource {
    mode: Mode,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CollateralSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Fixed(_) => f.write_str("CollateralSource::Fixed"),
            Mode::Pccs(p) => f
                .debug_struct("CollateralSource::Pccs")
                .field("url", &p.config.url)
                .field("cache_dir", &p.config.cache_dir)
                .finish(),
        }
    }
}

impl CollateralSource {
    /// A source that serves `collateral` for every quote and never fetches.
    pub fn fixed(collateral: QuoteCollateralV3) -> Self {
        Self {
            mode: Mode::Fixed(Box::new(collateral)),
            clock: Arc::new(SystemClock),
        }
    }

    /// A source that fetches from `config.url` and caches in memory and, when
    /// `config.cache_dir` is set, on disk. Loads what the disk cache already holds.
    pub fn pccs(config: PccsConfig) -> Result<Self, TeeError> {
        Self::pccs_with_clock(config, Arc::new(SystemClock))
    }

    /// [`pccs`](Self::pccs) with an injected clock (deciding when entries are due).
    pub fn pccs_with_clock(config: PccsConfig, clock: Arc<dyn Clock>) -> Result<Self, TeeError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .danger_accept_invalid_certs(config.accept_invalid_certs)
            .build()
            .map_err(|e| collateral_err(format!("cannot build the HTTP client: {e}")))?;
        let entries = match &config.cache_dir {
            Some(dir) => load_disk_cache(dir)?,
            None => HashMap::new(),
        };
        Ok(Self {
            mode: Mode::Pccs(Box::new(PccsState {
                config,
                http,
                entries: RwLock::new(entries),
                wanted: Mutex::new(HashSet::new()),
            })),
            clock,
        })
    }

    /// The collateral for `key`, from memory only. A miss is remembered so that the next
    /// [`refresh`](Self::refresh) fetches it.
    pub fn cached(&self, key: &CollateralKey) -> Result<QuoteCollateralV3, TeeError> {
        match &self.mode {
            Mode::Fixed(c) => Ok((**c).clone()),
            Mode::Pccs(p) => {
                let found = read_lock(&p.entries).get(key).map(|e| e.collateral.clone());
                found.ok_or_else(|| {
                    // The key comes from an unverified certificate: bound what a peer can
                    // make this node fetch.
                    let mut wanted = lock(&p.wanted);
                    if wanted.len() < MAX_WANTED {
                        wanted.insert(key.clone());
                    }
                    collateral_err(format!(
                        "no cached collateral for {key}; run prefetch/refresh first"
                    ))
                })
            }
        }
    }

    /// Makes sure collateral for `quote_bytes` is cached and not due for refresh, fetching
    /// it if needed.
    pub async fn prefetch(&self, quote_bytes: &[u8]) -> Result<(), TeeError> {
        if matches!(self.mode, Mode::Fixed(_)) {
            return Ok(());
        }
        let key = CollateralKey::from_quote(quote_bytes)?;
        if self.is_due(&key) {
            self.fetch_and_store(&key).await?;
        }
        Ok(())
    }

    /// Refetches every cached entry that is due and every key that verification missed.
    /// Returns how many entries were fetched; tries all keys and reports the first error.
    pub async fn refresh(&self) -> Result<usize, TeeError> {
        let Mode::Pccs(p) = &self.mode else {
            return Ok(0);
        };
        let now = self.clock.now();
        // Missed keys are tried once; a later miss asks for them again.
        let mut keys: Vec<CollateralKey> = lock(&p.wanted).drain().collect();
        keys.extend(
            read_lock(&p.entries)
                .values()
                .filter(|e| e.refresh_due(now, p.config.max_age))
                .map(|e| e.key.clone()),
        );
        keys.sort_by(|a, b| (&a.fmspc, &a.ca).cmp(&(&b.fmspc, &b.ca)));
        keys.dedup();
        let mut fetched = 0;
        let mut first_error = None;
        for key in keys {
            match self.fetch_and_store(&key).await {
                Ok(()) => fetched += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(fetched),
        }
    }

    fn is_due(&self, key: &CollateralKey) -> bool {
        let Mode::Pccs(p) = &self.mode else {
            return false;
        };
        let now = self.clock.now();
        read_lock(&p.entries)
            .get(key)
            .is_none_or(|e| e.refresh_due(now, p.config.max_age))
    }

    async fn fetch_and_store(&self, key: &CollateralKey) -> Result<(), TeeError> {
        let Mode::Pccs(p) = &self.mode else {
            return Ok(());
        };
        let collateral = fetch_collateral(&p.http, &p.config.url, key).await?;
        let next_update = next_update(&collateral)?;
        let entry = CachedCollateral {
            key: key.clone(),
            fetched_at: self.clock.now(),
            next_update,
            collateral,
        };
        if let Some(dir) = &p.config.cache_dir {
            store_disk_entry(dir, &entry)?;
        }
        write_lock(&p.entries).insert(key.clone(), entry);
        lock(&p.wanted).remove(key);
        Ok(())
    }
}

pub(super) fn collateral_err(reason: String) -> TeeError {
    TeeError::Collateral(reason)
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic elsewhere cannot leave a half-written map: inserts are single calls.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- fetching from a PCCS / PCS (API v4) ----

/// `{"tcbInfo": {...}, "signature": "hex"}`; the signature covers `tcbInfo`'s exact bytes,
/// so it is kept raw rather than re-serialised.
#[derive(Deserialize)]
struct TcbInfoResponse<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

/// `{"enclaveIdentity": {...}, "signature": "hex"}`.
#[derive(Deserialize)]
struct QeIdentityResponse<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

/// The one field of TCB info / QE identity that sets the cache's expiry.
#[derive(Deserialize)]
struct NextUpdate {
    #[serde(rename = "nextUpdate")]
    next_update: String,
}

async fn fetch_collateral(
    http: &reqwest::Client,
    base_url: &str,
    key: &CollateralKey,
) -> Result<QuoteCollateralV3, TeeError> {
    let base = base_url.trim_end_matches('/');
    let sgx = format!("{base}/sgx/certification/v4");
    let tdx = format!("{base}/tdx/certification/v4");

    let (headers, pck_crl) = get(http, &format!("{sgx}/pckcrl?ca={}&encoding=der", key.ca)).await?;
    let pck_crl_issuer_chain = issuer_chain(&headers, &["SGX-PCK-CRL-Issuer-Chain"])?;

    let (headers, body) = get(http, &format!("{tdx}/tcb?fmspc={}", key.fmspc)).await?;
    let tcb_info_issuer_chain = issuer_chain(
        &headers,
        &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
    )?;
    let tcb: TcbInfoResponse = serde_json::from_slice(&body)
        .map_err(|e| collateral_err(format!("TCB info is not the expected JSON: {e}")))?;
    let tcb_info = tcb.tcb_info.get().to_owned();
    let tcb_info_signature = hex::decode(&tcb.signature)
        .map_err(|_| collateral_err("TCB info signature is not hex".into()))?;

    let (headers, body) = get(http, &format!("{tdx}/qe/identity")).await?;
    let qe_identity_issuer_chain = issuer_chain(&headers, &["SGX-Enclave-Identity-Issuer-Chain"])?;
    let qe: QeIdentityResponse = serde_json::from_slice(&body)
        .map_err(|e| collateral_err(format!("QE identity is not the expected JSON: {e}")))?;
    let qe_identity = qe.enclave_identity.get().to_owned();
    let qe_identity_signature = hex::decode(&qe.signature)
        .map_err(|_| collateral_err("QE identity signature is not hex".into()))?;

    let root_ca_crl = fetch_root_ca_crl(http, &sgx).await?;

    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
        // TDX quotes carry their PCK chain (certification data type 5).
        pck_certificate_chain: None,
    })
}

/// A PCCS serves the root CA CRL (hex-encoded DER) at `rootcacrl`; Intel's PCS does not, so
/// fall back to the CRL distribution point of the Intel SGX Root CA.
async fn fetch_root_ca_crl(http: &reqwest::Client, sgx_base: &str) -> Result<Vec<u8>, TeeError> {
    if let Ok((_, body)) = get(http, &format!("{sgx_base}/rootcacrl")).await {
        if let Some(der) = crl_der(&body) {
            return Ok(der);
        }
    }
    let (_, body) = get(http, INTEL_ROOT_CA_CRL_URL).await?;
    crl_der(&body).ok_or_else(|| collateral_err("root CA CRL is neither DER nor hex".into()))
}

/// Accepts a CRL as DER (a SEQUENCE, first byte 0x30) or as hex text of DER.
fn crl_der(body: &[u8]) -> Option<Vec<u8>> {
    match body.first() {
        Some(0x30) => Some(body.to_vec()),
        Some(_) => hex::decode(String::from_utf8_lossy(body).trim())
            .ok()
            .filter(|der| der.first() == Some(&0x30)),
        None => None,
    }
}

async fn get(
    http: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), TeeError> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| collateral_err(format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(collateral_err(format!("GET {url}: HTTP {status}")));
    }
    let headers = resp.headers().clone();
    let too_large = || {
        collateral_err(format!(
            "GET {url}: the answer exceeds {MAX_COLLATERAL_BYTES} bytes"
        ))
    };
    if resp.content_length().unwrap_or(0) > MAX_COLLATERAL_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| collateral_err(format!("GET {url}: reading body: {e}")))?
    {
        if body.len() + chunk.len() > MAX_COLLATERAL_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((headers, body))
}

/// Largest answer read from a PCCS: Intel's CRLs, TCB info and QE identity are tens of KiB; a
/// collateral service that sends more is not read to the end.
const MAX_COLLATERAL_BYTES: usize = 4 << 20;

/// Issuer chains arrive as URL-encoded PEM in a response header.
fn issuer_chain(headers: &reqwest::header::HeaderMap, names: &[&str]) -> Result<String, TeeError> {
    let value = names
        .iter()
        .find_map(|n| headers.get(*n))
        .ok_or_else(|| collateral_err(format!("response lacks the {} header", names.join("/"))))?;
    let text = value
        .to_str()
        .map_err(|_| collateral_err(format!("{} header is not ASCII", names.join("/"))))?;
    urlencoding::decode(text)
        .map(|s| s.into_owned())
        .map_err(|_| {
            collateral_err(format!(
                "{} header is not URL-encoded UTF-8",
                names.join("/")
            ))
        })
}

/// The earliest `nextUpdate` of the TCB info and QE identity, in Unix seconds.
pub(super) fn next_update(collateral: &QuoteCollateralV3) -> Result<u64, TeeError> {
    let parse = |json: &str, what: &str| -> Result<u64, TeeError> {
        let field: NextUpdate = serde_json::from_str(json)
            .map_err(|e| collateral_err(format!("{what} lacks nextUpdate: {e}")))?;
        let at = time::OffsetDateTime::parse(
            &field.next_update,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| collateral_err(format!("{what} nextUpdate {:?}: {e}", field.next_update)))?;
        Ok(u64::try_from(at.unix_timestamp()).unwrap_or(0))
    };
    Ok(
        parse(&collateral.tcb_info, "TCB info")?
            .min(parse(&collateral.qe_identity, "QE identity")?),
    )
}

// ---- on-disk cache ----

fn load_disk_cache(dir: &Path) -> Result<HashMap<CollateralKey, CachedCollateral>, TeeError> {
    let mut out = HashMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(TeeError::Io {
                context: format!("reading collateral cache {}", dir.display()),
                source: e,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        // An unreadable or foreign file is not fatal: that platform's collateral is simply
        // fetched again and the file overwritten.
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(cached) = serde_json::from_slice::<CachedCollateral>(&bytes) else {
            continue;
        };
        out.insert(cached.key.clone(), cached);
    }
    Ok(out)
}

fn store_disk_entry(dir: &Path, entry: &CachedCollateral) -> Result<(), TeeError> {
    let io_err = |what: &str, source| TeeError::Io {
        context: format!("{what} collateral cache {}", dir.display()),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| io_err("creating", e))?;
    let json = serde_json::to_vec(entry)
        .map_err(|e| collateral_err(format!("cannot encode the cache entry: {e}")))?;
    let path = dir.join(entry.key.file_name());
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:016x}",
        entry.key.file_name(),
        std::process::id(),
        rand::random::<u64>()
    ));
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("writing", e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_collateral() -> QuoteCollateralV3 {
        serde_json::from_str(include_str!("../../testdata/tdx/tdx_quote_collateral.json")).unwrap()
    }

    fn key(fmspc: &str) -> CollateralKey {
        CollateralKey {
            fmspc: fmspc.into(),
            ca: "platform".into(),
        }
    }

    #[test]
    fn crl_accepts_der_or_hex_only() {
        assert_eq!(crl_der(&[0x30, 1, 2]), Some(vec![0x30, 1, 2]));
        assert_eq!(crl_der(b"300102\n"), Some(vec![0x30, 1, 2]));
        assert_eq!(crl_der(b"zz"), None);
        // Hex text whose DER would not be a SEQUENCE.
        assert_eq!(crl_der(b"1102"), None);
        assert_eq!(crl_der(b""), None);
    }

    #[test]
    fn expiry_is_the_earliest_next_update() {
        let c = fixture_collateral();
        let at = next_update(&c).unwrap();
        // The fixture is valid until 2025-07-19.
        assert!((1_752_800_000..1_753_000_000).contains(&at), "{at}");
        let mut bad = c;
        bad.tcb_info = "{}".into();
        assert!(matches!(next_update(&bad), Err(TeeError::Collateral(_))));
    }

    #[test]
    fn refresh_is_due_by_age_or_next_update() {
        let entry = CachedCollateral {
            key: key("00806F050000"),
            fetched_at: 1000,
            next_update: 5000,
            collateral: fixture_collateral(),
        };
        let hour = Duration::from_secs(3600);
        assert!(!entry.refresh_due(1000, hour));
        assert!(entry.refresh_due(4600, hour));
        let day = Duration::from_secs(86_400);
        assert!(!entry.refresh_due(4999, day));
        assert!(entry.refresh_due(5000, day));
    }

    #[test]
    fn misses_are_remembered_up_to_a_bound() {
        let source = CollateralSource::pccs(PccsConfig::new("http://127.0.0.1:9")).unwrap();
        for i in 0..MAX_WANTED + 10 {
            let err = source.cached(&key(&format!("{i:012X}"))).unwrap_err();
            assert!(matches!(err, TeeError::Collateral(_)));
        }
        let Mode::Pccs(p) = &source.mode else {
            panic!("pccs mode");
        };
        assert_eq!(lock(&p.wanted).len(), MAX_WANTED);
    }

    #[test]
    fn disk_cache_round_trips_and_skips_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let entry = CachedCollateral {
            key: key("00806F050000"),
            fetched_at: 1,
            next_update: 2,
            collateral: fixture_collateral(),
        };
        store_disk_entry(dir.path(), &entry).unwrap();
        fs::write(dir.path().join("junk.json"), b"not json").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let loaded = load_disk_cache(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[&entry.key].collateral, entry.collateral);
        assert!(load_disk_cache(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn collateral_key_comes_from_the_pck_certificate() {
        let k = CollateralKey::from_quote(include_bytes!("../../testdata/tdx/tdx_quote")).unwrap();
        assert_eq!(k.fmspc.len(), 12);
        assert!(k.fmspc.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(k.ca == "platform" || k.ca == "processor", "{k}");
        assert!(CollateralKey::from_quote(&[0; 100]).is_err());
    }
}
