#!/usr/bin/env bash
# Create the benchmark's own environment, benchmarks/.venv: quantdebug (editable) plus the tools it is
# compared with (TensorFlow, tf2onnx) and the profilers. None of these are quantdebug dependencies.
#
# Idempotent: a second run only checks. Each optional group is installed on its own, so a machine that
# cannot get TensorFlow still gets a harness that runs (the TensorFlow comparisons are then skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=benchmarks/.venv
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || { echo "setup_env: cannot create $VENV" >&2; exit 1; }
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"$VENV/bin/python" -c "import quantdebug, rapidocr_onnxruntime" 2>/dev/null || "${PIP[@]}" -e ".[demo]" || {
    echo "setup_env: cannot install quantdebug into $VENV" >&2
    exit 1
}
"$VENV/bin/python" -c "import psutil, pyinstrument" 2>/dev/null || "${PIP[@]}" psutil pyinstrument \
    || echo "setup_env: note: psutil/pyinstrument not installed; profiles are skipped" >&2
if ! "$VENV/bin/python" -c "import tensorflow, tf2onnx" 2>/dev/null; then
    # tf2onnx pins an older protobuf in its metadata; TensorFlow's own pin is what both actually need
    "${PIP[@]}" "tensorflow==2.21.*" && "${PIP[@]}" --no-deps "tf2onnx>=1.16" \
        && "${PIP[@]}" flatbuffers requests \
        || echo "setup_env: note: TensorFlow/tf2onnx could not be installed; TensorFlow comparisons are skipped" >&2
fi
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" - 2>/dev/null <<'PY'
import importlib
for name in ("quantdebug", "onnxruntime", "tensorflow", "tf2onnx", "pyinstrument", "psutil"):
    try:
        mod = importlib.import_module(name)
        print(f"setup_env: {name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # report, do not fail: the harness skips what is missing
        print(f"setup_env: {name} unavailable ({type(exc).__name__})")
PY
