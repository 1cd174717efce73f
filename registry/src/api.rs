//! The Confluent Schema Registry REST API over a [`Registry`]: one request in; the
//! answer, and the records to make durable before it is sent, out.
//!
//! The subset served (docs/schema-registry.md lists it): subjects and their
//! versions, schemas by id, compatibility levels and checks, the mode (always
//! READWRITE). Paths are percent-decoded segment by segment, so a subject may hold
//! any character a client encodes; unknown query parameters are ignored, as
//! Confluent's server does.
//!
//! Never: changes the state (the server applies the records once durable).

use crate::compat::Level;
use crate::refs::Reference;
use crate::store::{Found, Record, Registry, RegistryError, VersionRef};
use serde_json::{json, Value};

/// The media type Confluent's server answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// One HTTP request, as read off the connection.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, still percent-encoded, without the query.
    pub path: &'a str,
    /// What followed `?`, or "".
    pub query: &'a str,
    pub body: &'a [u8],
}

/// What to answer, and what must be durable (then applied) before answering.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub records: Vec<Record>,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body: body.to_string(),
            records: Vec::new(),
        }
    }

    fn writing(body: Value, records: Vec<Record>) -> Answer {
        Answer {
            records,
            ..Answer::ok(body)
        }
    }

    /// An error as Confluent's clients read it.
    pub fn error(e: &RegistryError) -> Answer {
        Answer {
            status: e.status,
            body: e.body(),
            records: Vec::new(),
        }
    }

    /// An HTTP-level error: the error code is the status, as Confluent's server
    /// answers errors of the transport (unknown path, wrong method, too large).
    pub fn http(status: u16, message: &str) -> Answer {
        Answer::error(&RegistryError::new(
            status,
            u32::from(status),
            message.to_string(),
        ))
    }
}

/// A parsed query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Query {
        Query(
            form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// A request body that registers, looks up or checks a schema.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// A schema to register, look up or check: its text, type and references.
struct Candidate {
    text: String,
    kind: Option<String>,
    references: Vec<Reference>,
}

fn schema_body(body: &[u8]) -> Result<Candidate, RegistryError> {
    let b: SchemaBody = serde_json::from_slice(body)
        .map_err(|e| RegistryError::new(400, 400, format!("Unrecognizable request body: {e}")))?;
    match b.schema {
        Some(text) if !text.trim().is_empty() => Ok(Candidate {
            text,
            kind: b.schema_type,
            references: b.references,
        }),
        _ => Err(RegistryError::invalid_schema("the request has no schema")),
    }
}

fn level_body(body: &[u8]) -> Result<Level, RegistryError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::new(400, 400, format!("Unrecognizable request body: {e}")))?;
    let text = v
        .get("compatibility")
        .or_else(|| v.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .unwrap_or("");
    text.parse::<Level>().map_err(|why| {
        RegistryError::new(422, 42203, format!("Invalid compatibility level: {why}"))
    })
}

fn found(f: &Found) -> Value {
    let mut v =
        json!({ "subject": f.subject, "version": f.version, "id": f.id, "schema": f.schema });
    if !f.references.is_empty() {
        v["references"] = json!(f.references);
    }
    v
}

/// The schema text as the `/schema` endpoints give it: the schema itself, as JSON.
fn raw(schema: &str) -> Answer {
    Answer {
        status: 200,
        body: schema.to_string(),
        records: Vec::new(),
    }
}

fn id_of(text: &str) -> Result<u32, RegistryError> {
    text.parse::<u32>()
        .ok()
        .filter(|&id| id >= 1)
        .ok_or_else(|| RegistryError::schema_not_found(text))
}

/// Answers one request.
pub fn handle(reg: &Registry, req: &Request<'_>) -> Answer {
    let segments: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let q = Query::parse(req.query);
    let answered = match parts.first().copied() {
        None => match req.method {
            "GET" => Some(Ok(Answer::ok(json!({})))),
            _ => None,
        },
        Some("subjects") => subjects(reg, req, &parts[1..], &q),
        Some("schemas") => schemas(reg, req.method, &parts[1..]),
        Some("config") => config(reg, req, &parts[1..], &q),
        Some("compatibility") => compatibility(reg, req, &parts[1..], &q),
        Some("mode") => mode(reg, req, &parts[1..]),
        Some(_) => Some(Err(RegistryError::new(
            404,
            404,
            "HTTP 404 Not Found".into(),
        ))),
    };
    match answered {
        Some(Ok(a)) if !a.records.is_empty() && reg.damaged().is_some() => {
            Answer::error(&RegistryError::new(
                422,
                42205,
                format!(
                    "Operation not permitted: the registry is read-only ({})",
                    reg.damaged().unwrap_or_default()
                ),
            ))
        }
        Some(Ok(a)) => a,
        Some(Err(e)) => Answer::error(&e),
        None if known_path(&parts) => Answer::http(405, "HTTP 405 Method Not Allowed"),
        None => Answer::http(404, "HTTP 404 Not Found"),
    }
}

/// Whether a path names a resource at all (so a wrong method is 405, not 404).
fn known_path(parts: &[&str]) -> bool {
    matches!(
        parts,
        [] | ["subjects", ..]
            | ["schemas", ..]
            | ["config", ..]
            | ["compatibility", ..]
            | ["mode", ..]
    )
}

type Routed = Option<Result<Answer, RegistryError>>;

fn subjects(reg: &Registry, req: &Request<'_>, parts: &[&str], q: &Query) -> Routed {
    let deleted = q.flag("deleted");
    let permanent = q.flag("permanent");
    Some(match (req.method, parts) {
        ("GET", []) => Ok(Answer::ok(json!(reg.subjects(deleted)))),
        ("POST", [s]) => schema_body(req.body).and_then(|c| {
            reg.lookup(s, &c.text, c.kind.as_deref(), &c.references)
                .map(|f| Answer::ok(found(&f)))
        }),
        ("DELETE", [s]) => reg
            .delete_subject(s, permanent)
            .map(|(versions, records)| Answer::writing(json!(versions), records)),
        ("GET", [s, "versions"]) => reg.versions(s, deleted).map(|v| Answer::ok(json!(v))),
        ("POST", [s, "versions"]) => schema_body(req.body).and_then(|c| {
            reg.register(s, &c.text, c.kind.as_deref(), &c.references)
                .map(|(id, records)| Answer::writing(json!({ "id": id }), records))
        }),
        ("GET", [s, "versions", v]) => VersionRef::parse(v)
            .and_then(|v| reg.version(s, v, deleted))
            .map(|f| Answer::ok(found(&f))),
        ("GET", [s, "versions", v, "schema"]) => VersionRef::parse(v)
            .and_then(|v| reg.version(s, v, deleted))
            .map(|f| raw(&f.schema)),
        ("GET", [s, "versions", v, "referencedby"]) => VersionRef::parse(v)
            .and_then(|v| reg.version(s, v, deleted))
            .map(|f| Answer::ok(json!(reg.referenced_by(s, f.version, false)))),
        ("DELETE", [s, "versions", v]) => VersionRef::parse(v)
            .and_then(|v| reg.delete_version(s, v, permanent))
            .map(|(version, records)| Answer::writing(json!(version), records)),
        _ => return None,
    })
}

fn schemas(reg: &Registry, method: &str, parts: &[&str]) -> Routed {
    Some(match (method, parts) {
        ("GET", ["types"]) => Ok(Answer::ok(json!(["AVRO"]))),
        ("GET", ["ids", id]) => id_of(id).and_then(|id| {
            let mut v = json!({ "schema": reg.schema(id)? });
            if !reg.references_of(id).is_empty() {
                v["references"] = json!(reg.references_of(id));
            }
            Ok(Answer::ok(v))
        }),
        ("GET", ["ids", id, "schema"]) => id_of(id).and_then(|id| reg.schema(id)).map(raw),
        ("GET", ["ids", id, "versions"]) => id_of(id).and_then(|id| {
            reg.schema(id)?;
            let uses: Vec<Value> = reg
                .uses_of(id)
                .into_iter()
                .map(|(subject, version)| json!({ "subject": subject, "version": version }))
                .collect();
            Ok(Answer::ok(json!(uses)))
        }),
        ("GET", ["ids", id, "subjects"]) => id_of(id).and_then(|id| {
            reg.schema(id)?;
            let mut subjects: Vec<String> = reg.uses_of(id).into_iter().map(|(s, _)| s).collect();
            subjects.dedup();
            Ok(Answer::ok(json!(subjects)))
        }),
        _ => return None,
    })
}

fn config(reg: &Registry, req: &Request<'_>, parts: &[&str], q: &Query) -> Routed {
    Some(match (req.method, parts) {
        ("GET", []) => Ok(Answer::ok(
            json!({ "compatibilityLevel": reg.level(None).name() }),
        )),
        ("PUT", []) => level_body(req.body).map(|level| {
            Answer::writing(
                json!({ "compatibility": level.name() }),
                vec![Record::Config {
                    subject: None,
                    level: Some(level),
                }],
            )
        }),
        ("GET", [s]) => match reg.own_level(s) {
            Some(level) => Ok(Answer::ok(json!({ "compatibilityLevel": level.name() }))),
            None if q.flag("defaultToGlobal") => Ok(Answer::ok(
                json!({ "compatibilityLevel": reg.level(None).name() }),
            )),
            None => Err(no_subject_level(s)),
        },
        ("PUT", [s]) => level_body(req.body).map(|level| {
            Answer::writing(
                json!({ "compatibility": level.name() }),
                vec![Record::Config {
                    subject: Some(s.to_string()),
                    level: Some(level),
                }],
            )
        }),
        ("DELETE", [s]) => match reg.own_level(s) {
            Some(level) => Ok(Answer::writing(
                json!({ "compatibilityLevel": level.name() }),
                vec![Record::Config {
                    subject: Some(s.to_string()),
                    level: None,
                }],
            )),
            None => Err(no_subject_level(s)),
        },
        _ => return None,
    })
}

fn no_subject_level(s: &str) -> RegistryError {
    RegistryError::new(
        404,
        40408,
        format!("Subject '{s}' does not have subject-level compatibility configured"),
    )
}

fn compatibility(reg: &Registry, req: &Request<'_>, parts: &[&str], q: &Query) -> Routed {
    let which = match (req.method, parts) {
        ("POST", ["subjects", s, "versions", v]) => Some((*s, Some(*v))),
        ("POST", ["subjects", s, "versions"]) => Some((*s, None)),
        _ => None,
    };
    let (subject, version) = which?;
    Some(schema_body(req.body).and_then(|c| {
        let (text, kind, refs) = (&c.text, c.kind.as_deref(), &c.references);
        let why = match version {
            Some(v) => reg.compatible(subject, VersionRef::parse(v)?, text, kind, refs)?,
            None => reg.compatible_with_all(subject, text, kind, refs)?,
        };
        let mut body = json!({ "is_compatible": why.is_empty() });
        if q.flag("verbose") {
            body["messages"] = json!(why);
        }
        Ok(Answer::ok(body))
    }))
}

fn mode(reg: &Registry, req: &Request<'_>, parts: &[&str]) -> Routed {
    let now = if reg.damaged().is_some() {
        "READONLY"
    } else {
        "READWRITE"
    };
    Some(match (req.method, parts) {
        ("GET", [] | [_]) => Ok(Answer::ok(json!({ "mode": now }))),
        ("PUT", [] | [_]) => {
            let v: Value = serde_json::from_slice(req.body).unwrap_or(Value::Null);
            match v.get("mode").and_then(Value::as_str) {
                Some("READWRITE") => Ok(Answer::ok(json!({ "mode": "READWRITE" }))),
                other => Err(RegistryError::new(
                    422,
                    42204,
                    format!(
                        "Invalid mode {}: this registry serves READWRITE only",
                        other.unwrap_or("(none)")
                    ),
                )),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(reg: &mut Registry, method: &str, target: &str, body: &str) -> (u16, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let a = handle(
            reg,
            &Request {
                method,
                path,
                query,
                body: body.as_bytes(),
            },
        );
        a.records.into_iter().for_each(|r| reg.apply(r));
        let v = serde_json::from_str(&a.body).unwrap_or(Value::String(a.body));
        (a.status, v)
    }

    fn schema_request(fields: &str) -> String {
        let schema = format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#);
        json!({ "schema": schema }).to_string()
    }

    #[test]
    fn the_confluent_paths_answer_as_confluent_does() {
        let mut r = Registry::default();
        let v1 = schema_request(r#"{"name":"a","type":"string"}"#);
        let (s, v) = call(
            &mut r,
            "POST",
            "/subjects/t%2Fvalue/versions?normalize=false",
            &v1,
        );
        assert_eq!((s, v), (200, json!({"id": 1})));
        let (s, v) = call(&mut r, "GET", "/subjects", "");
        assert_eq!((s, v), (200, json!(["t/value"])));
        let (_, v) = call(&mut r, "GET", "/subjects/t%2Fvalue/versions/latest", "");
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], 1);
        let (_, v) = call(&mut r, "GET", "/schemas/ids/1/schema", "");
        assert_eq!(v["name"], "R");
        let (_, v) = call(&mut r, "GET", "/schemas/ids/1/versions", "");
        assert_eq!(v, json!([{"subject": "t/value", "version": 1}]));
        let (s, v) = call(&mut r, "GET", "/schemas/ids/7", "");
        assert_eq!((s, v["error_code"].clone()), (404, json!(40403)));
        let (s, v) = call(&mut r, "GET", "/subjects/nobody/versions", "");
        assert_eq!((s, v["error_code"].clone()), (404, json!(40401)));
        let (s, v) = call(&mut r, "GET", "/subjects/t%2Fvalue/versions/9", "");
        assert_eq!((s, v["error_code"].clone()), (404, json!(40402)));
        let (s, v) = call(
            &mut r,
            "POST",
            "/subjects/x/versions",
            r#"{"schema":"{nope"}"#,
        );
        assert_eq!((s, v["error_code"].clone()), (422, json!(42201)));
        let (s, _) = call(&mut r, "PATCH", "/subjects", "");
        assert_eq!(s, 405);
        let (s, _) = call(&mut r, "GET", "/nothing/here", "");
        assert_eq!(s, 404);
    }

    #[test]
    fn levels_and_checks() {
        let mut r = Registry::default();
        let v1 = schema_request(r#"{"name":"a","type":"string"}"#);
        let breaking = schema_request(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        call(&mut r, "POST", "/subjects/s/versions", &v1);
        let (_, v) = call(
            &mut r,
            "POST",
            "/compatibility/subjects/s/versions/latest?verbose=true",
            &breaking,
        );
        assert_eq!(v["is_compatible"], false);
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(1));
        let (s, v) = call(&mut r, "POST", "/subjects/s/versions", &breaking);
        assert_eq!((s, v["error_code"].clone()), (409, json!(409)));
        let (s, v) = call(&mut r, "GET", "/config/s", "");
        assert_eq!((s, v["error_code"].clone()), (404, json!(40408)));
        let (_, v) = call(&mut r, "GET", "/config/s?defaultToGlobal=true", "");
        assert_eq!(v["compatibilityLevel"], "BACKWARD");
        let (s, v) = call(&mut r, "PUT", "/config/s", r#"{"compatibility":"NONE"}"#);
        assert_eq!((s, v), (200, json!({"compatibility": "NONE"})));
        let (s, v) = call(&mut r, "POST", "/subjects/s/versions", &breaking);
        assert_eq!((s, v), (200, json!({"id": 2})));
        let (s, v) = call(&mut r, "PUT", "/config", r#"{"compatibility":"SOMETIMES"}"#);
        assert_eq!((s, v["error_code"].clone()), (422, json!(42203)));
        let (_, v) = call(&mut r, "DELETE", "/config/s", "");
        assert_eq!(v["compatibilityLevel"], "NONE");
        let (_, v) = call(&mut r, "GET", "/config", "");
        assert_eq!(v["compatibilityLevel"], "BACKWARD");
        let (s, _) = call(&mut r, "PUT", "/mode", r#"{"mode":"IMPORT"}"#);
        assert_eq!(s, 422);
        // Damaged records at start: reads go on, changes are refused.
        r.mark_damaged("a record at offset 7 cannot be read".into());
        let (_, v) = call(&mut r, "GET", "/mode", "");
        assert_eq!(v["mode"], "READONLY");
        let (s, v) = call(&mut r, "PUT", "/config", r#"{"compatibility":"NONE"}"#);
        assert_eq!((s, v["error_code"].clone()), (422, json!(42205)));
        let (s, _) = call(&mut r, "GET", "/subjects/s/versions/1", "");
        assert_eq!(s, 200);
        let (s, v) = call(
            &mut r,
            "POST",
            "/subjects/s/versions",
            r#"{"schema":"{}","references":[{"name":"x","subject":"y","version":1}]}"#,
        );
        assert_eq!((s, v["error_code"].clone()), (422, json!(42201)), "{v}");
    }

    #[test]
    fn references_name_types_of_other_subjects() {
        let mut r = Registry::default();
        let location = r#"{"type":"record","name":"Location","namespace":"geo","fields":[{"name":"lat","type":"double"}]}"#;
        let body = json!({ "schema": location }).to_string();
        let (s, _) = call(&mut r, "POST", "/subjects/location/versions", &body);
        assert_eq!(s, 200);
        let reading = r#"{"type":"record","name":"Reading","namespace":"iot","fields":[{"name":"at","type":"geo.Location"}]}"#;
        let refs = json!([{"name": "geo.Location", "subject": "location", "version": 1}]);
        let body = json!({ "schema": reading, "references": refs }).to_string();
        let (s, v) = call(&mut r, "POST", "/subjects/readings-value/versions", &body);
        assert_eq!((s, v), (200, json!({"id": 2})));
        let (_, v) = call(&mut r, "GET", "/subjects/readings-value/versions/1", "");
        assert_eq!(v["references"], refs);
        let (_, v) = call(&mut r, "GET", "/schemas/ids/2", "");
        assert_eq!(v["references"], refs);
        assert!(r.whole_schema(2).unwrap().contains("\"lat\""));
        let (_, v) = call(
            &mut r,
            "GET",
            "/subjects/location/versions/1/referencedby",
            "",
        );
        assert_eq!(v, json!([2]));
        // The same schema again, with its references: the same id.
        let (_, v) = call(&mut r, "POST", "/subjects/readings-value", &body);
        assert_eq!(v["id"], 2);
        // A referenced version cannot go while a schema uses it.
        let (s, v) = call(&mut r, "DELETE", "/subjects/location/versions/1", "");
        assert_eq!((s, v["error_code"].clone()), (422, json!(42206)));
        // A reference to nothing: an invalid schema.
        let refs = json!([{"name": "geo.Location", "subject": "nowhere", "version": 1}]);
        let bad = json!({ "schema": reading, "references": refs }).to_string();
        let (s, v) = call(&mut r, "POST", "/subjects/other/versions", &bad);
        assert_eq!((s, v["error_code"].clone()), (422, json!(42201)));
    }
}
