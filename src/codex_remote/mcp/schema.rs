//! Flat input schemas: Codex (and other clients) show a parameter described by `$ref`, `anyOf`
//! or `oneOf` to the model as a plain string, so every `inputSchema` is made of plain types:
//! each `$ref` is replaced by the definition it points to, a choice of constants becomes one
//! `enum`, and `$defs` goes.

use serde_json::{Map, Value};

/// `schema` with every `$ref` inlined, every choice of constants an `enum`, no `$defs`.
pub fn flatten(mut schema: Value) -> Value {
    let defs = match &mut schema {
        Value::Object(root) => {
            let mut defs = root.remove("$defs").unwrap_or(Value::Null);
            if let Some(Value::Object(more)) = root.remove("definitions")
                && let Value::Object(d) = &mut defs
            {
                d.extend(more);
            }
            defs
        }
        _ => Value::Null,
    };
    inline(&mut schema, &defs, 0);
    schema
}

/// Deeper than this a `$ref` is a cycle: the types here have none.
const MAX_DEPTH: usize = 32;

fn inline(node: &mut Value, defs: &Value, depth: usize) {
    assert!(depth < MAX_DEPTH, "a recursive type in a tool's input schema");
    match node {
        Value::Array(items) => items.iter_mut().for_each(|i| inline(i, defs, depth)),
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.remove("$ref") {
                let name = target.rsplit('/').next().unwrap_or_default();
                let mut def = defs.get(name).cloned().unwrap_or_else(|| {
                    panic!("{target}: no such definition in a tool's input schema")
                });
                inline(&mut def, defs, depth + 1);
                if let Value::Object(def) = def {
                    // The field's own words (its description) win over the type's.
                    for (key, value) in def {
                        object.entry(key).or_insert(value);
                    }
                }
            }
            object.values_mut().for_each(|v| inline(v, defs, depth));
            for key in ["oneOf", "anyOf"] {
                if let Some(Value::Array(choices)) = object.get(key)
                    && let Some(values) = constants(choices)
                {
                    object.remove(key);
                    object.entry("type").or_insert_with(|| "string".into());
                    object.insert("enum".into(), Value::Array(values));
                }
            }
            object.remove("$schema");
        }
        _ => {}
    }
}

/// The values of a choice whose every branch is a constant or an enum; `None` otherwise.
fn constants(choices: &[Value]) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    for choice in choices {
        let choice: &Map<String, Value> = choice.as_object()?;
        match (choice.get("const"), choice.get("enum")) {
            (Some(value), _) => values.push(value.clone()),
            (None, Some(Value::Array(more))) => values.extend(more.iter().cloned()),
            _ => return None,
        }
    }
    Some(values)
}

/// The keywords a flat schema has none of.
const NOT_FLAT: [&str; 5] = ["$ref", "$defs", "definitions", "anyOf", "oneOf"];

/// The first keyword of [`NOT_FLAT`] found anywhere in `schema`, with its path.
pub fn not_flat(schema: &Value, path: &str) -> Option<String> {
    match schema {
        Value::Object(object) => object.iter().find_map(|(key, value)| {
            if NOT_FLAT.contains(&key.as_str()) && path.rsplit('/').next() != Some("properties") {
                Some(format!("{path}/{key}"))
            } else {
                not_flat(value, &format!("{path}/{key}"))
            }
        }),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| not_flat(v, &format!("{path}/{i}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_inlined_and_constant_choices_become_enums() {
        let schema = json!({
            "type": "object",
            "properties": {
                "state": { "$ref": "#/$defs/State", "description": "only these" },
                "res": { "$ref": "#/$defs/Res" },
            },
            "$defs": {
                "State": { "oneOf": [{ "const": "a", "description": "A" }, { "enum": ["b"] }] },
                "Res": { "type": "object", "properties": { "s": { "$ref": "#/$defs/State" } } },
            },
        });
        let flat = flatten(schema);
        assert_eq!(not_flat(&flat, ""), None, "{flat}");
        assert_eq!(flat["properties"]["state"]["enum"], json!(["a", "b"]));
        assert_eq!(flat["properties"]["state"]["description"], "only these");
        assert_eq!(flat["properties"]["res"]["properties"]["s"]["type"], "string");
    }
}
