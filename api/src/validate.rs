//! Reading a JSON body field by field, collecting every invalid field before answering 422.
//!
//! A request body is declared once with [`request_body!`]: the struct the OpenAPI document
//! describes (`ToSchema`) and its reader, which reads each field by the field's type
//! ([`Field`]), so the document and what the handler accepts come from one list. A field
//! the list does not name is refused too ([`Validation::known`]).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// Declares a request body: the struct, deriving `ToSchema` (docs and `#[schema(..)]` on
/// the fields go to the document), and `read`, which reads each field as its type says
/// ([`Field`]) and answers 422 with every invalid field. A `check |v, body| { .. }` after
/// the struct adds rules across fields, run when every field could be read, whose errors
/// join the others.
macro_rules! request_body {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $crate::validate::request_body! {
            $(#[$meta])* pub struct $name { $($fields)* } check |_v, _body| {}
        }
    };
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty),* $(,)?
    } check |$v:ident, $body:ident| $check:block) => {
        $(#[$meta])*
        #[derive(utoipa::ToSchema)]
        // For the document only (`additionalProperties: false`): `read` refuses the others.
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty),*
        }

        impl $name {
            /// The body, or 422 with every invalid field.
            pub fn read(json: &serde_json::Value) -> Result<Self, $crate::ApiError> {
                let mut v = $crate::validate::Validation::new();
                let Some(_o) = v.object(json, "") else {
                    return v.finish(|| None);
                };
                v.known(_o, "", &[$(stringify!($field)),*]);
                $(let $field =
                    <$ty as $crate::validate::Field>::read(&mut v, _o, "", stringify!($field));)*
                #[allow(unused_labels)] // a body without fields (`Empty`) never breaks
                let body = 'read: {
                    $(let Some($field) = $field else { break 'read None };)*
                    Some(Self { $($field),* })
                };
                if let Some($body) = &body {
                    let $v = &mut v;
                    $check
                }
                v.finish(|| body)
            }
        }
    };
}
pub(crate) use request_body;

/// How a body field of this type is read at `path`.`key`: `None` when it is missing or
/// invalid, with the error recorded.
pub trait Field: Sized {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self>;
}

/// A value read whole by serde (a value object's parsing constructor): required, or
/// optional (absent or null) as `Option`.
pub trait Scalar: DeserializeOwned {}

impl<T: Scalar> Field for T {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        v.required(o, path, key)
    }
}

impl<T: Scalar> Field for Option<T> {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        Some(v.optional(o, path, key))
    }
}

/// A field of an update: left out (`None`: stays as it is), null (`Some(None)`: cleared)
/// or a value.
impl<T: Scalar> Field for Option<Option<T>> {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        match o.get(key) {
            None => Some(None),
            Some(Value::Null) => Some(Some(None)),
            Some(_) => Some(Some(v.optional(o, path, key))),
        }
    }
}

impl Scalar for Uuid {}
impl Scalar for i64 {}
impl Scalar for bool {}
impl Scalar for String {}
impl Scalar for chrono::DateTime<chrono::Utc> {}
impl Scalar for ordo_domain::values::Text {}
impl Scalar for ordo_domain::values::Email {}
impl Scalar for ordo_domain::values::Sku {}
impl Scalar for ordo_domain::values::Quantity {}
impl Scalar for ordo_domain::Amount {}
impl Scalar for ordo_domain::Currency {}

request_body! {
    /// A body with nothing to say: `{}` (or no body at all).
    pub struct Empty {}
}

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

/// `path.key`, or `key` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
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

    /// Every key of `object` (at `path`) is one of `fields`; any other is an error of its
    /// own. Left alone, a misspelt optional field (`shiping_address`) would be dropped in
    /// silence and the command carried out without it.
    pub fn known(&mut self, object: &Map<String, Value>, path: &str, fields: &[&str]) {
        for key in object.keys() {
            if !fields.contains(&key.as_str()) {
                let message = if fields.is_empty() {
                    "is not a field here: this takes no fields".to_owned()
                } else {
                    format!("is not a field here; the fields are {}", fields.join(", "))
                };
                self.error(join(path, key), message);
            }
        }
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
