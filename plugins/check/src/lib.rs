//! `palisade-check`: Palisade plugin configs checked offline, with the modules' own parsers and
//! error messages (the ones Envoy's log would show), before Envoy or Istio sees them.
//!
//! - [`modules`]: the modules, their parsers and JSON Schemas.
//! - [`find`]: Wasm filters and WasmPlugins in Envoy and Istio YAML.
//! - [`clusters`]: the clusters a config names, against a static bootstrap's.
//! - [`check_file`] and [`Report`]: what the command prints (text or JSON).

pub mod clusters;
pub mod find;
pub mod modules;

use find::{What, WASM_FILTER_TYPE};
use modules::Module;
use serde::Serialize;
use std::path::Path;

/// How a file is read.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// An Envoy config or WasmPlugin manifests: every Palisade filter and plugin in it.
    Manifests,
    /// One module's own config: a `.json` file is passed to the parser byte for byte; any other
    /// file is read as YAML (a `pluginConfig` on its own) and handed over as JSON.
    Config(&'static Module),
}

/// The outcome of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    /// `valid`, `invalid` or `unreadable`.
    pub status: &'static str,
    /// Why the file is unreadable, or invalid as a whole (nothing to check in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub configs: Vec<ConfigReport>,
    /// Wasm filters and plugins that are not Palisade modules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// One checked config.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    pub module: &'static str,
    /// `filter`, `WasmPlugin` or `config`.
    pub kind: &'static str,
    pub name: String,
    pub location: String,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// The field's path in the module's config (`rules[0].limits[1].capacity`); empty for the
    /// config as a whole.
    pub field: String,
    /// The module's own message, as Envoy's log would show it.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub kind: &'static str,
    pub name: String,
    pub location: String,
    pub reason: String,
}

/// Every file's outcome; `valid` when all are valid.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub valid: bool,
    pub files: Vec<FileReport>,
}

impl Report {
    pub fn new(files: Vec<FileReport>) -> Report {
        Report {
            valid: files.iter().all(|f| f.status == "valid"),
            files,
        }
    }

    /// 0 all valid, 1 something invalid, 2 something unreadable.
    pub fn exit_code(&self) -> i32 {
        if self.files.iter().any(|f| f.status == "unreadable") {
            2
        } else if self.valid {
            0
        } else {
            1
        }
    }

    /// One line per config (and per skipped filter), then a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let (mut ok, mut bad) = (0, 0);
        for f in &self.files {
            if let Some(e) = &f.error {
                out.push_str(&format!("{}: {}: {e}\n", f.file, f.status));
            }
            for c in &f.configs {
                let what = if c.name.is_empty() {
                    format!("{} {}", c.module, c.kind)
                } else {
                    format!("{} {} {:?}", c.module, c.kind, c.name)
                };
                let at = if c.location.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", c.location)
                };
                match &c.error {
                    None => {
                        ok += 1;
                        out.push_str(&format!("{}: {what}{at}: valid\n", f.file));
                    }
                    Some(e) => {
                        bad += 1;
                        out.push_str(&format!("{}: {what}{at}: {}\n", f.file, e.message));
                    }
                }
            }
            for s in &f.skipped {
                out.push_str(&format!(
                    "{}: skipped {} {:?} at {}: {}\n",
                    f.file, s.kind, s.name, s.location, s.reason
                ));
            }
        }
        let files = self.files.len();
        out.push_str(&format!(
            "{files} file{}, {} config{}: {ok} valid, {bad} invalid{}\n",
            if files == 1 { "" } else { "s" },
            ok + bad,
            if ok + bad == 1 { "" } else { "s" },
            match self
                .files
                .iter()
                .filter(|f| f.status == "unreadable")
                .count()
            {
                0 => String::new(),
                n => format!(", {n} file{} unreadable", if n == 1 { "" } else { "s" }),
            }
        ));
        out
    }
}

fn config_report(
    module: &'static Module,
    kind: &'static str,
    name: String,
    location: String,
    config: &[u8],
) -> ConfigReport {
    let error = module.check(config).err().map(|e| ErrorReport {
        field: e.field.as_str().to_owned(),
        message: e.to_string(),
    });
    ConfigReport {
        module: module.name,
        kind,
        name,
        location,
        valid: error.is_none(),
        error,
    }
}

fn unreadable(file: &str, error: String) -> FileReport {
    FileReport {
        file: file.to_owned(),
        status: "unreadable",
        error: Some(error),
        configs: Vec::new(),
        skipped: Vec::new(),
    }
}

/// Check `bytes`, read from `file` (a name for messages; `-` for standard input).
pub fn check_bytes(file: &str, bytes: &[u8], input: Input, allow_none: bool) -> FileReport {
    match input {
        Input::Config(module) => {
            let is_json = Path::new(file)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                || file == "-";
            let config = if is_json {
                bytes.to_vec()
            } else {
                let text = match std::str::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => return unreadable(file, format!("not UTF-8: {e}")),
                };
                match find::documents(text) {
                    Ok(docs) if docs.len() == 1 => docs[0].to_string().into_bytes(),
                    Ok(docs) if docs.is_empty() => Vec::new(),
                    Ok(docs) => {
                        return unreadable(
                            file,
                            format!(
                                "{} YAML documents; a module config is one (check manifests without naming a module)",
                                docs.len()
                            ),
                        )
                    }
                    Err(e) => return unreadable(file, format!("not YAML: {e}")),
                }
            };
            let report = config_report(module, "config", String::new(), String::new(), &config);
            FileReport {
                file: file.to_owned(),
                status: if report.valid { "valid" } else { "invalid" },
                error: None,
                configs: vec![report],
                skipped: Vec::new(),
            }
        }
        Input::Manifests => {
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => return unreadable(file, format!("not UTF-8: {e}")),
            };
            let docs = match find::documents(text) {
                Ok(d) => d,
                Err(e) => return unreadable(file, format!("not YAML or JSON: {e}")),
            };
            let mut configs = Vec::new();
            let mut skipped = Vec::new();
            let found = (0..docs.len()).flat_map(|i| {
                let clusters = docs.get(i).and_then(clusters::static_clusters);
                find::find_in(&docs, i)
                    .into_iter()
                    .map(move |f| (f, clusters.clone()))
            });
            for (f, clusters) in found {
                match f.what {
                    What::Palisade { module, config } => {
                        let mut report = config_report(module, f.kind, f.name, f.location, &config);
                        if let (true, Some(clusters)) = (report.valid, clusters) {
                            let value = serde_json::from_slice(&config).unwrap_or_default();
                            let refs = clusters::references(module.name, &value);
                            if let Err(e) = clusters::check(&refs, &clusters) {
                                report.valid = false;
                                report.error = Some(ErrorReport {
                                    field: e.field,
                                    message: e.message,
                                });
                            }
                        }
                        configs.push(report)
                    }
                    What::Unusable { module, reason } => configs.push(ConfigReport {
                        module: module.name,
                        kind: f.kind,
                        name: f.name,
                        location: f.location,
                        valid: false,
                        error: Some(ErrorReport {
                            field: String::new(),
                            message: reason,
                        }),
                    }),
                    What::Other { reason } => skipped.push(Skipped {
                        kind: f.kind,
                        name: f.name,
                        location: f.location,
                        reason,
                    }),
                }
            }
            let (status, error) = if configs.is_empty() && !allow_none {
                (
                    "invalid",
                    Some(format!(
                        "no Palisade Wasm filter ({WASM_FILTER_TYPE}) or WasmPlugin found (name a module to check a plain config; --allow-none accepts such files)"
                    )),
                )
            } else if configs.iter().all(|c| c.valid) {
                ("valid", None)
            } else {
                ("invalid", None)
            };
            FileReport {
                file: file.to_owned(),
                status,
                error,
                configs,
                skipped,
            }
        }
    }
}

/// Read and check `file` (`-`: standard input).
pub fn check_file(file: &str, input: Input, allow_none: bool) -> FileReport {
    let bytes = if file == "-" {
        let mut buf = Vec::new();
        match std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf) {
            Ok(_) => buf,
            Err(e) => return unreadable(file, format!("cannot read standard input: {e}")),
        }
    } else {
        match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => return unreadable(file, format!("cannot read: {e}")),
        }
    };
    check_bytes(file, &bytes, input, allow_none)
}
