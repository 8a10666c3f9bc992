//! The two command-line forms: the harness's flags and limitador-server's positional subset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn settings(args: &[&str]) -> Result<Settings, String> {
    let args = Args::try_parse_from(std::iter::once("palisade-rls").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    args.settings()
}

#[test]
fn the_harness_flags_name_the_address_redis_and_limits() {
    let s = settings(&[
        "--listen",
        "127.0.0.1:0",
        "--redis",
        "redis://127.0.0.1:7000",
        "--limits",
        "l.yaml",
    ])
    .unwrap();
    assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(s.redis, "redis://127.0.0.1:7000");
    assert_eq!(s.limits, PathBuf::from("l.yaml"));
}

#[test]
fn limitador_servers_command_line_means_the_same() {
    let s = settings(&[
        "--rls-ip",
        "0.0.0.0",
        "--rls-port",
        "8081",
        "--rate-limit-headers",
        "DRAFT_VERSION_03",
        "/etc/palisade/limits.yaml",
        "redis",
        "redis://redis:6379",
    ])
    .unwrap();
    assert_eq!(s.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(s.redis, "redis://redis:6379");
    assert_eq!(s.limits, PathBuf::from("/etc/palisade/limits.yaml"));
}

#[test]
fn defaults_are_loopback_any_port_and_the_local_redis() {
    let s = settings(&["l.yaml"]).unwrap();
    assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(s.redis, "redis://127.0.0.1:6379");
}

#[test]
fn a_storage_other_than_redis_is_refused_by_name() {
    let e = settings(&["l.yaml", "memory"]).err().unwrap();
    assert!(e.contains("\"memory\"") && e.contains("redis <URL>"), "{e}");
    let e = settings(&["l.yaml", "disk", "/tmp/x"]).err().unwrap();
    assert!(e.contains("\"disk /tmp/x\""), "{e}");
}

#[test]
fn no_limits_file_and_mixed_forms_are_errors() {
    let e = settings(&[]).err().unwrap();
    assert!(e.contains("limits file is required"), "{e}");
    assert!(settings(&["--listen", "127.0.0.1:0", "--rls-port", "1", "l.yaml"]).is_err());
    assert!(settings(&["--limits", "a.yaml", "b.yaml"]).is_err());
    assert!(settings(&["--redis", "redis://x", "l.yaml", "redis", "redis://y"]).is_err());
}
