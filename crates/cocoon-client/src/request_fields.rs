//! OpenAI's request fields, each typed and range-checked as OpenAI documents it, once, at the
//! client, whatever engine serves the request. A field out of range is refused (400 naming it);
//! a field whose effect depends on the engine is listed as an *engine parameter*
//! ([`cocoon_proto::capabilities`]) so the proxy sends the request only to an engine that
//! honours it. Fields OpenAI does not define are engine parameters too: passed through, never
//! dropped. Messages, tools and the answer's format are checked in [`crate::request_messages`].

use cocoon_proto::capabilities::{is_param_name, MAX_ENGINE_PARAMS, MAX_PARAM_NAME};
use serde_json::{Map, Value};

use crate::http::Failure;
use crate::request::Endpoint;
use crate::request_messages::{check_messages, check_response_format, check_tools};

/// Most choices a request may ask for (`n`, `best_of`): each is a sequence in the engine's batch
/// and is reserved up front.
pub const MAX_CHOICES: u64 = 128;
/// Most stop sequences (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Most `logit_bias` entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Most `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// Most `logprobs` on legacy completions (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: u64 = 5;
/// Most `metadata` entries (OpenAI's limit).
const MAX_METADATA: usize = 16;

/// Fields every engine serves (the base of [`cocoon_proto::capabilities`]) or that are Cocoon's
/// own: checked here, never listed as engine parameters.
const BASE_FIELDS: [&str; 17] = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "metadata",
    "store",
    "service_tier",
    // Cocoon's own, removed before the request leaves the client.
    "max_coefficient",
    "timeout",
];

/// What the checks found, for the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// The engine parameters the request uses, in a stable order.
    pub engine_params: Vec<String>,
    /// Choices asked for (`n`, at least 1).
    pub choices: u32,
}

/// Reads `object` (the request, already known to be a JSON object with a `model`) for
/// `endpoint`.
pub fn check_fields(endpoint: Endpoint, object: &Map<String, Value>) -> Result<Fields, Failure> {
    let mut fields = Fields {
        engine_params: Vec::new(),
        choices: 1,
    };
    let read = Read(object);
    match endpoint {
        Endpoint::Chat => {
            check_messages(read.required("messages")?, &mut fields)?;
            if read.boolean("logprobs")? == Some(true) {
                fields.uses("logprobs");
            }
            if let Some(top) = read.integer("top_logprobs", 0, MAX_TOP_LOGPROBS)? {
                if read.boolean("logprobs")? != Some(true) {
                    return Err(Failure::invalid(
                        "top_logprobs",
                        "`top_logprobs` needs `logprobs: true`",
                    ));
                }
                if top > 0 {
                    fields.uses("top_logprobs");
                }
            }
            let tools = read.get("tools");
            let names = tools.map(check_tools).transpose()?.unwrap_or_default();
            if !names.is_empty() {
                fields.uses("tools");
            }
            if let Some(choice) = read.get("tool_choice") {
                check_tool_choice(choice, &names)?;
                fields.uses("tool_choice");
            }
            if read.boolean("parallel_tool_calls")?.is_some() {
                if names.is_empty() {
                    return Err(Failure::invalid(
                        "parallel_tool_calls",
                        "`parallel_tool_calls` is only allowed with `tools`",
                    ));
                }
                fields.uses("parallel_tool_calls");
            }
            if let Some(format) = read.get("response_format") {
                if check_response_format(format)? {
                    fields.uses("response_format");
                }
            }
            if let Some(modalities) = read.get("modalities") {
                let Some(list) = modalities.as_array().filter(|list| !list.is_empty()) else {
                    return Err(Failure::invalid(
                        "modalities",
                        "`modalities` must be a non-empty array",
                    ));
                };
                if list.iter().any(|m| m != "text" && m != "audio") {
                    return Err(Failure::invalid(
                        "modalities",
                        "`modalities` may hold \"text\" and \"audio\"",
                    ));
                }
                if list.iter().any(|m| m != "text") {
                    fields.uses("modalities");
                }
            }
        }
        Endpoint::Completions => {
            check_prompt(read.required("prompt")?, &mut fields)?;
            if let Some(logprobs) = read.integer("logprobs", 0, MAX_COMPLETION_LOGPROBS)? {
                if logprobs > 0 {
                    fields.uses("logprobs");
                }
            }
            if read.boolean("echo")? == Some(true) {
                fields.uses("echo");
            }
            if read
                .string("suffix")?
                .is_some_and(|suffix| !suffix.is_empty())
            {
                fields.uses("suffix");
            }
        }
    }
    if let Some(n) = read.integer("n", 1, MAX_CHOICES)? {
        fields.choices = u32::try_from(n).unwrap_or(1);
        if n > 1 {
            fields.uses("n");
        }
    }
    if endpoint == Endpoint::Completions {
        if let Some(best_of) = read.integer("best_of", 1, MAX_CHOICES)? {
            if best_of < u64::from(fields.choices) {
                return Err(Failure::invalid(
                    "best_of",
                    "`best_of` must be at least `n`",
                ));
            }
            if best_of > 1 {
                fields.uses("best_of");
            }
        }
    }
    read.number("temperature", 0.0, 2.0)?;
    read.number("top_p", 0.0, 1.0)?;
    for penalty in ["frequency_penalty", "presence_penalty"] {
        if read
            .number(penalty, -2.0, 2.0)?
            .is_some_and(|value| value != 0.0)
        {
            fields.uses(penalty);
        }
    }
    if let Some(bias) = read.get("logit_bias") {
        if check_logit_bias(bias)? {
            fields.uses("logit_bias");
        }
    }
    check_stop(read.get("stop"))?;
    if let Some(seed) = read.get("seed") {
        if seed.as_i64().is_none() && seed.as_u64().is_none() {
            return Err(Failure::invalid("seed", "`seed` must be an integer"));
        }
    }
    read.string("user")?;
    read.string("service_tier")?;
    read.boolean("store")?;
    if let Some(metadata) = read.get("metadata") {
        let valid = metadata.as_object().is_some_and(|entries| {
            entries.len() <= MAX_METADATA
                && entries.iter().all(|(key, value)| {
                    key.len() <= 64 && value.as_str().is_some_and(|v| v.len() <= 512)
                })
        });
        if !valid {
            return Err(Failure::invalid(
                "metadata",
                "`metadata` must be an object of at most 16 strings (keys ≤ 64, values ≤ 512 bytes)",
            ));
        }
    }
    // Everything else is the engine's: listed so that an engine that does not honour it refuses.
    for (name, value) in object {
        if value.is_null() || is_known(endpoint, name) {
            continue;
        }
        if !is_param_name(name) {
            // Named, but not echoed at any length: the name is the app's (or an attacker's).
            let shown: String = name.chars().take(MAX_PARAM_NAME).collect();
            return Err(Failure::invalid(
                &shown,
                "unknown parameter names must be 1 to 64 ASCII letters, digits or `_`",
            ));
        }
        fields.uses(name);
    }
    if fields.engine_params.len() > MAX_ENGINE_PARAMS {
        return Err(Failure::invalid(
            &fields.engine_params[MAX_ENGINE_PARAMS],
            format!("a request may use at most {MAX_ENGINE_PARAMS} engine parameters"),
        ));
    }
    Ok(fields)
}

impl Fields {
    /// Records that the request uses engine parameter `name` (once).
    pub(crate) fn uses(&mut self, name: &str) {
        if !self.engine_params.iter().any(|known| known == name) {
            self.engine_params.push(name.to_owned());
        }
    }
}

/// Whether `name` is a field this module checks for `endpoint` (so not an unknown one).
fn is_known(endpoint: Endpoint, name: &str) -> bool {
    let shared = [
        "n",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
    ];
    let own: &[&str] = match endpoint {
        Endpoint::Chat => &[
            "top_logprobs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "modalities",
        ],
        Endpoint::Completions => &["echo", "suffix", "best_of"],
    };
    BASE_FIELDS.contains(&name) || shared.contains(&name) || own.contains(&name)
}

/// Typed reads of a request's fields; `null` counts as absent, as OpenAI treats it.
struct Read<'a>(&'a Map<String, Value>);

impl<'a> Read<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn required(&self, name: &str) -> Result<&'a Value, Failure> {
        self.get(name)
            .ok_or_else(|| Failure::invalid(name, format!("`{name}` is required")))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Failure> {
        self.get(name)
            .map(|value| {
                value
                    .as_bool()
                    .ok_or_else(|| Failure::invalid(name, format!("`{name}` must be a boolean")))
            })
            .transpose()
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, Failure> {
        self.get(name)
            .map(|value| {
                value
                    .as_str()
                    .ok_or_else(|| Failure::invalid(name, format!("`{name}` must be a string")))
            })
            .transpose()
    }

    /// A number from `low` to `high`, both included.
    fn number(&self, name: &str, low: f64, high: f64) -> Result<Option<f64>, Failure> {
        self.get(name)
            .map(|value| {
                value
                    .as_f64()
                    .filter(|number| (low..=high).contains(number))
                    .ok_or_else(|| {
                        Failure::invalid(
                            name,
                            format!("`{name}` must be a number from {low} to {high}"),
                        )
                    })
            })
            .transpose()
    }

    /// An integer from `low` to `high`, both included.
    fn integer(&self, name: &str, low: u64, high: u64) -> Result<Option<u64>, Failure> {
        self.get(name)
            .map(|value| {
                value
                    .as_u64()
                    .filter(|number| (low..=high).contains(number))
                    .ok_or_else(|| {
                        Failure::invalid(
                            name,
                            format!("`{name}` must be an integer from {low} to {high}"),
                        )
                    })
            })
            .transpose()
    }
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of lists of token ids.
/// More than one prompt is an engine parameter.
fn check_prompt(prompt: &Value, fields: &mut Fields) -> Result<(), Failure> {
    let is_token = |value: &Value| value.as_u64().is_some_and(|id| id <= u64::from(u32::MAX));
    let is_tokens = |value: &Value| {
        value
            .as_array()
            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(is_token))
    };
    let prompts = match prompt {
        Value::String(_) => 1,
        Value::Array(items) if items.iter().all(Value::is_string) => items.len(),
        Value::Array(_) if is_tokens(prompt) => 1,
        Value::Array(items) if items.iter().all(is_tokens) => items.len(),
        _ => 0,
    };
    match prompts {
        0 => Err(Failure::invalid(
            "prompt",
            "`prompt` must be a string, a non-empty array of strings, of token ids, or of arrays of token ids",
        )),
        1 => Ok(()),
        _ => {
            fields.uses("prompt");
            Ok(())
        }
    }
}

/// `stop`: a string or up to [`MAX_STOP`] strings, none empty.
fn check_stop(stop: Option<&Value>) -> Result<(), Failure> {
    let valid = match stop {
        None => true,
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(list)) => {
            list.len() <= MAX_STOP
                && list
                    .iter()
                    .all(|item| item.as_str().is_some_and(|text| !text.is_empty()))
        }
        Some(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(Failure::invalid(
            "stop",
            format!("`stop` must be a non-empty string or an array of at most {MAX_STOP} of them"),
        ))
    }
}

/// `logit_bias`: token ids (as object keys) to numbers from -100 to 100. Whether it is not empty.
fn check_logit_bias(bias: &Value) -> Result<bool, Failure> {
    let invalid = |why: &str| Failure::invalid("logit_bias", format!("`logit_bias` {why}"));
    let Some(entries) = bias.as_object() else {
        return Err(invalid("must be an object of token ids to numbers"));
    };
    if entries.len() > MAX_LOGIT_BIAS {
        return Err(invalid(&format!(
            "may hold at most {MAX_LOGIT_BIAS} entries"
        )));
    }
    for (token, value) in entries {
        let is_id = !token.is_empty()
            && token.len() <= 10
            && token.bytes().all(|b| b.is_ascii_digit())
            && token.parse::<u32>().is_ok();
        if !is_id {
            return Err(invalid(&format!("keys must be token ids, not {token:?}")));
        }
        if !value
            .as_f64()
            .is_some_and(|bias| (-100.0..=100.0).contains(&bias))
        {
            return Err(invalid("values must be numbers from -100 to 100"));
        }
    }
    Ok(!entries.is_empty())
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type":"function","function":{"name"}}`
/// naming one of `tools`. Only `none` goes without tools.
fn check_tool_choice(choice: &Value, tools: &[String]) -> Result<(), Failure> {
    let invalid = |why: String| Failure::invalid("tool_choice", why);
    match choice {
        Value::String(mode) if mode == "none" => Ok(()),
        Value::String(mode) if mode == "auto" || mode == "required" => {
            if tools.is_empty() {
                Err(invalid(format!("`tool_choice: {mode}` needs `tools`")))
            } else {
                Ok(())
            }
        }
        Value::Object(named) if named.get("type").is_some_and(|kind| kind == "function") => {
            let name = named
                .get("function")
                .and_then(|function| function.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(name) if tools.iter().any(|tool| tool == name) => Ok(()),
                Some(name) => Err(invalid(format!("`tool_choice` names `{name}`, which is not in `tools`"))),
                None => Err(invalid("`tool_choice.function.name` is required".into())),
            }
        }
        _ => Err(invalid(
            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
