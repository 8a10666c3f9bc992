//! `palisade-check`: see the crate docs and README ("Checking configs").

use clap::{Parser, ValueEnum};
use palisade_check::modules::{module, MODULES};
use palisade_check::{check_file, Input, Report};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Check Palisade plugin configs with the modules' own parsers.
///
///   palisade-check rate_limit config.json     a module's JSON config (YAML: a pluginConfig)
///   palisade-check envoy.yaml                 every Palisade Wasm filter in an Envoy config
///   palisade-check wasmplugins.yaml           every Palisade Istio WasmPlugin
///   palisade-check --schema jwt_auth          print a module's JSON Schema
///
/// Exit status: 0 all valid, 1 something invalid, 2 an input could not be read or parsed
/// (or bad usage).
#[derive(Debug, Parser)]
#[command(name = "palisade-check", version, verbatim_doc_comment)]
struct Args {
    /// Output format: `json` prints one JSON report (for CI).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Accept manifest files that hold no Palisade filter or plugin (else they are invalid).
    #[arg(long)]
    allow_none: bool,
    /// Print MODULE's JSON Schema (draft 2020-12) and exit.
    #[arg(long, value_name = "MODULE", conflicts_with_all = ["format", "allow_none", "inputs"])]
    schema: Option<String>,
    /// [MODULE] FILE...: with a module name first, the files are that module's configs; else
    /// Envoy configs or WasmPlugin manifests. `-` reads standard input.
    #[arg(value_name = "INPUT")]
    inputs: Vec<String>,
}

fn names() -> String {
    MODULES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("palisade-check: {message}\n(palisade-check --help for usage)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = &args.schema {
        let Some(m) = module(name) else {
            return usage_error(&format!("unknown module {name:?} (known: {})", names()));
        };
        let Some(schema) = m.schema() else {
            return usage_error(&format!("{name} is test-only and has no schema"));
        };
        return match serde_json::to_string_pretty(&schema) {
            Ok(s) => emit(&format!("{s}\n"), ExitCode::SUCCESS),
            Err(e) => usage_error(&format!("cannot print the schema: {e}")),
        };
    }
    let (input, files) = match args.inputs.split_first() {
        None => return usage_error("no input: name a file (or a module and its config files)"),
        Some((first, rest)) => match module(first) {
            Some(_) if rest.is_empty() => {
                return usage_error(&format!(
                    "{first}: which config file? (palisade-check {first} FILE)"
                ))
            }
            Some(m) => (Input::Config(m), rest),
            None => (Input::Manifests, &args.inputs[..]),
        },
    };
    let report = Report::new(
        files
            .iter()
            .map(|f| check_file(f, input, args.allow_none))
            .collect(),
    );
    // Exit codes are 0, 1 or 2: the conversion cannot fail.
    let code = ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2));
    match args.format {
        Format::Text => emit(&report.text(), code),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => emit(&format!("{s}\n"), code),
            Err(e) => usage_error(&format!("cannot print the report: {e}")),
        },
    }
}

/// Write `out` to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn emit(out: &str, code: ExitCode) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("palisade-check: cannot write the output: {e}");
            ExitCode::from(2)
        }
    }
}
