//! Tool calling on the embedded engine: the model is told about the functions in a system
//! message, and the call itself is decoded under a grammar, so it is always one well-formed call
//! `{"name": "<function>", "arguments": <object matching its parameters>}` — which this module
//! then reads back into OpenAI's `tool_calls` shape, also incrementally for streams.
//!
//! `tool_choice`:
//! - `none` (or no tools): the tools are not mentioned and no grammar applies;
//! - `required`: the grammar allows exactly one call to any of the tools;
//! - a named function: exactly one call to that function;
//! - `auto` (the default with tools): the grammar allows either a call or free text that does not
//!   start with `{`, so the model's first character decides between the two.

use serde_json::Value;

use crate::json_grammar::{literal, GrammarBuilder};
use crate::openai::{ApiError, Tool, ToolChoice};

/// Most tools one request may offer.
const MAX_TOOLS: usize = 128;

/// How the output of a request is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallMode {
    /// Plain text.
    Never,
    /// Exactly one tool call.
    Always,
    /// A tool call if the output starts with `{`, text otherwise.
    Maybe,
}

/// What the tools of a request add to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolPlan {
    pub mode: CallMode,
    /// The grammar the output must match, if any.
    pub grammar: Option<String>,
    /// Instructions for the model, added to the system message.
    pub instructions: Option<String>,
}

/// The text of a call as the grammar produces it (and as past calls are shown to the model).
pub(crate) fn call_text(name: &str, arguments: &str) -> String {
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    format!("{}{arguments}}}", call_prefix(name))
}

fn call_prefix(name: &str) -> String {
    format!("{{\"name\": \"{name}\", \"arguments\": ")
}

/// OpenAI's rule for function names, which also keeps them safe inside grammar literals.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `tools` and `tool_choice` and builds what they need.
pub(crate) fn plan(tools: &[Tool], choice: Option<&ToolChoice>) -> Result<ToolPlan, ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!("at most {MAX_TOOLS} tools are accepted"),
        ));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::invalid(
                "tools",
                format!("tools[{i}]: only tools of type \"function\" are supported"),
            ));
        }
        if !valid_name(&tool.function.name) {
            return Err(ApiError::invalid(
                "tools",
                format!("tools[{i}]: a function name must be 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        if tools[..i]
            .iter()
            .any(|other| other.function.name == tool.function.name)
        {
            return Err(ApiError::invalid(
                "tools",
                format!(
                    "tools[{i}]: the name `{}` is used twice",
                    tool.function.name
                ),
            ));
        }
    }
    let never = ToolPlan {
        mode: CallMode::Never,
        grammar: None,
        instructions: None,
    };
    let (mode, callable): (CallMode, Vec<&Tool>) = match choice {
        Some(ToolChoice::Mode(mode)) if mode == "none" => return Ok(never),
        None if tools.is_empty() => return Ok(never),
        None => (CallMode::Maybe, tools.iter().collect()),
        Some(ToolChoice::Mode(mode)) if mode == "auto" && tools.is_empty() => return Ok(never),
        Some(ToolChoice::Mode(mode)) if mode == "auto" => (CallMode::Maybe, tools.iter().collect()),
        Some(ToolChoice::Mode(mode)) if mode == "required" => {
            (CallMode::Always, tools.iter().collect())
        }
        Some(ToolChoice::Mode(other)) => {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("tool_choice must be none, auto, required or a function, not {other:?}"),
            ))
        }
        Some(ToolChoice::Named { function }) => {
            let tool = tools
                .iter()
                .find(|t| t.function.name == function.name)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        format!(
                            "tool_choice names `{}`, which is not in tools",
                            function.name
                        ),
                    )
                })?;
            (CallMode::Always, vec![tool])
        }
    };
    if callable.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice requires a call but no tools are given",
        ));
    }
    let mut builder = GrammarBuilder::new();
    let mut calls = Vec::with_capacity(callable.len());
    for tool in &callable {
        let arguments = match &tool.function.parameters {
            Some(schema) => builder.schema_rule(schema).map_err(|e| {
                ApiError::invalid(
                    "tools",
                    format!("the parameters of `{}`: {e}", tool.function.name),
                )
            })?,
            None => "object".to_owned(),
        };
        calls.push(format!(
            "{} {arguments} \"}}\"",
            literal(&call_prefix(&tool.function.name))
        ));
    }
    let call = builder
        .rule(calls.join(" | "))
        .map_err(|e| ApiError::invalid("tools", e.to_string()))?;
    let root = match mode {
        CallMode::Maybe => format!("{call} | [^{{] .*"),
        _ => call,
    };
    let grammar = builder
        .finish(&root)
        .map_err(|e| ApiError::invalid("tools", e.to_string()))?;
    Ok(ToolPlan {
        mode,
        grammar: Some(grammar),
        instructions: Some(instructions(&callable, mode)),
    })
}

fn instructions(tools: &[&Tool], mode: CallMode) -> String {
    let mut text = String::from("You can call these functions:\n");
    for tool in tools {
        let description = Value::from(tool.function.description.clone().unwrap_or_default());
        let parameters = tool
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object"}));
        text.push_str(
            &serde_json::json!({"name": tool.function.name, "description": description, "parameters": parameters})
                .to_string(),
        );
        text.push('\n');
    }
    text.push_str(match mode {
        CallMode::Maybe => {
            "To call a function, answer with only {\"name\": <function name>, \"arguments\": \
             <arguments object>}. Otherwise answer normally."
        }
        _ => "Answer with only {\"name\": <function name>, \"arguments\": <arguments object>}.",
    });
    text
}

/// A piece of a choice's output, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// A tool call begins: its function's name.
    CallStart(String),
    /// More of the call's arguments (JSON text).
    Arguments(String),
}

/// Reads a choice's generated text as text or as a tool call, as it arrives.
#[derive(Debug)]
pub(crate) struct CallReader {
    /// Whether the output is a call (decided by its first character in `Maybe` mode).
    is_call: Option<bool>,
    buffer: String,
    /// Where the arguments start in `buffer`, once the name is known.
    arguments_at: Option<usize>,
    /// How much of `buffer` has been released as arguments.
    released: usize,
    complete: bool,
}

impl CallReader {
    pub(crate) fn new(mode: CallMode) -> Self {
        CallReader {
            is_call: match mode {
                CallMode::Never => Some(false),
                CallMode::Always => Some(true),
                CallMode::Maybe => None,
            },
            buffer: String::new(),
            arguments_at: None,
            released: 0,
            complete: false,
        }
    }

    /// Whether the output was a complete tool call (after [`CallReader::finish`]).
    pub(crate) fn called(&self) -> bool {
        self.complete
    }

    /// The pieces `text` adds.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        if self.is_call.is_none() {
            match text.chars().next() {
                None => return Vec::new(),
                Some(first) => self.is_call = Some(first == '{'),
            }
        }
        if self.is_call == Some(false) {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![Piece::Text(text.to_owned())]
            };
        }
        self.buffer.push_str(text);
        let mut pieces = Vec::new();
        if self.arguments_at.is_none() {
            if let Some((name, at)) = self.read_name() {
                pieces.push(Piece::CallStart(name));
                self.arguments_at = Some(at);
                self.released = at;
            }
        }
        if self.arguments_at.is_some() {
            // The last character may be the call's closing brace: hold it back.
            let end = self.buffer.char_indices().next_back().map_or(0, |(i, _)| i);
            if end > self.released {
                pieces.push(Piece::Arguments(self.buffer[self.released..end].to_owned()));
                self.released = end;
            }
        }
        pieces
    }

    /// The name, and where the arguments start, once the call's prefix is complete.
    fn read_name(&self) -> Option<(String, usize)> {
        let rest = self.buffer.strip_prefix("{\"name\": \"")?;
        let name_len = rest.find('"')?;
        let name = &rest[..name_len];
        let prefix = call_prefix(name);
        self.buffer
            .starts_with(&prefix)
            .then(|| (name.to_owned(), prefix.len()))
    }

    /// The pieces left when generation ends. A call cut short before its name is complete is
    /// returned as text.
    pub(crate) fn finish(&mut self) -> Vec<Piece> {
        if self.is_call != Some(true) {
            return Vec::new();
        }
        if self.arguments_at.is_none() {
            let text = std::mem::take(&mut self.buffer);
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![Piece::Text(text)]
            };
        }
        let mut rest = &self.buffer[self.released..];
        if let Some(stripped) = rest.strip_suffix('}') {
            rest = stripped;
            self.complete = true;
        }
        let rest = rest.to_owned();
        self.released = self.buffer.len();
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Arguments(rest)]
        }
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
