//! Decoding JSON objects the way Go's `encoding/json` decodes them into a struct, which is how
//! Sonobuoy reads progress updates and `go test -json` events: a key matches a field name
//! case-insensitively (Unicode simple folding, so `ſ` matches `s` and the Kelvin sign `k`),
//! keys are applied in document order so a later one wins, `null` leaves a field as it was,
//! unknown keys are ignored, and `null` in place of the whole object decodes as all zero.

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A JSON object with its keys in document order (`null` reads as an empty object).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoObject(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for GoObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GoObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<GoObject, E> {
                Ok(GoObject::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<GoObject, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(GoObject(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Go's case folding for a field-name match: ASCII case, plus the two non-ASCII letters that
/// fold onto ASCII ones.
fn fold(c: char) -> char {
    match c {
        '\u{017F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// Whether JSON key `key` selects the field named `field`, as `encoding/json` decides.
pub fn key_matches(key: &str, field: &str) -> bool {
    key == field || key.chars().map(fold).eq(field.chars().map(fold))
}

impl GoObject {
    /// The object with each key that selects one of `fields` renamed to that field, applied
    /// in document order (a later key wins, `null` changes nothing), other keys dropped.
    pub fn canonical(&self, fields: &[&str]) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in &self.0 {
            // Field names never fold to one another, so the first match is the only one.
            let Some(field) = fields.iter().find(|f| key_matches(k, f)) else {
                continue;
            };
            if !v.is_null() {
                out.insert(field.to_string(), v.clone());
            }
        }
        out
    }

    /// Decodes into `T`, whose serde field names are `fields`, the way Go decodes into a
    /// struct. A value of the wrong type is an error, as in Go.
    pub fn decode<T: DeserializeOwned>(&self, fields: &[&str]) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.canonical(fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Ev {
        #[serde(rename = "Action")]
        action: String,
        #[serde(rename = "Test")]
        test: String,
    }

    fn ev(json: &str) -> Result<Ev, serde_json::Error> {
        serde_json::from_str::<GoObject>(json)?.decode(&["Action", "Test"])
    }

    #[test]
    fn keys_match_fields_as_in_go() {
        assert_eq!(
            ev(r#"{"action":"fail","TEST":"t2"}"#).unwrap(),
            Ev {
                action: "fail".into(),
                test: "t2".into()
            }
        );
        assert_eq!(ev("{\"Te\u{017F}t\":\"long s\"}").unwrap().test, "long s");
        assert_eq!(
            ev(r#"{"Action":"pass","action":"fail"}"#).unwrap().action,
            "fail"
        );
        assert_eq!(
            ev(r#"{"Action":"fail","action":null}"#).unwrap().action,
            "fail"
        );
        assert_eq!(ev(r#"{"Actions":"x","Tést":"y"}"#).unwrap(), Ev::default());
        assert_eq!(ev("null").unwrap(), Ev::default());
        assert!(ev(r#"{"action":5}"#).is_err());
        assert!(ev("[1]").is_err());
    }
}
