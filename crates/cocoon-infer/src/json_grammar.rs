//! JSON Schema → GBNF (llama.cpp's grammar format), for `response_format` and tool arguments.
//!
//! No maintained Rust crate does this conversion soundly (crates.io has only 0.0.x experiments),
//! so this is a small converter for the subset OpenAI's strict structured outputs allow:
//! `type` (one or a list), `properties` / `required` (properties are emitted in declaration
//! order; optional ones may be left out), `additionalProperties` (no extra property is ever
//! generated, which satisfies both `true` and `false`), `items`, `minItems` / `maxItems`,
//! `minLength` / `maxLength`, `enum`, `const`, `anyOf`, and `$ref` into `$defs` / `definitions`
//! (recursion allowed). Annotations (`description`, `title`, `default`, `examples`, `$schema`,
//! `$id`) are ignored. Every other keyword (`pattern`, `format`, `minimum`, `oneOf`, …) is refused
//! by name: generated output must match the schema, so a keyword the grammar cannot enforce is
//! never silently dropped.
//!
//! The schema comes from the client: nesting, rule count, enum size and repetition bounds are all
//! capped, and the result is still parsed by llama.cpp, which refuses what it cannot use.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Deepest schema nesting accepted.
const MAX_DEPTH: usize = 24;
/// Most grammar rules one request may produce.
const MAX_RULES: usize = 512;
/// Most properties in one object, values in one `enum`, or branches in one `anyOf`.
const MAX_ITEMS: usize = 256;
/// Highest repetition bound (`maxItems`, `maxLength`): llama.cpp expands repetitions into rules.
const MAX_REPEAT: u64 = 256;
/// Largest grammar text produced.
const MAX_GRAMMAR_BYTES: usize = 256 * 1024;
/// Most schema nodes a grammar may stand for with every `$ref` inlined. References are emitted as
/// shared rules, but llama.cpp's matcher walks them as if inlined: a few definitions that each
/// refer twice to the previous one make an exponential number of parallel parse states, which
/// would stall the engine thread (or exhaust memory) for every request.
const MAX_EXPANDED_NODES: u64 = 16 * 1024;

/// Keywords that only describe and never constrain.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];

/// Why a schema cannot be turned into a grammar; the message names the keyword.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SchemaError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError(message.into()))
}

/// The JSON primitives every grammar shares. `ws` allows at most one space, so a model cannot
/// spend its tokens on whitespace; numbers and strings are bounded only by `max_tokens`.
const PRIMITIVES: &str = r#"ws ::= | " "
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
string ::= "\"" char* "\""
integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
number ::= integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"
array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
"#;

/// Builds one grammar out of one or more schemas (tools share primitives).
#[derive(Debug, Default)]
pub(crate) struct GrammarBuilder {
    rules: Vec<(String, String)>,
    /// `(schema number, definition name)` → its rule, so recursive definitions refer to themselves,
    /// and its size inlined (see [`MAX_EXPANDED_NODES`]; 1 while it is being expanded).
    defs: HashMap<(usize, String), (String, u64)>,
    /// Schema nodes converted so far, every `$ref` counted as its definition's size.
    expanded: u64,
    /// Which schema's `$defs` the current `$ref`s point into.
    schema: usize,
    roots: Vec<Value>,
}

impl GrammarBuilder {
    /// An empty builder.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A rule matching JSON values valid against `schema`; returns the rule's name.
    pub(crate) fn schema_rule(&mut self, schema: &Value) -> Result<String, SchemaError> {
        self.roots.push(schema.clone());
        self.schema = self.roots.len() - 1;
        let expr = self.expr(schema, 0)?;
        self.rule(expr)
    }

    /// Adds a rule `name ::= expr` under a fresh name and returns the name.
    pub(crate) fn rule(&mut self, expr: String) -> Result<String, SchemaError> {
        if self.rules.len() >= MAX_RULES {
            return refuse(format!(
                "the schema is too complex (more than {MAX_RULES} grammar rules)"
            ));
        }
        let name = format!("r{}", self.rules.len());
        self.rules.push((name.clone(), expr));
        Ok(name)
    }

    /// The grammar text with `root ::= root_expr`.
    pub(crate) fn finish(self, root_expr: &str) -> Result<String, SchemaError> {
        let mut text = format!("root ::= {root_expr}\n{PRIMITIVES}");
        for (name, expr) in &self.rules {
            let _ = writeln!(text, "{name} ::= {expr}");
            if text.len() > MAX_GRAMMAR_BYTES {
                return refuse("the schema is too large to enforce");
            }
        }
        Ok(text)
    }

    /// Counts `nodes` more schema nodes against [`MAX_EXPANDED_NODES`].
    fn count(&mut self, nodes: u64) -> Result<(), SchemaError> {
        self.expanded = self.expanded.saturating_add(nodes);
        if self.expanded > MAX_EXPANDED_NODES {
            return refuse(format!(
                "the schema is too large with its references expanded (more than \
                 {MAX_EXPANDED_NODES} nodes)"
            ));
        }
        Ok(())
    }

    fn expr(&mut self, schema: &Value, depth: usize) -> Result<String, SchemaError> {
        if depth > MAX_DEPTH {
            return refuse(format!("the schema nests deeper than {MAX_DEPTH} levels"));
        }
        self.count(1)?;
        let object = match schema {
            Value::Bool(true) => return Ok("value".into()),
            Value::Object(object) => object,
            _ => return refuse("a schema must be an object (or `true`)"),
        };
        for key in object.keys() {
            if !ANNOTATIONS.contains(&key.as_str()) && !SUPPORTED.contains(&key.as_str()) {
                return refuse(format!(
                    "the JSON schema keyword `{key}` is not supported by this engine's \
                     constrained decoding"
                ));
            }
        }
        if let Some(reference) = object.get("$ref") {
            return self.reference(reference, depth);
        }
        if let Some(constant) = object.get("const") {
            return Ok(literal(&constant.to_string()));
        }
        if let Some(values) = object.get("enum") {
            let Value::Array(values) = values else {
                return refuse("`enum` must be an array");
            };
            if values.is_empty() || values.len() > MAX_ITEMS {
                return refuse(format!("`enum` must have 1 to {MAX_ITEMS} values"));
            }
            let alternatives: Vec<String> =
                values.iter().map(|v| literal(&v.to_string())).collect();
            return Ok(format!("({})", alternatives.join(" | ")));
        }
        if let Some(branches) = object.get("anyOf") {
            let Value::Array(branches) = branches else {
                return refuse("`anyOf` must be an array");
            };
            if branches.is_empty() || branches.len() > MAX_ITEMS {
                return refuse(format!("`anyOf` must have 1 to {MAX_ITEMS} schemas"));
            }
            let alternatives = branches
                .iter()
                .map(|branch| self.expr(branch, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(format!("({})", alternatives.join(" | ")));
        }
        match object.get("type") {
            None if object.contains_key("properties") => self.typed("object", object, depth),
            None if object.contains_key("items") => self.typed("array", object, depth),
            None => Ok("value".into()),
            Some(Value::String(kind)) => self.typed(kind, object, depth),
            Some(Value::Array(kinds)) if !kinds.is_empty() && kinds.len() <= 7 => {
                let alternatives = kinds
                    .iter()
                    .map(|kind| match kind {
                        Value::String(kind) => self.typed(kind, object, depth),
                        _ => refuse("`type` must be a string or a list of strings"),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(format!("({})", alternatives.join(" | ")))
            }
            Some(_) => refuse("`type` must be a string or a list of strings"),
        }
    }

    fn typed(
        &mut self,
        kind: &str,
        object: &Map<String, Value>,
        depth: usize,
    ) -> Result<String, SchemaError> {
        match kind {
            "object" => self.object(object, depth),
            "array" => self.array(object, depth),
            "string" => string_expr(object),
            "integer" | "number" | "boolean" | "null" => Ok(kind.into()),
            other => refuse(format!("unknown JSON schema type `{other}`")),
        }
    }

    fn object(&mut self, object: &Map<String, Value>, depth: usize) -> Result<String, SchemaError> {
        let properties = match object.get("properties") {
            None => return Ok("object".into()),
            Some(Value::Object(properties)) => properties,
            Some(_) => return refuse("`properties` must be an object"),
        };
        if properties.len() > MAX_ITEMS {
            return refuse(format!("an object may have at most {MAX_ITEMS} properties"));
        }
        let required: Vec<&str> = match object.get("required") {
            None => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| name.as_str().ok_or(()))
                .collect::<Result<_, _>>()
                .or_else(|()| refuse("`required` must be a list of property names"))?,
            Some(_) => return refuse("`required` must be a list of property names"),
        };
        if let Some(missing) = required
            .iter()
            .find(|name| !properties.contains_key(**name))
        {
            return refuse(format!(
                "`required` names `{missing}`, which is not among `properties`"
            ));
        }
        let mut mandatory = Vec::new();
        let mut optional = Vec::new();
        for (name, schema) in properties {
            let value = self.expr(schema, depth + 1)?;
            let pair = format!(
                "{} ws \":\" ws {value}",
                literal(&Value::String(name.clone()).to_string())
            );
            if required.contains(&name.as_str()) {
                mandatory.push(pair);
            } else {
                optional.push(pair);
            }
        }
        let separator = " ws \",\" ws ";
        let body = if mandatory.is_empty() {
            // Any subset of the optional properties, in order: `tail_i` = the ones from i on, each
            // preceded by a comma; the body starts at whichever comes first.
            let mut tails = vec![String::from("\"\""); optional.len() + 1];
            for i in (0..optional.len()).rev() {
                let expr = format!("(\",\" ws {} ws)? {}", optional[i], tails[i + 1]);
                tails[i] = self.rule(expr)?;
            }
            let starts: Vec<String> = optional
                .iter()
                .enumerate()
                .map(|(i, pair)| format!("{pair} ws {}", tails[i + 1]))
                .collect();
            if starts.is_empty() {
                String::new()
            } else {
                format!("({})?", starts.join(" | "))
            }
        } else {
            let mut body = mandatory.join(separator);
            for pair in &optional {
                let _ = write!(body, " ({separator}{pair})?");
            }
            body
        };
        self.rule(format!("\"{{\" ws {body} ws \"}}\""))
    }

    fn array(&mut self, object: &Map<String, Value>, depth: usize) -> Result<String, SchemaError> {
        let item = match object.get("items") {
            None => "value".to_owned(),
            Some(items) => self.expr(items, depth + 1)?,
        };
        let item = self.rule(item)?;
        let min = bound(object, "minItems")?.unwrap_or(0);
        let max = bound(object, "maxItems")?;
        if max.is_some_and(|max| max < min) {
            return refuse("`maxItems` is below `minItems`");
        }
        let more = format!("(ws \",\" ws {item})");
        let body = match (min, max) {
            (_, Some(0)) => String::new(),
            (0, None) => format!("({item} {more}*)?"),
            (0, Some(max)) => format!("({item} {more}{{0,{}}})?", max - 1),
            (min, None) => format!("{item} {more}{{{},}}", min - 1),
            (min, Some(max)) => format!("{item} {more}{{{},{}}}", min - 1, max - 1),
        };
        self.rule(format!("\"[\" ws {body} ws \"]\""))
    }

    fn reference(&mut self, reference: &Value, depth: usize) -> Result<String, SchemaError> {
        let Some(path) = reference.as_str() else {
            return refuse("`$ref` must be a string");
        };
        let name = path
            .strip_prefix("#/$defs/")
            .or_else(|| path.strip_prefix("#/definitions/"))
            .filter(|name| !name.contains('/'));
        let Some(name) = name else {
            return refuse(format!(
                "`$ref` must point into `#/$defs/` or `#/definitions/`, not `{path}`"
            ));
        };
        let key = (self.schema, name.to_owned());
        if let Some((rule, size)) = self.defs.get(&key).cloned() {
            self.count(size)?;
            return Ok(rule);
        }
        let root = &self.roots[self.schema];
        let target = root
            .get("$defs")
            .and_then(|defs| defs.get(name))
            .or_else(|| root.get("definitions").and_then(|defs| defs.get(name)))
            .cloned();
        let Some(target) = target else {
            return refuse(format!("`$ref` names `{path}`, which is not defined"));
        };
        // Reserve the rule's name first so that a recursive definition refers to itself.
        let rule = self.rule(String::new())?;
        self.defs.insert(key.clone(), (rule.clone(), 1));
        let before = self.expanded;
        let expr = self.expr(&target, depth + 1)?;
        let size = self.expanded - before;
        self.defs.insert(key, (rule.clone(), size));
        if let Some(slot) = self.rules.iter_mut().find(|(n, _)| *n == rule) {
            slot.1 = expr;
        }
        Ok(rule)
    }
}

/// Keywords that constrain and that the converter enforces.
const SUPPORTED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
];

fn bound(object: &Map<String, Value>, keyword: &str) -> Result<Option<u64>, SchemaError> {
    match object.get(keyword) {
        None => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n <= MAX_REPEAT => Ok(Some(n)),
            _ => refuse(format!(
                "`{keyword}` must be an integer from 0 to {MAX_REPEAT}"
            )),
        },
    }
}

fn string_expr(object: &Map<String, Value>) -> Result<String, SchemaError> {
    let min = bound(object, "minLength")?;
    let max = bound(object, "maxLength")?;
    Ok(match (min, max) {
        (None, None) => "string".into(),
        (min, Some(max)) if max < min.unwrap_or(0) => {
            return refuse("`maxLength` is below `minLength`")
        }
        (min, Some(max)) => format!("\"\\\"\" char{{{},{max}}} \"\\\"\"", min.unwrap_or(0)),
        (min, None) => format!("\"\\\"\" char{{{},}} \"\\\"\"", min.unwrap_or(0)),
    })
}

/// `text` as a GBNF string literal.
pub(crate) fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The grammar of `response_format: json_schema`.
pub(crate) fn schema_grammar(schema: &Value) -> Result<String, SchemaError> {
    let mut builder = GrammarBuilder::new();
    let root = builder.schema_rule(schema)?;
    builder.finish(&root)
}

/// The grammar of `response_format: json_object`: any JSON object.
pub(crate) fn object_grammar() -> String {
    format!("root ::= object\n{PRIMITIVES}")
}

#[cfg(test)]
#[path = "json_grammar_tests.rs"]
mod tests;
