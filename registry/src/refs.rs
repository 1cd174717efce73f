//! Schema references, as Confluent keeps them: a schema names types defined in
//! other subjects' versions (`{"name": "iot.Location", "subject": "location",
//! "version": 1}`) instead of defining them itself.
//!
//! A schema with references is made whole by [`expand`]: each referenced named type
//! is written out in full where it is first used (after that, its name alone
//! refers to it, as Avro allows), recursively. The whole schema is what ids,
//! compatibility and jobs work with; the text as registered, with its references,
//! is what the API gives back.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// A reference: the fully-qualified name of a named type, and the subject version
/// that defines it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

/// How deep references may nest.
pub const DEPTH_MAX: usize = 32;
/// How large a schema made whole may be.
pub const WHOLE_BYTES_MAX: usize = 4 << 20;

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// `text` with every type named in `defs` (fully-qualified name → schema JSON)
/// written out where first used.
pub fn expand(text: &str, defs: &HashMap<String, String>) -> Result<String, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut parsed = HashMap::new();
    for (name, def) in defs {
        let v: Value = serde_json::from_str(def)
            .map_err(|e| format!("the schema referenced as {name} is not JSON: {e}"))?;
        parsed.insert(name.clone(), v);
    }
    let mut x = Expander {
        defs: &parsed,
        defined: HashSet::new(),
        depth: 0,
    };
    let whole = x.walk(root, None)?.to_string();
    if whole.len() > WHOLE_BYTES_MAX {
        return Err(format!(
            "the schema with its references written out is {} bytes, over {WHOLE_BYTES_MAX}",
            whole.len()
        ));
    }
    Ok(whole)
}

/// The full name of the named type a schema defines at its top, if it does.
pub fn defined_name(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let name = v.get("name")?.as_str()?;
    let ns = v.get("namespace").and_then(Value::as_str);
    Some(own_name(name, ns, None).0)
}

/// A named type's full name and namespace: a dotted name is full by itself (its
/// namespace is the part before the last dot); else the `namespace` given, else
/// the enclosing one.
fn own_name(
    name: &str,
    namespace: Option<&str>,
    enclosing: Option<&str>,
) -> (String, Option<String>) {
    if let Some((ns, _)) = name.rsplit_once('.') {
        return (name.to_string(), Some(ns.to_string()));
    }
    let ns = namespace.or(enclosing).filter(|n| !n.is_empty());
    (full_name(name, ns), ns.map(str::to_string))
}

struct Expander<'a> {
    defs: &'a HashMap<String, Value>,
    /// Named types already written out.
    defined: HashSet<String>,
    depth: usize,
}

/// The full name of `name` inside namespace `ns`.
fn full_name(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

impl Expander<'_> {
    fn walk(&mut self, v: Value, ns: Option<&str>) -> Result<Value, String> {
        match v {
            Value::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
                // In the enclosing namespace, else in the null namespace.
                let mut full = full_name(&name, ns);
                if !self.defs.contains_key(&full) && !name.contains('.') {
                    full = name.clone();
                }
                match self.defs.get(&full) {
                    Some(def) if !self.defined.contains(&full) => {
                        self.depth += 1;
                        if self.depth > DEPTH_MAX {
                            return Err(format!("references nest deeper than {DEPTH_MAX}"));
                        }
                        // Written out once: later uses name it.
                        self.defined.insert(full.clone());
                        // The definition is read in its own namespace.
                        let def_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                        let out = self.walk(def.clone(), def_ns.as_deref());
                        self.depth -= 1;
                        out
                    }
                    _ => Ok(Value::String(name)),
                }
            }
            Value::Array(branches) => branches
                .into_iter()
                .map(|b| self.walk(b, ns))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(o) => self.object(o, ns),
            other => Ok(other),
        }
    }

    fn object(&mut self, mut o: Map<String, Value>, ns: Option<&str>) -> Result<Value, String> {
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "record" | "error" | "enum" | "fixed" => {
                let name = o.get("name").and_then(Value::as_str).unwrap_or("");
                let namespace = o.get("namespace").and_then(Value::as_str);
                let (full, own_ns) = own_name(name, namespace, ns);
                self.defined.insert(full);
                if let Some(Value::Array(fields)) = o.remove("fields") {
                    let mut out = Vec::with_capacity(fields.len());
                    for f in fields {
                        let Value::Object(mut f) = f else {
                            out.push(f);
                            continue;
                        };
                        if let Some(t) = f.remove("type") {
                            f.insert("type".into(), self.walk(t, own_ns.as_deref())?);
                        }
                        out.push(Value::Object(f));
                    }
                    o.insert("fields".into(), Value::Array(out));
                }
                Ok(Value::Object(o))
            }
            _ => {
                for key in ["items", "values", "type"] {
                    if let Some(t) = o.remove(key) {
                        let t = match (key, &t) {
                            // {"type": "array"} keeps its own type keyword.
                            ("type", Value::String(s)) if s == "array" || s == "map" => t,
                            _ => self.walk(t, ns)?,
                        };
                        o.insert(key.into(), t);
                    }
                }
                Ok(Value::Object(o))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_types_are_written_out_where_first_used() {
        let location = r#"{"type":"record","name":"Location","namespace":"geo","fields":[{"name":"lat","type":"double"},{"name":"unit","type":{"type":"enum","name":"Unit","symbols":["DEG"]}}]}"#;
        let reading = r#"{"type":"record","name":"Reading","namespace":"iot","fields":[
            {"name":"at","type":"geo.Location"},
            {"name":"was","type":["null","geo.Location"]},
            {"name":"many","type":{"type":"array","items":"geo.Location"}}]}"#;
        let defs = HashMap::from([("geo.Location".to_string(), location.to_string())]);
        let whole = expand(reading, &defs).unwrap();
        let schema = apache_avro::Schema::parse_str(&whole).unwrap();
        let canonical = schema.canonical_form();
        assert_eq!(canonical.matches("\"lat\"").count(), 1, "{canonical}");
        assert!(canonical.contains("geo.Location"), "{canonical}");
        // Without the definition, the name stays a name (and does not parse).
        let bare = expand(reading, &HashMap::new()).unwrap();
        assert!(apache_avro::Schema::parse_str(&bare).is_err());
    }
}
