//! The registry's state and the records that change it.
//!
//! A schema has one global id per distinct schema as Avro parses it (spacing and key
//! order aside; defaults, logical types and docs count): registering the same
//! schema under another subject (or again, after a soft delete) gives the same id. A subject's versions count up from 1 and are never reused, even after a
//! permanent delete. A soft-deleted version is hidden unless asked for
//! (`deleted=true`) and no longer counts for compatibility; a permanent delete
//! (after a soft one, as Confluent requires) forgets it.
//!
//! Commands check against the state and return the records to make durable; only
//! [`Registry::apply`] changes the state.

use crate::compat::{self, Level};
use crate::refs::{self, Reference};
use apache_avro::Schema;
use std::collections::{BTreeMap, HashMap};

/// An error as the Confluent Schema Registry answers it: an HTTP status and a body
/// `{"error_code": ..., "message": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    pub fn new(status: u16, code: u32, message: String) -> RegistryError {
        RegistryError {
            status,
            code,
            message,
        }
    }

    pub fn subject_not_found(s: &str) -> RegistryError {
        RegistryError::new(404, 40401, format!("Subject '{s}' not found."))
    }

    pub fn version_not_found(s: &str, v: &str) -> RegistryError {
        RegistryError::new(
            404,
            40402,
            format!("Version {v} not found for subject '{s}'."),
        )
    }

    pub fn schema_not_found(what: &str) -> RegistryError {
        RegistryError::new(404, 40403, format!("Schema {what} not found."))
    }

    pub fn invalid_schema(why: &str) -> RegistryError {
        RegistryError::new(422, 42201, format!("Invalid schema: {why}"))
    }

    pub fn invalid_version(v: &str) -> RegistryError {
        RegistryError::new(
            422,
            42202,
            format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )
    }

    pub fn incompatible(why: &[String]) -> RegistryError {
        RegistryError::new(
            409,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject: {}",
                why.join("; ")
            ),
        )
    }

    /// The body Confluent's clients read.
    pub fn body(&self) -> String {
        serde_json::json!({ "error_code": self.code, "message": self.message }).to_string()
    }
}

/// One change to the registry, as it is made durable.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Record {
    /// `subject` gets version `version` of schema `id` (whose text is `schema`).
    Schema {
        subject: String,
        version: u32,
        id: u32,
        schema: String,
        /// The types it takes from other subjects' versions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        references: Vec<Reference>,
    },
    /// A version is deleted, soft or for good.
    DeleteVersion {
        subject: String,
        version: u32,
        permanent: bool,
    },
    /// Every version of a subject is deleted, soft or for good.
    DeleteSubject { subject: String, permanent: bool },
    /// The global level (`subject` none) or a subject's; `level` none removes a
    /// subject's own level.
    Config {
        subject: Option<String>,
        level: Option<Level>,
    },
}

/// A version of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Default, Debug)]
struct Subject {
    versions: Vec<Version>,
    /// Versions ever given, so a number is never given again.
    last_version: u32,
    level: Option<Level>,
}

impl Subject {
    fn live(&self) -> impl DoubleEndedIterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }
}

/// Which version a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    /// `latest`, `-1` or a number from 1 to 2^31-1.
    pub fn parse(text: &str) -> Result<VersionRef, RegistryError> {
        match text {
            "latest" | "-1" => Ok(VersionRef::Latest),
            n => match n.parse::<u32>() {
                Ok(v) if (1..=i32::MAX as u32).contains(&v) => Ok(VersionRef::Number(v)),
                _ => Err(RegistryError::invalid_version(text)),
            },
        }
    }
}

/// A subject's version as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// The registry's state.
#[derive(Default, Debug)]
pub struct Registry {
    /// Schema text by id, as first registered.
    schemas: BTreeMap<u32, String>,
    /// The references of the schemas that have some, by id.
    references: BTreeMap<u32, Vec<Reference>>,
    /// Id by identity (the whole schema as parsed, `parse`).
    ids: HashMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    level: Level,
    /// Why changes are refused: a record could not be replayed, so the next id
    /// or version might repeat one already given.
    damaged: Option<String>,
}

/// Refuses every type but Avro, by name.
fn avro_only(schema_type: Option<&str>) -> Result<(), RegistryError> {
    match schema_type.unwrap_or("AVRO") {
        "AVRO" => Ok(()),
        other => Err(RegistryError::invalid_schema(&format!(
            "schemaType {other} is not supported; this registry keeps AVRO schemas"
        ))),
    }
}

impl Registry {
    /// The schema made whole (its references written out) and its identity, or
    /// Confluent's invalid-schema error.
    fn parse(
        &self,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
    ) -> Result<(Schema, String), RegistryError> {
        avro_only(schema_type)?;
        let whole = self.whole(text, references)?;
        crate::valid::check_names(&whole).map_err(|e| RegistryError::invalid_schema(&e))?;
        let schema = crate::guard::contained("parsing the schema", || {
            Schema::parse_str(&whole).map_err(|e| e.to_string())
        })
        .and_then(|parsed| parsed)
        .map_err(|e| RegistryError::invalid_schema(&e))?;
        // The identity: the whole schema as Avro reads it (whitespace and key order
        // do not count; defaults, logical types, docs and aliases do, as in
        // Confluent's registry), not the parsing canonical form, which drops them.
        // The references count too: the same whole schema registered inline and
        // with references is two schemas, as in Confluent's registry.
        let identity = serde_json::to_string(&(&schema, references))
            .map_err(|e| RegistryError::invalid_schema(&e.to_string()))?;
        Ok((schema, identity))
    }

    /// `text` with the types its references name written out.
    fn whole(&self, text: &str, references: &[Reference]) -> Result<String, RegistryError> {
        if references.is_empty() {
            return Ok(text.to_string());
        }
        let mut defs = HashMap::new();
        self.definitions(references, &mut defs, 0)?;
        refs::expand(text, &defs).map_err(|e| RegistryError::invalid_schema(&e))
    }

    /// Every type `references` define, theirs included, by full name.
    fn definitions(
        &self,
        references: &[Reference],
        defs: &mut HashMap<String, String>,
        depth: usize,
    ) -> Result<(), RegistryError> {
        if depth > refs::DEPTH_MAX {
            return Err(RegistryError::invalid_schema(&format!(
                "references nest deeper than {}",
                refs::DEPTH_MAX
            )));
        }
        for r in references {
            if defs.contains_key(&r.name) {
                continue;
            }
            // A version soft-deleted since is still what the schema was made of.
            let found = self
                .version(&r.subject, VersionRef::Number(r.version), true)
                .map_err(|e| {
                    RegistryError::invalid_schema(&format!(
                        "reference {} (subject '{}' version {}): {}",
                        r.name, r.subject, r.version, e.message
                    ))
                })?;
            let defined = refs::defined_name(&found.schema).unwrap_or_default();
            if defined != r.name {
                return Err(RegistryError::invalid_schema(&format!(
                    "reference {} names subject '{}' version {}, which defines {defined:?}",
                    r.name, r.subject, r.version
                )));
            }
            defs.insert(r.name.clone(), found.schema);
            self.definitions(&found.references, defs, depth + 1)?;
        }
        Ok(())
    }

    /// Schema `id` made whole, for a reader (its references written out).
    pub fn whole_schema(&self, id: u32) -> Result<String, RegistryError> {
        let text = self.schema(id)?;
        self.whole(text, self.references_of(id))
    }

    /// The references of schema `id` (none for most).
    pub fn references_of(&self, id: u32) -> &[Reference] {
        self.references.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The ids of the schemas that reference `subject` version `version`: those a
    /// live version uses, or (`any`) every one, still readable by id.
    pub fn referenced_by(&self, subject: &str, version: u32, any: bool) -> Vec<u32> {
        self.references
            .iter()
            .filter(|(_, refs)| {
                refs.iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|(id, _)| *id)
            .filter(|id| any || !self.uses_of(*id).is_empty())
            .collect()
    }

    /// Changes the state by one durable record.
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Schema {
                subject,
                version,
                id,
                schema,
                references,
            } => {
                if let Ok((_, canonical)) = self.parse(&schema, None, &references) {
                    self.ids.entry(canonical).or_insert(id);
                }
                self.schemas.entry(id).or_insert(schema);
                if !references.is_empty() {
                    self.references.entry(id).or_insert(references);
                }
                let s = self.subjects.entry(subject).or_default();
                s.versions.retain(|v| v.version != version);
                s.versions.push(Version {
                    version,
                    id,
                    deleted: false,
                });
                s.versions.sort_by_key(|v| v.version);
                s.last_version = s.last_version.max(version);
            }
            Record::DeleteVersion {
                subject,
                version,
                permanent,
            } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    if permanent {
                        s.versions.retain(|v| v.version != version);
                    } else if let Some(v) = s.versions.iter_mut().find(|v| v.version == version) {
                        v.deleted = true;
                    }
                }
            }
            Record::DeleteSubject { subject, permanent } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    if permanent {
                        s.versions.clear();
                        s.level = None;
                    } else {
                        s.versions.iter_mut().for_each(|v| v.deleted = true);
                    }
                }
            }
            Record::Config {
                subject: None,
                level,
            } => self.level = level.unwrap_or_default(),
            Record::Config {
                subject: Some(subject),
                level,
            } => self.subjects.entry(subject).or_default().level = level,
        }
    }

    /// The subjects with a live version (with `deleted`, soft-deleted ones too).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.versions.iter().any(|v| deleted || !v.deleted))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn subject(&self, name: &str) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(name)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| RegistryError::subject_not_found(name))
    }

    /// A subject's version numbers.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let s = self.subject(subject)?;
        let v: Vec<u32> = s
            .versions
            .iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| v.version)
            .collect();
        if v.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(v)
    }

    /// One version of a subject.
    pub fn version(
        &self,
        subject: &str,
        which: VersionRef,
        deleted: bool,
    ) -> Result<Found, RegistryError> {
        let s = self.subject(subject)?;
        if !deleted && s.live().next().is_none() {
            // Every version soft-deleted: gone, as far as readers go.
            return Err(RegistryError::subject_not_found(subject));
        }
        let v = match which {
            VersionRef::Latest => s.live().last(),
            VersionRef::Number(n) => s
                .versions
                .iter()
                .find(|v| v.version == n && (deleted || !v.deleted)),
        }
        .ok_or_else(|| {
            let shown = match which {
                VersionRef::Latest => "latest".to_string(),
                VersionRef::Number(n) => n.to_string(),
            };
            RegistryError::version_not_found(subject, &shown)
        })?;
        Ok(Found {
            subject: subject.to_string(),
            version: v.version,
            id: v.id,
            schema: self.schemas.get(&v.id).cloned().unwrap_or_default(),
            references: self.references_of(v.id).to_vec(),
        })
    }

    /// A schema by id.
    pub fn schema(&self, id: u32) -> Result<&str, RegistryError> {
        self.schemas
            .get(&id)
            .map(String::as_str)
            .ok_or_else(|| RegistryError::schema_not_found(&format!("{id}")))
    }

    /// The (subject, version) pairs that use schema `id`.
    pub fn uses_of(&self, id: u32) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(name, s)| {
                s.live()
                    .filter(|v| v.id == id)
                    .map(|v| (name.clone(), v.version))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The level a subject is checked at (its own, else the global one).
    pub fn level(&self, subject: Option<&str>) -> Level {
        subject
            .and_then(|s| self.subjects.get(s))
            .and_then(|s| s.level)
            .unwrap_or(self.level)
    }

    /// Refuses every change from now on, for `why`.
    pub fn mark_damaged(&mut self, why: String) {
        self.damaged = Some(why);
    }

    /// Why changes are refused, if they are.
    pub fn damaged(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// Distinct schemas kept (ids given).
    pub fn schema_count(&self) -> usize {
        self.schemas.len()
    }

    /// A subject's own level, if it has one.
    pub fn own_level(&self, subject: &str) -> Option<Level> {
        self.subjects.get(subject).and_then(|s| s.level)
    }

    /// The version of `subject` that holds this schema, if one does (POST
    /// /subjects/{subject}).
    pub fn lookup(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
    ) -> Result<Found, RegistryError> {
        let s = self.subject(subject)?;
        if s.live().next().is_none() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let (_, canonical) = self.parse(text, schema_type, references)?;
        let id = self
            .ids
            .get(&canonical)
            .ok_or_else(|| RegistryError::schema_not_found(&format!("in subject '{subject}'")))?;
        let v = s
            .live()
            .find(|v| v.id == *id)
            .ok_or_else(|| RegistryError::schema_not_found(&format!("in subject '{subject}'")))?;
        self.version(subject, VersionRef::Number(v.version), false)
    }

    /// Registers a schema under a subject: the id it has (the same schema keeps its
    /// id across subjects) and the records to make durable (none when the subject
    /// already holds it as a live version).
    pub fn register(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
    ) -> Result<(u32, Vec<Record>), RegistryError> {
        let (schema, canonical) = self.parse(text, schema_type, references)?;
        let known = self.ids.get(&canonical).copied();
        let s = self.subjects.get(subject);
        if let (Some(id), Some(s)) = (known, s) {
            if s.live().any(|v| v.id == id) {
                return Ok((id, Vec::new()));
            }
        }
        let level = self.level(Some(subject));
        let live = self.checked_against(subject, level);
        let refs: Vec<&Schema> = live.iter().collect();
        compat::check(level, &schema, &refs).map_err(|why| RegistryError::incompatible(&why))?;
        let id = known.unwrap_or_else(|| self.schemas.keys().last().map_or(1, |last| last + 1));
        let version = s.map_or(1, |s| s.last_version + 1);
        Ok((
            id,
            vec![Record::Schema {
                subject: subject.to_string(),
                version,
                id,
                schema: text.to_string(),
                references: references.to_vec(),
            }],
        ))
    }

    /// Whether `text` may follow version `which` of the subject at its level (POST
    /// /compatibility/subjects/{s}/versions/{v}): against that one version, as
    /// Confluent checks it; the reasons it may not.
    pub fn compatible(
        &self,
        subject: &str,
        which: VersionRef,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
    ) -> Result<Vec<String>, RegistryError> {
        let (schema, _) = self.parse(text, schema_type, references)?;
        let found = self.version(subject, which, false)?;
        let (old, _) = self.parse(&found.schema, None, &found.references)?;
        Ok(compat::check(self.level(Some(subject)), &schema, &[&old])
            .err()
            .unwrap_or_default())
    }

    /// Whether `text` may be registered under `subject` now: the reasons it may
    /// not (POST /compatibility/subjects/{s}/versions).
    pub fn compatible_with_all(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
    ) -> Result<Vec<String>, RegistryError> {
        let (schema, _) = self.parse(text, schema_type, references)?;
        let level = self.level(Some(subject));
        let live = self.checked_against(subject, level);
        let refs: Vec<&Schema> = live.iter().collect();
        Ok(compat::check(level, &schema, &refs)
            .err()
            .unwrap_or_default())
    }

    /// The parsed live versions a new schema is checked against at `level`, oldest
    /// first: none at NONE, the latest (that parses) unless transitive, else all.
    /// Only those are parsed: a subject of many versions costs one parse.
    fn checked_against(&self, subject: &str, level: Level) -> Vec<Schema> {
        let Some(s) = self.subjects.get(subject) else {
            return Vec::new();
        };
        let parsed = |v: &Version| {
            let text = self.schemas.get(&v.id)?;
            let (schema, _) = self.parse(text, None, self.references_of(v.id)).ok()?;
            Some(schema)
        };
        match level {
            Level::None => Vec::new(),
            l if !l.transitive() => s.live().rev().find_map(parsed).into_iter().collect(),
            _ => s.live().filter_map(parsed).collect(),
        }
    }

    /// Confluent's 42206 when another schema references one of these versions: a
    /// live one (a soft delete), or any (a permanent delete, which would leave
    /// data written with the referencing schema unreadable).
    fn not_referenced(
        &self,
        subject: &str,
        versions: &[u32],
        permanent: bool,
    ) -> Result<(), RegistryError> {
        for &v in versions {
            let by = self.referenced_by(subject, v, permanent);
            if !by.is_empty() {
                return Err(RegistryError::new(
                    422,
                    42206,
                    format!("One or more references exist to the schema {{subject={subject}, version={v}}}: schema ids {by:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Deletes a version (soft first, then `permanent`); the version deleted.
    pub fn delete_version(
        &self,
        subject: &str,
        which: VersionRef,
        permanent: bool,
    ) -> Result<(u32, Vec<Record>), RegistryError> {
        let found = self.version(subject, which, permanent)?;
        self.not_referenced(subject, &[found.version], permanent)?;
        let soft = self
            .subject(subject)?
            .versions
            .iter()
            .any(|v| v.version == found.version && v.deleted);
        if permanent && !soft {
            return Err(RegistryError::new(
                404,
                40407,
                format!("Subject '{subject}' Version {} was not deleted first before being permanently deleted", found.version),
            ));
        }
        let record = Record::DeleteVersion {
            subject: subject.to_string(),
            version: found.version,
            permanent,
        };
        Ok((found.version, vec![record]))
    }

    /// Deletes every version of a subject (soft first, then `permanent`); the
    /// versions deleted.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<u32>, Vec<Record>), RegistryError> {
        let s = self.subject(subject)?;
        let all: Vec<u32> = s.versions.iter().map(|v| v.version).collect();
        self.not_referenced(subject, &all, permanent)?;
        let live: Vec<u32> = s.live().map(|v| v.version).collect();
        if permanent && !live.is_empty() {
            return Err(RegistryError::new(
                404,
                40405,
                format!(
                    "Subject '{subject}' was not deleted first before being permanently deleted"
                ),
            ));
        }
        if !permanent && live.is_empty() {
            return Err(RegistryError::new(
                404,
                40404,
                format!("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"),
            ));
        }
        let versions = if permanent {
            s.versions.iter().map(|v| v.version).collect()
        } else {
            live
        };
        let record = Record::DeleteSubject {
            subject: subject.to_string(),
            permanent,
        };
        Ok((versions, vec![record]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(extra: &str) -> String {
        format!(
            r#"{{"type":"record","name":"Reading","fields":[{{"name":"id","type":"string"}}{extra}]}}"#
        )
    }

    /// Registers and applies, as the server does once the records are durable.
    fn register(r: &mut Registry, subject: &str, text: &str) -> Result<u32, RegistryError> {
        let (id, records) = r.register(subject, text, None, &[])?;
        records.into_iter().for_each(|rec| r.apply(rec));
        Ok(id)
    }

    #[test]
    fn ids_follow_the_schema_and_versions_the_subject() {
        let mut r = Registry::default();
        let v1 = reading("");
        let v2 = reading(r#",{"name":"t","type":"double","default":0}"#);
        assert_eq!(register(&mut r, "a-value", &v1), Ok(1));
        assert_eq!(
            register(&mut r, "a-value", &v1),
            Ok(1),
            "again: nothing new"
        );
        assert_eq!(r.versions("a-value", false), Ok(vec![1]));
        // The same schema, spaced differently, under another subject: the same id.
        let spaced = v1.replace(',', ", ");
        assert_eq!(register(&mut r, "b-value", &spaced), Ok(1));
        assert_eq!(register(&mut r, "a-value", &v2), Ok(2));
        assert_eq!(
            r.version("a-value", VersionRef::Latest, false)
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            r.uses_of(1),
            vec![("a-value".into(), 1), ("b-value".into(), 1)]
        );
        assert_eq!(r.lookup("a-value", &v2, None, &[]).unwrap().version, 2);
        assert_eq!(r.schema(9).unwrap_err().code, 40403);
        assert_eq!(r.versions("nobody", false).unwrap_err().code, 40401);
    }

    #[test]
    fn schemas_that_panic_the_avro_parser_are_invalid_not_fatal() {
        let r = Registry::default();
        for text in [
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":9223372036854775808},"default":1}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"int","size":"x"},"default":1}]}"#,
            r#"{"type":"record","name":"Node","fields":[{"name":"kids","type":{"type":"array","items":["null","Node"]},"default":[{}]}]}"#,
            r#"{"type":"record","name":"my-record","fields":[]}"#,
        ] {
            let e = r.register("s", text, None, &[]).unwrap_err();
            assert_eq!(e.code, 42201, "{text}: {e:?}");
        }
    }

    #[test]
    fn references_are_checked_and_written_out_once() {
        let mut r = Registry::default();
        let loc = r#"{"type":"record","name":"Location","namespace":"geo","fields":[{"name":"lat","type":"double"}]}"#;
        register(&mut r, "loc", loc).unwrap();
        // A reference must name the type its version defines.
        let uses = |n: usize| {
            let fields: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"name":"f{i}","type":"X1"}}"#))
                .collect();
            format!(
                r#"{{"type":"record","name":"R","fields":[{}]}}"#,
                fields.join(",")
            )
        };
        let wrong = Reference {
            name: "X1".into(),
            subject: "loc".into(),
            version: 1,
        };
        let e = r.register("s", &uses(2), None, &[wrong]).unwrap_err();
        assert!(e.message.contains("defines"), "{e:?}");
        // Used 2,000 times, written out once.
        let text = uses(2000).replace("\"X1\"", "\"geo.Location\"");
        let right = Reference {
            name: "geo.Location".into(),
            subject: "loc".into(),
            version: 1,
        };
        let (id, records) = r
            .register("s", &text, None, std::slice::from_ref(&right))
            .unwrap();
        records.into_iter().for_each(|x| r.apply(x));
        let whole = r.whole_schema(id).unwrap();
        assert_eq!(whole.matches("\"lat\"").count(), 1);
        // Inline, the same whole schema is another schema (references count).
        let inline = text.replacen("\"geo.Location\"", loc, 1);
        assert_ne!(register(&mut r, "inline", &inline), Ok(id));
        // Soft-deleted, the referenced version still makes the schema whole; it
        // cannot be deleted for good while a schema references it.
        let e = r
            .delete_version("loc", VersionRef::Number(1), false)
            .unwrap_err();
        assert_eq!(e.code, 42206, "a live version references it");
        let (_, recs) = r.delete_subject("s", false).unwrap();
        recs.into_iter().for_each(|x| r.apply(x));
        let (_, recs) = r
            .delete_version("loc", VersionRef::Number(1), false)
            .unwrap();
        recs.into_iter().for_each(|x| r.apply(x));
        assert!(r.whole_schema(id).is_ok());
        let e = r
            .delete_version("loc", VersionRef::Number(1), true)
            .unwrap_err();
        assert_eq!(e.code, 42206, "data written with schema {id} needs it");
        // A subject whose every version is soft-deleted: not found.
        assert_eq!(
            r.lookup("s", &text, None, &[right]).unwrap_err().code,
            40401
        );
    }

    #[test]
    fn defaults_and_logical_types_make_another_schema() {
        let mut r = Registry::default();
        let plain = reading(r#",{"name":"t","type":"long","default":0}"#);
        let dated = reading(
            r#",{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"default":0}"#,
        );
        let other_default = reading(r#",{"name":"t","type":"long","default":5}"#);
        assert_eq!(register(&mut r, "s", &plain), Ok(1));
        assert_eq!(register(&mut r, "s", &dated), Ok(2));
        assert_eq!(register(&mut r, "s", &other_default), Ok(3));
        assert_eq!(r.versions("s", false), Ok(vec![1, 2, 3]));
        assert_eq!(r.schema(2), Ok(dated.as_str()));
    }

    #[test]
    fn incompatible_and_invalid_schemas_are_refused_as_confluent_does() {
        let mut r = Registry::default();
        register(&mut r, "s", &reading("")).unwrap();
        let breaking = reading(r#",{"name":"t","type":"double"}"#);
        let e = register(&mut r, "s", &breaking).unwrap_err();
        assert_eq!((e.status, e.code), (409, 409), "{e:?}");
        // A subject of its own level (NONE) takes it.
        r.apply(Record::Config {
            subject: Some("s".into()),
            level: Some(Level::None),
        });
        assert_eq!(register(&mut r, "s", &breaking), Ok(2));
        assert_eq!(r.level(Some("s")), Level::None);
        assert_eq!(r.level(Some("other")), Level::Backward);
        let e = register(&mut r, "s", "{not avro").unwrap_err();
        assert_eq!((e.status, e.code), (422, 42201));
        let e = r.register("s", "{}", Some("JSON"), &[]).unwrap_err();
        assert!(e.message.contains("JSON is not supported"), "{e:?}");
        assert_eq!(VersionRef::parse("0").unwrap_err().code, 42202);
        assert_eq!(VersionRef::parse("-1"), Ok(VersionRef::Latest));
    }

    #[test]
    fn deletes_are_soft_first_and_numbers_are_never_given_again() {
        let mut r = Registry::default();
        register(&mut r, "s", &reading("")).unwrap();
        let v2 = reading(r#",{"name":"t","type":"double","default":0}"#);
        register(&mut r, "s", &v2).unwrap();
        let e = r
            .delete_version("s", VersionRef::Number(2), true)
            .unwrap_err();
        assert_eq!(e.code, 40407, "permanent needs soft first");
        let (v, records) = r.delete_version("s", VersionRef::Number(2), false).unwrap();
        assert_eq!(v, 2);
        records.into_iter().for_each(|x| r.apply(x));
        assert_eq!(r.versions("s", false), Ok(vec![1]));
        assert_eq!(r.versions("s", true), Ok(vec![1, 2]));
        // Registered again: the same id, a new version number.
        assert_eq!(register(&mut r, "s", &v2), Ok(2));
        assert_eq!(r.versions("s", false), Ok(vec![1, 3]));
        let e = r.delete_subject("s", true).unwrap_err();
        assert_eq!(e.code, 40405);
        let (gone, records) = r.delete_subject("s", false).unwrap();
        assert_eq!(gone, vec![1, 3]);
        records.into_iter().for_each(|x| r.apply(x));
        assert!(r.subjects(false).is_empty());
        assert_eq!(r.subjects(true), vec!["s".to_string()]);
        assert_eq!(r.delete_subject("s", false).unwrap_err().code, 40404);
        let (_, records) = r.delete_subject("s", true).unwrap();
        records.into_iter().for_each(|x| r.apply(x));
        assert!(r.subjects(true).is_empty());
        // The schema keeps its id for whoever still reads data written with it.
        assert!(r.schema(2).is_ok());
    }

    #[test]
    fn records_replay_to_the_same_registry() {
        let mut r = Registry::default();
        let mut log = Vec::new();
        let mut step = |r: &mut Registry, records: Vec<Record>| {
            for rec in records {
                let json = serde_json::to_string(&rec).unwrap();
                log.push(json);
                r.apply(rec);
            }
        };
        let (_, recs) = r.register("a", &reading(""), None, &[]).unwrap();
        step(&mut r, recs);
        let (_, recs) = r
            .register(
                "b",
                &reading(r#",{"name":"x","type":"int","default":1}"#),
                None,
                &[],
            )
            .unwrap();
        step(&mut r, recs);
        let (_, recs) = r.delete_version("a", VersionRef::Latest, false).unwrap();
        step(&mut r, recs);
        let mut again = Registry::default();
        for line in &log {
            again.apply(serde_json::from_str(line).unwrap());
        }
        assert_eq!(again.subjects(true), r.subjects(true));
        assert_eq!(again.versions("a", true), r.versions("a", true));
        assert_eq!(
            again.version("b", VersionRef::Latest, false),
            r.version("b", VersionRef::Latest, false)
        );
        assert_eq!(
            again.register("c", &reading(""), None, &[]).unwrap().0,
            1,
            "the replayed registry knows the schema's id"
        );
    }
}
