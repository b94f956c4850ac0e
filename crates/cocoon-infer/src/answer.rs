//! Shaping the engine's events into OpenAI's answers: one `chat.completion` / `text_completion`
//! object, or a stream of chunks as SSE — for every choice of a request (`n`, several prompts),
//! with log-probabilities and tool calls where asked for.

use std::convert::Infallible;

use axum::response::sse::Event as SseEvent;
use cocoon_proto::ErrorKind;
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::{Event, FinishReason};
use crate::logprobs::{chat_logprobs, completion_logprobs};
use crate::openai::ApiError;
use crate::sampler::TokenLogprob;
use crate::tools::{CallMode, CallReader, Piece};

/// Which endpoint a response is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completion,
}

/// What every response and chunk of one request repeats.
#[derive(Debug, Clone)]
pub(crate) struct ResponseMeta {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    pub logprobs: bool,
    /// vLLM's `return_tokens_as_token_ids`: tokens in log-probabilities named `token_id:<id>`.
    pub token_ids: bool,
}

/// One choice on its way: its events, and how to read them.
pub(crate) struct ChoiceSpec {
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The prompt's text, to put before the completion (`echo`).
    pub echo: Option<String>,
    /// Whether this choice's prompt tokens count in the usage (once per prompt, not per choice).
    pub counts_prompt: bool,
    pub mode: CallMode,
    /// The id given to a tool call this choice makes.
    pub call_id: String,
}

/// A choice's progress.
struct Choice {
    index: usize,
    reader: CallReader,
    call_id: String,
    echo: Option<String>,
    /// In a stream: the echoed prompt not yet sent. It rides with the choice's first text, so
    /// that no chunk carries only the prompt (the worker counts each text chunk as a token).
    echo_unsent: Option<String>,
    counts_prompt: bool,
    started: bool,
    text: String,
    call_name: Option<String>,
    arguments: String,
    /// All of them (whole answers) or those not yet sent (streams).
    logprobs: Vec<TokenLogprob>,
    /// Characters of text so far, for completions' `text_offset`.
    offset: usize,
    finish: Option<FinishReason>,
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl Choice {
    fn new(index: usize, spec: &ChoiceSpec) -> Self {
        Choice {
            index,
            reader: CallReader::new(spec.mode),
            call_id: spec.call_id.clone(),
            offset: spec.echo.as_ref().map_or(0, |e| e.chars().count()),
            echo: spec.echo.clone(),
            echo_unsent: spec.echo.clone(),
            counts_prompt: spec.counts_prompt,
            started: false,
            text: String::new(),
            call_name: None,
            arguments: String::new(),
            logprobs: Vec::new(),
            finish: None,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    fn apply(&mut self, piece: &Piece) {
        match piece {
            Piece::Text(text) => self.text.push_str(text),
            Piece::CallStart(name) => self.call_name = Some(name.clone()),
            Piece::Arguments(more) => self.arguments.push_str(more),
        }
    }

    fn end(&mut self, finish: FinishReason, prompt_tokens: u32, completion_tokens: u32) {
        self.finish = Some(finish);
        self.prompt_tokens = prompt_tokens;
        self.completion_tokens = completion_tokens;
    }

    fn finish_reason(&self) -> Option<&'static str> {
        self.finish.map(|finish| {
            if finish == FinishReason::Stop && self.reader.called() {
                "tool_calls"
            } else {
                finish.as_str()
            }
        })
    }
}

/// Every choice's events, tagged with the choice's index, as they come.
fn merged(specs: &mut [ChoiceSpec]) -> impl Stream<Item = (usize, Event)> + Unpin {
    let streams = specs.iter_mut().enumerate().map(|(index, spec)| {
        let (_, placeholder) = mpsc::unbounded_channel();
        let events = std::mem::replace(&mut spec.events, placeholder);
        stream::unfold(events, |mut events| async move {
            events.recv().await.map(|event| (event, events))
        })
        .map(move |event| (index, event))
        .boxed()
    });
    stream::select_all(streams)
}

fn usage_json(choices: &[Choice]) -> Value {
    let prompt: u64 = choices
        .iter()
        .filter(|c| c.counts_prompt)
        .map(|c| u64::from(c.prompt_tokens))
        .sum();
    let completion: u64 = choices.iter().map(|c| u64::from(c.completion_tokens)).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn stopped_early() -> ApiError {
    ApiError::new(ErrorKind::Internal, "the engine stopped before finishing")
}

/// Waits for every choice and shapes the answer as `chat.completion` or `text_completion`.
pub(crate) async fn collect(
    meta: ResponseMeta,
    mut specs: Vec<ChoiceSpec>,
) -> Result<Value, ApiError> {
    let mut choices: Vec<Choice> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| Choice::new(i, spec))
        .collect();
    let mut events = merged(&mut specs);
    let mut remaining = choices.len();
    while remaining > 0 {
        let (index, event) = events.next().await.ok_or_else(stopped_early)?;
        let choice = &mut choices[index];
        match event {
            Event::Token(logprob) => choice.logprobs.push(*logprob),
            Event::Text(text) => {
                for piece in choice.reader.push(&text) {
                    choice.apply(&piece);
                }
            }
            Event::Failed(message) => return Err(ApiError::new(ErrorKind::Internal, message)),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                for piece in choice.reader.finish() {
                    choice.apply(&piece);
                }
                choice.end(finish, prompt_tokens, completion_tokens);
                remaining -= 1;
            }
        }
    }
    let body: Vec<Value> = choices.iter().map(|c| meta.whole_choice(c)).collect();
    Ok(json!({
        "id": meta.id,
        "object": match meta.api { Api::Chat => "chat.completion", Api::Completion => "text_completion" },
        "created": meta.created,
        "model": meta.model,
        "choices": body,
        "usage": usage_json(&choices),
    }))
}

/// What one streamed chunk adds to its choice.
enum Delta<'a> {
    /// Chat's opening chunk.
    Role,
    Text(&'a str),
    CallStart {
        id: &'a str,
        name: &'a str,
    },
    Arguments(&'a str),
    /// The last chunk, with only `finish_reason`.
    End,
}

impl ResponseMeta {
    fn whole_choice(&self, c: &Choice) -> Value {
        let finish = c.finish_reason();
        match self.api {
            Api::Chat => {
                let mut message = json!({"role": "assistant", "content": c.text});
                if let Some(name) = &c.call_name {
                    if c.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = json!([{
                        "id": c.call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": c.arguments},
                    }]);
                }
                let logprobs = if self.logprobs {
                    chat_logprobs(&c.logprobs, self.token_ids)
                } else {
                    Value::Null
                };
                json!({"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Completion => {
                let echo = c.echo.as_deref().unwrap_or("");
                let logprobs = if self.logprobs {
                    completion_logprobs(&c.logprobs, echo.chars().count(), self.token_ids).0
                } else {
                    Value::Null
                };
                json!({"index": c.index, "text": format!("{echo}{}", c.text), "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    /// One streamed chunk for choice `c`, carrying its pending log-probabilities.
    fn chunk(&self, c: &mut Choice, delta: Delta<'_>) -> Value {
        let logprobs = if self.logprobs && !c.logprobs.is_empty() {
            let pending = std::mem::take(&mut c.logprobs);
            match self.api {
                Api::Chat => chat_logprobs(&pending, self.token_ids),
                Api::Completion => {
                    let (value, next) = completion_logprobs(&pending, c.offset, self.token_ids);
                    c.offset = next;
                    value
                }
            }
        } else {
            Value::Null
        };
        let finish = match delta {
            Delta::End => c.finish_reason(),
            _ => None,
        };
        let (object, choice) = match self.api {
            Api::Chat => {
                let delta = match delta {
                    Delta::Role => json!({"role": "assistant", "content": ""}),
                    Delta::Text(text) => json!({"content": text}),
                    Delta::CallStart { id, name } => json!({"tool_calls": [{
                        "index": 0, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    Delta::Arguments(more) => {
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": more}}]})
                    }
                    Delta::End => json!({}),
                };
                (
                    "chat.completion.chunk",
                    json!({"index": c.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}),
                )
            }
            Api::Completion => {
                let text = match delta {
                    Delta::Text(text) => text,
                    _ => "",
                };
                let text = match c.echo_unsent.take() {
                    Some(echo) => format!("{echo}{text}"),
                    None => text.to_owned(),
                };
                (
                    "text_completion",
                    json!({"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": finish}),
                )
            }
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn piece_chunk(&self, c: &mut Choice, piece: &Piece) -> Value {
        let call_id = c.call_id.clone();
        match piece {
            Piece::Text(text) => self.chunk(c, Delta::Text(text)),
            Piece::CallStart(name) => self.chunk(c, Delta::CallStart { id: &call_id, name }),
            Piece::Arguments(more) => self.chunk(c, Delta::Arguments(more)),
        }
    }

    /// The final usage-only chunk sent when `stream_options.include_usage` is set.
    fn usage_chunk(&self, choices: &[Choice]) -> Value {
        json!({
            "id": self.id,
            "object": match self.api { Api::Chat => "chat.completion.chunk", Api::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(choices),
        })
    }
}

/// State of one SSE stream.
struct StreamState<E> {
    meta: ResponseMeta,
    events: E,
    choices: Vec<Choice>,
    remaining: usize,
    ended: bool,
}

/// The answer as SSE: chunks as output arrives (each choice opening with its role, or its echoed
/// prompt), a last chunk per choice with `finish_reason`, an optional usage chunk, then `[DONE]`.
/// Dropping the stream (client gone) drops the event receivers, which the engine notices and
/// frees the sequences.
pub(crate) fn sse_stream(
    meta: ResponseMeta,
    mut specs: Vec<ChoiceSpec>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let choices: Vec<Choice> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| Choice::new(i, spec))
        .collect();
    let state = StreamState {
        meta,
        events: merged(&mut specs),
        remaining: choices.len(),
        choices,
        ended: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let mut out: Vec<Value> = Vec::new();
        let done = |out: &mut Vec<Value>| out.push(Value::String("[DONE]".into()));
        let fail = |out: &mut Vec<Value>, message: String| {
            let error = ApiError::new(ErrorKind::Internal, message).0;
            out.push(serde_json::to_value(error).unwrap_or(Value::Null));
            done(out);
        };
        match state.events.next().await {
            None => {
                fail(&mut out, stopped_early().0.error.message);
                state.ended = true;
            }
            Some((index, event)) => {
                let meta = &state.meta;
                let choice = &mut state.choices[index];
                if !choice.started && meta.api == Api::Chat {
                    out.push(meta.chunk(choice, Delta::Role));
                }
                choice.started = true;
                match event {
                    Event::Token(logprob) => choice.logprobs.push(*logprob),
                    Event::Text(text) => {
                        for piece in choice.reader.push(&text) {
                            out.push(meta.piece_chunk(choice, &piece));
                        }
                    }
                    Event::Failed(message) => {
                        fail(&mut out, message);
                        state.ended = true;
                    }
                    Event::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        for piece in choice.reader.finish() {
                            out.push(meta.piece_chunk(choice, &piece));
                        }
                        choice.end(finish, prompt_tokens, completion_tokens);
                        out.push(meta.chunk(choice, Delta::End));
                        state.remaining -= 1;
                        if state.remaining == 0 {
                            if meta.include_usage {
                                out.push(meta.usage_chunk(&state.choices));
                            }
                            done(&mut out);
                            state.ended = true;
                        }
                    }
                }
            }
        }
        let frames: Vec<Result<SseEvent, Infallible>> = out
            .into_iter()
            .map(|value| {
                let data = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                Ok(SseEvent::default().data(data))
            })
            .collect();
        Some((stream::iter(frames), state))
    })
    .flatten()
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
