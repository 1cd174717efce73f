//! Compatibility levels and their check, by Avro's schema-resolution rules
//! (`apache_avro::schema_compatibility`): BACKWARD (the new schema reads data
//! written with the last), FORWARD (the last reads data written with the new),
//! FULL (both), each also against every live version (`_TRANSITIVE`), or NONE.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

/// A subject's compatibility level, named as Confluent names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
        Level::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    pub(crate) fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
                format!("compatibility {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// Whether `reader` can read data written with `writer`, by Avro's rules; a
/// panic of the library on these schemas is an incompatibility, not a crash.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    crate::guard::contained("the compatibility check", || {
        SchemaCompatibility::can_read(writer, reader)
    })?
    .map_err(|e| e.to_string())
}

/// Whether `new` may follow `live` (the subject's live versions, oldest first) at
/// `level`; the reasons when it may not, one per version it breaks with.
pub fn check(level: Level, new: &Schema, live: &[&Schema]) -> Result<(), Vec<String>> {
    let against: &[&Schema] = match (level, live.split_last()) {
        (Level::None, _) | (_, None) => return Ok(()),
        (l, Some((last, _))) if !l.transitive() => std::slice::from_ref(last),
        _ => live,
    };
    let (backward, forward) = match level {
        Level::Backward | Level::BackwardTransitive => (true, false),
        Level::Forward | Level::ForwardTransitive => (false, true),
        Level::Full | Level::FullTransitive => (true, true),
        Level::None => (false, false),
    };
    let mut why = Vec::new();
    for (i, old) in against.iter().enumerate() {
        let which = if against.len() == 1 {
            "the latest version".to_string()
        } else {
            format!("live version {} of {}", i + 1, against.len())
        };
        if backward {
            if let Err(e) = can_read(old, new) {
                why.push(format!(
                    "the new schema cannot read data written with {which}: {e}"
                ));
            }
        }
        if forward {
            if let Err(e) = can_read(new, old) {
                why.push(format!(
                    "{which} cannot read data written with the new schema: {e}"
                ));
            }
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Reading","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn each_level_decides_by_avro_resolution() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let with_default =
            schema(r#"{"name":"id","type":"string"},{"name":"t","type":"double","default":0}"#);
        let without_default =
            schema(r#"{"name":"id","type":"string"},{"name":"t","type":"double"}"#);
        // A field with a default: the new schema reads old data, and old readers
        // ignore the new field.
        for level in Level::ALL {
            assert!(check(level, &with_default, &[&v1]).is_ok(), "{level:?}");
        }
        // Without a default, old data cannot be read: BACKWARD and FULL refuse.
        assert!(check(Level::Backward, &without_default, &[&v1]).is_err());
        assert!(check(Level::Full, &without_default, &[&v1]).is_err());
        assert!(check(Level::Forward, &without_default, &[&v1]).is_ok());
        assert!(check(Level::None, &without_default, &[&v1]).is_ok());
        // Removing a field without a default: old readers cannot read new data.
        let only_t = schema(r#"{"name":"t","type":"double","default":0}"#);
        assert!(check(Level::Forward, &only_t, &[&v1]).is_err());
        assert!(check(Level::Backward, &only_t, &[&v1]).is_ok());
        // Transitive: checked against every live version, not only the last.
        let v3 = schema(r#"{"name":"t","type":"double"}"#);
        assert!(check(Level::Backward, &v3, &[&v1, &only_t]).is_ok());
        let why = check(Level::BackwardTransitive, &v3, &[&v1, &only_t]).unwrap_err();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("live version 1 of 2"), "{why:?}");
        assert!(check(Level::Backward, &v1, &[]).is_ok(), "a first version");
    }

    #[test]
    fn levels_parse_as_confluent_names_them() {
        assert_eq!(
            "full_transitive".parse::<Level>(),
            Ok(Level::FullTransitive)
        );
        assert_eq!(Level::default().name(), "BACKWARD");
        assert!("SOMETIMES"
            .parse::<Level>()
            .unwrap_err()
            .contains("BACKWARD"));
        let json = serde_json::to_string(&Level::ForwardTransitive).unwrap();
        assert_eq!(json, r#""FORWARD_TRANSITIVE""#);
    }
}
