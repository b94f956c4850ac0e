//! What apps and engines send: OpenAI request bodies and SSE answer streams.

use std::cell::RefCell;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use cocoon_client::request::{prepare, Defaults, Endpoint};
use cocoon_client::stream::{rewrite_sse, SseOptions};
use cocoon_node::stats::NodeStats;
use cocoon_node::Body;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::{Format, Target};

const CHAT: &str = r#"{"model":"smol","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":64,"temperature":0.7,"top_p":0.9,"stop":["\n\n"],"stream":true,"stream_options":{"include_usage":true},"seed":42,"max_coefficient":2000,"timeout":30}"#;
/// An agent framework's turn: tools, a tool call and its result, structured output, sampling knobs.
const AGENT: &str = r#"{"model":"smol","messages":[{"role":"developer","content":"Use tools."},{"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}],"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false,"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}},"n":2,"logprobs":true,"top_logprobs":3,"frequency_penalty":0.5,"presence_penalty":-0.5,"logit_bias":{"50256":-100},"metadata":{"k":"v"},"top_k":40}"#;
const COMPLETION: &str = r#"{"model":"smol","prompt":"Once upon a time","max_completion_tokens":16,"n":1,"stream":false}"#;

/// An engine's answer stream: content chunks, a usage chunk, `[DONE]`.
const SSE: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    ": keep-alive\n\n",
    "event: message\nid: 3\nretry: 10\ndata: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":1},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

/// The OpenAI request body as an app sends it to the client.
pub const OPENAI_REQUEST: Target = Target {
    name: "openai-request",
    seeds: || {
        vec![
            CHAT.as_bytes().to_vec(),
            AGENT.as_bytes().to_vec(),
            COMPLETION.as_bytes().to_vec(),
        ]
    },
    run: |bytes| {
        let defaults = Defaults {
            max_coefficient: 4000,
            timeout: Duration::from_secs(60),
        };
        let _ = prepare(Endpoint::Chat, bytes, defaults);
        let _ = prepare(Endpoint::Completions, bytes, defaults);
    },
    format: Format::Json,
};

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime"),
    );
}

/// The input as a body of several frames: where a peer's bytes are split must not matter.
fn framed(bytes: &[u8]) -> Vec<Bytes> {
    let step = 1 + bytes.first().map_or(0, |b| usize::from(*b) % 61);
    bytes.chunks(step).map(Bytes::copy_from_slice).collect()
}

fn body_of(bytes: &[u8]) -> Body {
    let frames = framed(bytes)
        .into_iter()
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Body::new(StreamBody::new(futures::stream::iter(frames)))
}

/// A proxy's SSE answer as the client rewrites it for the app.
pub const CLIENT_SSE: Target = Target {
    name: "client-sse",
    seeds: || vec![SSE.as_bytes().to_vec()],
    run: |bytes| {
        RUNTIME.with(|rt| {
            rt.borrow().block_on(async {
                let stats = NodeStats::new("client");
                let options = SseOptions {
                    include_usage: bytes.len() % 2 == 0,
                    deadline: tokio::time::Instant::now() + Duration::from_secs(60),
                    active: stats.request_started(),
                    stats,
                    // Small, so that inputs reach the limit too.
                    max_event_bytes: 256,
                    held_certificate: None,
                    on_success: None,
                };
                let mut out = Box::pin(rewrite_sse(body_of(bytes), options));
                while out.next().await.is_some() {}
            })
        })
    },
    format: Format::Bytes,
};

/// An engine's SSE answer as the worker meters it.
pub const WORKER_SSE: Target = Target {
    name: "worker-sse",
    seeds: || vec![SSE.as_bytes().to_vec()],
    run: |bytes| {
        RUNTIME.with(|rt| {
            rt.borrow().block_on(async {
                let stats = NodeStats::new("worker");
                let metered = cocoon_worker::metering::metered_stream(
                    body_of(bytes),
                    stats,
                    None,
                    // Some inputs are cut at their limit.
                    Some(bytes.len() as u64 % 8),
                );
                let _ = metered.collect().await;
                let _ = cocoon_worker::metering::usage_in(bytes);
            })
        })
    },
    format: Format::Bytes,
};
