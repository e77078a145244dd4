#!/usr/bin/env bash
# Create the competitors' environments for benchmarks/competitors.py: AMD Quark and NNCF in
# benchmarks/.venv-competitors, AIMET-ONNX in benchmarks/.venv-aimet (its pins differ). None of these
# are quantdebug dependencies, and quantdebug is not installed in them. Idempotent; each tool is
# installed on its own, so a tool that does not install only loses its rows.
set -uo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
make_env() {  # make_env FOLDER PACKAGE...
    local venv=$1
    shift
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv" || { echo "setup_competitors: cannot create $venv" >&2; return 1; }
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    # torch 2.13.0 is the CPU build on this machine's disk; a plain "torch" would fetch a CUDA build
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" "$@" \
        || echo "setup_competitors: note: $* did not install into $venv; those rows say so" >&2
}
make_env .venv-competitors amd-quark nncf onnxruntime onnx
make_env .venv-aimet aimet-onnx
for venv in .venv-competitors .venv-aimet; do
    "$venv/bin/python" - <<'PY' 2>/dev/null
import importlib
for name in ("quark", "nncf", "aimet_onnx", "onnxruntime", "onnx"):
    try:
        mod = importlib.import_module(name)
        print(f"setup_competitors: {name} {getattr(mod, '__version__', '?')}")
    except Exception:
        pass
PY
done
