//! The structured fields of a chat request, checked as OpenAI documents them: `messages` (roles,
//! content parts, tool calls), `tools` (function names and JSON-schema parameters) and
//! `response_format`. Content other than text, tool calls in the history and tools themselves
//! are engine parameters (`Fields::uses`).

use serde_json::{Map, Value};

use crate::http::Failure;
use crate::request_fields::Fields;

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 100_000;
/// Most tools in one request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// `messages`: a non-empty array of messages with a valid role and content for it.
pub fn check_messages(messages: &Value, fields: &mut Fields) -> Result<(), Failure> {
    let Some(list) = messages.as_array().filter(|list| !list.is_empty()) else {
        return Err(Failure::invalid(
            "messages",
            "`messages` must be a non-empty array",
        ));
    };
    if list.len() > MAX_MESSAGES {
        return Err(Failure::invalid(
            "messages",
            format!("`messages` may hold at most {MAX_MESSAGES} messages"),
        ));
    }
    for (index, message) in list.iter().enumerate() {
        check_message(index, message, fields)?;
    }
    Ok(())
}

fn check_message(index: usize, message: &Value, fields: &mut Fields) -> Result<(), Failure> {
    let invalid = |why: String| Failure::invalid("messages", format!("messages[{index}]: {why}"));
    let Some(message) = message.as_object() else {
        return Err(invalid("each message must be an object".into()));
    };
    let role = match message.get("role") {
        Some(Value::String(role)) => role.as_str(),
        Some(_) => return Err(invalid("`role` must be a string".into())),
        None => return Err(invalid("`role` is required".into())),
    };
    if let Some(name) = present(message, "name") {
        if !name.is_string() {
            return Err(invalid("`name` must be a string".into()));
        }
    }
    let content = present(message, "content");
    match role {
        "system" | "developer" | "user" | "function" => {
            let Some(content) = content else {
                return Err(invalid(format!("a {role} message needs `content`")));
            };
            check_content(content, role == "user", fields).map_err(invalid)?;
            if role == "function" {
                fields.uses("functions");
            }
        }
        "assistant" => {
            let tool_calls = present(message, "tool_calls");
            if let Some(calls) = tool_calls {
                check_tool_calls(calls).map_err(invalid)?;
                fields.uses("tools");
            }
            match content {
                Some(content) => check_content(content, false, fields).map_err(invalid)?,
                None if tool_calls.is_some() || present(message, "refusal").is_some() => {}
                None => {
                    return Err(invalid(
                        "an assistant message needs `content` or `tool_calls`".into(),
                    ))
                }
            }
        }
        "tool" => {
            if !present(message, "tool_call_id").is_some_and(Value::is_string) {
                return Err(invalid(
                    "a tool message needs `tool_call_id` (a string)".into(),
                ));
            }
            let Some(content) = content else {
                return Err(invalid("a tool message needs `content`".into()));
            };
            check_content(content, false, fields).map_err(invalid)?;
            fields.uses("tools");
        }
        other => {
            return Err(invalid(format!(
                "`role` must be system, developer, user, assistant or tool, not {other:?}"
            )))
        }
    }
    Ok(())
}

/// A message's `content`: a string, or an array of parts. Text parts anywhere; `image_url`,
/// `input_audio` and `file` parts only from the user, each an engine parameter of its type's name.
fn check_content(content: &Value, from_user: bool, fields: &mut Fields) -> Result<(), String> {
    let parts = match content {
        Value::String(_) => return Ok(()),
        Value::Array(parts) => parts,
        _ => return Err("`content` must be a string or an array of parts".into()),
    };
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        let has_object = |field: &str| part.get(field).is_some_and(Value::is_object);
        match kind {
            "text" if part.get("text").is_some_and(Value::is_string) => {}
            "refusal" if !from_user && part.get("refusal").is_some_and(Value::is_string) => {}
            "image_url" | "input_audio" | "file" if from_user && has_object(kind) => {
                fields.uses(kind);
            }
            "" => return Err("each content part needs a `type`".into()),
            other => {
                return Err(format!(
                    "content part of type {other:?} is malformed or not allowed in this message"
                ))
            }
        }
    }
    Ok(())
}

/// An assistant message's `tool_calls`: `[{"id", "type":"function", "function":{"name","arguments"}}]`.
fn check_tool_calls(calls: &Value) -> Result<(), String> {
    let Some(calls) = calls.as_array() else {
        return Err("`tool_calls` must be an array".into());
    };
    for call in calls {
        let function = call.get("function");
        let valid = call.get("id").is_some_and(Value::is_string)
            && call.get("type").is_some_and(|kind| kind == "function")
            && function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .is_some_and(is_function_name)
            && function
                .and_then(|f| f.get("arguments"))
                .is_some_and(Value::is_string);
        if !valid {
            return Err(
                "each tool call needs `id`, `type: \"function\"` and `function` with `name` and `arguments` (a string)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `tools`: up to [`MAX_TOOLS`] functions with distinct valid names and JSON-schema object
/// parameters. The names, for `tool_choice`.
pub fn check_tools(tools: &Value) -> Result<Vec<String>, Failure> {
    let invalid = |why: String| Failure::invalid("tools", why);
    let Some(list) = tools.as_array() else {
        return Err(invalid("`tools` must be an array".into()));
    };
    if list.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "`tools` may hold at most {MAX_TOOLS} tools"
        )));
    }
    let mut names = Vec::with_capacity(list.len());
    for (index, tool) in list.iter().enumerate() {
        let at = |why: &str| invalid(format!("tools[{index}]: {why}"));
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(at("`type` must be \"function\""));
        }
        let Some(function) = tool.get("function").and_then(Value::as_object) else {
            return Err(at("`function` (an object) is required"));
        };
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(at("`function.name` is required"));
        };
        if !is_function_name(name) {
            return Err(at(
                "`function.name` must be 1 to 64 of a-z, A-Z, 0-9, `_` and `-`",
            ));
        }
        if names.iter().any(|known| known == name) {
            return Err(at(&format!("two tools are named `{name}`")));
        }
        if present(function, "description").is_some_and(|d| !d.is_string()) {
            return Err(at("`function.description` must be a string"));
        }
        if let Some(parameters) = present(function, "parameters") {
            check_schema(parameters).map_err(|why| at(&format!("`function.parameters` {why}")))?;
        }
        if present(function, "strict").is_some_and(|s| !s.is_boolean()) {
            return Err(at("`function.strict` must be a boolean"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// `response_format`: `{"type":"text"}`, `{"type":"json_object"}` or
/// `{"type":"json_schema","json_schema":{"name","schema"?,"strict"?}}`. Whether it asks for more
/// than text (an engine parameter).
pub fn check_response_format(format: &Value) -> Result<bool, Failure> {
    let invalid =
        |why: &str| Failure::invalid("response_format", format!("`response_format` {why}"));
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(false),
        Some("json_object") => Ok(true),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").and_then(Value::as_object) else {
                return Err(invalid("of type json_schema needs `json_schema` (an object)"));
            };
            if !spec
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_function_name)
            {
                return Err(invalid(
                    "needs `json_schema.name`: 1 to 64 of a-z, A-Z, 0-9, `_` and `-`",
                ));
            }
            if let Some(schema) = present(spec, "schema") {
                check_schema(schema).map_err(|why| invalid(&format!("`json_schema.schema` {why}")))?;
            }
            if present(spec, "strict").is_some_and(|s| !s.is_boolean()) {
                return Err(invalid("`json_schema.strict` must be a boolean"));
            }
            Ok(true)
        }
        _ => Err(invalid(
            "must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", …}",
        )),
    }
}

/// A JSON schema as OpenAI takes it: an object whose `type`, when given, is a string or an
/// array of strings. Deeper checks are the engine's (it compiles the schema).
fn check_schema(schema: &Value) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Err("must be a JSON-schema object".into());
    };
    match schema.get("type") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(kinds)) if kinds.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err("has a `type` that is neither a string nor an array of strings".into()),
    }
}

/// OpenAI's rule for function (and schema) names.
fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}
