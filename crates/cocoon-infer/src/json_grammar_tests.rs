use super::*;
use serde_json::json;

fn grammar(schema: Value) -> String {
    schema_grammar(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"))
}

fn refusal(schema: Value) -> String {
    schema_grammar(&schema).unwrap_err().0
}

#[test]
fn primitive_types_map_to_shared_rules() {
    for kind in ["string", "integer", "number", "boolean", "null"] {
        let g = grammar(json!({"type": kind}));
        assert!(g.starts_with("root ::= r0\n"), "{g}");
        assert!(g.contains(&format!("r0 ::= {kind}\n")), "{g}");
    }
    // No type: any JSON value; `true` likewise.
    assert!(grammar(json!({})).contains("r0 ::= value\n"));
    assert!(grammar(json!(true)).contains("r0 ::= value\n"));
}

#[test]
fn objects_emit_required_properties_in_order_and_optional_ones_as_options() {
    let g = grammar(json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "days"],
        "additionalProperties": false
    }));
    assert!(
        g.contains(r#""\"city\"" ws ":" ws string ws "," ws "\"days\"" ws ":" ws integer ( ws "," ws "\"unit\"" ws ":" ws ("\"c\"" | "\"f\""))?"#),
        "{g}"
    );
    // Only optional properties: any subset, still in order, commas only between them.
    let g = grammar(json!({"properties": {"a": {"type": "null"}, "b": {"type": "null"}}}));
    assert!(
        g.contains(r#"r0 ::= ("," ws "\"b\"" ws ":" ws null ws)? """#),
        "{g}"
    );
    assert!(
        g.contains(r#"("\"a\"" ws ":" ws null ws r0 | "\"b\"" ws ":" ws null ws "")?"#),
        "{g}"
    );
    // An object without properties is any object.
    assert!(grammar(json!({"type": "object"})).contains("r0 ::= object\n"));
}

#[test]
fn arrays_honour_items_and_bounds() {
    let g = grammar(json!({"type": "array", "items": {"type": "boolean"}}));
    assert!(g.contains("r0 ::= boolean\n"), "{g}");
    assert!(
        g.contains(r#"r1 ::= "[" ws (r0 (ws "," ws r0)*)? ws "]""#),
        "{g}"
    );
    let g = grammar(json!({"type": "array", "minItems": 2, "maxItems": 3}));
    assert!(g.contains(r#"r0 (ws "," ws r0){1,2} ws "]""#), "{g}");
    let g = grammar(json!({"type": "array", "minItems": 1}));
    assert!(g.contains(r#"r0 (ws "," ws r0){0,} ws "]""#), "{g}");
    let g = grammar(json!({"type": "array", "maxItems": 0}));
    assert!(g.contains(r#""[" ws  ws "]""#), "{g}");
}

#[test]
fn string_lengths_enums_consts_and_type_lists() {
    let g = grammar(json!({"type": "string", "minLength": 1, "maxLength": 5}));
    assert!(g.contains(r#"r0 ::= "\"" char{1,5} "\"""#), "{g}");
    let g = grammar(json!({"enum": ["a\"b", 3, null]}));
    assert!(g.contains(r#"("\"a\\\"b\"" | "3" | "null")"#), "{g}");
    let g = grammar(json!({"const": "x"}));
    assert!(g.contains(r#"r0 ::= "\"x\"""#), "{g}");
    let g = grammar(json!({"type": ["string", "null"]}));
    assert!(g.contains("r0 ::= (string | null)"), "{g}");
    let g = grammar(json!({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}));
    assert!(g.contains("r0 ::= (integer | boolean)"), "{g}");
}

#[test]
fn references_resolve_and_may_recurse() {
    let g = grammar(json!({
        "$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
        }, "required": ["children"]}},
        "$ref": "#/$defs/node"
    }));
    // The definition's rule refers to itself through the array of children.
    assert!(g.contains("r0 ::= r3\n"), "{g}");
    assert!(g.contains("r1 ::= r0\n"), "{g}");
    let g = grammar(json!({"definitions": {"x": {"type": "null"}}, "$ref": "#/definitions/x"}));
    assert!(g.contains("r0 ::= null\n"), "{g}");
}

#[test]
fn annotations_are_ignored() {
    let g = grammar(json!({
        "type": "integer", "description": "d", "title": "t", "default": 1, "$schema": "x"
    }));
    assert!(g.contains("r0 ::= integer\n"));
}

#[test]
fn unenforceable_keywords_are_refused_by_name() {
    for keyword in [
        "pattern", "format", "minimum", "maximum", "oneOf", "allOf", "not",
    ] {
        let message = refusal(json!({"type": "string", keyword: 1}));
        assert!(message.contains(&format!("`{keyword}`")), "{message}");
    }
}

#[test]
fn malformed_and_hostile_schemas_are_refused() {
    assert!(refusal(json!(3)).contains("must be an object"));
    assert!(refusal(json!({"type": "date"})).contains("`date`"));
    assert!(refusal(json!({"type": 3})).contains("`type`"));
    assert!(refusal(json!({"enum": []})).contains("`enum`"));
    assert!(refusal(json!({"anyOf": {}})).contains("`anyOf`"));
    assert!(refusal(json!({"$ref": "http://x/y"})).contains("`$ref`"));
    assert!(refusal(json!({"$ref": "#/$defs/missing"})).contains("not defined"));
    assert!(refusal(json!({"properties": {}, "required": ["x"]})).contains("`x`"));
    assert!(refusal(json!({"type": "array", "maxItems": 100000})).contains("`maxItems`"));
    assert!(refusal(json!({"type": "array", "minItems": 3, "maxItems": 2})).contains("below"));
    assert!(refusal(json!({"type": "string", "maxLength": -1})).contains("`maxLength`"));
    // Nesting beyond the cap.
    let mut deep = json!({"type": "null"});
    for _ in 0..40 {
        deep = json!({"type": "array", "items": deep});
    }
    assert!(refusal(deep).contains("deeper"));
    // Rule count beyond the cap: many objects.
    let wide: Map<String, Value> = (0..200)
        .map(|i| {
            (
                format!("p{i}"),
                json!({"type": "object", "properties": {"a": {"type": "array"}, "b": {"type": "array"}}}),
            )
        })
        .collect();
    assert!(refusal(json!({"type": "object", "properties": wide})).contains("too complex"));
}

#[test]
fn references_that_multiply_are_refused() {
    // d0 is a string; each d(i) is any of eight d(i-1): small as written, but 8^6 strings
    // inlined, which llama.cpp would track as that many parallel parse states.
    let mut defs = Map::new();
    defs.insert("d0".into(), json!({"type": "string"}));
    for i in 1..=6 {
        let previous = json!({"$ref": format!("#/$defs/d{}", i - 1)});
        defs.insert(format!("d{i}"), json!({ "anyOf": vec![previous; 8] }));
    }
    let message = refusal(json!({"$defs": defs, "$ref": "#/$defs/d6"}));
    assert!(message.contains("references expanded"), "{message}");
    // A definition used a few times is fine.
    grammar(
        json!({"$defs": {"p": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "type": "array", "items": {"anyOf": [{"$ref": "#/$defs/p"}, {"$ref": "#/$defs/p"}]}}),
    );
}

#[test]
fn literals_escape_gbnf_specials() {
    assert_eq!(literal("a\"\\\n\t\u{1}é"), r#""a\"\\\n\t\x01é""#);
}

#[test]
fn json_object_grammar_starts_at_an_object() {
    assert!(object_grammar().starts_with("root ::= object\n"));
}
