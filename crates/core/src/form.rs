//! `application/x-www-form-urlencoded` request bodies, parsed strictly.
//!
//! RFC 6749 §3.1: parameters must not be included more than once, so a repeated name is
//! `invalid_request` — except names that are defined as repeatable (`resource`, RFC 8707 §2).
//! Bytes that do not decode to UTF-8 are `invalid_request` too (never replaced silently), and
//! the number of parameters is bounded.

use crate::OAuthError;
use std::collections::HashMap;

/// The most parameters one request may carry.
pub const MAX_PARAMS: usize = 64;

/// Parameter names that may appear more than once (RFC 8707 §2, RFC 8693 §2.1).
const REPEATABLE: [&str; 2] = ["resource", "audience"];

/// The parameters of a form body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    single: HashMap<String, String>,
    repeated: HashMap<String, Vec<String>>,
}

impl Form {
    /// Parses a body. Empty values count as absent (RFC 6749 §3.1).
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut form = Form::default();
        let mut count = 0usize;
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            count += 1;
            if count > MAX_PARAMS {
                return Err(OAuthError::invalid_request(format!(
                    "too many parameters (at most {MAX_PARAMS})"
                )));
            }
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (
                    pair.get(..i).unwrap_or(&[]),
                    pair.get(i + 1..).unwrap_or(&[]),
                ),
                None => (pair, &[][..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if value.is_empty() {
                continue;
            }
            if REPEATABLE.contains(&name.as_str()) {
                form.repeated.entry(name).or_default().push(value);
            } else {
                match form.single.entry(name) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        return Err(OAuthError::invalid_request(format!(
                            "parameter {} is repeated",
                            e.key()
                        )));
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(value);
                    }
                }
            }
        }
        Ok(form)
    }

    /// Whether no parameter is left.
    pub fn is_empty(&self) -> bool {
        self.single.is_empty() && self.repeated.is_empty()
    }

    /// A single-valued parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.single.get(name).map(String::as_str)
    }

    /// Removes and returns a single-valued parameter.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.single.remove(name)
    }

    /// Sets a single-valued parameter (a request object's value wins over the form's).
    pub fn set(&mut self, name: &str, value: String) {
        if REPEATABLE.contains(&name) {
            self.repeated.insert(name.to_owned(), vec![value]);
        } else {
            self.single.insert(name.to_owned(), value);
        }
    }

    /// Replaces all values of a repeatable parameter.
    pub fn set_all(&mut self, name: &str, values: Vec<String>) {
        self.repeated.insert(name.to_owned(), values);
    }

    /// All values of a repeatable parameter.
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        self.repeated.remove(name).unwrap_or_default()
    }
}

fn decode(raw: &[u8]) -> Result<String, OAuthError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| OAuthError::invalid_request("form body is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use segl_proto::ErrorCode;

    #[test]
    fn decodes_and_rejects_duplicates() {
        let mut f =
            Form::parse(b"grant_type=client_credentials&scope=a%2Fb+c&resource=x&resource=y")
                .unwrap();
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("scope"), Some("a/b c"));
        assert_eq!(f.take_all("resource"), vec!["x", "y"]);
        let e = Form::parse(b"scope=a&scope=b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains("scope"));
    }

    #[test]
    fn empty_values_are_absent_and_invalid_utf8_is_rejected() {
        let f = Form::parse(b"a=&b=1").unwrap();
        assert_eq!(f.get("a"), None);
        assert!(Form::parse(b"a=%ff").is_err());
    }

    #[test]
    fn bounds_the_number_of_parameters() {
        let body: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(Form::parse(body.join("&").as_bytes()).is_err());
    }
}
