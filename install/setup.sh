#!/usr/bin/env bash
# Sets up carbon-kernel and runs the main job, in one command:
#   1. builds the kernel (release by default; --debug reuses cargo's debug build),
#   2. creates the project-local Python environment .venv with JupyterLab, Notebook 7, nbclient,
#      pandas, matplotlib (install/requirements-test.txt),
#   3. installs the kernelspecs carbon, carbon-java, carbon-rust into that environment
#      (`carbon-kernel install --sys-prefix`),
#   4. executes every notebook in notebooks/ with nbclient (executed copies in target/notebooks/),
#      or with --open starts JupyterLab on notebooks/ instead.
#
# Usage: bash install/setup.sh [--debug] [--open] [--no-run]
#   After it: .venv/bin/jupyter lab notebooks/   (or: source .venv/bin/activate)
set -euo pipefail

# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

profile=release
mode=run
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --release) profile=release ;;
        --open) mode=open ;;
        --no-run) mode=none ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

say "building carbon-kernel ($profile)"
if [ "$profile" = release ]; then
    cargo build --release --locked -p carbon-kernel
else
    cargo build --locked -p carbon-kernel
fi
BIN="$(kernel_bin "$profile")"
[ -x "$BIN" ] || die "the build did not produce $BIN"

ensure_venv
activate_venv
# The Java and Rust kernels need a JDK (jshell); the Rust one uses this cargo.
ensure_jdk

say "installing the kernelspecs into .venv"
"$BIN" install --sys-prefix
jupyter kernelspec list

case "$mode" in
    open)
        say "starting JupyterLab on notebooks/ (Ctrl+C to stop)"
        exec jupyter lab --notebook-dir="$ROOT/notebooks"
        ;;
    run)
        say "executing notebooks/ with nbclient"
        python "$ROOT/install/run_notebooks.py" --out "$ROOT/target/notebooks" "$ROOT"/notebooks/*.ipynb
        printf '\nDone. Open the notebooks with:  %s/bin/jupyter lab %s/notebooks\n' "$VENV" "$ROOT"
        ;;
    none)
        printf '\nDone. Open the notebooks with:  %s/bin/jupyter lab %s/notebooks\n' "$VENV" "$ROOT"
        ;;
esac
