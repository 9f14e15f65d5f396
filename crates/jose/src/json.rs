//! Strict JSON objects: duplicate member names are an error at every depth, and nesting is
//! bounded (serde_json's own recursion limit is 128; JOSE headers and claims need far less).

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON object (header or claims set).
pub type JsonObject = Map<String, Value>;

/// Deepest nesting accepted in a header, claims set or JWK.
const MAX_DEPTH: usize = 16;

/// Parses `bytes` as one JSON object, rejecting duplicate member names and deep nesting.
pub fn parse_object(bytes: &[u8]) -> Result<JsonObject, crate::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut de).map_err(map_err)?;
    de.end()
        .map_err(|_| crate::Error::Malformed("trailing data after JSON"))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(crate::Error::Malformed("expected a JSON object")),
    }
}

fn map_err(e: serde_json::Error) -> crate::Error {
    let text = e.to_string();
    // serde_json appends exactly this position to our message; the member name itself may
    // contain " at line" or backticks, so only that suffix and one pair of backticks go.
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(position.as_str()).unwrap_or(&text);
    if let Some(name) = message
        .strip_prefix("duplicate member `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return crate::Error::DuplicateMember(name.to_owned());
    }
    if message == "nesting too deep" {
        return crate::Error::Malformed("JSON nested too deep");
    }
    crate::Error::Malformed("invalid JSON")
}

struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(D::Error::custom("nesting too deep"));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            depth: self.depth + 1,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate member `{key}`")));
            }
            let v = map.next_value_seed(Strict {
                depth: self.depth + 1,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicate_members_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(crate::Error::DuplicateMember("a".into()))
        );
        assert!(matches!(
            parse_object(br#"{"x":{"b":1,"b":1}}"#),
            Err(crate::Error::DuplicateMember(_))
        ));
    }

    #[test]
    fn names_the_duplicate_member_exactly() {
        // Names that look like serde_json's position suffix, or carry backticks, were once
        // cut or trimmed in the error.
        for name in [
            " at line 0",
            "a at line 1 column 2",
            "`",
            "``x`",
            "a` at line 3",
            "",
        ] {
            let key = serde_json::Value::from(name).to_string();
            let text = format!("{{{key}:1,\"b\":{{}},{key}:2}}");
            assert_eq!(
                parse_object(text.as_bytes()),
                Err(crate::Error::DuplicateMember(name.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn reads_numbers_exactly() {
        // Without serde_json's float_roundtrip, these were read one ULP off (and a JWT's own
        // claims did not survive sign -> parse).
        for literal in [
            "1.4201945982528271e-195",
            "18184467440737495516160",
            "18000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let obj = parse_object(format!("{{\"n\":{literal}}}").as_bytes()).unwrap();
            let exact: f64 = literal.parse().unwrap();
            assert_eq!(obj["n"].as_f64(), Some(exact), "{literal}");
            let again = parse_object(serde_json::to_string(&obj).unwrap().as_bytes()).unwrap();
            assert_eq!(again, obj, "{literal}");
        }
    }

    #[test]
    fn unescapes_strings_as_dotnet_writes_them() {
        let obj = parse_object(br#"{"typ":"dpop\u002Bjwt"}"#).unwrap();
        assert_eq!(obj["typ"], "dpop+jwt");
    }

    #[test]
    fn rejects_non_objects_trailing_data_and_deep_nesting() {
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{} {}").is_err());
        assert!(parse_object(b"\xff").is_err());
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(40),
            "1".to_owned() + &"}".repeat(40)
        );
        assert!(parse_object(deep.as_bytes()).is_err());
    }
}
