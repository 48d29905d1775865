//! Form-encoded parameters (request bodies and query strings) as Twilio's helper
//! libraries send them: PascalCase names, booleans as `true`/`false`, integers as
//! decimal text. Each getter names the parameter in its error.

use std::collections::HashMap;

use super::twilio::ApiError;

/// The parameters of one request; a repeated name keeps its last value.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    /// In the order sent, for page URLs that carry them on.
    pub pairs: Vec<(String, String)>,
}

impl Params {
    /// The parameters of each form-encoded part in turn (a query, then a body).
    pub fn parse(parts: &[&[u8]]) -> Params {
        let pairs: Vec<(String, String)> = parts
            .iter()
            .flat_map(|part| form_urlencoded::parse(part).into_owned())
            .collect();
        Params {
            values: pairs.iter().cloned().collect(),
            pairs,
        }
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.string(name)
            .ok_or_else(|| ApiError::parameter(name, "is required"))
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.string(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::parameter(
                name,
                format!("expected true or false, got {v:?}"),
            )),
        }
    }

    pub fn required_boolean(&self, name: &str) -> Result<bool, ApiError> {
        self.boolean(name)?
            .ok_or_else(|| ApiError::parameter(name, "is required"))
    }

    pub fn integer(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                ApiError::parameter(name, format!("expected a non-negative integer, got {v:?}"))
            }),
        }
    }

    /// The first of `names` that is present (Twilio's aliases: `ItemTtl` over `Ttl`).
    pub fn integer_of(&self, names: &[&str]) -> Result<Option<u64>, ApiError> {
        for name in names {
            if let Some(v) = self.integer(name)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_as_twilio_sends_them_and_errors_name_them() {
        let p = Params::parse(&[
            b"Ttl=1&PageSize=5",
            b"Data=%7B%22a%22%3A+1%7D&AclEnabled=true&Ttl=60&Bad=x&Flag=maybe",
        ]);
        assert_eq!(p.integer("PageSize").unwrap(), Some(5), "the query counts");
        assert_eq!(p.string("Data"), Some(r#"{"a": 1}"#));
        assert_eq!(p.boolean("AclEnabled").unwrap(), Some(true));
        assert_eq!(p.integer("Ttl").unwrap(), Some(60));
        assert_eq!(p.integer_of(&["ItemTtl", "Ttl"]).unwrap(), Some(60));
        let e = p.integer("Bad").unwrap_err();
        assert!(e.message.contains("Bad"), "{}", e.message);
        let e = p.boolean("Flag").unwrap_err();
        assert!(e.message.contains("Flag"), "{}", e.message);
        let e = p.required("Key").unwrap_err();
        assert_eq!((e.status.as_u16(), e.message.contains("Key")), (400, true));
    }
}
