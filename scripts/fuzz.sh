#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (see docs/fuzzing.md).
#
#   scripts/fuzz.sh                                  # every target, 10 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh                 # the long run
#   FUZZ_TARGETS="jwt_verify jwks" scripts/fuzz.sh   # a subset
#
# Installs the pinned cargo-fuzz into .tools/cargo-fuzz if missing, builds all targets once
# (nightly, AddressSanitizer), then runs them one at a time, each from a fresh corpus seeded with
# fuzz/seeds/<target>/ (the seeds are never written to). Exits non-zero on the first crash, naming
# the target and the crash artifact.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fuzz}"
# The workspace release profile is tuned for the shipped modules (LTO, one codegen unit, stripped);
# for fuzzing, faster builds and symbolized stack traces matter more.
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_STRIP=false
export CARGO_PROFILE_RELEASE_INCREMENTAL=false

TOOLS="$ROOT/.tools/cargo-fuzz"
export PATH="$TOOLS/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
fi

ALL_TARGETS="$(cargo fuzz list --fuzz-dir fuzz)"
TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"
for t in $TARGETS; do
    grep -qx "$t" <<<"$ALL_TARGETS" || { echo "fuzz: unknown target '$t' (known: $(echo $ALL_TARGETS))" >&2; exit 2; }
done

echo "fuzz: building all targets ($TOOLCHAIN, target dir $CARGO_TARGET_DIR)" >&2
cargo "+$TOOLCHAIN" fuzz build --fuzz-dir fuzz

dict_for() {
    case "$1" in
        config_*) echo "fuzz/dicts/$1.dict" ;;
        jwt_parse | jwt_verify | jwks) echo "fuzz/dicts/jwt.dict" ;;
        *) echo "" ;;
    esac
}

for t in $TARGETS; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/seeds/$t" ]; then
        cp fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    args=(-max_total_time="$FUZZ_SECONDS" -artifact_prefix="$artifacts/" -print_final_stats=1)
    dict="$(dict_for "$t")"
    if [ -n "$dict" ] && [ -f "$dict" ]; then
        args+=(-dict="$dict")
    fi
    echo "fuzz: $t for ${FUZZ_SECONDS}s" >&2
    log="fuzz/artifacts/$t.log"
    if ! cargo "+$TOOLCHAIN" fuzz run --fuzz-dir fuzz "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        crash="$(ls -t "$artifacts"/* 2>/dev/null | head -n 1 || true)"
        echo "fuzz: CRASH in target '$t': artifact ${crash:-<none written>} (full log: $log)" >&2
        echo "fuzz: reproduce with: cargo +$TOOLCHAIN fuzz run --fuzz-dir fuzz $t ${crash:-<artifact>}" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" >&2 || true
    grep -E ' cov: ' "$log" | tail -n 1 >&2 || true
done
echo "fuzz: no crash in: $(echo $TARGETS)" >&2
