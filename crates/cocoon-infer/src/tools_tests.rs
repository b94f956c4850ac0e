use super::*;
use serde_json::json;

fn tools(v: Value) -> Vec<Tool> {
    serde_json::from_value(v).unwrap()
}

fn weather() -> Vec<Tool> {
    tools(json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time"}}
    ]))
}

fn choice(v: Value) -> ToolChoice {
    serde_json::from_value(v).unwrap()
}

#[test]
fn none_and_no_tools_add_nothing() {
    let none = plan(&weather(), Some(&choice(json!("none")))).unwrap();
    assert_eq!(none.mode, CallMode::Never);
    assert!(none.grammar.is_none() && none.instructions.is_none());
    assert_eq!(plan(&[], None).unwrap().mode, CallMode::Never);
    assert_eq!(
        plan(&[], Some(&choice(json!("auto")))).unwrap().mode,
        CallMode::Never
    );
}

#[test]
fn each_choice_builds_its_grammar() {
    let auto = plan(&weather(), None).unwrap();
    assert_eq!(auto.mode, CallMode::Maybe);
    let grammar = auto.grammar.unwrap();
    assert!(grammar.starts_with("root ::= r"), "{grammar}");
    assert!(grammar.contains("| [^{] .*"), "{grammar}");
    assert!(grammar.contains(r#""{\"name\": \"get_weather\", \"arguments\": ""#));
    assert!(grammar.contains(r#""{\"name\": \"get_time\", \"arguments\": " object "}""#));
    assert!(auto.instructions.unwrap().contains("get_time"));

    let required = plan(&weather(), Some(&choice(json!("required")))).unwrap();
    assert_eq!(required.mode, CallMode::Always);
    assert!(!required.grammar.unwrap().contains("[^{]"));

    let named = plan(
        &weather(),
        Some(&choice(
            json!({"type": "function", "function": {"name": "get_time"}}),
        )),
    )
    .unwrap();
    assert_eq!(named.mode, CallMode::Always);
    let grammar = named.grammar.unwrap();
    assert!(grammar.contains("get_time") && !grammar.contains("get_weather"));
    assert!(!named.instructions.unwrap().contains("get_weather"));
}

#[test]
fn bad_tools_and_choices_are_refused_by_name() {
    let param = |tools: &[Tool], c: Option<Value>| {
        plan(tools, c.map(choice).as_ref())
            .unwrap_err()
            .0
            .error
            .param
    };
    let named = |name: &str| tools(json!([{"type": "function", "function": {"name": name}}]));
    assert_eq!(param(&named("has space"), None).as_deref(), Some("tools"));
    assert_eq!(param(&named(""), None).as_deref(), Some("tools"));
    assert_eq!(
        param(&named(&"x".repeat(65)), None).as_deref(),
        Some("tools")
    );
    let twice = tools(json!([
        {"type": "function", "function": {"name": "a"}},
        {"type": "function", "function": {"name": "a"}}
    ]));
    assert_eq!(param(&twice, None).as_deref(), Some("tools"));
    let other = tools(json!([{"type": "retrieval", "function": {"name": "a"}}]));
    assert_eq!(param(&other, None).as_deref(), Some("tools"));
    let bad_schema = tools(json!([{"type": "function", "function": {"name": "a",
        "parameters": {"type": "string", "pattern": "x"}}}]));
    assert_eq!(param(&bad_schema, None).as_deref(), Some("tools"));
    assert_eq!(
        param(&weather(), Some(json!("sometimes"))).as_deref(),
        Some("tool_choice")
    );
    assert_eq!(
        param(
            &weather(),
            Some(json!({"type": "function", "function": {"name": "nope"}}))
        )
        .as_deref(),
        Some("tool_choice")
    );
    assert_eq!(
        param(&[], Some(json!("required"))).as_deref(),
        Some("tool_choice")
    );
}

fn read(mode: CallMode, pieces: &[&str]) -> (Vec<Piece>, bool) {
    let mut reader = CallReader::new(mode);
    let mut out: Vec<Piece> = pieces.iter().flat_map(|p| reader.push(p)).collect();
    out.extend(reader.finish());
    (out, reader.called())
}

#[test]
fn a_call_streams_its_name_then_its_arguments() {
    let (out, called) = read(
        CallMode::Always,
        &[
            "{\"name\": \"get_",
            "weather\", \"arguments\": {\"ci",
            "ty\": \"Par",
            "is\"}",
            "}",
        ],
    );
    assert!(called);
    assert_eq!(out[0], Piece::CallStart("get_weather".into()));
    let arguments: String = out[1..]
        .iter()
        .map(|p| match p {
            Piece::Arguments(a) => a.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(arguments, r#"{"city": "Paris"}"#);
    assert_eq!(
        call_text("get_weather", &arguments),
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#
    );
}

#[test]
fn auto_mode_reads_text_or_a_call_by_the_first_character() {
    let (out, called) = read(CallMode::Maybe, &["", "Hello", " {x}"]);
    assert!(!called);
    assert_eq!(
        out,
        [Piece::Text("Hello".into()), Piece::Text(" {x}".into())]
    );
    let (out, called) = read(CallMode::Maybe, &["{\"name\": \"f\", \"arguments\": {}}"]);
    assert!(called);
    assert_eq!(out[0], Piece::CallStart("f".into()));
}

#[test]
fn a_call_cut_short_is_text_or_an_incomplete_call() {
    let (out, called) = read(CallMode::Always, &["{\"name\": \"ge"]);
    assert!(!called);
    assert_eq!(out, [Piece::Text("{\"name\": \"ge".into())]);
    // Multi-byte characters are never split when the last one is held back.
    let (out, _) = read(
        CallMode::Always,
        &["{\"name\": \"f\", \"arguments\": {\"a\": \"é"],
    );
    assert_eq!(out[1], Piece::Arguments("{\"a\": \"".into()));
    assert_eq!(out[2], Piece::Arguments("é".into()));
}

#[test]
fn plain_mode_is_text() {
    let (out, called) = read(CallMode::Never, &["{\"name\": \"f\"}"]);
    assert!(!called);
    assert_eq!(out, [Piece::Text("{\"name\": \"f\"}".into())]);
}
