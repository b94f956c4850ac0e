//! The crate's error type: failures to fetch, hash, load or start a model.
//!
//! Per-request failures (bad JSON, prompt too long, engine busy) are not here: they are answered as
//! OpenAI error JSON by the HTTP layer and never leave this crate as Rust errors.

use std::path::PathBuf;

/// Why the engine could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model file's SHA-256 could not be computed.
    #[error(transparent)]
    Weights(#[from] cocoon_tee::weights::WeightsError),
    /// The model file exists but llama.cpp cannot use it (not GGUF, truncated, unsupported).
    #[error("cannot load model {path}: {reason}")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The configuration cannot work (e.g. zero parallel sequences).
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// llama.cpp could not create the inference context or start the engine thread.
    #[error("cannot start the engine: {0}")]
    Startup(String),
    /// Downloading the default model failed.
    #[error("cannot fetch the default model: {0}")]
    Fetch(String),
    /// A downloaded or cached file does not have the pinned SHA-256.
    #[error("{path}: SHA-256 mismatch (expected {expected}, got {actual})")]
    HashMismatch {
        /// The file that was checked.
        path: PathBuf,
        /// The pinned digest (hex).
        expected: String,
        /// The digest actually computed (hex).
        actual: String,
    },
}

impl InferError {
    /// An [`InferError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InferError::Io {
            path: path.into(),
            source,
        }
    }
}
