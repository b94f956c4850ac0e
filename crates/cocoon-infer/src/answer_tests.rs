use super::*;
use crate::sampler::TokenBytes;
use axum::response::sse::Sse;
use axum::response::IntoResponse;

fn meta(api: Api, include_usage: bool) -> ResponseMeta {
    ResponseMeta {
        api,
        id: "id-1".into(),
        created: 7,
        model: "m".into(),
        include_usage,
        logprobs: false,
        token_ids: false,
    }
}

fn spec(events: Vec<Event>, mode: CallMode, echo: Option<&str>, counts_prompt: bool) -> ChoiceSpec {
    let (tx, rx) = mpsc::unbounded_channel();
    for e in events {
        tx.send(e).unwrap();
    }
    ChoiceSpec {
        events: rx,
        echo: echo.map(str::to_owned),
        counts_prompt,
        mode,
        call_id: "call_1".into(),
    }
}

fn text(events: Vec<Event>) -> ChoiceSpec {
    spec(events, CallMode::Never, None, true)
}

fn done(finish: FinishReason, prompt_tokens: u32, completion_tokens: u32) -> Event {
    Event::Done {
        finish,
        prompt_tokens,
        completion_tokens,
    }
}

async fn frames(meta: ResponseMeta, specs: Vec<ChoiceSpec>) -> Vec<String> {
    sse_stream::SseStream::new(
        Sse::new(sse_stream(meta, specs))
            .into_response()
            .into_body(),
    )
    .map(|event| event.unwrap().data.unwrap_or_default())
    .collect()
    .await
}

fn parse(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_stream_has_openai_shape_with_usage_chunk() {
    let out = frames(
        meta(Api::Chat, true),
        vec![text(vec![
            Event::Text("Hel".into()),
            Event::Text("lo".into()),
            done(FinishReason::Length, 3, 2),
        ])],
    )
    .await;
    assert_eq!(out.len(), 6, "{out:?}");
    let parsed = parse(&out);
    assert_eq!(parsed[0]["object"], "chat.completion.chunk");
    assert_eq!(
        parsed[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(parsed[0]["usage"], Value::Null);
    assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(parsed[2]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(parsed[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(parsed[3]["choices"][0]["delta"], json!({}));
    assert_eq!(parsed[4]["choices"], json!([]));
    assert_eq!(
        parsed[4]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    );
    assert_eq!(out[5], "[DONE]");
}

#[tokio::test]
async fn completion_stream_without_usage_has_no_usage_field() {
    let out = frames(
        meta(Api::Completion, false),
        vec![text(vec![
            Event::Text("x".into()),
            done(FinishReason::Stop, 1, 1),
        ])],
    )
    .await;
    assert_eq!(out.len(), 3, "{out:?}");
    let first: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "x");
    assert!(first.get("usage").is_none());
    let last: Value = serde_json::from_str(&out[1]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(out[2], "[DONE]");
}

#[tokio::test]
async fn engine_failure_mid_stream_is_an_error_event() {
    let out = frames(
        meta(Api::Chat, false),
        vec![text(vec![Event::Failed("boom".into())])],
    )
    .await;
    let error: Value = serde_json::from_str(&out[1]).unwrap();
    assert_eq!(error["error"]["message"], "boom");
    assert_eq!(error["error"]["code"], "internal_error");
    assert_eq!(out.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn collected_completion_has_usage_and_finish_reason() {
    let body = collect(
        meta(Api::Chat, false),
        vec![text(vec![
            Event::Text("Paris".into()),
            done(FinishReason::Stop, 10, 2),
        ])],
    )
    .await
    .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Paris");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn several_choices_are_indexed_and_usage_counts_each_prompt_once() {
    let body = collect(
        meta(Api::Completion, false),
        vec![
            spec(
                vec![Event::Text("a".into()), done(FinishReason::Stop, 4, 1)],
                CallMode::Never,
                Some("P:"),
                true,
            ),
            spec(
                vec![Event::Text("bb".into()), done(FinishReason::Length, 4, 2)],
                CallMode::Never,
                Some("P:"),
                false,
            ),
            spec(
                vec![done(FinishReason::Stop, 6, 0)],
                CallMode::Never,
                Some("Q"),
                true,
            ),
        ],
    )
    .await
    .unwrap();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(choices[0]["text"], "P:a");
    assert_eq!(choices[1]["text"], "P:bb");
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[2]["text"], "Q");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
    );
}

fn call_events() -> Vec<Event> {
    vec![
        Event::Text("{\"name\": \"f\", \"argu".into()),
        Event::Text("ments\": {\"a\": 1}".into()),
        Event::Text("}".into()),
        done(FinishReason::Stop, 5, 9),
    ]
}

#[tokio::test]
async fn a_streamed_echo_rides_with_the_first_text() {
    let out = parse(
        &frames(
            meta(Api::Completion, false),
            vec![spec(
                vec![
                    Event::Text("a".into()),
                    Event::Text("b".into()),
                    done(FinishReason::Length, 2, 2),
                ],
                CallMode::Never,
                Some("P:"),
                true,
            )],
        )
        .await,
    );
    let texts: Vec<&str> = out
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    // As many text chunks as tokens: the prompt is not a chunk of its own.
    assert_eq!(texts, ["P:a", "b", ""]);
    // Nothing generated: the prompt comes with the last chunk.
    let out = parse(
        &frames(
            meta(Api::Completion, false),
            vec![spec(
                vec![done(FinishReason::Stop, 2, 1)],
                CallMode::Never,
                Some("P:"),
                true,
            )],
        )
        .await,
    );
    assert_eq!(out[0]["choices"][0]["text"], "P:");
    assert_eq!(out[0]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_tool_call_answers_in_openai_shape() {
    let body = collect(
        meta(Api::Chat, false),
        vec![spec(call_events(), CallMode::Always, None, true)],
    )
    .await
    .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}])
    );
}

#[tokio::test]
async fn a_streamed_tool_call_is_deltas() {
    let out = frames(
        meta(Api::Chat, false),
        vec![spec(call_events(), CallMode::Always, None, true)],
    )
    .await;
    let parsed = parse(&out);
    let deltas: Vec<&Value> = parsed.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas[1]["tool_calls"],
        json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}])
    );
    let arguments: String = deltas[2..]
        .iter()
        .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"a\": 1}");
    assert_eq!(
        parsed.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn logprobs_ride_with_the_text_they_made() {
    let logprob = |t: &str, lp: f32| {
        Event::Token(Box::new(TokenLogprob {
            token: TokenBytes {
                id: 1,
                text: t.into(),
                bytes: t.as_bytes().to_vec(),
            },
            logprob: lp,
            top: Vec::new(),
        }))
    };
    let events = vec![
        logprob("Hi", -0.1),
        Event::Text("Hi".into()),
        logprob("!", -0.2),
        Event::Text("!".into()),
        done(FinishReason::Stop, 1, 2),
    ];
    let mut with_logprobs = meta(Api::Completion, false);
    with_logprobs.logprobs = true;
    let out = parse(&frames(with_logprobs.clone(), vec![text(events.clone())]).await);
    assert_eq!(out[0]["choices"][0]["logprobs"]["tokens"], json!(["Hi"]));
    assert_eq!(out[1]["choices"][0]["logprobs"]["text_offset"], json!([2]));
    let body = collect(with_logprobs, vec![text(events)]).await.unwrap();
    assert_eq!(
        body["choices"][0]["logprobs"]["token_logprobs"],
        json!([-0.1f32, -0.2f32])
    );
}
