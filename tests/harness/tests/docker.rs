//! Tests that only make sense with Docker (`make e2e-docker`, part of `make test`): the images of
//! `make images`, that the container runner really runs Envoy in a container of the image, and the
//! docker-compose demo. They live in `mod docker_only`, which the native tier skips
//! (`--skip docker_only::`); the Docker tier runs them with `PALISADE_RUNNER=docker` and the
//! `PALISADE_*_IMAGE` variables the Makefile sets.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod docker_only {
    use palisade_harness::demo::{assert_walkthrough, DemoTarget, Global};
    use palisade_harness::{
        client, free_port, repo_root, start_upstream, Bootstrap, Envoy, Filter, Request, Route,
    };
    use serde_json::json;
    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::Duration;

    fn env(name: &str) -> String {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!("{name} is not set: run the Docker tier with `make e2e-docker`")
            })
    }

    fn run(cmd: &mut Command) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(cmd: &mut Command) -> String {
        String::from_utf8_lossy(&run(cmd).stdout).trim().to_owned()
    }

    fn docker(args: &[&str]) -> String {
        stdout(Command::new("docker").args(args))
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn end_to_end_envoys_run_in_a_container_of_the_image_and_load_modules_from_dist() {
        assert_eq!(
            std::env::var("PALISADE_RUNNER").as_deref(),
            Ok("docker"),
            "the Docker tier must run with PALISADE_RUNNER=docker"
        );
        let image = env("PALISADE_ENVOY_IMAGE");
        let upstream = start_upstream();
        let yaml = Bootstrap::new()
            .filter(Filter::wasm(
                "probe",
                &json!({"header": "x-palisade-probe", "count": true}),
            ))
            .route(Route::backend("all", "/"))
            .render(upstream.port());
        let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let name = envoy
            .container()
            .expect("PALISADE_RUNNER=docker starts Envoy in a container")
            .to_owned();
        let name = name.as_str();
        assert_eq!(
            docker(&["inspect", "--format", "{{.Config.Image}}", name]),
            image
        );
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"io.palisade\"}}",
                name
            ]),
            "1",
            "containers carry our label, so the tier can find leftovers"
        );
        // The module really runs inside: the shared counter crosses both workers exactly.
        let results = client::parallel(4, 40, |i| Request::get(&envoy.url(&format!("/i/{i}"))));
        assert_eq!(
            client::status_counts(&results),
            [(200, 40)].into_iter().collect()
        );
        assert_eq!(envoy.stat("wasmcustom.palisade.probe.requests"), 40);
        let mut counts: Vec<u64> = results
            .iter()
            .map(|r| {
                r.as_ref()
                    .unwrap()
                    .echoed_header("x-palisade-probe")
                    .expect("probe header")
                    .parse()
                    .unwrap()
            })
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=40).collect::<Vec<u64>>());
        drop(envoy);
        let left = docker(&["ps", "-a", "--filter", &format!("name=^{name}$"), "-q"]);
        assert!(left.is_empty(), "container {name} outlived its Envoy");
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn a_module_the_container_cannot_load_fails_the_start_with_envoys_log() {
        // A Wasm filter whose code file does not exist inside the container: Envoy must refuse
        // the config, and the harness must report it with the container's log.
        let yaml = Bootstrap::new()
            .filter(Filter::raw(
                r#"- name: missing
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: missing
      root_id: missing
      failure_policy: FAIL_CLOSED
      vm_config:
        runtime: envoy.wasm.runtime.v8
        code: { local: { filename: /palisade-no-such-dir/missing.wasm } }
"#,
            ))
            .route(Route::direct("all", "/", 200, "ok"))
            .render(1);
        let err = match Envoy::start(&yaml) {
            Ok(_) => panic!("Envoy started with a module it cannot read"),
            Err(e) => e,
        };
        assert!(
            err.log.contains("missing.wasm"),
            "the log names the module it could not load:\n{}",
            err.log
        );
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn the_envoy_image_is_a_wasm_enabled_envoy_running_as_non_root_with_no_shell() {
        let image = env("PALISADE_ENVOY_IMAGE");
        if !image.starts_with("palisade/envoy:") {
            eprintln!("{image} is not ours: its build is not checked here");
            return;
        }
        let version = image.trim_start_matches("palisade/envoy:");
        let line = docker(&[
            "run",
            "--rm",
            "--label",
            "io.palisade=1",
            "--network",
            "none",
            &image,
            "--version",
        ]);
        assert!(
            line.contains(&format!("/{version}/Clean/")),
            "not a clean (Wasm-enabled) Envoy {version}: {line}"
        );
        assert_eq!(
            docker(&["inspect", "--format", "{{.Config.User}}", &image]),
            "101:101"
        );
        assert_eq!(
            docker(&["inspect", "--format", "{{.Os}}/{{.Architecture}}", &image]),
            "linux/amd64"
        );
        let shell = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--label",
                "io.palisade=1",
                "--network",
                "none",
                "--entrypoint",
                "/bin/sh",
                &image,
                "-c",
                "true",
            ])
            .output()
            .unwrap();
        assert!(!shell.status.success(), "the image has a shell");
    }

    /// `docker save` an image and unpack it into `dir`: returns the manifest's layer paths.
    fn save(image: &str, dir: &Path) -> Vec<String> {
        let archive = dir.join("image.tar");
        run(Command::new("docker")
            .args(["save", "-o"])
            .arg(&archive)
            .arg(image));
        run(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dir));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let entries = manifest.as_array().unwrap();
        assert_eq!(entries.len(), 1, "one image in the archive: {manifest}");
        entries[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn every_wasm_image_is_a_single_layer_holding_the_built_module_as_plugin_wasm() {
        let version = env("PALISADE_IMAGE_VERSION");
        let modules = env("PALISADE_WASM_IMAGES");
        for module in modules.split_whitespace() {
            let image = format!("palisade/{module}-wasm:{version}");
            assert_eq!(
                docker(&["inspect", "--format", "{{.Os}}/{{.Architecture}}", &image]),
                "linux/amd64",
                "{image}: Istio resolves linux/amd64"
            );
            let dir = tempfile::tempdir().unwrap();
            let layers = save(&image, dir.path());
            assert_eq!(layers.len(), 1, "{image}: one layer, {layers:?}");
            let unpacked = dir.path().join("layer");
            std::fs::create_dir(&unpacked).unwrap();
            let listing = stdout(
                Command::new("tar")
                    .arg("-tf")
                    .arg(dir.path().join(&layers[0])),
            );
            assert_eq!(
                listing, "plugin.wasm",
                "{image}: the layer holds plugin.wasm only"
            );
            run(Command::new("tar")
                .arg("-xf")
                .arg(dir.path().join(&layers[0]))
                .arg("-C")
                .arg(&unpacked));
            let inside = std::fs::read(unpacked.join("plugin.wasm")).unwrap();
            let built = std::fs::read(palisade_harness::wasm_module(module)).unwrap();
            assert!(inside.starts_with(b"\0asm"), "{image}: not a Wasm module");
            assert!(
                inside == built,
                "{image}: plugin.wasm differs from dist/{module}.wasm"
            );
        }
    }

    /// The compose command, `docker compose` (v2) or `docker-compose` (v1).
    fn compose() -> Command {
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if v2 {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        }
    }

    /// A compose project brought up for one test, brought down on drop (also when the test fails,
    /// printing the services' logs first).
    struct Project {
        name: String,
        env: Vec<(String, String)>,
    }

    impl Project {
        fn cmd(&self) -> Command {
            let mut c = compose();
            c.current_dir(repo_root())
                .args(["-p", &self.name, "-f", "deploy/compose/compose.yaml"])
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c
        }
    }

    impl Drop for Project {
        fn drop(&mut self) {
            if std::thread::panicking() {
                if let Ok(out) = self.cmd().args(["logs", "--no-color"]).output() {
                    eprintln!(
                        "----- compose logs -----\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            let _ = self
                .cmd()
                .args(["down", "--volumes", "--remove-orphans"])
                .output();
        }
    }

    #[test]
    #[ignore = "docker: run by `make e2e-docker`"]
    fn the_compose_demo_does_what_the_walkthrough_says_and_leaves_nothing_behind() {
        let [port, admin_port, b_port, b_admin_port] = [(); 4].map(|()| free_port());
        let project = Project {
            name: format!("palisade-test-{}", std::process::id()),
            env: vec![
                ("ENVOY_IMAGE".into(), env("PALISADE_ENVOY_IMAGE")),
                ("UPSTREAM_IMAGE".into(), env("PALISADE_UPSTREAM_IMAGE")),
                ("RLS_IMAGE".into(), env("PALISADE_RLS_IMAGE")),
                ("RLS_SERVER".into(), env("PALISADE_RLS_SERVER")),
                ("REDIS_IMAGE".into(), env("PALISADE_REDIS_IMAGE")),
                ("DEMO_PORT".into(), port.to_string()),
                ("DEMO_ADMIN_PORT".into(), admin_port.to_string()),
                ("DEMO_B_PORT".into(), b_port.to_string()),
                ("DEMO_B_ADMIN_PORT".into(), b_admin_port.to_string()),
            ],
        };
        run(project.cmd().args(["up", "-d"]));
        let admin = format!("http://127.0.0.1:{admin_port}");
        let b_admin = format!("http://127.0.0.1:{b_admin_port}");
        for a in [&admin, &b_admin] {
            palisade_harness::wait_for(
                "the compose demo's Envoys to be ready",
                Duration::from_secs(60),
                || {
                    client::get(&format!("{a}/ready"))
                        .ok()
                        .filter(|r| r.status == 200)
                },
            );
        }
        // The engine prints its bound address once it accepts connections (after reaching
        // Redis; compose restarts it until it does).
        palisade_harness::wait_for(
            "the compose demo's rate limit service to listen",
            Duration::from_secs(60),
            || {
                let logs = stdout(project.cmd().args(["logs", "--no-color", "rls"]));
                logs.contains("0.0.0.0:8081").then_some(())
            },
        );
        // Published on loopback only.
        let ports = stdout(project.cmd().args(["port", "envoy", "10000"]));
        assert_eq!(ports, format!("127.0.0.1:{port}"));
        let ports = stdout(project.cmd().args(["port", "envoy-b", "10000"]));
        assert_eq!(ports, format!("127.0.0.1:{b_port}"));
        assert_walkthrough(&DemoTarget {
            base: format!("http://127.0.0.1:{port}"),
            admin,
            cluster: "backend".to_owned(),
            global: Global::SharedWith {
                peer: format!("http://127.0.0.1:{b_port}"),
                peer_admin: b_admin,
            },
        });
        let listed = || {
            let by_project = format!("label=com.docker.compose.project={}", project.name);
            (
                docker(&["ps", "-a", "-q", "--filter", &by_project]),
                docker(&["network", "ls", "-q", "--filter", &by_project]),
            )
        };
        let (containers, _) = listed();
        assert_eq!(
            containers.lines().count(),
            5,
            "two Envoys, the upstream, the rate limit service and Redis were running"
        );
        run(project
            .cmd()
            .args(["down", "--volumes", "--remove-orphans"]));
        let (containers, networks) = listed();
        assert!(containers.is_empty(), "containers left: {containers}");
        assert!(networks.is_empty(), "networks left: {networks}");
    }
}

/// Runs in the native tiers too (no engine needed): the Docker tier must fail loudly, never skip,
/// when no engine answers.
#[test]
fn the_docker_tier_fails_with_a_clear_message_when_no_engine_answers() {
    let out = std::process::Command::new("bash")
        .arg(palisade_harness::repo_root().join("scripts/docker-tier.sh"))
        .arg("true")
        .env(
            "DOCKER_HOST",
            "unix:///nonexistent/palisade-test-docker.sock",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(
        stderr.contains("no Docker engine answers"),
        "stderr: {stderr}"
    );
}
