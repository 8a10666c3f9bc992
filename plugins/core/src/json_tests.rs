use super::*;
use serde_json::json;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Doc {
    rules: Vec<Rule>,
    #[serde(default)]
    mode: Option<Mode>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    capacity: Option<u32>,
    ratio: Option<f64>,
    key: Option<Vec<Part>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Part {
    ClientIp,
    Header(String),
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    First,
    All,
}

fn read(json: &str) -> Result<Doc, PathError> {
    let Strict(value) = serde_json::from_str(json).unwrap();
    from_value(&value)
}

fn failure(json: &str) -> PathError {
    read(json).unwrap_err()
}

#[test]
fn a_valid_document_reads_as_the_streaming_parser_reads_it() {
    let json = r#"{"rules": [{"name": "a", "capacity": 5, "ratio": 0.5,
        "key": ["client_ip", {"header": "x-user"}]}], "mode": "all"}"#;
    let ours = read(json).unwrap();
    assert_eq!(ours, serde_json::from_str::<Doc>(json).unwrap());
    assert_eq!(
        ours.rules[0].key.as_ref().unwrap()[1],
        Part::Header("x-user".into())
    );
}

#[test]
fn a_type_error_names_the_value_that_failed() {
    let e = failure(r#"{"rules": [{"name": "a"}, {"name": "b", "capacity": "ten"}]}"#);
    assert_eq!(e.path, "rules[1].capacity");
    assert_eq!(e.message, r#"invalid type: string "ten", expected u32"#);
}

#[test]
fn an_unknown_field_is_named_by_its_own_path() {
    let e = failure(r#"{"rules": [{"name": "a", "capacty": 1}]}"#);
    assert_eq!(e.path, "rules[0].capacty");
    assert!(
        e.message.starts_with("unknown field `capacty`"),
        "{}",
        e.message
    );
}

#[test]
fn a_missing_field_names_the_object_that_lacks_it() {
    let e = failure(r#"{"rules": [{"name": "a"}, {"capacity": 1}]}"#);
    assert_eq!(e.path, "rules[1]");
    assert_eq!(e.message, "missing field `name`");
    let e = failure(r#"{}"#);
    assert_eq!(e.path, "");
    assert_eq!(e.message, "missing field `rules`");
}

#[test]
fn integers_keep_their_range_and_refuse_fractions() {
    let e = failure(r#"{"rules": [{"name": "a", "capacity": 5000000000}]}"#);
    assert_eq!(e.path, "rules[0].capacity");
    assert!(e.message.contains("expected u32"), "{}", e.message);
    let e = failure(r#"{"rules": [{"name": "a", "capacity": 5.5}]}"#);
    assert!(e.message.contains("floating point"), "{}", e.message);
    let e = failure(r#"{"rules": [{"name": "a", "capacity": -1}]}"#);
    assert!(e.message.contains("integer `-1`"), "{}", e.message);
    // A float field takes an integer, as with the streaming parser.
    assert_eq!(
        read(r#"{"rules": [{"name": "a", "ratio": 1}]}"#)
            .unwrap()
            .rules[0]
            .ratio,
        Some(1.0)
    );
}

#[test]
fn enum_errors_name_the_variant_or_the_element() {
    let e = failure(r#"{"rules": [{"name": "a", "key": [{"header": 7}]}]}"#);
    assert_eq!(e.path, "rules[0].key[0].header");
    let e = failure(r#"{"rules": [{"name": "a", "key": ["client_address"]}]}"#);
    assert_eq!(e.path, "rules[0].key[0]");
    assert!(
        e.message.starts_with("unknown variant `client_address`"),
        "{}",
        e.message
    );
    let e = failure(r#"{"rules": [{"name": "a", "key": [{"header": "x", "query": "y"}]}]}"#);
    assert_eq!(e.path, "rules[0].key[0]");
    let e = failure(r#"{"rules": [{"name": "a", "key": [{"client_ip": 1}]}]}"#);
    assert_eq!(e.path, "rules[0].key[0].client_ip");
    // A unit variant written as a one-member object with null, as serde_json accepts it.
    let doc = read(r#"{"rules": [{"name": "a", "key": [{"client_ip": null}]}]}"#).unwrap();
    assert_eq!(doc.rules[0].key, Some(vec![Part::ClientIp]));
}

#[test]
fn null_is_none_for_an_option_and_an_error_elsewhere() {
    assert_eq!(read(r#"{"rules": [], "mode": null}"#).unwrap().mode, None);
    let e = failure(r#"{"rules": [{"name": null}]}"#);
    assert_eq!(e.path, "rules[0].name");
    assert!(e.message.starts_with("invalid type: null"), "{}", e.message);
}

#[test]
fn a_repeated_member_is_an_error_at_any_depth() {
    for json in [
        r#"{"rules": [], "rules": []}"#,
        r#"{"rules": [{"name": "a", "name": "b"}]}"#,
        r#"[{"x": {"y": 1, "y": 2}}]"#,
    ] {
        let e = serde_json::from_str::<Strict>(json).unwrap_err();
        assert!(
            e.to_string().contains("duplicate object member"),
            "{json}: {e}"
        );
    }
    // The message names the repeated member by its path.
    let e =
        serde_json::from_str::<Strict>(r#"{"rules": [{"name": "a"}, {"name": "b", "name": "c"}]}"#)
            .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("duplicate object member `rules[1].name`"),
        "{e}"
    );
    let Strict(v) = serde_json::from_str(r#"{"a": [1, {"b": null}], "c": -2.5}"#).unwrap();
    assert_eq!(v, json!({"a": [1, {"b": null}], "c": -2.5}));
}

#[test]
fn a_raw_value_is_read_back_as_its_json() {
    #[derive(Deserialize)]
    struct WithRaw {
        inline: Box<serde_json::value::RawValue>,
    }
    let doc: WithRaw = from_value(&json!({"inline": {"keys": [1, 2]}})).unwrap();
    assert_eq!(doc.inline.get(), r#"{"keys":[1,2]}"#);
}

#[test]
fn any_value_reads_back_unchanged() {
    let v = json!({"a": [1, -2, 2.5, "s", null, true, {"b": {}}]});
    assert_eq!(from_value::<Value>(&v).unwrap(), v);
}
