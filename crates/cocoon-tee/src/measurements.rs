//! TD measurements and the image hash that names them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{AttestationKind, TeeError};

/// Length of one TDX measurement register (SHA-384).
pub const MR_LEN: usize = 48;

/// Length of [`Measurements::canonical_bytes`].
pub const CANONICAL_LEN: usize = 8 + 8 + MR_LEN * 4 + MR_LEN * 4;

/// The fixed, code-describing fields of a TDX TD report body.
///
/// Report data is deliberately absent: it names the instance (its key), not the image.
/// Platform fields (TEE TCB SVN, MRSEAM, SEAM attributes) are absent too: they change with
/// firmware updates of the host, not with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Measurements {
    /// TD attributes (`TDATTRIBUTES`), little-endian as in the report.
    #[serde(with = "hex_array")]
    pub td_attributes: [u8; 8],
    /// Extended features available mask (`XFAM`), little-endian as in the report.
    #[serde(with = "hex_array")]
    pub xfam: [u8; 8],
    /// Measurement of the initial TD contents (firmware).
    #[serde(with = "hex_array")]
    pub mrtd: [u8; MR_LEN],
    /// Software-defined ID for non-owner-defined TD configuration.
    #[serde(with = "hex_array")]
    pub mr_config_id: [u8; MR_LEN],
    /// Software-defined ID of the TD's owner.
    #[serde(with = "hex_array")]
    pub mr_owner: [u8; MR_LEN],
    /// Software-defined ID for owner-defined TD configuration.
    #[serde(with = "hex_array")]
    pub mr_owner_config: [u8; MR_LEN],
    /// Runtime measurement registers RTMR0–3 (kernel, command line, application layers).
    #[serde(with = "hex_rtmrs")]
    pub rtmr: [[u8; MR_LEN]; 4],
}

impl Measurements {
    /// All-zero measurements: what the `none` attestation kind reports.
    pub const ZERO: Measurements = Measurements {
        td_attributes: [0; 8],
        xfam: [0; 8],
        mrtd: [0; MR_LEN],
        mr_config_id: [0; MR_LEN],
        mr_owner: [0; MR_LEN],
        mr_owner_config: [0; MR_LEN],
        rtmr: [[0; MR_LEN]; 4],
    };

    /// The canonical encoding that [`image_hash`](Self::image_hash) hashes: the fields
    /// concatenated in TD report body order,
    /// `td_attributes(8) ‖ xfam(8) ‖ mrtd(48) ‖ mr_config_id(48) ‖ mr_owner(48) ‖
    /// mr_owner_config(48) ‖ rtmr0(48) ‖ rtmr1(48) ‖ rtmr2(48) ‖ rtmr3(48)` = 400 bytes.
    ///
    /// This is byte for byte the contiguous range from `TDATTRIBUTES` to `RTMR3` of a
    /// TDX v4 quote's TD report body, so external tools can compute the image hash
    /// directly from a quote.
    pub fn canonical_bytes(&self) -> [u8; CANONICAL_LEN] {
        let mut out = [0u8; CANONICAL_LEN];
        let parts: [&[u8]; 10] = [
            &self.td_attributes,
            &self.xfam,
            &self.mrtd,
            &self.mr_config_id,
            &self.mr_owner,
            &self.mr_owner_config,
            &self.rtmr[0],
            &self.rtmr[1],
            &self.rtmr[2],
            &self.rtmr[3],
        ];
        let mut at = 0;
        for part in parts {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        out
    }

    /// Decodes [`canonical_bytes`](Self::canonical_bytes).
    pub fn from_canonical_bytes(bytes: &[u8; CANONICAL_LEN]) -> Self {
        // Fixed-size reads from a fixed-size input: the offsets are constants.
        fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> [u8; N] {
            let mut out = [0u8; N];
            out.copy_from_slice(&bytes[*at..*at + N]);
            *at += N;
            out
        }
        let mut at = 0;
        Measurements {
            td_attributes: take(bytes, &mut at),
            xfam: take(bytes, &mut at),
            mrtd: take(bytes, &mut at),
            mr_config_id: take(bytes, &mut at),
            mr_owner: take(bytes, &mut at),
            mr_owner_config: take(bytes, &mut at),
            rtmr: [
                take(bytes, &mut at),
                take(bytes, &mut at),
                take(bytes, &mut at),
                take(bytes, &mut at),
            ],
        }
    }

    /// The hash naming these measurements when attested as `kind`: it names the image (not the
    /// instance) *and how strongly it is proven*, so an allow-list entry meant for one kind can
    /// never match a quote of another.
    ///
    /// - `tdx`: SHA-256 over [`canonical_bytes`](Self::canonical_bytes) (exactly 400 bytes), which
    ///   external tools compute straight from a TDX quote.
    /// - `fake` and `none`: SHA-256 over `"cocoon-image-hash-v1/<kind>\0" ‖ canonical_bytes`.
    ///
    /// Why this is enough: anyone can make a `fake` quote with any measurements (its key is
    /// public), including a production TDX image's. Its hash is then taken over a longer,
    /// prefixed input, so it equals the TDX hash only through a SHA-256 collision.
    pub fn image_hash(&self, kind: AttestationKind) -> ImageHash {
        let mut hasher = Sha256::new();
        if kind != AttestationKind::Tdx {
            hasher.update(format!("cocoon-image-hash-v1/{kind}\0"));
        }
        hasher.update(self.canonical_bytes());
        ImageHash(hasher.finalize().into())
    }
}

/// SHA-256 of an image's canonical measurements; what policies and the registry allow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageHash(pub [u8; 32]);

impl ImageHash {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageHash({self})")
    }
}

impl FromStr for ImageHash {
    type Err = TeeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| TeeError::InvalidImageHash(s.to_owned()))?;
        Ok(ImageHash(out))
    }
}

impl Serialize for ImageHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for fixed-size byte arrays as lowercase hex strings (serde has no impl above 32 bytes).
pub mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the array as a hex string.
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Reads a hex string of exactly `2 * N` digits.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&s, &mut out).map_err(|e| {
            serde::de::Error::custom(format_args!("expected {} hex digits: {e}", 2 * N))
        })?;
        Ok(out)
    }
}

/// Serde for the four RTMRs as a list of four hex strings.
mod hex_rtmrs {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::MR_LEN;

    pub fn serialize<S: Serializer>(v: &[[u8; MR_LEN]; 4], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(4))?;
        for r in v {
            seq.serialize_element(&hex::encode(r))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[[u8; MR_LEN]; 4], D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.len() != 4 {
            return Err(serde::de::Error::invalid_length(v.len(), &"4 RTMRs"));
        }
        let mut out = [[0u8; MR_LEN]; 4];
        for (slot, s) in out.iter_mut().zip(&v) {
            hex::decode_to_slice(s, slot).map_err(|e| {
                serde::de::Error::custom(format_args!("RTMR: expected 96 hex digits: {e}"))
            })?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Measurements {
        let mut m = Measurements::ZERO;
        m.mrtd = [1; MR_LEN];
        m.rtmr[2] = [7; MR_LEN];
        m.xfam = [0xe7, 0x1a, 0x06, 0, 0, 0, 0, 0];
        m
    }

    #[test]
    fn canonical_round_trip_and_layout() {
        let m = sample();
        let bytes = m.canonical_bytes();
        assert_eq!(Measurements::from_canonical_bytes(&bytes), m);
        // xfam right after td_attributes, mrtd right after xfam, rtmr2 at its report offset.
        assert_eq!(&bytes[8..11], &[0xe7, 0x1a, 0x06]);
        assert_eq!(bytes[16], 1);
        let rtmr2_at = 16 + 4 * MR_LEN + 2 * MR_LEN;
        assert_eq!(&bytes[rtmr2_at..rtmr2_at + MR_LEN], &[7; MR_LEN]);
    }

    #[test]
    fn image_hash_is_stable_and_sensitive() {
        let m = sample();
        let tdx = AttestationKind::Tdx;
        assert_eq!(m.image_hash(tdx), sample().image_hash(tdx));
        // Pinned value (SHA-256 of 400 zero bytes): changing the canonical encoding
        // would silently invalidate every deployed policy.
        assert_eq!(
            Measurements::ZERO.image_hash(tdx).to_string(),
            "7a12e561363385e9dfeeab326368731c030ed4b374e7f5897ac819159d2884c5"
        );
        let mut other = m;
        other.rtmr[3][47] ^= 1;
        assert_ne!(other.image_hash(tdx), m.image_hash(tdx));
    }

    #[test]
    fn the_same_measurements_hash_differently_for_each_kind() {
        // A `fake` quote can carry a production image's measurements (anyone can sign one):
        // its hash must not be the TDX one that allow-lists name.
        let m = sample();
        let hashes: std::collections::BTreeSet<ImageHash> = AttestationKind::ALL
            .into_iter()
            .map(|kind| m.image_hash(kind))
            .collect();
        assert_eq!(hashes.len(), AttestationKind::ALL.len());
        assert_eq!(
            m.image_hash(AttestationKind::Fake),
            ImageHash(
                Sha256::digest(
                    [&b"cocoon-image-hash-v1/fake\0"[..], &m.canonical_bytes()].concat()
                )
                .into()
            )
        );
    }

    #[test]
    fn json_round_trip_is_hex() {
        let m = sample();
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(json["mrtd"], hex::encode([1u8; MR_LEN]));
        assert_eq!(json["rtmr"][2], hex::encode([7u8; MR_LEN]));
        let back: Measurements = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, m);

        let mut bad = json;
        bad["mrtd"] = "abcd".into();
        assert!(serde_json::from_value::<Measurements>(bad).is_err());
    }

    #[test]
    fn image_hash_text_round_trip() {
        let h = sample().image_hash(AttestationKind::Fake);
        assert_eq!(h.to_string().parse::<ImageHash>().unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ImageHash>(&json).unwrap(), h);
        assert!("xyz".parse::<ImageHash>().is_err());
        assert!("00".parse::<ImageHash>().is_err());
    }
}
