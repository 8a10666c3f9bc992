//! The edit primitives: a header list, a query string and a JSON document, each with the
//! operations rules apply to it. Everything here is pure and total: malformed input is reported
//! as a [`Malformed`] value, never a panic.

use crate::template::Malformed;
use percent_encoding::percent_decode;
use serde_json::Value;
use std::borrow::Cow;

/// `Default` (every list empty) and `is_empty` for an operations struct whose fields are all
/// lists of operations. Written out because `#[derive(Default)]` would demand `V: Default`, and
/// listing every field once here keeps `is_empty` complete: a field added to the struct but not
/// to the list is a compile error in `Default`.
macro_rules! lists_of_ops {
    ($ops:ident: $($field:ident),+) => {
        impl<V> Default for $ops<V> {
            fn default() -> Self {
                $ops {
                    $($field: Vec::new()),+
                }
            }
        }

        impl<V> $ops<V> {
            /// No operation at all.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_empty())+
            }
        }
    };
}

/// A rule's header operations, applied in the order of the fields:
/// remove → rename → set → add (if absent) → append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderOps<V> {
    /// Lowercase names to remove.
    pub remove: Vec<String>,
    /// Lowercase name prefixes: every header starting with one is removed.
    pub remove_prefix: Vec<String>,
    /// `(from, to)`: the values of `from` move to `to`, replacing any values `to` had.
    pub rename: Vec<(String, String)>,
    /// Overwrite (or create) with one value.
    pub set: Vec<(String, V)>,
    /// Create only if the header is absent.
    pub add: Vec<(String, V)>,
    /// Add one more value, keeping existing ones.
    pub append: Vec<(String, V)>,
}

lists_of_ops!(HeaderOps: remove, remove_prefix, rename, set, add, append);

impl<V> HeaderOps<V> {
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.set
            .iter()
            .chain(&self.add)
            .chain(&self.append)
            .map(|(_, v)| v)
    }
}

/// Run `op` on each `(name, value)` of `list`, in order, whose value renders (`value` returns
/// `None` to skip the operation). True if any run changed something.
fn each_rendered<'a, V, R>(
    list: &'a [(String, V)],
    value: &mut impl FnMut(&'a V) -> Option<R>,
    mut op: impl FnMut(&'a str, R) -> bool,
) -> bool {
    let mut changed = false;
    for (name, v) in list {
        if let Some(v) = value(v) {
            changed |= op(name, v);
        }
    }
    changed
}

/// One header whose values changed: its final values (none = removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub name: String,
    pub values: Vec<Vec<u8>>,
}

/// One touched header name and its current values (none = removed).
type Touched<'a> = (Cow<'a, str>, Vec<Cow<'a, [u8]>>);

/// A header list being edited: the proxy's headers, untouched and borrowed, plus an overlay of the
/// names operations touched with their current values. Only the overlay is ever copied, so a
/// request costs allocations for what changes, not for every header; and only names whose values
/// really differ go back to the proxy ([`HeaderBook::edits`]).
#[derive(Debug, Clone)]
pub struct HeaderBook<'a> {
    base: &'a [(String, Vec<u8>)],
    /// Touched names, in first-touch order, with their current values (none = removed).
    overlay: Vec<Touched<'a>>,
}

impl<'a> HeaderBook<'a> {
    /// `base` with lowercase names, as the proxy gives them.
    pub fn new(base: &'a [(String, Vec<u8>)]) -> Self {
        HeaderBook {
            base,
            overlay: Vec::new(),
        }
    }

    fn slot(&self, name: &str) -> Option<usize> {
        self.overlay.iter().position(|(n, _)| n == name)
    }

    fn base_values<'s>(&self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's
    where
        'a: 's,
    {
        self.base
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first current value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match self.slot(name) {
            Some(i) => self.overlay[i].1.first().map(|v| v.as_ref()),
            None => self
                .base
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice()),
        }
    }

    fn has(&self, name: &str) -> bool {
        match self.slot(name) {
            Some(i) => !self.overlay[i].1.is_empty(),
            None => self.base.iter().any(|(n, _)| n == name),
        }
    }

    /// The overlay entry for `name`, created with the base values (`keep`) or none.
    fn entry(&mut self, name: Cow<'a, str>, keep: bool) -> &mut Vec<Cow<'a, [u8]>> {
        let i = match self.slot(&name) {
            Some(i) => i,
            None => {
                let values = if keep {
                    self.base_values(&name).map(Cow::Borrowed).collect()
                } else {
                    Vec::new()
                };
                self.overlay.push((name, values));
                self.overlay.len() - 1
            }
        };
        &mut self.overlay[i].1
    }

    /// Remove every value of `name`; true if there was one.
    pub fn remove(&mut self, name: impl Into<Cow<'a, str>>) -> bool {
        let name = name.into();
        if !self.has(&name) {
            return false;
        }
        self.entry(name, false).clear();
        true
    }

    pub fn remove_prefix(&mut self, prefix: &str) -> bool {
        let mut names: Vec<Cow<'a, str>> = Vec::new();
        for (n, _) in self.base.iter().filter(|(n, _)| n.starts_with(prefix)) {
            if !names.iter().any(|x| x == n) {
                names.push(Cow::Borrowed(n.as_str()));
            }
        }
        for (n, v) in &self.overlay {
            if n.starts_with(prefix) && !v.is_empty() && !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut removed = false;
        for n in names {
            removed |= self.remove(n);
        }
        removed
    }

    /// The values of `from` move to `to`, replacing `to`'s; false if `from` is absent.
    pub fn rename(&mut self, from: &'a str, to: &'a str) -> bool {
        if from == to || !self.has(from) {
            return false;
        }
        let values = std::mem::take(self.entry(Cow::Borrowed(from), true));
        *self.entry(Cow::Borrowed(to), false) = values;
        true
    }

    /// Overwrite with one value; true unless the header already had exactly that one value.
    pub fn set(&mut self, name: impl Into<Cow<'a, str>>, value: Cow<'a, [u8]>) -> bool {
        let name = name.into();
        let unchanged = match self.slot(&name) {
            Some(i) => matches!(self.overlay[i].1.as_slice(), [only] if *only == value),
            None => {
                let mut base = self.base_values(&name);
                base.next() == Some(value.as_ref()) && base.next().is_none()
            }
        };
        *self.entry(name, false) = vec![value];
        !unchanged
    }

    pub fn add(&mut self, name: &'a str, value: Cow<'a, [u8]>) -> bool {
        if self.has(name) {
            return false;
        }
        self.set(name, value)
    }

    pub fn append(&mut self, name: &'a str, value: Cow<'a, [u8]>) -> bool {
        self.entry(Cow::Borrowed(name), true).push(value);
        true
    }

    /// Apply operations in the documented order; `value` renders a value (`None` skips the
    /// operation). True if any operation changed a header (a later one may undo an earlier one;
    /// [`HeaderBook::edits`] has the final word on what goes back to the proxy).
    pub fn apply<V>(
        &mut self,
        ops: &'a HeaderOps<V>,
        mut value: impl FnMut(&'a V) -> Option<Cow<'a, [u8]>>,
    ) -> bool {
        let mut changed = false;
        for name in &ops.remove {
            changed |= self.remove(name.as_str());
        }
        for prefix in &ops.remove_prefix {
            changed |= self.remove_prefix(prefix);
        }
        for (from, to) in &ops.rename {
            changed |= self.rename(from, to);
        }
        changed |= each_rendered(&ops.set, &mut value, |name, v| self.set(name, v));
        changed |= each_rendered(&ops.add, &mut value, |name, v| self.add(name, v));
        changed |= each_rendered(&ops.append, &mut value, |name, v| self.append(name, v));
        changed
    }

    /// The touched headers whose values differ from the base, with their final values.
    pub fn edits(&self) -> Vec<HeaderEdit> {
        self.overlay
            .iter()
            .filter(|(name, now)| !now.iter().map(|v| v.as_ref()).eq(self.base_values(name)))
            .map(|(name, now)| HeaderEdit {
                name: name.to_string(),
                values: now.iter().map(|v| v.to_vec()).collect(),
            })
            .collect()
    }
}

/// A rule's query operations: remove → rename → set → add (if absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOps<V> {
    pub remove: Vec<String>,
    pub rename: Vec<(String, String)>,
    pub set: Vec<(String, V)>,
    pub add: Vec<(String, V)>,
}

lists_of_ops!(QueryOps: remove, rename, set, add);

impl<V> QueryOps<V> {
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.set.iter().chain(&self.add).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Param<'a> {
    /// The original text of an untouched parameter, re-emitted byte for byte.
    raw: Option<&'a str>,
    name: Cow<'a, str>,
    value: Option<Cow<'a, str>>,
}

/// A query string as decoded parameters, borrowing from the request. Untouched parameters keep
/// their original encoding; new or changed ones are encoded as
/// `application/x-www-form-urlencoded` (space as `+`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryBook<'a> {
    params: Vec<Param<'a>>,
    changed: bool,
}

/// Strictly percent-decode one query component (`+` is a space). A `%` not followed by two hex
/// digits, or bytes that are not UTF-8 once decoded, are malformed.
pub fn decode_component(raw: &str) -> Result<Cow<'_, str>, Malformed> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(Malformed("bad percent-encoding in the query string"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let plus_as_space: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Vec<u8> = percent_decode(&plus_as_space).collect();
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| Malformed("query string is not UTF-8 once decoded"))
}

impl<'a> QueryBook<'a> {
    /// Parse a query string (without the `?`).
    pub fn parse(query: &'a str) -> Result<Self, Malformed> {
        let mut params = Vec::new();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = match segment.split_once('=') {
                Some((n, v)) => (decode_component(n)?, Some(decode_component(v)?)),
                None => (decode_component(segment)?, None),
            };
            params.push(Param {
                raw: Some(segment),
                name,
                value,
            });
        }
        Ok(QueryBook {
            params,
            changed: false,
        })
    }

    /// The first value of `name` (a parameter without `=` has the value `""`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_deref().unwrap_or(""))
    }

    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.params.len();
        self.params.retain(|p| p.name != name);
        let removed = self.params.len() != before;
        self.changed |= removed;
        removed
    }

    pub fn rename(&mut self, from: &str, to: &'a str) -> bool {
        if from == to || !self.params.iter().any(|p| p.name == from) {
            return false;
        }
        self.remove(to);
        for p in self.params.iter_mut().filter(|p| p.name == from) {
            p.name = Cow::Borrowed(to);
            p.raw = None;
        }
        self.changed = true;
        true
    }

    /// Overwrite the first occurrence in place (dropping the others), or append. True if the
    /// query changed.
    pub fn set(&mut self, name: &'a str, value: Cow<'a, str>) -> bool {
        let Some(first) = self.params.iter().position(|p| p.name == name) else {
            self.push(name, value);
            return true;
        };
        let mut seen = 0usize;
        self.params.retain(|p| {
            if p.name != name {
                return true;
            }
            seen += 1;
            seen == 1
        });
        let Some(p) = self.params.get_mut(first) else {
            return false;
        };
        if p.value.as_deref() == Some(value.as_ref()) && seen == 1 {
            return false;
        }
        p.value = Some(value);
        p.raw = None;
        self.changed = true;
        true
    }

    pub fn add(&mut self, name: &'a str, value: Cow<'a, str>) -> bool {
        if self.params.iter().any(|p| p.name == name) {
            return false;
        }
        self.push(name, value);
        true
    }

    fn push(&mut self, name: &'a str, value: Cow<'a, str>) {
        self.params.push(Param {
            raw: None,
            name: Cow::Borrowed(name),
            value: Some(value),
        });
        self.changed = true;
    }

    /// Apply operations in the documented order; `value` renders a value (`None` skips the
    /// operation). True if the query changed.
    pub fn apply<V>(
        &mut self,
        ops: &'a QueryOps<V>,
        mut value: impl FnMut(&'a V) -> Option<Cow<'a, str>>,
    ) -> bool {
        let mut changed = false;
        for name in &ops.remove {
            changed |= self.remove(name);
        }
        for (from, to) in &ops.rename {
            changed |= self.rename(from, to);
        }
        changed |= each_rendered(&ops.set, &mut value, |name, v| self.set(name, v));
        changed |= each_rendered(&ops.add, &mut value, |name, v| self.add(name, v));
        changed
    }

    /// The query string (without `?`), empty when there are no parameters.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for p in &self.params {
            if !out.is_empty() {
                out.push('&');
            }
            if let Some(raw) = p.raw {
                out.push_str(raw);
                continue;
            }
            out.extend(form_urlencoded::byte_serialize(p.name.as_bytes()));
            if let Some(v) = &p.value {
                out.push('=');
                out.extend(form_urlencoded::byte_serialize(v.as_bytes()));
            }
        }
        out
    }
}

/// A validated JSON pointer (RFC 6901), as its unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parse a non-empty pointer; `Err` carries the reason.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err("a JSON pointer starts with `/` (the whole document cannot be edited)");
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::new();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return Err("`~` must be followed by `0` or `1` in a JSON pointer"),
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `self` is `other` or inside it.
    pub fn is_within(&self, other: &Pointer) -> bool {
        self.tokens.starts_with(&other.tokens)
    }

    fn split_last(&self) -> Option<(&[String], &String)> {
        self.tokens
            .split_last()
            .map(|(last, parents)| (parents, last))
    }

    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut cur = doc;
        for t in &self.tokens {
            cur = match cur {
                Value::Object(m) => m.get(t)?,
                Value::Array(a) => a.get(array_index(t)?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Remove the value; true if there was one.
    pub fn remove(&self, doc: &mut Value) -> bool {
        let Some((parents, last)) = self.split_last() else {
            return false;
        };
        match walk_mut(doc, parents) {
            Some(Value::Object(m)) => m.remove(last).is_some(),
            Some(Value::Array(a)) => match array_index(last) {
                Some(i) if i < a.len() => {
                    a.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Set the value, creating missing parent objects. In an array the last token may be an
    /// existing index (replace), the length or `-` (append). False when the path runs into a
    /// scalar or an out-of-range index.
    pub fn set(&self, doc: &mut Value, value: Value) -> bool {
        let Some((parents, last)) = self.split_last() else {
            return false;
        };
        let mut cur = doc;
        for t in parents {
            cur = match cur {
                Value::Object(m) => m
                    .entry(t.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new())),
                Value::Array(a) => match array_index(t).and_then(|i| a.get_mut(i)) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        match cur {
            Value::Object(m) => {
                m.insert(last.clone(), value);
                true
            }
            Value::Array(a) => {
                let len = a.len();
                let index = if last == "-" {
                    Some(len)
                } else {
                    array_index(last)
                };
                match index {
                    Some(i) if i < len => {
                        if let Some(slot) = a.get_mut(i) {
                            *slot = value;
                        }
                        true
                    }
                    Some(i) if i == len => {
                        a.push(value);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

fn walk_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => a.get_mut(array_index(t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// An RFC 6901 array index: digits without leading zeros.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

/// A rule's JSON body operations: remove → rename → set.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyOps<V> {
    pub remove: Vec<Pointer>,
    pub rename: Vec<(Pointer, Pointer)>,
    pub set: Vec<(Pointer, V)>,
}

lists_of_ops!(BodyOps: remove, rename, set);

impl BodyOps<Value> {
    /// Apply to a document; true if anything changed.
    pub fn apply(&self, doc: &mut Value) -> bool {
        let mut changed = false;
        for p in &self.remove {
            changed |= p.remove(doc);
        }
        for (from, to) in &self.rename {
            let Some(v) = from.get(doc).cloned() else {
                continue;
            };
            // Set first, so a `to` that cannot be created leaves the document as it was.
            let mut probe = doc.clone();
            if to.set(&mut probe, v) {
                from.remove(&mut probe);
                *doc = probe;
                changed = true;
            }
        }
        for (p, v) in &self.set {
            if p.get(doc) != Some(v) {
                changed |= p.set(doc, v.clone());
            }
        }
        changed
    }
}

/// Whether a `content-type` value is JSON: `application/json` or any `+json` type, parameters
/// and case ignored.
pub fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((top, sub)) => {
            !top.is_empty() && (essence == "application/json" || sub.ends_with("+json"))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn v(s: &'static str) -> Cow<'static, [u8]> {
        Cow::Borrowed(s.as_bytes())
    }

    fn literal(v: &String) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(v.as_bytes()))
    }

    fn edit(name: &str, values: &[&str]) -> HeaderEdit {
        HeaderEdit {
            name: name.into(),
            values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn header_remove_by_name_and_prefix() {
        let orig = headers(&[
            ("x-a", "1"),
            ("x-internal-1", "s"),
            ("x-internal-2", "t"),
            ("keep", "k"),
        ]);
        let mut b = HeaderBook::new(&orig);
        assert!(b.remove("x-a"));
        assert!(!b.remove("absent"));
        assert!(b.remove_prefix("x-internal-"));
        let edits = b.edits();
        assert_eq!(
            edits,
            vec![
                edit("x-a", &[]),
                edit("x-internal-1", &[]),
                edit("x-internal-2", &[])
            ]
        );
    }

    #[test]
    fn header_rename_moves_all_values_and_replaces_the_target() {
        let orig = headers(&[("x-old", "1"), ("x-old", "2"), ("x-new", "stale")]);
        let mut b = HeaderBook::new(&orig);
        assert!(b.rename("x-old", "x-new"));
        assert!(!b.rename("absent", "x-new"));
        assert_eq!(
            b.edits(),
            vec![edit("x-old", &[]), edit("x-new", &["1", "2"])]
        );
    }

    #[test]
    fn header_set_overwrites_add_only_if_absent_append_keeps() {
        let orig = headers(&[
            ("x-s", "old"),
            ("x-s", "old2"),
            ("x-a", "have"),
            ("x-p", "1"),
        ]);
        let mut b = HeaderBook::new(&orig);
        b.set("x-s", v("new"));
        assert!(!b.add("x-a", v("ignored")));
        assert!(b.add("x-fresh", v("f")));
        b.append("x-p", v("2"));
        assert_eq!(
            b.edits(),
            vec![
                edit("x-s", &["new"]),
                edit("x-fresh", &["f"]),
                edit("x-p", &["1", "2"])
            ]
        );
    }

    #[test]
    fn setting_a_header_to_its_current_value_is_not_an_edit() {
        let orig = headers(&[("x-s", "same")]);
        let mut b = HeaderBook::new(&orig);
        assert!(!b.set("x-s", v("same")));
        assert!(b.edits().is_empty());
    }

    #[test]
    fn header_operations_run_remove_rename_set_add_append_in_that_order() {
        // remove x-a, then rename x-b→x-a (so x-a comes back with b's value), then set x-c,
        // then add x-c (already set: no effect), then append x-c.
        let orig = headers(&[("x-a", "a"), ("x-b", "b")]);
        let mut b = HeaderBook::new(&orig);
        let ops = HeaderOps {
            remove: vec!["x-a".into()],
            remove_prefix: vec![],
            rename: vec![("x-b".into(), "x-a".into())],
            set: vec![("x-c".into(), "set".into())],
            add: vec![
                ("x-c".into(), "added".into()),
                ("x-a".into(), "added".into()),
            ],
            append: vec![("x-c".into(), "appended".into())],
        };
        assert!(b.apply(&ops, literal));
        assert_eq!(
            b.edits(),
            vec![
                edit("x-a", &["b"]),
                edit("x-b", &[]),
                edit("x-c", &["set", "appended"])
            ]
        );
    }

    /// `query` with `ops` (literal values) applied, encoded again; the ops must change it.
    fn query_after(query: &str, ops: &QueryOps<String>) -> String {
        let mut q = QueryBook::parse(query).unwrap();
        assert!(
            q.apply(ops, |v: &String| Some(Cow::Borrowed(v.as_str()))),
            "{query}"
        );
        assert!(q.changed(), "{query}");
        q.encode()
    }

    #[test]
    fn query_parse_decodes_and_untouched_params_keep_their_encoding() {
        let mut q = QueryBook::parse("a=b%20c&d=e+f&flag&g=%C3%A9").unwrap();
        assert_eq!(q.get("a"), Some("b c"));
        assert_eq!(q.get("d"), Some("e f"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("g"), Some("é"));
        assert!(!q.changed());
        q.add("new", Cow::Borrowed("x y&z"));
        assert_eq!(q.encode(), "a=b%20c&d=e+f&flag&g=%C3%A9&new=x+y%26z");
    }

    #[test]
    fn query_remove_rename_set_add() {
        let ops = QueryOps {
            remove: vec!["drop".into()],
            rename: vec![("old".into(), "new".into())],
            set: vec![("page".into(), "9".into()), ("size".into(), "10".into())],
            add: vec![
                ("keep".into(), "ignored".into()),
                ("lang".into(), "en".into()),
            ],
        };
        assert_eq!(
            query_after("page=1&page=2&old=v&drop=1&keep=k", &ops),
            "page=9&new=v&keep=k&size=10&lang=en"
        );
    }

    #[test]
    fn query_operations_run_remove_rename_set_add_in_that_order() {
        // remove a, then rename b→a (a comes back with b's value), then set c, then add c (no
        // effect: set created it) and add a (no effect: the rename created it).
        let ops = QueryOps {
            remove: vec!["a".into()],
            rename: vec![("b".into(), "a".into())],
            set: vec![("c".into(), "set".into())],
            add: vec![("c".into(), "added".into()), ("a".into(), "added".into())],
        };
        assert_eq!(query_after("a=1&b=2", &ops), "a=2&c=set");
    }

    #[test]
    fn body_operations_run_remove_rename_set_in_that_order() {
        // remove /a, then rename /b→/a (so /a holds b's value), then set /b afresh.
        let mut doc = json!({"a": 1, "b": 2});
        let p = |s: &str| Pointer::parse(s).unwrap();
        let ops = BodyOps {
            remove: vec![p("/a")],
            rename: vec![(p("/b"), p("/a"))],
            set: vec![(p("/b"), json!("new"))],
        };
        assert!(ops.apply(&mut doc));
        assert_eq!(doc, json!({"a": 2, "b": "new"}));
    }

    #[test]
    fn query_set_to_the_same_single_value_changes_nothing() {
        let mut q = QueryBook::parse("a=1").unwrap();
        assert!(!q.set("a", Cow::Borrowed("1")));
        assert!(!q.changed());
    }

    #[test]
    fn malformed_queries_are_reported() {
        assert!(QueryBook::parse("a=%zz").is_err());
        assert!(QueryBook::parse("a=%4").is_err());
        assert!(QueryBook::parse("a=%ff").is_err()); // not UTF-8 once decoded
        assert!(QueryBook::parse("").unwrap().encode().is_empty());
    }

    #[test]
    fn pointers_parse_escapes_and_reject_bad_ones() {
        let p = Pointer::parse("/a~1b/c~0d").unwrap();
        assert_eq!(p.tokens, vec!["a/b".to_string(), "c~d".to_string()]);
        assert!(Pointer::parse("").is_err());
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn body_remove_rename_set_by_pointer() {
        let mut doc = json!({"user": {"password": "x", "name": "al"}, "items": [1, 2, 3]});
        let p = |s: &str| Pointer::parse(s).unwrap();
        let ops = BodyOps {
            remove: vec![p("/user/password"), p("/items/0"), p("/absent")],
            rename: vec![(p("/user/name"), p("/user/login"))],
            set: vec![
                (p("/meta/source"), json!("gw")),
                (p("/items/-"), json!(4)),
                (p("/items/0"), json!(20)),
            ],
        };
        assert!(ops.apply(&mut doc));
        assert_eq!(
            doc,
            json!({"user": {"login": "al"}, "items": [20, 3, 4], "meta": {"source": "gw"}})
        );
    }

    #[test]
    fn body_ops_that_cannot_apply_leave_the_document_alone() {
        let mut doc = json!({"s": "scalar", "a": [1]});
        let p = |s: &str| Pointer::parse(s).unwrap();
        let ops = BodyOps {
            remove: vec![p("/a/5"), p("/s/x")],
            rename: vec![(p("/a"), p("/s/inner"))],
            set: vec![
                (p("/s/x"), json!(1)),
                (p("/a/7"), json!(1)),
                (p("/a/01"), json!(1)),
            ],
        };
        assert!(!ops.apply(&mut doc));
        assert_eq!(doc, json!({"s": "scalar", "a": [1]}));
    }

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json_content_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "json",
            "",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json_content_type(no.as_bytes()), "{no}");
        }
        assert!(!is_json_content_type(&[0xff, 0xfe]));
    }
}
