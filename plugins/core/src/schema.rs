//! JSON Schemas for the wire values whose `Deserialize` is written by hand (`schema` feature,
//! native tooling only). Each schema accepts at least every value the hand-written visitor
//! accepts; the validation step that follows may still reject more.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// A unit type whose schema is `anyOf` the given JSON Schemas, with a description: what every
/// hand-written visitor here needs (it accepts one of a few JSON shapes).
macro_rules! any_of_schema {
    ($(#[$doc:meta])* $name:ident, $description:literal, [$($variant:tt),+ $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": $description,
                    "anyOf": [$($variant),+]
                })
            }
        }
    };
}

any_of_schema!(
    /// A response status as a number (`503`) or an inclusive range as a string (`"500-599"`), as
    /// `circuit_breaker`'s `failure_statuses` reads them.
    StatusOrRange,
    "A status such as 503, or an inclusive range such as \"500-599\".",
    [
        {"type": "integer", "minimum": 0, "maximum": 65535},
        {"type": "string"}
    ]
);

any_of_schema!(
    /// One string (`"x"`) or a list of strings (`["x", "y"]`), as `jwt_auth`'s claim conditions
    /// read them.
    OneOrManyStrings,
    "A string, or a list of strings.",
    [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}}
    ]
);
