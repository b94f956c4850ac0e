//! The certificates a client already holds, so that receipts need not bring them again.
//!
//! Every receipt names two certificates: the countersigning proxy's and the serving worker's,
//! each its link certificate, unchanged until it renews. A TDX certificate (~7.5 KB) is too large
//! for HTTP/2 header compression to send as an index, so each would cross the link whole with
//! every answer. Once a receipt on a link has carried the proxy's link certificate, the client
//! names it in its requests (`x-cocoon-held-certificate`: its SHA-256) and the proxy leaves it out
//! of the receipts it countersigns with it; the client also names the workers' certificates it
//! holds from earlier receipts (`x-cocoon-held-worker-certificates`, at most
//! [`MAX_HELD_WORKER_CERTIFICATES`], kept for the link's life so that no request names one the
//! client no longer has), and the proxy sends a held one's digest instead. The client puts each
//! back before reading the receipt; one it cannot put back leaves the receipt unreadable, which
//! stops payments to that proxy as any bad receipt does.

use std::sync::{Mutex, MutexGuard};

use cocoon_money::Hash32;
use cocoon_proto::headers::{
    MAX_HELD_WORKER_CERTIFICATES, RECEIPT_PROXY_CERTIFICATE, RECEIPT_RECORD,
    RECEIPT_WORKER_CERTIFICATE, RECEIPT_WORKER_CERTIFICATE_SHA256,
};
use cocoon_receipt::Receipt;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

/// What a client holds of one proxy link's certificates.
#[derive(Debug)]
pub struct HeldCertificate {
    /// SHA-256 of the certificate the proxy presented on the link.
    link_fingerprint: [u8; 32],
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// The proxy's link certificate as receipts carry it (base64), once one did.
    proxy: Option<HeaderValue>,
    /// Workers' certificates as receipts carried them, with their SHA-256s, in the order first
    /// seen; never dropped while the link lives.
    workers: Vec<([u8; 32], HeaderValue)>,
    /// `x-cocoon-held-worker-certificates` naming `workers`.
    workers_header: Option<HeaderValue>,
}

impl HeldCertificate {
    /// Nothing held yet for a link whose proxy presented the certificate `link_fingerprint`
    /// names.
    pub fn new(link_fingerprint: [u8; 32]) -> Self {
        HeldCertificate {
            link_fingerprint,
            held: Mutex::new(Held::default()),
        }
    }

    /// The `x-cocoon-held-certificate` value for requests on the link, once held.
    pub fn request_header(&self) -> Option<HeaderValue> {
        self.lock().proxy.as_ref()?;
        HeaderValue::from_str(&Hash32(self.link_fingerprint).to_string()).ok()
    }

    /// The `x-cocoon-held-worker-certificates` value for requests on the link, once one is held.
    pub fn workers_header(&self) -> Option<HeaderValue> {
        self.lock().workers_header.clone()
    }

    /// Completes the receipt in a link's `trailers`: puts back the certificates it leaves out,
    /// and holds the ones it carries (the proxy's only if it is the link's).
    pub fn complete(&self, trailers: &mut HeaderMap) {
        if !trailers.contains_key(RECEIPT_RECORD) {
            return;
        }
        let mut held = self.lock();
        match (trailers.get(RECEIPT_PROXY_CERTIFICATE), held.proxy.as_ref()) {
            (None, Some(text)) => {
                trailers.insert(RECEIPT_PROXY_CERTIFICATE, text.clone());
            }
            (Some(text), None) if digest_of(text) == Some(self.link_fingerprint) => {
                held.proxy = Some(text.clone());
            }
            _ => {}
        }
        if let Some(text) = trailers.get(RECEIPT_WORKER_CERTIFICATE) {
            held.keep_worker(text);
        } else if let Some(text) = trailers
            .get(RECEIPT_WORKER_CERTIFICATE_SHA256)
            .and_then(|digest| digest.to_str().ok()?.parse::<Hash32>().ok())
            .and_then(|digest| held.worker(&digest.0))
        {
            trailers.insert(RECEIPT_WORKER_CERTIFICATE, text);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Values replaced or added whole: a panic elsewhere leaves them whole.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Held {
    fn worker(&self, digest: &[u8; 32]) -> Option<HeaderValue> {
        self.workers
            .iter()
            .find(|(held, _)| held == digest)
            .map(|(_, text)| text.clone())
    }

    /// Holds a worker's certificate not held yet, while there is room.
    fn keep_worker(&mut self, text: &HeaderValue) {
        let full = self.workers.len() >= MAX_HELD_WORKER_CERTIFICATES;
        if full || self.workers.iter().any(|(_, held)| held == text) {
            return;
        }
        let Some(digest) = digest_of(text) else {
            return;
        };
        self.workers.push((digest, text.clone()));
        let names: Vec<String> = self
            .workers
            .iter()
            .map(|(digest, _)| Hash32(*digest).to_string())
            .collect();
        self.workers_header = HeaderValue::from_str(&names.join(",")).ok();
    }
}

/// SHA-256 of the DER a certificate trailer carries (base64).
fn digest_of(text: &HeaderValue) -> Option<[u8; 32]> {
    let der = Receipt::decode_certificate(text.to_str().ok()?).ok()?;
    Some(Sha256::digest(der).into())
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::STANDARD, Engine};

    use super::*;

    const LINK_DER: &[u8] = b"the link's certificate";

    fn text(der: &[u8]) -> HeaderValue {
        STANDARD.encode(der).parse().unwrap()
    }

    fn trailers(proxy: Option<&[u8]>, worker: Option<&[u8]>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(RECEIPT_RECORD, HeaderValue::from_static("record"));
        if let Some(der) = proxy {
            map.insert(RECEIPT_PROXY_CERTIFICATE, text(der));
        }
        if let Some(der) = worker {
            map.insert(RECEIPT_WORKER_CERTIFICATE, text(der));
        }
        map
    }

    fn named(der: &[u8]) -> HeaderMap {
        let mut map = trailers(None, None);
        let digest = Hash32(Sha256::digest(der).into()).to_string();
        map.insert(RECEIPT_WORKER_CERTIFICATE_SHA256, digest.parse().unwrap());
        map
    }

    #[test]
    fn the_links_certificate_is_held_from_its_first_receipt_and_put_back_into_the_next() {
        let held = HeldCertificate::new(Sha256::digest(LINK_DER).into());
        assert_eq!(held.request_header(), None);
        // Another certificate (a renewed one) is not the link's: not held.
        held.complete(&mut trailers(Some(b"a renewed certificate"), None));
        assert_eq!(held.request_header(), None);
        // A receipt without its certificate before one is held stays without.
        let mut bare = trailers(None, None);
        held.complete(&mut bare);
        assert!(!bare.contains_key(RECEIPT_PROXY_CERTIFICATE));

        held.complete(&mut trailers(Some(LINK_DER), None));
        let expected = Hash32(Sha256::digest(LINK_DER).into()).to_string();
        assert_eq!(held.request_header().unwrap(), expected.as_str());
        let mut next = trailers(None, None);
        held.complete(&mut next);
        assert_eq!(next.get(RECEIPT_PROXY_CERTIFICATE), Some(&text(LINK_DER)));
        // A certificate the proxy did send is read as sent.
        let mut renewed = trailers(Some(b"a renewed certificate"), None);
        held.complete(&mut renewed);
        assert_eq!(
            renewed.get(RECEIPT_PROXY_CERTIFICATE),
            Some(&text(b"a renewed certificate"))
        );
    }

    #[test]
    fn workers_certificates_are_held_and_named_and_put_back_by_digest() {
        let held = HeldCertificate::new(Sha256::digest(LINK_DER).into());
        assert_eq!(held.workers_header(), None);
        // Named before it is held: nothing to put back, the receipt stays unreadable.
        let mut early = named(b"worker 1");
        held.complete(&mut early);
        assert!(!early.contains_key(RECEIPT_WORKER_CERTIFICATE));

        held.complete(&mut trailers(None, Some(b"worker 1")));
        held.complete(&mut trailers(None, Some(b"worker 2")));
        held.complete(&mut trailers(None, Some(b"worker 1")));
        let one = Hash32(Sha256::digest(b"worker 1").into()).to_string();
        let two = Hash32(Sha256::digest(b"worker 2").into()).to_string();
        assert_eq!(
            held.workers_header().unwrap(),
            format!("{one},{two}").as_str()
        );
        let mut next = named(b"worker 2");
        held.complete(&mut next);
        assert_eq!(
            next.get(RECEIPT_WORKER_CERTIFICATE),
            Some(&text(b"worker 2"))
        );

        // Room for a bounded number, each kept for the link's life.
        for index in 0..2 * MAX_HELD_WORKER_CERTIFICATES {
            let der = format!("worker {index}");
            held.complete(&mut trailers(None, Some(der.as_bytes())));
        }
        let header = held.workers_header().unwrap();
        let names: Vec<&str> = header.to_str().unwrap().split(',').collect();
        assert_eq!(names.len(), MAX_HELD_WORKER_CERTIFICATES);
        assert_eq!(names[..2], [one.as_str(), two.as_str()]);
    }
}
