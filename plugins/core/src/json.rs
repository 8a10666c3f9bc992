//! JSON documents parsed strictly, and config wire types read from them with the failing field's
//! path.
//!
//! ## Why not `serde_path_to_error`
//! Config errors must name the field (`rules[0].limits[1].capacity`). `serde_path_to_error` does
//! that by wrapping the streaming deserializer, and its wrappers are generic over every visitor
//! and seed of every wire type: each wire type then carries a copy of the tracking code *and* of
//! the JSON parser inlined into it. In the chain module that was about 350 KB of Wasm code for
//! reading configs once, and every worker compiles and holds its copy of the module (time to ready
//! and memory grow with module size). Here the text is parsed once, by one non-generic parser
//! ([`Strict`]), and the wire types are read from the parsed tree by a small deserializer
//! ([`from_value`]) that notes the path only where a value fails: what is generic per wire type is
//! the derive's own code and a few lines of dispatch.
//!
//! ## What stays as strict as the streaming parser
//! An object that repeats a member name is an error at any depth ([`Strict`]; `serde_json::Value`
//! would keep the last one silently). Unknown fields, missing fields and type errors are serde's
//! own, with serde's own messages. Integers keep their exact value (`u64`/`i64`, never through a
//! float); a float is handed to the visitor as a float, so an integer field refuses `5.5`.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// A JSON value parsed like `serde_json::Value`, except that an object repeating a member name
/// (at any depth) is an error instead of silently keeping the last one.
#[derive(Debug)]
pub struct Strict(pub Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StrictSeed { path: Path::Root }
            .deserialize(deserializer)
            .map(Strict)
    }
}

/// A value at `path`, which a repeated member names.
struct StrictSeed<'p> {
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate object members")
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

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = Path::Index(&self.path, items.len());
            match seq.next_element_seed(StrictSeed { path })? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = Path::Member(&self.path, &key);
            if map.contains_key(&key) {
                let mut at = String::new();
                path.render(&mut at);
                return Err(de::Error::custom(format_args!(
                    "duplicate object member `{at}`"
                )));
            }
            let value = access.next_value_seed(StrictSeed { path })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Why a wire type could not be read from a value, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// `rules[0].limits[1].capacity`; empty for the document itself.
    pub path: String,
    /// serde's message (`invalid type: string "ten", expected u64`, `unknown field ...`).
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError {
            path: String::new(),
            message: msg.to_string(),
        }
    }

    // JSON has no unit value: say `null`, as serde_json's own errors do.
    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        match unexpected {
            Unexpected::Unit => {
                Self::custom(format_args!("invalid type: null, expected {expected}"))
            }
            other => Self::custom(format_args!("invalid type: {other}, expected {expected}")),
        }
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        match unexpected {
            Unexpected::Unit => {
                Self::custom(format_args!("invalid value: null, expected {expected}"))
            }
            other => Self::custom(format_args!("invalid value: {other}, expected {expected}")),
        }
    }
}

/// Where a value sits in the document: a chain of member names and array indices.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Member(parent, name) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Path::Index(parent, i) => {
                parent.render(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

/// Note `path` on an error that does not know where it happened yet (the innermost value that
/// failed names it; the levels above leave it).
fn at(path: Path<'_>) -> impl FnOnce(PathError) -> PathError + '_ {
    move |mut e| {
        if e.path.is_empty() {
            path.render(&mut e.path);
        }
        e
    }
}

/// Read a wire type from a parsed document, naming the path of the value that failed.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, PathError> {
    T::deserialize(ValueDe {
        value,
        path: Path::Root,
    })
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// Deserializer methods that all read a number.
macro_rules! numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
            self.deserialize_number(visitor)
        }
    )*};
}

/// Deserializer methods that all read a string.
macro_rules! strings {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
            self.deserialize_str(visitor)
        }
    )*};
}

/// The elements or members a visitor has not read.
trait Remaining {
    fn remaining(&self) -> usize;
}

impl Remaining for Elements<'_, '_> {
    fn remaining(&self) -> usize {
        self.items.len()
    }
}

impl Remaining for Members<'_, '_> {
    fn remaining(&self) -> usize {
        self.members.len()
    }
}

/// Run `visit` on an array's elements or an object's members; one it stopped short of is an
/// error, as in serde_json (`len` of them in all).
fn visit_whole<A: Remaining, R>(
    mut access: A,
    len: usize,
    visit: impl FnOnce(&mut A) -> Result<R, PathError>,
) -> Result<R, PathError> {
    let out = visit(&mut access)?;
    match access.remaining() {
        0 => Ok(out),
        _ => Err(too_long(len)),
    }
}

/// A value of the document and where it is. It borrows the tree: nothing generic moves or drops
/// a `Value`, which keeps each wire type's instantiation small.
struct ValueDe<'de, 'p> {
    value: &'de Value,
    path: Path<'p>,
}

impl<'de> Deserializer<'de> for ValueDe<'de, '_> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(_) => self.deserialize_seq(visitor),
            Value::Object(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.value {
            // A unit variant: `"client_ip"`.
            Value::String(variant) => visitor.visit_enum(variant.as_str().into_deserializer()),
            // A variant with content: `{"header": "x-user"}`, exactly one member.
            Value::Object(map) => match one_member(map) {
                Some((variant, value)) => visitor.visit_enum(Variant {
                    variant,
                    value,
                    path: self.path,
                }),
                None => Err(not_a_variant(self.value)),
            },
            other => Err(not_a_variant(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        // serde_json's `RawValue` asks for itself by a private token only serde_json's own
        // deserializers understand: let the value's deserializer answer it.
        if name.starts_with("$serde_json::") {
            return self
                .value
                .deserialize_newtype_struct(name, visitor)
                .map_err(de::Error::custom);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_unit()
    }

    // Each type asks only for what it can take, so that an instantiation carries one visit call
    // and a shared error path, not a dispatch over every kind of value.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            other => Err(mismatch(other, &visitor)),
        }
    }

    numbers! {
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_f32 deserialize_f64
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.value {
            Value::String(s) => visitor.visit_borrowed_str(s),
            other => Err(mismatch(other, &visitor)),
        }
    }

    strings! { deserialize_string deserialize_identifier deserialize_char }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let Value::Array(items) = self.value else {
            return Err(mismatch(self.value, &visitor));
        };
        let elements = Elements {
            items: items.iter().enumerate(),
            path: self.path,
        };
        visit_whole(elements, items.len(), |seq| visitor.visit_seq(seq))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let Value::Object(map) = self.value else {
            return Err(mismatch(self.value, &visitor));
        };
        let members = Members {
            members: map.iter(),
            pending: None,
            path: self.path,
        };
        visit_whole(members, map.len(), |access| visitor.visit_map(access))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct tuple_struct
    }
}

impl<'de> ValueDe<'de, '_> {
    fn deserialize_number<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.value {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => Err(mismatch(other, &visitor)),
        }
    }
}

/// `value` is not what the visitor takes.
#[inline(never)]
fn mismatch(value: &Value, expected: &dyn de::Expected) -> PathError {
    de::Error::invalid_type(unexpected(value), expected)
}

#[inline(never)]
fn too_long(len: usize) -> PathError {
    de::Error::invalid_length(len, &"fewer elements")
}

#[inline(never)]
fn not_a_variant(value: &Value) -> PathError {
    de::Error::invalid_type(unexpected(value), &"a string or an object with one member")
}

fn one_member(map: &Map<String, Value>) -> Option<(&str, &Value)> {
    let mut members = map.iter();
    match (members.next(), members.next()) {
        (Some((k, v)), None) => Some((k.as_str(), v)),
        _ => None,
    }
}

/// `seed` from the value at `path`, an error naming `path` unless a value inside it failed.
fn read<'de, T: DeserializeSeed<'de>>(
    seed: T,
    value: &'de Value,
    path: Path<'_>,
) -> Result<T::Value, PathError> {
    seed.deserialize(ValueDe { value, path }).map_err(at(path))
}

struct Elements<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: Path<'p>,
}

impl<'de> SeqAccess<'de> for Elements<'de, '_> {
    type Error = PathError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PathError> {
        match self.items.next() {
            Some((index, value)) => read(seed, value, Path::Index(&self.path, index)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining())
    }
}

struct Members<'de, 'p> {
    members: serde_json::map::Iter<'de>,
    /// The member whose name was just read, and its value.
    pending: Option<(&'de str, &'de Value)>,
    path: Path<'p>,
}

impl<'de> MapAccess<'de> for Members<'de, '_> {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PathError> {
        let Some((name, value)) = self.members.next() else {
            return Ok(None);
        };
        self.pending = Some((name.as_str(), value));
        // An unknown field is named by its own path: `rules[1].capacty`.
        seed.deserialize(name.as_str().into_deserializer())
            .map(Some)
            .map_err(at(Path::Member(&self.path, name)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let Some((name, value)) = self.pending.take() else {
            return Err(de::Error::custom(
                "a member's value asked for before its name",
            ));
        };
        read(seed, value, Path::Member(&self.path, name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining())
    }
}

struct Variant<'de, 'p> {
    variant: &'de str,
    value: &'de Value,
    path: Path<'p>,
}

impl<'de, 'p> EnumAccess<'de> for Variant<'de, 'p> {
    type Error = PathError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), PathError> {
        let tag = seed
            .deserialize(self.variant.into_deserializer())
            .map_err(at(Path::Member(&self.path, self.variant)))?;
        Ok((tag, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de, '_> {
    type Error = PathError;

    fn unit_variant(self) -> Result<(), PathError> {
        // `{"cluster": null}` is the variant, as serde_json reads it; any other content is not.
        if self.value.is_null() {
            return Ok(());
        }
        let e = de::Error::invalid_type(unexpected(self.value), &"a plain string for this variant");
        Err(at(Path::Member(&self.path, self.variant))(e))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, PathError> {
        read(seed, self.value, Path::Member(&self.path, self.variant))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        let path = Path::Member(&self.path, self.variant);
        ValueDe {
            value: self.value,
            path,
        }
        .deserialize_seq(visitor)
        .map_err(at(path))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        let path = Path::Member(&self.path, self.variant);
        ValueDe {
            value: self.value,
            path,
        }
        .deserialize_map(visitor)
        .map_err(at(path))
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
