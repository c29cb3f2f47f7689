#!/usr/bin/env bash
# The one command that runs every test of carbon-kernel:
#   cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings, cargo test --workspace, the
#   fuzz targets for about a minute (fuzz/, cargo-fuzz on nightly), then
#   the Python-side tests (jupyter-kernel-test conformance, notebooks through nbclient, JupyterLab
#   in headless chromium, a real local model through llama.cpp's server).
# It installs what those need: the project venv (.venv) from install/requirements-test.txt,
# Debian's chromium, prometheus and a JDK when missing (as root), configurable-http-proxy (npm ci),
# llama-cpp-python[server] and the SmolLM2 model file (built/fetched once per machine, cached in
# ~/.cache/carbon-kernel; --no-real-llm skips them and the test that needs them).
#
# Usage: bash install/test.sh [--rust-only | --python-only] [--no-real-llm] [-- PYTEST_ARGS...]
# Exit status: non-zero when any step fails; every step runs, a summary comes last.
set -uo pipefail

# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT" || exit 1

run_rust=1
run_python=1
real_llm=1
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rust-only) run_python=0 ;;
        --python-only) run_rust=0 ;;
        --no-real-llm) real_llm=0 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

failed=()
summary=()
step() {
    # step NAME CMD... : runs CMD, records its status and time, never exits.
    local name="$1" start rc
    shift
    say "$name"
    start=$SECONDS
    "$@"
    rc=$?
    summary+=("$(printf '%-34s %s (%ss)' "$name" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc")" $((SECONDS - start)))")
    [ $rc = 0 ] || failed+=("$name")
    return $rc
}

# The venv comes first: the kernel's e2e tests run Python cells with "the active environment's"
# python, and should see the same IPython/pandas/matplotlib as the notebooks and the Python tests.
step "python venv (.venv)" ensure_venv || { say "summary"; printf '  %s\n' "${summary[@]}" >&2; exit 1; }
activate_venv

# Every fuzz target (fuzz/, its own workspace) for CARBON_FUZZ_SECONDS each (12 s: about a
# minute for the five), from the seed corpus in fuzz/corpus/<target>/ (new inputs go to a scratch
# folder, the repository stays clean). A crash fails the step; its input is kept in
# fuzz/artifacts/<target>/. No sanitizer (-s none): the code under test is safe Rust, so
# AddressSanitizer would only slow each run; debug assertions (-a) catch overflows.
run_fuzz() {
    ensure_cargo_fuzz || return 1
    local secs="${CARBON_FUZZ_SECONDS:-12}" t rc=0 work
    (cd "$ROOT/fuzz" && cargo +nightly fuzz build -s none -a) || return 1
    for t in protocol_decode cell_parse dotenv class_csv sse_stream; do
        work="$(mktemp -d)"
        (cd "$ROOT/fuzz" && cargo +nightly fuzz run -s none -a "$t" "$work" "corpus/$t" -- \
            -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) || rc=1
        rm -rf "$work"
    done
    return $rc
}

# cargo test, its whole output kept in tests/artifacts/cargo-test.log. CI shows only the end of a
# run's output, where cargo's own "failures:" list is long gone under the fuzz and pytest steps:
# the failing tests' names and their panic lines are kept for the summary.
cargo_failures=""
run_cargo_test() {
    local log="$ROOT/tests/artifacts/cargo-test.log" rc
    mkdir -p "$ROOT/tests/artifacts"
    cargo test --workspace --locked 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ]; then
        cargo_failures="$(grep -E "^test .* FAILED$|panicked at|^thread '.*' panicked|^error(\[|:)" "$log" | head -n 40)"
        # The line after each "panicked at" is the message itself.
        cargo_failures+=$'\n'"$(grep -A3 "panicked at" "$log" | grep -v "panicked at" | head -n 40)"
    fi
    return "$rc"
}

if [ "$run_rust" = 1 ]; then
    step "cargo fmt --all --check" cargo fmt --all --check
    step "cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
    # Broken intra-doc links and links to private items fail like any other warning.
    step "cargo doc -D warnings" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
    # The Java runtime's e2e tests need jshell.
    ensure_jdk
    step "cargo test --workspace" run_cargo_test
    step "fuzz (each target ${CARBON_FUZZ_SECONDS:-12} s)" run_fuzz
fi

run_pytest() {
    local rc
    if ! ensure_chromium && [ "${CI:-}" = true ]; then
        echo "CI: chromium is required for the browser test" >&2
        return 1
    fi
    # The JupyterHub class test: configurable-http-proxy (npm) and Prometheus (Debian).
    local hub_ok=1
    ensure_chp || hub_ok=0
    ensure_prometheus || hub_ok=0
    if [ "$hub_ok" = 0 ] && [ "${CI:-}" = true ]; then
        echo "CI: configurable-http-proxy and prometheus are required for the JupyterHub test" >&2
        return 1
    fi
    export CARBON_CHP="$CHP" CARBON_PROMETHEUS="$PROMETHEUS"
    # The real local model (tests/python/test_local_llm.py): required once installed here.
    if [ "$real_llm" = 1 ]; then
        if ensure_llm_server; then
            export CARBON_REAL_LLM=required
        elif [ "${CI:-}" = true ]; then
            echo "CI: llama-cpp-python[server] and the SmolLM2 model are required for the real local model test" >&2
            return 1
        else
            printf 'warning: llama-cpp-python[server] or the SmolLM2 model could not be installed; the real local model test will be skipped\n' >&2
        fi
    fi
    # The kernelspecs the tests install point at this binary (tests/python/conftest.py).
    export CARBON_KERNEL_BIN="${CARBON_KERNEL_BIN:-$(kernel_bin debug)}"
    if [ ! -x "$CARBON_KERNEL_BIN" ]; then
        cargo build -p carbon-kernel --locked || return 1
    fi
    mkdir -p "$ROOT/tests/artifacts"
    python -m pytest tests/python "${pytest_args[@]}"
    rc=$?
    if [ $rc = 5 ]; then
        # pytest's "no tests collected": the Python suite is never empty, so this is a failure.
        echo "pytest collected no tests (exit 5): tests/python is missing or every test was deselected" >&2
    fi
    return $rc
}

if [ "$run_python" = 1 ]; then
    step "python tests (pytest tests/python)" run_pytest
fi

say "summary"
printf '  %s\n' "${summary[@]}" >&2
if [ -n "$cargo_failures" ]; then
    printf '\ncargo test failures (whole log: tests/artifacts/cargo-test.log):\n%s\n' "$cargo_failures" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
echo "all test steps passed" >&2
