"""Tests for the OCR demo data: rendering, datasets, CTC decoding, metrics and the float model's reading."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest

from quantdebug.demo import (
    CALIB_SEED,
    EVAL_SEED,
    QUANT_OPSET,
    cer,
    charset,
    decode,
    edit_distance,
    line_accuracy,
    load_rec_model,
    make_eval_fn,
    make_lines,
    ocr_dataset,
    ocr_labels,
    rec_model_path,
    recognize,
    render_line,
)


@pytest.fixture(scope="module")
def session() -> Iterator[ort.InferenceSession]:
    yield ort.InferenceSession(str(rec_model_path()), providers=["CPUExecutionProvider"])


def test_rec_model_and_charset() -> None:
    assert rec_model_path().is_file()
    chars = charset()
    # 6623 characters in the model metadata, plus blank and space as rapidocr adds them.
    assert len(chars) == 6625
    assert chars[0] == "blank"
    assert chars[-1] == " "
    assert set("abcdefghijklmnopqrstuvwxyz0123456789") <= set(chars)


def test_model_output_matches_charset(session: ort.InferenceSession) -> None:
    assert session.get_outputs()[0].shape[-1] == len(charset())


def test_make_lines_deterministic_and_in_range() -> None:
    lines = make_lines(50, seed=3)
    assert lines == make_lines(50, seed=3)
    assert lines != make_lines(50, seed=4)
    assert make_lines(10, seed=3) == lines[:10]
    assert all(10 <= len(line) <= 25 for line in lines)
    assert all(line == line.strip() and "  " not in line for line in lines)
    assert ocr_labels(5, seed=3) == lines[:5]


def test_render_line_shape_range_and_determinism() -> None:
    x = render_line("hello world 42", seed=7)
    assert x.shape == (1, 3, 48, 320)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, render_line("hello world 42", seed=7))
    assert not np.array_equal(x, render_line("hello world 42", seed=8))
    # Short text does not fill the width: the right side is zero padding, as in rapidocr.
    assert np.all(x[..., -20:] == 0.0)
    plain = render_line("hello world 42")
    assert plain.shape == (1, 3, 48, 320)


def test_dataset_is_reiterable() -> None:
    dataset = ocr_dataset(4, seed=CALIB_SEED)
    first = list(dataset())
    second = list(dataset())
    assert len(first) == len(second) == 4
    for a, b in zip(first, second, strict=True):
        assert isinstance(a, list) and len(a) == 1
        assert a[0].shape == (1, 3, 48, 320) and a[0].dtype == np.float32
        np.testing.assert_array_equal(a[0], b[0])
        assert a[0] is not b[0]
    other = list(ocr_dataset(4, seed=EVAL_SEED)())
    assert not np.array_equal(first[0][0], other[0][0])


def test_edit_distance_and_cer() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "abc") == 0
    assert cer(["sitting"], ["kitten"]) == pytest.approx(3 / 6)
    assert cer(["abc", ""], ["abc", "de"]) == pytest.approx(2 / 5)
    assert cer(["abcdef"], ["ab"]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        cer(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        cer([""], [""])


def test_line_accuracy() -> None:
    assert line_accuracy(["a b", "cd", "x"], ["a b", "c d", "x"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        line_accuracy([], [])


def test_decode_hand_built_logits() -> None:
    chars = ["blank", "a", "b", " "]
    # Time steps: a a blank a b b space blank -> "aab " (repeats collapse, a blank separates the two a's).
    path = [1, 1, 0, 1, 2, 2, 3, 0]
    logits = np.full((2, len(path), len(chars)), 0.01, dtype=np.float32)
    for t, k in enumerate(path):
        logits[0, t, k] = 0.97
    logits[1, :, 0] = 0.97  # all blank
    assert decode(logits, chars) == ["aab ", ""]
    with pytest.raises(ValueError):
        decode(logits[0], chars)
    with pytest.raises(ValueError):
        decode(logits, chars[:3])


def test_float_model_reads_rendered_lines(session: ort.InferenceSession) -> None:
    texts = ["the river 2024", "open house 17", "north water line"]
    images = np.concatenate([render_line(text, seed=i) for i, text in enumerate(texts)])
    assert recognize(session, images) == texts


def test_eval_fn_float_scores_high(session: ort.InferenceSession) -> None:
    assert make_eval_fn(16, EVAL_SEED, metric="line_accuracy")(session) >= 0.9
    assert make_eval_fn(16, EVAL_SEED)(session) >= 0.97


def test_load_rec_model_lifts_constants() -> None:
    model = load_rec_model()
    assert not any(node.op_type == "Constant" for node in model.graph.node)
    assert len(model.graph.initializer) > 0
    assert any(o.domain in ("", "ai.onnx") and o.version == QUANT_OPSET for o in model.opset_import)
    assert any(prop.key == "character" for prop in model.metadata_props)
    # The prepared model still reads text.
    prepared = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert recognize(prepared, render_line("water 35 paper")) == ["water 35 paper"]
