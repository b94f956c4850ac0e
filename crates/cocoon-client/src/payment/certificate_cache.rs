//! Receipt certificates the client verified, found again by their base64 text.
//!
//! A proxy's receipts name the same few certificates (its own, its workers') answer after answer,
//! so the ones used last are found by comparing bytes, which costs far less than hashing them (a
//! real TDX certificate is ~7.5 KB of base64: hashing both of a receipt's took several µs per
//! answer). Others are found by the SHA-256 of their text. Only verified certificates are ever
//! inserted, so a text equal to a cached one is that certificate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Certificates compared byte for byte before hashing.
const RECENT: usize = 8;

/// Verified certificates by their text; emptied at `capacity` (a proxy with more workers than
/// that costs one certificate check per answer, never unbounded memory).
pub(super) struct CertificateCache<T> {
    recent: VecDeque<(Arc<str>, Arc<T>)>,
    by_digest: HashMap<[u8; 32], (Arc<str>, Arc<T>)>,
    capacity: usize,
}

impl<T> CertificateCache<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            recent: VecDeque::with_capacity(RECENT),
            by_digest: HashMap::new(),
            capacity,
        }
    }

    /// The certificate whose base64 text is `text`, if it was inserted.
    pub(super) fn get(&mut self, text: &str) -> Option<Arc<T>> {
        if let Some(position) = self.recent.iter().position(|(seen, _)| **seen == *text) {
            return Some(self.recent[position].1.clone());
        }
        let (seen, known) = self.by_digest.get(&digest(text))?.clone();
        self.remember(seen, known.clone());
        Some(known)
    }

    /// Keeps `known`, verified from `text`.
    pub(super) fn insert(&mut self, text: &str, known: Arc<T>) {
        if self.by_digest.len() >= self.capacity {
            self.by_digest.clear();
            self.recent.clear();
        }
        let text: Arc<str> = Arc::from(text);
        self.by_digest
            .insert(digest(&text), (text.clone(), known.clone()));
        self.remember(text, known);
    }

    fn remember(&mut self, text: Arc<str>, known: Arc<T>) {
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front((text, known));
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> String {
        // Texts of one length that differ only at their end, the worst case for comparing.
        format!("{}{n:04}", "A".repeat(4_000))
    }

    #[test]
    fn a_certificate_is_found_by_its_exact_text_only() {
        let mut cache = CertificateCache::new(256);
        let known = Arc::new(1);
        cache.insert(&text(1), known.clone());
        assert!(Arc::ptr_eq(&cache.get(&text(1)).unwrap(), &known));
        assert!(cache.get(&text(2)).is_none(), "same length, other bytes");
        assert!(cache.get(&text(1)[1..]).is_none(), "a part of it");
        assert!(cache.get("").is_none());
    }

    #[test]
    fn certificates_beyond_the_recent_ones_are_found_by_digest_and_come_back_to_the_front() {
        let mut cache = CertificateCache::new(256);
        for n in 0..3 * RECENT {
            cache.insert(&text(n), Arc::new(n));
        }
        assert!(cache.recent.iter().all(|(seen, _)| **seen != *text(0)));
        assert_eq!(*cache.get(&text(0)).unwrap(), 0);
        assert_eq!(
            *cache.recent[0].0,
            *text(0),
            "found by digest, then kept recent"
        );
        for n in 0..3 * RECENT {
            assert_eq!(*cache.get(&text(n)).unwrap(), n);
        }
        assert_eq!(cache.recent.len(), RECENT);
    }

    #[test]
    fn the_cache_is_emptied_at_its_capacity_never_grown_past_it() {
        let mut cache = CertificateCache::new(4);
        for n in 0..4 {
            cache.insert(&text(n), Arc::new(n));
        }
        assert_eq!(cache.by_digest.len(), 4);
        cache.insert(&text(4), Arc::new(4));
        assert_eq!(cache.by_digest.len(), 1);
        assert!(cache.get(&text(0)).is_none(), "emptied, recent ones too");
        assert_eq!(*cache.get(&text(4)).unwrap(), 4);
    }
}
