//! `jwt_auth::config::Config::parse` on arbitrary bytes, with the config targets' oracle
//! ([`palisade_fuzz::check_config`]: no panic, deterministic, every refusal explained).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| palisade_fuzz::check_config(data, jwt_auth::config::Config::parse));
