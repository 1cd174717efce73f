//! Avro's naming rules, checked before a schema reaches `apache_avro`'s parser,
//! whose 0.17 release panics (instead of failing) on some invalid names: a record
//! named `my-record`, an alias or a type reference with a hyphen. A panic on a
//! schema from the network would take the whole server down.
//!
//! Checks every `name`, `namespace`, `aliases` entry, enum symbol and type name
//! against the specification (`[A-Za-z_][A-Za-z0-9_]*`, dotted for full names);
//! leaves `default` values and custom attributes alone.

use serde_json::Value;

/// Type keywords that are not names.
const KEYWORDS: [&str; 14] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string", "record", "error",
    "enum", "fixed", "array", "map",
];

fn simple_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn full_name(s: &str) -> bool {
    s.split('.').all(simple_name)
}

/// Whether the schema's names all follow Avro's rules; the first that does not.
pub fn check_names(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    walk_type(&v, 0)
}

/// How deep a schema may nest (serde_json stops at 128 anyway).
const DEPTH_MAX: usize = 128;

/// A value in a type position: a name, a union, or a type object.
fn walk_type(v: &Value, depth: usize) -> Result<(), String> {
    if depth > DEPTH_MAX {
        return Err(format!("the schema nests deeper than {DEPTH_MAX}"));
    }
    match v {
        Value::String(s) if KEYWORDS.contains(&s.as_str()) || full_name(s) => Ok(()),
        Value::String(s) => Err(format!("type name {s:?} is not a valid Avro name")),
        Value::Array(branches) => branches.iter().try_for_each(|b| walk_type(b, depth + 1)),
        Value::Object(o) => {
            for (key, value) in o {
                match key.as_str() {
                    "name" => match value.as_str() {
                        Some(n) if full_name(n) => {}
                        _ => return Err(format!("name {value} is not a valid Avro name")),
                    },
                    "namespace" => match value.as_str() {
                        Some(n) if n.is_empty() || full_name(n) => {}
                        _ => {
                            return Err(format!("namespace {value} is not a valid Avro namespace"))
                        }
                    },
                    "aliases" | "symbols" => {
                        let names = value.as_array().ok_or(format!("{key} must be a list"))?;
                        for n in names {
                            let ok = n.as_str().is_some_and(|n| {
                                if key == "symbols" {
                                    simple_name(n)
                                } else {
                                    full_name(n)
                                }
                            });
                            if !ok {
                                return Err(format!("{key} entry {n} is not a valid Avro name"));
                            }
                        }
                    }
                    "type" | "items" | "values" => walk_type(value, depth + 1)?,
                    "fields" => {
                        let fields = value.as_array().ok_or("fields must be a list")?;
                        for f in fields {
                            walk_type(f, depth + 1)?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        _ => Err(format!("{v} is not a schema")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_panic_the_parser_are_refused() {
        for bad in [
            r#"{"type":"record","name":"my-record","fields":[]}"#,
            r#"{"type":"record","name":"R","aliases":["old-name"],"fields":[]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"bad-ref"}}]}"#,
            r#"{"type":"record","name":"R","namespace":"a..b","fields":[]}"#,
            r#"{"type":"enum","name":"E","symbols":["ok","not ok"]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":["null","x-y"]}]}"#,
        ] {
            assert!(check_names(bad).is_err(), "{bad}");
        }
        for good in [
            r#"{"type":"record","name":"iot.Reading","namespace":"","fields":[{"name":"a","type":{"type":"array","items":"iot.Reading"},"default":[],"x-attr":{"any-thing":1}}]}"#,
            r#""string""#,
            r#"["null",{"type":"fixed","name":"F","size":4}]"#,
        ] {
            assert_eq!(check_names(good), Ok(()), "{good}");
            apache_avro::Schema::parse_str(good).unwrap();
        }
    }
}
