//! What the fuzz targets share. Each target is a binary in `fuzz_targets/`; see docs/fuzzing.md.

use std::fmt::{Debug, Display};

/// The config targets' oracle: a plugin's `Config::parse` on arbitrary bytes never panics (an
/// operator's or a control plane's config must not abort the VM in `on_configure`), is
/// deterministic (same bytes: same config or same error), and a refusal explains itself.
pub fn check_config<T: Debug, E: Display>(data: &[u8], parse: impl Fn(&[u8]) -> Result<T, E>) {
    let first = parse(data);
    let second = parse(data);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "parse is not deterministic"
        ),
        (Err(a), Err(b)) => {
            let message = a.to_string();
            assert!(!message.trim().is_empty(), "empty config error message");
            assert_eq!(message, b.to_string(), "parse is not deterministic");
        }
        _ => panic!("parse accepted the same bytes once and refused them once"),
    }
}
