//! JSON projection: reads only the fields a job needs out of a JSON object, as
//! people write JSON (RFC 8259): keys and strings with escapes (`\"`, `\uXXXX`, as
//! Python's `json.dumps` writes them), numbers in any JSON form, a whole-number float
//! (`1700000040200.0`, `time.time()*1000`) for an integer field, and with
//! `event_time_format = "rfc3339"` an event time written as an RFC 3339 string.
//!
//! One pass over the object with serde_json's deserializer: each key is compared
//! with the fields wanted as it is read (borrowed from the value; only a key with
//! escapes is unescaped), each wanted value is taken as its raw text and every
//! other value skipped without being built. Nothing is allocated for a record
//! without escapes; a key field with escapes is unescaped into the caller's
//! scratch buffer.
//!
//! Never: builds a map or a `Value` of the record, or trusts a number it has not
//! parsed (a fraction or a value beyond i64 in an integer field, or beyond a
//! double in any, is an error).

use super::avro::{DecodeError, Num, Projected, SlotKind, SLOTS_MAX};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// How an event-time field is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// Milliseconds since the epoch, a JSON number (a whole-number float too).
    #[default]
    EpochMs,
    /// An RFC 3339 string (`2023-11-14T22:13:20.200Z`, any offset).
    Rfc3339,
}

/// The fields one job reads from JSON objects.
#[derive(Clone, Debug)]
pub struct JsonProjection {
    /// Field name, slot, and how the slot holds it.
    fields: Vec<(String, u8, SlotKind)>,
    /// The event time's slot, and how it is written.
    time: Option<(u8, TimeFormat)>,
}

impl JsonProjection {
    pub fn new(fields: Vec<(String, u8, SlotKind)>, time: Option<(u8, TimeFormat)>) -> Self {
        JsonProjection { fields, time }
    }

    /// Reads the wanted fields of the object `value` into `out`; a key field with
    /// escapes is unescaped into `scratch`, which `out.key` then borrows.
    pub fn project<'a>(
        &self,
        value: &'a [u8],
        out: &mut Projected<'a>,
        scratch: &'a mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        *out = Projected::default();
        let mut found: [Option<&'a RawValue>; SLOTS_MAX] = [None; SLOTS_MAX];
        let mut de = serde_json::Deserializer::from_slice(value);
        ObjectSeed {
            fields: &self.fields,
            found: &mut found,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| DecodeError(format!("not a JSON object: {e}")))?;
        let mut escaped_key = false;
        for (name, slot, kind) in &self.fields {
            let Some(raw) = found[*slot as usize] else {
                continue;
            };
            let text = raw.get();
            if text == "null" {
                continue;
            }
            let err = |what: &str| DecodeError(format!("field `{name}` {what}: {text}"));
            match kind {
                SlotKind::Bytes => {
                    let inner = text
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .ok_or_else(|| err("is not a JSON string"))?;
                    if inner.contains('\\') {
                        let s: String = serde_json::from_str(text)
                            .map_err(|e| DecodeError(format!("field `{name}`: {e}")))?;
                        scratch.clear();
                        scratch.extend_from_slice(s.as_bytes());
                        escaped_key = true;
                    } else {
                        // Borrowed from the value: `inner` is a slice of it.
                        let start = inner.as_ptr() as usize - value.as_ptr() as usize;
                        out.key = Some(&value[start..start + inner.len()]);
                    }
                }
                SlotKind::Int => {
                    let v = match self.time {
                        Some((t, TimeFormat::Rfc3339)) if t == *slot => rfc3339_ms(text)
                            .ok_or_else(|| err("is not an RFC 3339 time (event_time_format)"))?,
                        _ => integer(text).ok_or_else(|| err("is not an integer"))?,
                    };
                    out.vals[*slot as usize] = Some(Num::I(v));
                }
                SlotKind::Float => {
                    let v: f64 = text.parse().map_err(|_| err("is not a number"))?;
                    // 1e309 parses as infinity, which would poison every sum.
                    if !v.is_finite() {
                        return Err(err("is beyond a double"));
                    }
                    out.vals[*slot as usize] = Some(Num::F(v));
                }
            }
        }
        if escaped_key {
            let key: &'a [u8] = scratch;
            out.key = Some(key);
        }
        Ok(())
    }
}

/// A JSON number that is a whole number within i64: `42`, `-7`, `1e3`,
/// `1700000040200.0`.
fn integer(text: &str) -> Option<i64> {
    if let Ok(v) = text.parse::<i64>() {
        return Some(v);
    }
    // An integer literal i64 cannot hold is beyond it, not rounded into it.
    if !text.contains(['.', 'e', 'E']) {
        return None;
    }
    let f: f64 = text.parse().ok()?;
    // Whole, and exactly representable as i64 (2^63 itself is not).
    (f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f))
        .then_some(f as i64)
}

/// An RFC 3339 time in a JSON string, as epoch milliseconds.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let s: &str = text.strip_prefix('"')?.strip_suffix('"')?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The object's wanted values, by slot.
struct ObjectSeed<'p, 'a> {
    fields: &'p [(String, u8, SlotKind)],
    found: &'p mut [Option<&'a RawValue>; SLOTS_MAX],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let wanted = self
                .fields
                .iter()
                .find(|(name, _, _)| name == key.as_str())
                .map(|(_, slot, _)| *slot);
            match wanted {
                // A repeated key: the last one counts, as in JavaScript.
                Some(slot) => self.found[slot as usize] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key: borrowed from the value, or unescaped when it has escapes.
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projection(time: TimeFormat) -> JsonProjection {
        JsonProjection::new(
            vec![
                ("device_id".into(), 0, SlotKind::Bytes),
                ("timestamp".into(), 1, SlotKind::Int),
                ("temperature".into(), 2, SlotKind::Float),
                ("a\"b".into(), 3, SlotKind::Float),
            ],
            Some((1, time)),
        )
    }

    /// The key and the first four slots read.
    type Read = (Option<Vec<u8>>, Vec<Option<Num>>);

    fn read(p: &JsonProjection, value: &[u8]) -> Result<Read, DecodeError> {
        let mut scratch = Vec::new();
        let mut out = Projected::default();
        p.project(value, &mut out, &mut scratch)?;
        Ok((out.key.map(<[u8]>::to_vec), out.vals[..4].to_vec()))
    }

    #[test]
    fn json_as_people_write_it_is_read() {
        let p = projection(TimeFormat::EpochMs);
        // Python's json.dumps: \u escapes, a float timestamp, spaces.
        let (key, vals) = read(
            &p,
            br#"{"device_id": "d\u00e9-\"7\"", "timestamp": 1700000040200.0, "temperature": 2.15e1, "a\"b": -1, "other": {"x": [1, "y"]}}"#,
        )
        .unwrap();
        assert_eq!(key.unwrap(), "dé-\"7\"".as_bytes());
        assert_eq!(vals[1], Some(Num::I(1_700_000_040_200)));
        assert_eq!(vals[2], Some(Num::F(21.5)));
        assert_eq!(vals[3], Some(Num::F(-1.0)), "a key with an escaped quote");
        // Plain: the key is borrowed from the value.
        let value = br#"{"device_id":"d-1","timestamp":17,"temperature":null}"#;
        let mut scratch = Vec::new();
        let mut out = Projected::default();
        p.project(value, &mut out, &mut scratch).unwrap();
        let key = out.key.unwrap();
        assert!(value.as_ptr_range().contains(&key.as_ptr()));
        assert_eq!(out.vals[2], None, "null is absent");
        // A key escaped with \u that spells a wanted name.
        let (_, vals) = read(&p, br#"{"\u0074imestamp": 5}"#).unwrap();
        assert_eq!(vals[1], Some(Num::I(5)));
    }

    #[test]
    fn what_is_not_a_record_or_not_exact_is_refused() {
        let p = projection(TimeFormat::EpochMs);
        for bad in [
            &br#"[1,2]"#[..],
            br#"{"timestamp": 1.5}"#,
            br#"{"timestamp": 1e30}"#,
            br#"{"timestamp": "17"}"#,
            br#"{"device_id": 7}"#,
            br#"{"temperature": "warm"}"#,
            br#"{"device_id": "x"} trailing"#,
            br#"{"device_id": "x""#,
        ] {
            assert!(read(&p, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn numbers_at_the_edges_unicode_and_nesting() {
        let p = projection(TimeFormat::EpochMs);
        let time = |text: &str| read(&p, format!(r#"{{"timestamp": {text}}}"#).as_bytes());
        assert_eq!(
            time("9223372036854775807").unwrap().1[1],
            Some(Num::I(i64::MAX))
        );
        assert_eq!(
            time("-9223372036854775808").unwrap().1[1],
            Some(Num::I(i64::MIN))
        );
        assert_eq!(
            time("9.2e18").unwrap().1[1],
            Some(Num::I(9_200_000_000_000_000_000))
        );
        for beyond in [
            "9223372036854775808",
            "-9223372036854775809",
            "1e19",
            "1e400",
        ] {
            assert!(time(beyond).is_err(), "{beyond} is not an i64");
        }
        let float = |text: &str| {
            read(&p, format!(r#"{{"temperature": {text}}}"#).as_bytes()).map(|r| r.1[2])
        };
        assert_eq!(float("1.7976931348623157e308"), Ok(Some(Num::F(f64::MAX))));
        assert_eq!(float("-1.7976931348623157e308"), Ok(Some(Num::F(f64::MIN))));
        assert_eq!(float("5e-324"), Ok(Some(Num::F(5e-324))));
        assert_eq!(float("-0.0"), Ok(Some(Num::F(-0.0))));
        assert_eq!(
            float("18446744073709551616"),
            Ok(Some(Num::F(18446744073709551616.0)))
        );
        assert!(float("1e309").is_err(), "beyond f64");
        // A key outside the BMP, as a surrogate pair and as raw UTF-8.
        let (key, _) = read(&p, br#"{"device_id": "\ud83d\ude00-\u00e9"}"#).unwrap();
        assert_eq!(key.unwrap(), "\u{1F600}-é".as_bytes());
        let (key, _) = read(&p, "{\"device_id\": \"\u{1F600}-é\"}".as_bytes()).unwrap();
        assert_eq!(key.unwrap(), "\u{1F600}-é".as_bytes());
        assert!(
            read(&p, br#"{"device_id": "\ud83d"}"#).is_err(),
            "a lone surrogate"
        );
        // Nested objects and arrays are passed over; a wanted name inside one is not
        // the field.
        let (_, vals) = read(
            &p,
            br#"{"meta": {"timestamp": 1, "deep": [{"timestamp": [2, {"x": {}}]}]}, "timestamp": 3}"#,
        )
        .unwrap();
        assert_eq!(vals[1], Some(Num::I(3)));
    }

    #[test]
    fn rfc3339_event_times_with_any_offset() {
        let p = projection(TimeFormat::Rfc3339);
        let (_, vals) = read(&p, br#"{"timestamp": "2023-11-14T22:13:20.200Z"}"#).unwrap();
        assert_eq!(vals[1], Some(Num::I(1_700_000_000_200)));
        let (_, vals) = read(&p, br#"{"timestamp": "2023-11-15T00:13:20.200+02:00"}"#).unwrap();
        assert_eq!(vals[1], Some(Num::I(1_700_000_000_200)));
        assert!(read(&p, br#"{"timestamp": 1700000000200}"#).is_err());
        assert!(read(&p, br#"{"timestamp": "yesterday"}"#).is_err());
    }
}
