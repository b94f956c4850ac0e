//! Attestation for Cocoon nodes: quotes, measurements, image hashes, attesters, verifiers
//! and policies.
//!
//! A node's [`Attester`] produces a [`Quote`] binding 64 bytes of report data to the image it
//! runs; a peer's [`Verifier`] checks the quote and yields a [`VerifiedQuote`] (measurements,
//! [`ImageHash`], report data); a [`Policy`] then decides whether that image and attestation
//! kind are acceptable. Kinds: `none` ([`NoneAttester`], development only), `fake`
//! ([`FakeAttester`], a software TDX stand-in signed by a published key) and `tdx`
//! (verification plugged in through [`QuoteVerifier`]). A worker's model is measured too: the
//! SHA-256 of its weights ([`weights::weights_sha256`]) is one of its attested claims.

#![forbid(unsafe_code)]

mod error;
pub mod fake;
mod kind;
pub mod measurements;
mod policy;
mod quote;
pub mod sealed;
pub mod tdx;
pub mod tsm;
mod verify;
pub mod weights;

pub use error::TeeError;
pub use fake::FakeAttester;
pub use kind::AttestationKind;
pub use measurements::{ImageHash, Measurements};
pub use policy::Policy;
pub use quote::{Attester, NoneAttester, Quote, ReportData, QUOTE_ENCODING_VERSION};
pub use sealed::{FakeSealingKeySource, SealedKeyStore, SealingKeySource};
pub use tdx::{CollateralSource, TdxQuoteVerifier};
pub use tsm::TdxAttester;
pub use verify::{QuoteVerifier, VerifiedQuote, Verifier};
