//! How an [`Engine`](crate::Engine) is set up.

use std::path::{Path, PathBuf};

/// Settings for [`Engine::load`](crate::Engine::load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The GGUF file to serve.
    pub model_path: PathBuf,
    /// The name the model is served under (`model` in requests and `/v1/models`).
    pub model_name: String,
    /// Tokens of context per sequence (prompt plus completion). `0` means the model's training
    /// context; larger values are capped to it.
    pub context_length: u32,
    /// Sequences decoded together (the engine's capacity). Each gets its own `context_length`.
    pub parallel: usize,
    /// CPU threads for llama.cpp; `None` uses all cores but one (at least one). llama.cpp's
    /// threads spin-wait, so more threads than free cores makes decoding many times slower:
    /// the spare core keeps the network side and other processes from stalling them.
    pub threads: Option<usize>,
    /// Layers offloaded to a GPU (only with a GPU-enabled build; ignored on CPU).
    pub gpu_layers: u32,
    /// Requests that may wait for a free sequence before new ones are refused with HTTP 429.
    pub max_queued: usize,
    /// Serve a private copy of the model made in this directory, hashed as it is written, instead
    /// of the file itself (whose hash sidecar is then not read either). Inside a TD this must be
    /// TD-private memory (e.g. `/dev/shm`), so the bytes served are the bytes attested even if the
    /// host rewrites the file. `None`: serve the file, trusting its sidecar cache (outside a TEE).
    pub weights_copy_dir: Option<PathBuf>,
}

impl EngineConfig {
    /// Defaults for `model_path`: served under the file's stem, 2048 tokens per sequence,
    /// 4 parallel sequences, all cores but one, no GPU, 64 queued requests.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        let model_path = model_path.into();
        EngineConfig {
            model_name: served_name(&model_path),
            model_path,
            context_length: 2048,
            parallel: 4,
            threads: None,
            gpu_layers: 0,
            max_queued: 64,
            weights_copy_dir: None,
        }
    }
}

/// The served name for a model file: its stem without a trailing quantisation tag, so that
/// `SmolLM2-135M-Instruct.Q4_1.gguf` is served as `SmolLM2-135M-Instruct`.
fn served_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    match stem.rsplit_once('.') {
        Some((base, _quant)) if !base.is_empty() => base.to_owned(),
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_name_drops_extension_and_quantisation() {
        let config = EngineConfig::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(config.model_name, "SmolLM2-135M-Instruct");
        assert_eq!(EngineConfig::new("/m/tiny.gguf").model_name, "tiny");
    }

    #[test]
    fn defaults_are_usable() {
        let config = EngineConfig::new("x.gguf");
        assert!(config.parallel >= 1);
        assert!(config.context_length > 0);
        assert!(config.max_queued >= 1);
    }
}
