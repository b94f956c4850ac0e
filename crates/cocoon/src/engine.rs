//! `cocoon embedded-engine`: the embedded llama.cpp engine served on its own as an OpenAI-compatible
//! HTTP server — the same engine a worker embeds, reachable directly (for `cocoon bench engine`'s
//! baseline, or as a plain local inference server). [`serve_until_signal`] serves any engine's
//! router, the synthetic one's too.

#[cfg(feature = "embedded")]
use std::path::PathBuf;

use anyhow::Context;
#[cfg(feature = "embedded")]
use clap::Args;

/// Options of `cocoon embedded-engine`.
#[cfg(feature = "embedded")]
#[derive(Debug, Args)]
pub struct EmbeddedEngineArgs {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// GGUF model file. Default: SmolLM2-135M-Instruct, fetched once into the user's model cache
    /// (`~/.local/share/cocoon/models` on Linux).
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<PathBuf>,
    /// Served model name. Default: the file's name without its quantisation suffix.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Context window per sequence, in tokens.
    #[arg(long, value_name = "TOKENS", default_value_t = 4096)]
    pub context_length: u32,
    /// Sequences decoded together (requests served at once).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub parallel: usize,
    /// CPU threads for llama.cpp. Default: all cores but one.
    #[arg(long, value_name = "N")]
    pub engine_threads: Option<usize>,
    /// Layers offloaded to the GPU (builds with the `cuda` feature).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpu_layers: u32,
    /// Connection cap and timeouts of the engine's HTTP surface.
    #[command(flatten)]
    pub http: cocoon_node::serve::HttpLimits,
}

/// Loads the model and serves it until Ctrl-C or SIGTERM.
#[cfg(feature = "embedded")]
pub async fn run(args: EmbeddedEngineArgs) -> anyhow::Result<()> {
    let model_path = match args.model_path {
        Some(path) => path,
        None => {
            let cache = cocoon_infer::default_cache_dir();
            tokio::task::spawn_blocking(move || cocoon_infer::fetch_default_model(&cache))
                .await?
                .context("fetching the default model")?
        }
    };
    let mut config = cocoon_infer::EngineConfig::new(model_path);
    if let Some(name) = args.model {
        config.model_name = name;
    }
    config.context_length = args.context_length;
    config.parallel = args.parallel.max(1);
    config.threads = args.engine_threads;
    config.gpu_layers = args.gpu_layers;
    let engine = tokio::task::spawn_blocking(move || cocoon_infer::Engine::load(config))
        .await?
        .context("loading the model")?;
    tracing::info!(model = engine.model_name(), hash = engine.model_hash(), listen = %args.listen, "engine serving");
    serve_until_signal(&args.listen, cocoon_infer::router(engine), args.http).await
}

/// Serves an engine's `router` on `listen` under `limits` until Ctrl-C or SIGTERM.
pub async fn serve_until_signal(
    listen: &str,
    router: axum::Router,
    limits: cocoon_node::serve::HttpLimits,
) -> anyhow::Result<()> {
    let listener = cocoon_node::serve::listen(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let shutdown = cocoon_node::shutdown::on_signal();
    cocoon_node::serve::serve_http(
        listener,
        router,
        limits,
        "engine",
        shutdown.cancelled_owned(),
    )
    .await;
    Ok(())
}
