//! The proxy's certificate a client already holds, so that receipts need not bring it again.
//!
//! Every receipt names the certificate of the proxy that countersigned it. That is the proxy's
//! link certificate, unchanged until it renews, and a TDX one (~7.5 KB) is too large for HTTP/2
//! header compression to send as an index: it would cross the link whole with every answer. Once
//! a receipt on a link has carried the link's certificate, the client names it in its requests
//! (`x-cocoon-held-certificate`: its SHA-256), the proxy leaves it out of the receipts it
//! countersigns with it, and the client puts it back before reading them.

use std::sync::Mutex;

use cocoon_money::Hash32;
use cocoon_proto::headers::{RECEIPT_PROXY_CERTIFICATE, RECEIPT_RECORD};
use cocoon_receipt::Receipt;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

/// The certificate of one link's proxy, once a receipt carried it.
#[derive(Debug)]
pub struct HeldCertificate {
    /// SHA-256 of the certificate the proxy presented on the link.
    link_fingerprint: [u8; 32],
    /// That certificate as receipts carry it (base64), once one did.
    text: Mutex<Option<HeaderValue>>,
}

impl HeldCertificate {
    /// Nothing held yet for a link whose proxy presented the certificate `link_fingerprint`
    /// names.
    pub fn new(link_fingerprint: [u8; 32]) -> Self {
        HeldCertificate {
            link_fingerprint,
            text: Mutex::new(None),
        }
    }

    /// The `x-cocoon-held-certificate` value for requests on the link, once held.
    pub fn request_header(&self) -> Option<HeaderValue> {
        self.lock().as_ref()?;
        HeaderValue::from_str(&Hash32(self.link_fingerprint).to_string()).ok()
    }

    /// Completes the receipt in a link's `trailers`: puts the held certificate into a receipt
    /// that leaves it out, and holds the link's certificate from the first receipt that carries
    /// it (any other — a renewed one — is read as it comes).
    pub fn complete(&self, trailers: &mut HeaderMap) {
        if !trailers.contains_key(RECEIPT_RECORD) {
            return;
        }
        let mut held = self.lock();
        match (trailers.get(RECEIPT_PROXY_CERTIFICATE), held.as_ref()) {
            (None, Some(text)) => {
                trailers.insert(RECEIPT_PROXY_CERTIFICATE, text.clone());
            }
            (Some(text), None) if self.is_the_links(text) => *held = Some(text.clone()),
            _ => {}
        }
    }

    fn is_the_links(&self, text: &HeaderValue) -> bool {
        text.to_str()
            .ok()
            .and_then(|text| Receipt::decode_certificate(text).ok())
            .is_some_and(|der| <[u8; 32]>::from(Sha256::digest(der)) == self.link_fingerprint)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HeaderValue>> {
        // One value, replaced whole: a panic elsewhere leaves it whole.
        self.text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::STANDARD, Engine};

    use super::*;

    const LINK_DER: &[u8] = b"the link's certificate";

    fn trailers(certificate: Option<&[u8]>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(RECEIPT_RECORD, HeaderValue::from_static("record"));
        if let Some(der) = certificate {
            let text = STANDARD.encode(der);
            map.insert(RECEIPT_PROXY_CERTIFICATE, text.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_links_certificate_is_held_from_its_first_receipt_and_put_back_into_the_next() {
        let held = HeldCertificate::new(Sha256::digest(LINK_DER).into());
        assert_eq!(held.request_header(), None);
        // Another certificate (a renewed one) is not the link's: not held.
        held.complete(&mut trailers(Some(b"a renewed certificate")));
        assert_eq!(held.request_header(), None);
        // A receipt without its certificate before one is held stays without.
        let mut bare = trailers(None);
        held.complete(&mut bare);
        assert!(!bare.contains_key(RECEIPT_PROXY_CERTIFICATE));

        let mut first = trailers(Some(LINK_DER));
        held.complete(&mut first);
        let expected = Hash32(Sha256::digest(LINK_DER).into()).to_string();
        assert_eq!(held.request_header().unwrap(), expected.as_str());
        let mut next = trailers(None);
        held.complete(&mut next);
        assert_eq!(
            next.get(RECEIPT_PROXY_CERTIFICATE),
            first.get(RECEIPT_PROXY_CERTIFICATE)
        );
        // A certificate the proxy did send is read as sent.
        let mut renewed = trailers(Some(b"a renewed certificate"));
        held.complete(&mut renewed);
        assert_ne!(
            renewed.get(RECEIPT_PROXY_CERTIFICATE),
            first.get(RECEIPT_PROXY_CERTIFICATE)
        );
    }
}
