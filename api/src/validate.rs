//! Reading a JSON body field by field, collecting every invalid field before answering 422.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

#[derive(Default)]
pub struct Validation {
    errors: Vec<FieldError>,
}

/// serde's wording ("invalid type: string \"x\", expected i64") made a little friendlier.
fn message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.split_once(", expected ") {
        Some((_, expected)) => format!("must be {expected}"),
        None => text,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Validation {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value` as an object, or an error at `path`.
    pub fn object<'a>(&mut self, value: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            let field = if path.is_empty() { "body" } else { path };
            self.error(field, "must be a JSON object");
        }
        object
    }

    /// A field that must be present and valid.
    pub fn required<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<T> {
        match object.get(key) {
            None | Some(Value::Null) => {
                self.error(join(path, key), "is required");
                None
            }
            Some(value) => self.parse(value, join(path, key)),
        }
    }

    /// A field that may be absent or null; `None` then, and also when it is invalid (with
    /// the error recorded).
    pub fn optional<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<T> {
        match object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => self.parse(value, join(path, key)),
        }
    }

    /// A required array, each element read by `each` with its own path (`lines[2]`).
    pub fn array<T>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
        mut each: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let field = join(path, key);
        let Some(items) = object.get(key) else {
            self.error(field, "is required");
            return None;
        };
        let Some(items) = items.as_array() else {
            self.error(field, "must be an array");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match each(self, item, &format!("{field}[{i}]")) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn parse<T: DeserializeOwned>(&mut self, value: &Value, field: String) -> Option<T> {
        match serde_json::from_value(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(field, message(&e));
                None
            }
        }
    }

    /// 422 with every error collected, or what `build` makes of the parsed fields. `build`
    /// returns `None` only if a required field is missing, which an error already reports.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        if !self.errors.is_empty() {
            return Err(ApiError::Validation(self.errors));
        }
        build().ok_or_else(|| ApiError::Internal("validation passed without a value".into()))
    }
}

#[cfg(test)]
mod tests {
    use ordo_domain::values::Email;
    use serde_json::json;

    use super::*;

    #[test]
    fn every_invalid_field_is_reported_with_its_path() {
        let body = json!({"email": "nope", "lines": [{"q": 1}, {"q": "x"}]});
        let mut v = Validation::new();
        let obj = v.object(&body, "").cloned().unwrap_or_default();
        let email: Option<Email> = v.required(&obj, "", "email");
        let name: Option<String> = v.required(&obj, "", "name");
        let lines = v.array(&obj, "", "lines", |v, item, path| {
            let o = v.object(item, path)?.clone();
            v.required::<i64>(&o, path, "q")
        });
        let err = v.finish(|| Some((email?, name?, lines?))).err();
        let Some(ApiError::Validation(errors)) = err else {
            panic!("expected validation errors");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "name", "lines[1].q"]);
    }
}
