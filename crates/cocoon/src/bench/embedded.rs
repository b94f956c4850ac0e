//! `cocoon bench engine`: the embedded model alone and through the network.

use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::load::measure;
use super::network::start_network;
use super::{ensure_ports_free, spawn, strings, EngineBenchArgs};

/// `cocoon bench engine`: the embedded engine alone and through the network.
#[cfg(feature = "embedded")]
pub(super) async fn embedded_engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let max_concurrency = args.concurrency.iter().copied().max().unwrap_or(1);
    ensure_ports_free(args.base_port, 7)?;
    let engine = format!("127.0.0.1:{}", args.base_port);
    let mut engine_args = strings(&[
        "embedded-engine",
        "--listen",
        &engine,
        "--parallel",
        &max_concurrency.to_string(),
    ]);
    if let Some(path) = &args.model_path {
        engine_args.extend(strings(&["--model-path", path]));
    }
    if let Some(threads) = args.engine_threads {
        engine_args.extend(strings(&["--engine-threads", &threads.to_string()]));
    }
    let _engine = spawn(&engine_args, 1)?;
    let model = served_model(&engine).await?;
    let network = start_network(
        &format!("http://{engine}"),
        &model,
        max_concurrency,
        args.base_port,
        1,
        &[],
    )
    .await?;
    let body = format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{},"temperature":0.8,"messages":[{{"role":"user","content":"Tell me a long story about a cat who learns to sail."}}]}}"#,
        args.max_tokens
    );
    println!(
        "cocoon bench engine: {model}, {} tokens per streamed request, {} s per cell",
        args.max_tokens, args.seconds
    );
    println!("direct = the engine over HTTP; network = app -> client -> proxy -> worker -> the same engine\n");
    println!(
        "{:>5} | {:>12} {:>12} | {:>12} {:>12} | {:>7}",
        "conc", "direct tok/s", "per stream", "net tok/s", "per stream", "ratio"
    );
    for &concurrency in &args.concurrency {
        let duration = Duration::from_secs_f64(args.seconds);
        let direct = measure(&engine, &body, concurrency, duration).await?;
        let through = measure(&network.api, &body, concurrency, duration).await?;
        println!(
            "{:>5} | {:>12.1} {:>12.1} | {:>12.1} {:>12.1} | {:>6.1}%",
            concurrency,
            direct.tokens_per_second(),
            direct.mean_stream_rate(),
            through.tokens_per_second(),
            through.mean_stream_rate(),
            100.0 * through.tokens_per_second() / direct.tokens_per_second(),
        );
        if direct.failures + through.failures > 0 {
            println!(
                "      failures: direct {}, network {}",
                direct.failures, through.failures
            );
        }
    }
    Ok(())
}

/// The model name an engine serves (its `/v1/models`), once it is up.
#[cfg(feature = "embedded")]
async fn served_model(engine: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(engine).await {
            if let Ok((mut sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(connection);
                let request = http::Request::get("/v1/models")
                    .header("host", engine)
                    .body(Full::new(Bytes::new()))?;
                if let Ok(response) = sender.send_request(request).await {
                    let body = response.into_body().collect().await?.to_bytes();
                    let list: serde_json::Value = serde_json::from_slice(&body)?;
                    if let Some(id) = list["data"][0]["id"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the engine did not come up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
