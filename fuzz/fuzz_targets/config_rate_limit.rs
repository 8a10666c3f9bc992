//! `rate_limit::config::Config::parse` on arbitrary bytes: an operator's (or a control plane's)
//! config must never panic the VM in `on_configure`. Invariants: parsing is deterministic (same
//! bytes, same config or same error), and a refusal explains itself (non-empty message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rate_limit::config::Config;

fuzz_target!(|data: &[u8]| {
    let first = Config::parse(data);
    let second = Config::parse(data);
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
});
