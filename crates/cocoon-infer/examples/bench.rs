//! Measures generation speed through the router: one request alone, then several at once.
//!
//! `cargo run --release -p cocoon-infer --example bench -- [MODEL.gguf] [PARALLEL] [THREADS]`
//! (the model defaults to the cached SmolLM2).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use cocoon_infer::{default_cache_dir, default_model_path, router, Engine, EngineConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| default_model_path(&default_cache_dir()));
    let parallel: usize = args.next().map_or(Ok(4), |s| s.parse())?;
    let threads: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let mut config = EngineConfig::new(path);
    config.parallel = parallel;
    config.threads = threads;
    let engine = tokio::task::spawn_blocking(move || Engine::load(config)).await??;
    let app = router(Arc::clone(&engine));

    let request = |temperature: f32, seed: u64| {
        json!({
            "prompt": "Once upon a time, in a land far away,",
            "max_tokens": 64,
            "temperature": temperature,
            "seed": seed,
        })
    };
    let one = |body: Value| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(
                    Request::post("/v1/completions")
                        .header("content-type", "application/json")
                        .body(Body::from(body.to_string()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            value["usage"]["completion_tokens"].as_u64().unwrap_or(0)
        }
    };

    one(request(0.0, 0)).await; // warm-up
    for temperature in [0.0, 0.8] {
        let start = Instant::now();
        let tokens = one(request(temperature, 1)).await;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "1 request, temperature {temperature}: {tokens} tokens in {secs:.2}s = {:.1} tokens/s",
            tokens as f64 / secs
        );
    }
    let start = Instant::now();
    let handles: Vec<_> = (0..parallel as u64)
        .map(|seed| tokio::spawn(one(request(0.8, seed))))
        .collect();
    let mut tokens = 0;
    for handle in handles {
        tokens += handle.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{parallel} requests at once: {tokens} tokens in {secs:.2}s = {:.1} tokens/s (max batch {})",
        tokens as f64 / secs,
        engine.stats().max_batch_sequences
    );
    Ok(())
}
