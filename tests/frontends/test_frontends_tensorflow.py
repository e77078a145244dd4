"""from_keras and from_tflite on a tiny Keras model built here (and its TFLite conversion): faithful, debuggable."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import quantdebug as qd
from quantdebug.frontends import ConversionError, as_seed_dataset, convert, from_keras, from_tflite

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = tf.keras
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning"),
]


@pytest.fixture(scope="module")
def keras_model() -> Any:
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out, name="tiny")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-0.3, 0.3, 6).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 6).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, size=(6, 10, 10, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tflite_path(keras_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        data = converter.convert()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(data)
    yield path


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]  # type: ignore[no-any-return]


def test_keras_conversion_matches_keras_with_dynamic_batch(keras_model: Any, images: np.ndarray) -> None:
    model = from_keras(keras_model, samples=[images[:1]])
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    assert {p.key: p.value for p in model.metadata_props}["quantdebug.batch"] == "dynamic"
    want = keras_model(images, training=False).numpy()  # independent check, all six at once
    np.testing.assert_allclose(run_onnx(model, images), want, rtol=1e-4, atol=1e-5)


def test_keras_file_and_convert(keras_model: Any, images: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "tiny.keras"
    keras_model.save(path)
    from_file = convert(str(path), [images[:1].astype(np.float64)])  # float64 data is cast to the model's float32
    from_object = convert(keras_model, [images[:1]])
    assert from_file is not None and from_object is not None
    np.testing.assert_allclose(run_onnx(from_file, images), run_onnx(from_object, images), rtol=1e-5, atol=1e-6)


def test_keras_two_inputs_and_dict_outputs() -> None:
    keras.utils.set_random_seed(3)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], {"z_score": keras.layers.Dense(1)(h), "class_logits": keras.layers.Dense(3)(h)})
    onnx_model = from_keras(model)
    assert [i.name for i in onnx_model.graph.input] == ["a", "b"]
    names = [o.name for o in onnx_model.graph.output]
    assert sorted(names) == ["class_logits", "z_score"]
    rng = np.random.default_rng(4)
    xa, xb = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(None, {"a": xa, "b": xb})))
    want = model([xa, xb], training=False)
    for key in names:
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-4, atol=1e-5)


def test_broken_keras_conversion_names_the_output(
    keras_model: Any, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantdebug.frontends import _tensorflow

    real = _tensorflow._convert_keras

    def damaged(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        model = real(*args, **kwargs)
        for init in model.graph.initializer:
            array = onnx.numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.shape == (6, 4):  # the Dense kernel
                init.CopyFrom(onnx.numpy_helper.from_array(-array, init.name))
        return model

    monkeypatch.setattr(_tensorflow, "_convert_keras", damaged)
    with pytest.raises(ConversionError, match=r"output 'logits': max abs diff .* > tolerance"):
        from_keras(keras_model, samples=[images[:1]], dynamic_batch=False)


def test_tflite_conversion_matches_the_interpreter(tflite_path: Path, images: np.ndarray) -> None:
    model = from_tflite(tflite_path, samples=[images[i : i + 1] for i in range(2)])
    meta = {p.key: p.value for p in model.metadata_props}
    assert "on 2 sample(s)" in meta["quantdebug.verification"]
    interpreter = tf.lite.Interpreter(model_path=str(tflite_path))  # independent: TFLite itself
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    for i in range(3):
        interpreter.set_tensor(inp["index"], images[i : i + 1])
        interpreter.invoke()
        want = interpreter.get_tensor(out["index"])
        np.testing.assert_allclose(run_onnx(model, images[i : i + 1]), want, rtol=1e-4, atol=1e-5)


def test_broken_tflite_conversion_is_caught(tflite_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tf2onnx

    real = tf2onnx.convert.from_tflite

    def damaged(*args: Any, **kwargs: Any) -> Any:
        model, storage = real(*args, **kwargs)
        for init in model.graph.initializer:
            array = onnx.numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.shape == (6, 4):  # the Dense kernel
                init.CopyFrom(onnx.numpy_helper.from_array(-array, init.name))
        return model, storage

    monkeypatch.setattr(tf2onnx.convert, "from_tflite", damaged)
    with pytest.raises(ConversionError, match=r"TFLite model.*output '.+': max abs diff .* > tolerance"):
        from_tflite(tflite_path)


def test_debugger_runs_on_converted_keras_and_tflite(keras_model: Any, tflite_path: Path, images: np.ndarray) -> None:
    dataset = as_seed_dataset(tf.data.Dataset.from_tensor_slices(images).batch(4))
    for source in (from_keras(keras_model), from_tflite(tflite_path)):
        debugger = qd.QuantizationDebugger(source, dataset, debug_options=qd.DebugOptions(progress=False))
        debugger.run()
        assert debugger.samples_seen == 6
        assert "Conv" in {r.op_name for r in debugger.statistics().layers}


def test_missing_files_and_wrong_objects() -> None:
    with pytest.raises(qd.ModelError, match="does not exist"):
        from_tflite("/nonexistent/model.tflite")
    with pytest.raises(qd.ModelError, match="does not exist"):
        from_keras("/nonexistent/model.keras")
    with pytest.raises(qd.ConfigError, match=r"keras\.Model"):
        from_keras(object())
