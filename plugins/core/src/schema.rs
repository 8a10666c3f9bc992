//! JSON Schemas for the wire values whose `Deserialize` is written by hand (`schema` feature,
//! native tooling only). Each schema accepts at least every value the hand-written visitor
//! accepts; the validation step that follows may still reject more.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// A response status as a number (`503`) or an inclusive range as a string (`"500-599"`), as
/// `circuit_breaker`'s `failure_statuses` reads them.
pub struct StatusOrRange;

impl JsonSchema for StatusOrRange {
    fn schema_name() -> Cow<'static, str> {
        "StatusOrRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status such as 503, or an inclusive range such as \"500-599\".",
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 65535},
                {"type": "string"}
            ]
        })
    }
}

/// One string (`"x"`) or a list of strings (`["x", "y"]`), as `jwt_auth`'s claim conditions
/// read them.
pub struct OneOrManyStrings;

impl JsonSchema for OneOrManyStrings {
    fn schema_name() -> Cow<'static, str> {
        "OneOrManyStrings".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, or a list of strings.",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}
