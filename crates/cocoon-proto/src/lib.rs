//! The wire vocabulary shared by every Cocoon role: message types carried on links, the `x-cocoon-*`
//! headers, the OpenAI-compatible error shape, token usage, the protocol version, and the one
//! [`clock::Clock`] every crate reads the time from.
//!
//! This crate depends on `serde` only, so that every role (and third-party tooling) can speak the
//! protocol without pulling in a runtime.

#![forbid(unsafe_code)]

pub mod capabilities;
pub mod choices;
pub mod clock;
pub mod error;
pub mod headers;
pub mod limits;
pub mod link;
pub mod usage;

pub use capabilities::{EngineKind, Honours};
pub use choices::{ChoiceFields, ChoicesError, MAX_ANSWER_CHOICES};
pub use error::{ErrorBody, ErrorKind, OpenAiError};
pub use limits::{completion_limit, TokenField, TokenLimitError};
pub use link::{ModelEntry, ModelList, WorkerInfo};
pub use usage::{may_carry_usage, OpenAiUsage, TokenUsage};

/// Version of the link protocol. Peers refuse a link whose major version differs.
pub const PROTOCOL_VERSION: u32 = 1;
