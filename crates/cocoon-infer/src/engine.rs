//! The engine: one loaded model, one llama.cpp context on a dedicated thread, and the bounded
//! queue between async request handlers and that thread.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self as std_mpsc, TrySendError};
use std::sync::{Arc, OnceLock};

use cocoon_proto::ErrorKind;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::config::EngineConfig;
use crate::error::InferError;
use cocoon_tee::weights::{private_copy, weights_sha256};

use crate::model_file::check_gguf;
use crate::openai::ApiError;
use crate::params::Sampling;
use crate::sampler::{grammar_sampler, TokenLogprob};
use crate::scheduler;

/// llama.cpp's process-wide backend: initialised once, never freed.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, InferError> {
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs to stderr by default; route it into `tracing` so the host decides.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| InferError::Startup(format!("llama.cpp backend: {e}")))
}

/// Why generation ended, as OpenAI's `finish_reason` (`tool_calls` is the HTTP layer's reading
/// of a `Stop` whose output is a complete call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    /// End of turn, or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine thread reports for one request, in order: text pieces (each token's
/// log-probability first, when asked for), then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// More output text (never empty).
    Text(String),
    /// The log-probability of one more generated token.
    Token(Box<TokenLogprob>),
    /// Generation ended normally.
    Done {
        finish: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// Generation failed inside llama.cpp.
    Failed(String),
}

/// One request on its way to, or inside, the engine thread.
pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    pub max_tokens: u32,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    /// Dropped by the client side when it goes away: the engine then frees the sequence.
    pub events: mpsc::UnboundedSender<Event>,
    pub _in_flight: InFlight,
}

/// Counts a request as in flight from admission until its job is dropped, whichever side drops it.
pub(crate) struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters shared between the handlers, the engine thread and [`EngineStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub in_flight: AtomicUsize,
    pub decoding: AtomicUsize,
    pub max_batch_sequences: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

/// A snapshot of the engine's load and totals, for stats pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Requests admitted and not finished (queued or decoding).
    pub in_flight: usize,
    /// Sequences in the llama.cpp context right now.
    pub decoding: usize,
    /// The most sequences ever decoded together in one batch.
    pub max_batch_sequences: usize,
    /// Prompt tokens processed since start.
    pub prompt_tokens: u64,
    /// Tokens generated since start.
    pub completion_tokens: u64,
}

/// A loaded model serving requests. Cheap to share: wrap it in an `Arc` (as [`Engine::load`] does).
pub struct Engine {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    model_name: String,
    model_hash: String,
    context_length: u32,
    max_active: usize,
    jobs: std_mpsc::SyncSender<Job>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_name", &self.model_name)
            .field("model_hash", &self.model_hash)
            .field("context_length", &self.context_length)
            .field("max_active", &self.max_active)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the model, hashes it and starts the engine thread. Blocking (seconds for large
    /// models): async callers run it in `spawn_blocking`.
    pub fn load(config: EngineConfig) -> Result<Arc<Engine>, InferError> {
        if config.parallel == 0 {
            return Err(InferError::Config("parallel must be at least 1".into()));
        }
        if config.max_queued == 0 {
            return Err(InferError::Config("max_queued must be at least 1".into()));
        }
        let path = config.model_path.clone();
        check_gguf(&path)?;
        // Either the copy whose bytes were hashed as they were written, or the file as it is.
        let copy = match &config.weights_copy_dir {
            Some(dir) => Some(private_copy(&path, dir)?),
            None => None,
        };
        let (load_path, model_hash) = match &copy {
            Some(copy) => (copy.path().to_path_buf(), copy.sha256().to_owned()),
            None => (path.clone(), weights_sha256(&path)?),
        };
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        let model = LlamaModel::load_from_file(backend, &load_path, &params).map_err(|e| {
            InferError::ModelLoad {
                path: path.clone(),
                reason: format!("llama.cpp rejected it ({e}); see the llama.cpp log for details"),
            }
        })?;
        // Loaded (mapped or read): the name can go, the bytes stay with the model.
        drop(copy);
        let model = Arc::new(model);

        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(e) => {
                // llama.cpp's own server falls back to ChatML in this case, and so do we.
                tracing::warn!(path = %path.display(), error = %e, "model has no chat template; using chatml");
                LlamaChatTemplate::new("chatml").map_err(|e| InferError::Startup(e.to_string()))?
            }
        };

        let train = model.n_ctx_train();
        let wanted = if config.context_length == 0 || config.context_length > train {
            train
        } else {
            config.context_length
        };
        let parallel = u32::try_from(config.parallel)
            .map_err(|_| InferError::Config("parallel is too large".into()))?;
        let total = wanted
            .checked_mul(parallel)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                InferError::Config("context_length × parallel is out of range".into())
            })?;
        let threads = config.threads.unwrap_or_else(default_threads);
        let threads = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(Some(total))
            .with_n_seq_max(parallel)
            // Each sequence gets its own `context_length` cells, so one long request cannot
            // starve the others of KV cache mid-generation.
            .with_kv_unified(false)
            .with_n_batch(scheduler::BATCH_TOKENS)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);

        let counters = Arc::new(Counters::default());
        let (jobs, queue) = std_mpsc::sync_channel(config.max_queued);
        let context_length = scheduler::spawn(
            Arc::clone(&model),
            backend,
            ctx_params,
            config.parallel,
            queue,
            Arc::clone(&counters),
        )?;
        tracing::info!(
            model = %config.model_name,
            path = %path.display(),
            hash = %model_hash,
            context_length,
            parallel = config.parallel,
            threads,
            "engine ready"
        );
        Ok(Arc::new(Engine {
            model,
            template,
            model_name: config.model_name,
            model_hash,
            context_length,
            max_active: config.parallel,
            jobs,
            counters,
        }))
    }

    /// The name the model is served under.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// SHA-256 of the GGUF file, lower-case hex.
    pub fn model_hash(&self) -> &str {
        &self.model_hash
    }

    /// How many requests decode at the same time (the number of llama.cpp sequences).
    pub fn max_active(&self) -> usize {
        self.max_active
    }

    /// Tokens of context per request (prompt plus completion).
    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    /// Current load and totals.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            in_flight: c.in_flight.load(Ordering::Relaxed),
            decoding: c.decoding.load(Ordering::Relaxed),
            max_batch_sequences: c.max_batch_sequences.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
        }
    }

    /// The prompt for `messages` (role, text) in the model's own chat template, ending with the
    /// assistant's turn opened.
    pub(crate) fn render_chat(&self, messages: &[(String, String)]) -> Result<String, ApiError> {
        let chat = messages
            .iter()
            .map(|(role, text)| LlamaChatMessage::new(role.clone(), text.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ApiError::invalid("messages", "messages must not contain NUL characters")
            })?;
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("cannot apply the model's chat template: {e}"),
                )
            })
    }

    /// The model's tokens for `text`, special tokens (e.g. `<|im_start|>`) included.
    pub(crate) fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, true)
    }

    /// Checks client-supplied token ids (named by `param`) against the vocabulary.
    pub(crate) fn tokens_from_ids(
        &self,
        ids: &[i32],
        param: &str,
    ) -> Result<Vec<LlamaToken>, ApiError> {
        let n_vocab = self.model.n_vocab();
        ids.iter()
            .map(|&id| {
                if (0..n_vocab).contains(&id) {
                    Ok(LlamaToken::new(id))
                } else {
                    Err(ApiError::invalid(
                        param,
                        format!("token id {id} is outside the vocabulary"),
                    ))
                }
            })
            .collect()
    }

    /// The text of `tokens` (for `echo`), special tokens spelled out.
    pub(crate) fn detokenize(&self, tokens: &[LlamaToken]) -> String {
        let vocab = self.model.vocab();
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|&token| vocab.token_to_piece(token, true, None))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Checks that llama.cpp accepts `grammar` (blaming `param` if not).
    pub(crate) fn check_grammar(&self, grammar: &str, param: &str) -> Result<(), ApiError> {
        grammar_sampler(&self.model, grammar)
            .map(drop)
            .map_err(|e| ApiError::invalid(param, e))
    }

    /// Queues a generation and returns its event stream. Fails at once when the prompt does not
    /// fit the context or the queue is full.
    pub(crate) fn submit(
        &self,
        tokens: Vec<LlamaToken>,
        max_tokens: Option<u32>,
        sampling: Sampling,
        stop: Vec<String>,
    ) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
        let max_tokens = self.check_fits(tokens.len(), max_tokens)?;
        let (events, receiver) = mpsc::unbounded_channel();
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            tokens,
            max_tokens,
            sampling,
            stop,
            events,
            _in_flight: InFlight(Arc::clone(&self.counters)),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(ApiError::new(
                ErrorKind::RateLimited,
                "the engine is at capacity; retry later",
            )),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::new(
                ErrorKind::Unavailable,
                "the engine has stopped",
            )),
        }
    }

    /// The completion budget for a prompt of `prompt_tokens`, or a context-length error in the
    /// words vLLM uses.
    fn check_fits(&self, prompt_tokens: usize, max_tokens: Option<u32>) -> Result<u32, ApiError> {
        check_fits(self.context_length, prompt_tokens, max_tokens)
    }
}

/// All cores but one, at least one (see [`EngineConfig::threads`]).
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// See [`Engine::check_fits`]: the prompt must leave room for at least one token, and an explicit
/// `max_tokens` must fit as a whole.
fn check_fits(
    context: u32,
    prompt_tokens: usize,
    max_tokens: Option<u32>,
) -> Result<u32, ApiError> {
    if prompt_tokens == 0 {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let context_error = |requested: u64| {
        let completion = requested.saturating_sub(prompt_tokens as u64);
        ApiError(
            cocoon_proto::OpenAiError::new(
                ErrorKind::ContextLength,
                format!(
                    "This model's maximum context length is {context} tokens. However, you requested \
                     {requested} tokens ({prompt_tokens} in the prompt, {completion} in the completion). \
                     Please reduce the length of the prompt or completion."
                ),
            )
            .with_param("messages"),
        )
    };
    let room = u64::from(context).saturating_sub(prompt_tokens as u64);
    match max_tokens {
        _ if room == 0 => Err(context_error(
            prompt_tokens as u64 + u64::from(max_tokens.unwrap_or(1)),
        )),
        Some(n) if u64::from(n) > room => Err(context_error(prompt_tokens as u64 + u64::from(n))),
        Some(n) => Ok(n),
        None => Ok(u32::try_from(room).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_must_leave_room_for_a_token() {
        let e = check_fits(100, 100, None).unwrap_err();
        assert_eq!(e.0.kind(), Some(ErrorKind::ContextLength));
        assert_eq!(e.status().as_u16(), 400);
        assert!(
            e.0.error.message.contains("100 tokens"),
            "{}",
            e.0.error.message
        );
        assert_eq!(check_fits(100, 99, None).unwrap(), 1);
    }

    #[test]
    fn explicit_max_tokens_must_fit() {
        assert_eq!(check_fits(100, 60, Some(40)).unwrap(), 40);
        let e = check_fits(100, 60, Some(41)).unwrap_err();
        assert_eq!(e.0.kind(), Some(ErrorKind::ContextLength));
        assert!(
            e.0.error.message.contains("101 tokens"),
            "{}",
            e.0.error.message
        );
    }

    #[test]
    fn empty_prompt_is_invalid() {
        let e = check_fits(100, 0, None).unwrap_err();
        assert_eq!(e.0.kind(), Some(ErrorKind::InvalidRequest));
    }

    #[test]
    fn finish_reasons_use_openai_spelling() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.as_str(), "length");
    }
}
