//! The error type shared by every attestation operation.

use crate::{AttestationKind, ImageHash};

/// Everything that can go wrong while producing, decoding, verifying or judging a quote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeeError {
    /// The text is not one of `none`, `fake`, `tdx`.
    #[error("unknown attestation kind {0:?} (expected none, fake or tdx)")]
    UnknownKind(String),
    /// The text is not 64 hex digits.
    #[error("invalid image hash {0:?}: expected 64 hex digits")]
    InvalidImageHash(String),
    /// An encoded quote is empty or too short to carry its header.
    #[error("quote encoding is truncated ({0} bytes)")]
    TruncatedQuote(usize),
    /// An encoded quote uses an encoding version this build does not know.
    #[error("unsupported quote encoding version {0}")]
    UnsupportedQuoteVersion(u8),
    /// An encoded quote names an attestation kind tag this build does not know.
    #[error("unknown quote kind tag {0}")]
    UnknownQuoteTag(u8),
    /// A quote body has the wrong length for its kind.
    #[error("{kind} quote body has {actual} bytes, expected {expected}")]
    QuoteLength {
        /// Kind of the quote.
        kind: AttestationKind,
        /// Length the kind requires.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// The fake platform signature over a fake quote does not verify.
    #[error("fake quote signature does not verify against the fake platform key")]
    BadFakeSignature,
    /// A TDX quote arrived but this verifier has no TDX verification plugged in.
    #[error("cannot verify a tdx quote: no TDX verifier is configured")]
    TdxVerifierMissing,
    /// A plugged-in quote verifier rejected the quote.
    #[error("{kind} quote rejected: {reason}")]
    QuoteRejected {
        /// Kind of the rejected quote.
        kind: AttestationKind,
        /// Why the verifier rejected it.
        reason: String,
    },
    /// An attester could not produce a quote.
    #[error("cannot produce a {kind} quote: {reason}")]
    QuoteGeneration {
        /// Kind of attester that failed.
        kind: AttestationKind,
        /// Why it failed.
        reason: String,
    },
    /// The policy lists allowed image hashes and this one is not among them.
    #[error("image hash {0} is not in the allowed list")]
    ImageHashNotAllowed(ImageHash),
    /// The quote's attestation kind is weaker than the policy accepts.
    #[error("attestation kind {actual} is below the policy's minimum {minimum}")]
    KindBelowMinimum {
        /// Kind of the verified quote.
        actual: AttestationKind,
        /// Weakest kind the policy accepts.
        minimum: AttestationKind,
    },
    /// Intel DCAP collateral could not be fetched, cached or found for a TDX quote.
    #[error("TDX collateral: {0}")]
    Collateral(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A sealed key file exists but cannot be unsealed by this node; it is left untouched.
    #[error("sealed key {}: {reason}", path.display())]
    SealedKey {
        /// The sealed key file.
        path: std::path::PathBuf,
        /// Why it cannot be unsealed.
        reason: String,
    },
    /// No sealing key can be obtained on this platform.
    #[error("sealing key unavailable: {0}")]
    SealingUnavailable(String),
}
