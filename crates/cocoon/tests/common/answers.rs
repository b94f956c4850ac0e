//! Asking the client API and reading its answers (and stand-in engines to answer them).

use super::http;

/// The `data` of each SSE event of a streamed answer, as they arrive (errors end the stream).
pub fn events(response: reqwest::Response) -> impl futures::Stream<Item = String> + Unpin {
    use futures::StreamExt;
    Box::pin(
        sse_stream::SseByteStream::new(chunks(response))
            .take_while(|event| futures::future::ready(event.is_ok()))
            .filter_map(|event| futures::future::ready(event.ok().and_then(|event| event.data))),
    )
}

/// A response's body as a stream of its chunks as they arrive (`Response::chunk`; reqwest's own
/// `bytes_stream` needs its `stream` feature, which the product does not use: a test build with it
/// would build reqwest and everything above it twice).
pub fn chunks(
    response: reqwest::Response,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
    futures::stream::unfold(response, |mut response| async move {
        response
            .chunk()
            .await
            .transpose()
            .map(|chunk| (chunk, response))
    })
}

/// Every event of a streamed answer.
pub async fn all_events(response: reqwest::Response) -> Vec<String> {
    use futures::StreamExt;
    events(response).collect().await
}

/// A streamed answer's events up to and including `[DONE]`, and the receipt event that follows
/// `[DONE]` (its JSON), if any.
pub async fn stream_answer(
    response: reqwest::Response,
) -> (Vec<String>, Option<serde_json::Value>) {
    let mut events = all_events(response).await;
    let receipt = match events.iter().position(|event| event == "[DONE]") {
        Some(done) if done + 1 < events.len() => {
            let after: Vec<String> = events.drain(done + 1..).collect();
            assert_eq!(after.len(), 1, "one receipt event after [DONE]: {after:?}");
            Some(serde_json::from_str(&after[0]).expect("the receipt event is JSON"))
        }
        _ => None,
    };
    (events, receipt)
}

/// A chat request to the synthetic model for `max_tokens`, streamed (with usage) or not.
pub fn chat(max_tokens: u64, stream: bool) -> serde_json::Value {
    let mut request = serde_json::json!({
        "model": "synthetic",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    });
    if stream {
        request["stream_options"] = serde_json::json!({"include_usage": true});
    }
    request
}

/// POSTs `request` to the client API's chat completions.
pub async fn post_chat(
    api: &str,
    request: &serde_json::Value,
) -> reqwest::Result<reqwest::Response> {
    http()
        .post(format!("{api}/v1/chat/completions"))
        .json(request)
        .send()
        .await
}

/// Serves `router` on a free loopback port (a stand-in engine); returns its base URL.
pub async fn serve_on_loopback(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// The usage of one answer (streamed or not), or `None` if it failed.
pub async fn ask(api: &str, request: &serde_json::Value) -> Option<cocoon_proto::TokenUsage> {
    let response = post_chat(api, request).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    let usage = if request["stream"] == true {
        let (events, _receipt) = stream_answer(response).await;
        if events.last().map(String::as_str) != Some("[DONE]") {
            return None;
        }
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .find(|e| e["usage"].is_object())?["usage"]
            .clone()
    } else {
        response.json::<serde_json::Value>().await.ok()?["usage"].clone()
    };
    Some(cocoon_proto::TokenUsage {
        prompt_tokens: usage["prompt_tokens"].as_u64()?,
        completion_tokens: usage["completion_tokens"].as_u64()?,
        ..cocoon_proto::TokenUsage::default()
    })
}
