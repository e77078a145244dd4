"""from_torch on tiny modules built here: faithful export, dynamic batch or fallback, broken exports caught."""

from __future__ import annotations

import collections
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import quantdebug as qd
from quantdebug import frontends
from quantdebug.frontends import ConversionError, as_seed_dataset, convert, from_torch

torch = pytest.importorskip("torch")


class TinyCNN(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, image: Any) -> Any:
        x = torch.relu(self.bn(self.conv(image)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


class FixedBatch(TinyCNN):
    def forward(self, image: Any) -> Any:
        x = torch.relu(self.bn(self.conv(image)))
        return self.fc(x.mean(dim=(2, 3)).reshape(1, 8))  # the batch size is baked in


class TwoInTwoOut(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, ids: Any, mask: Any) -> Any:
        h = (self.emb(ids) * mask.unsqueeze(-1)).sum(1)
        return {"logits": self.fc(h), "pooled": h}


@pytest.fixture(scope="module")
def cnn() -> Any:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval and train modes differ
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.train()  # left in training mode on purpose: the export must still use eval mode


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 3, 12, 12)).astype(np.float32)


def run_onnx(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)  # type: ignore[no-any-return]


def test_export_matches_module_and_batch_is_dynamic(cnn: Any, images: np.ndarray) -> None:
    model = from_torch(cnn, torch.from_numpy(images[:1]))
    assert cnn.training, "the module's training flag is restored"
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["quantdebug.batch"] == "dynamic" and "max abs diff" in meta["quantdebug.verification"]
    (got,) = run_onnx(model, {"image": images})  # independent check: all six at once
    cnn.eval()
    try:
        with torch.no_grad():
            want = cnn(torch.from_numpy(images)).numpy()
    finally:
        cnn.train()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fixed_batch_module_falls_back_to_static(images: np.ndarray) -> None:
    torch.manual_seed(1)
    module = FixedBatch().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = from_torch(module, images[:1])  # a numpy example works too
    messages = [str(w.message) for w in caught if "dynamic batch" in str(w.message)]
    assert messages and "fixed batch size 1" in messages[0] and "Reshape" in messages[0]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert {p.key: p.value for p in model.metadata_props}["quantdebug.batch"].startswith("static")
    (got,) = run_onnx(model, {"image": images[2:3]})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.from_numpy(images[2:3])).numpy(), rtol=1e-4, atol=1e-5)


def test_kwargs_int_inputs_and_dict_outputs() -> None:
    torch.manual_seed(2)
    module = TwoInTwoOut().eval()
    ids = np.array([[1, 5, 7, 0], [3, 3, 9, 2]], np.int64)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    model = from_torch(module, {"ids": ids[:1], "mask": mask[:1]}, samples=[{"ids": ids[1:], "mask": mask[1:]}])
    assert [i.name for i in model.graph.input] == ["ids", "mask"]
    assert [o.name for o in model.graph.output] == ["logits", "pooled"]
    logits, pooled = run_onnx(model, {"ids": ids, "mask": mask})
    with torch.no_grad():
        want = module(torch.from_numpy(ids), torch.from_numpy(mask))
    np.testing.assert_allclose(logits, want["logits"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pooled, want["pooled"].numpy(), rtol=1e-4, atol=1e-5)


def test_broken_export_raises_naming_the_output(cnn: Any, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = frontends._torch._export

    def damaged(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        model = real_export(*args, **kwargs)
        for init in model.graph.initializer:
            array = onnx.numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.ndim == 2:  # the Linear layer's weight
                init.CopyFrom(onnx.numpy_helper.from_array(array * 1.5, init.name))
        return model

    monkeypatch.setattr(frontends._torch, "_export", damaged)
    with pytest.raises(ConversionError) as info:
        from_torch(cnn, images[:1], dynamic_batch=False)
    message = str(info.value)
    assert "output 'output'" in message and "max abs diff" in message and "tolerance" in message
    assert isinstance(info.value, qd.ModelError)


def test_debugger_runs_on_the_converted_model(cnn: Any, images: np.ndarray) -> None:
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(images), torch.arange(6)), batch_size=4
    )
    data = as_seed_dataset(loader)
    first = frontends.first_sample(loader)  # what QuantizationDebugger(float_model=module) will do
    assert first is not None and len(first) == 1 and first[0].shape == (1, 3, 12, 12)
    model = convert(cnn, first)
    assert model is not None
    assert frontends.adapt_dataset(loader) is not loader
    debugger = qd.QuantizationDebugger(model, data, debug_options=qd.DebugOptions(progress=False))
    debugger.run()
    assert debugger.samples_seen == 6
    assert {r.op_name for r in debugger.statistics().layers} >= {"Conv", "Gemm"}


def test_convert_needs_a_sample_for_torch(cnn: Any) -> None:
    with pytest.raises(qd.ConfigError, match="example inputs"):
        convert(cnn, None)
    with pytest.raises(qd.ConfigError, match=r"torch\.nn\.Module"):
        from_torch(object(), np.zeros((1, 3)))


def test_dynamo_exporter_when_onnxscript_is_installed(cnn: Any, images: np.ndarray) -> None:
    pytest.importorskip("onnxscript")
    model = from_torch(cnn, images[:1], dynamo=True)
    assert {p.key: p.value for p in model.metadata_props}["quantdebug.batch"] == "dynamic"
    (got,) = run_onnx(model, {model.graph.input[0].name: images})
    cnn.eval()
    try:
        with torch.no_grad():
            want = cnn(torch.from_numpy(images)).numpy()
    finally:
        cnn.train()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_convert_takes_one_array_or_a_dict(cnn: Any, images: np.ndarray) -> None:
    assert convert(cnn, images[:1]) is not None  # type: ignore[arg-type]
    torch.manual_seed(3)
    module = TwoInTwoOut().eval()
    model = convert(module, {"ids": np.array([[1, 2]]), "mask": np.ones((1, 2), np.float32)})
    assert model is not None and [i.name for i in model.graph.input] == ["ids", "mask"]


def test_map_style_dataset_gets_a_dataloader_hint() -> None:
    with pytest.raises(qd.DatasetError, match="DataLoader"):
        as_seed_dataset(torch.utils.data.TensorDataset(torch.zeros(3, 2)))


Detections = collections.namedtuple("Detections", ["boxes", "scores"])


class NamedOutputs(torch.nn.Module):  # type: ignore[misc]
    """Returns a namedtuple whose second field is a dict: names nest as ``outer.inner``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x: Any) -> Any:
        h = self.fc(x)
        return Detections(boxes=h, scores={"face": torch.sigmoid(h[:, :1]), "eyes": torch.tanh(h[:, 1:3])})


def _module_outputs(module: Any, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [out.boxes.numpy(), out.scores["face"].numpy(), out.scores["eyes"].numpy()]


def test_output_names_follow_namedtuple_fields_and_dict_keys(rng: np.random.Generator) -> None:
    torch.manual_seed(3)
    module = NamedOutputs().eval()
    x = rng.standard_normal((3, 6)).astype(np.float32)
    model = from_torch(module, x[:1])
    assert [o.name for o in model.graph.output] == ["boxes", "scores.face", "scores.eyes"]
    got = run_onnx(model, {"x": x})  # the names are on the right tensors: checked against the module
    for g, want in zip(got, _module_outputs(module, x)):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)


def test_input_and_output_names_can_be_given(rng: np.random.Generator) -> None:
    torch.manual_seed(4)
    module = NamedOutputs().eval()
    x = rng.standard_normal((2, 6)).astype(np.float32)
    model = from_torch(module, x[:1], input_names=["features"], output_names=["b", "face", "eyes"])
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["b", "face", "eyes"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (face,) = session.run(["face"], {"features": x})
    np.testing.assert_allclose(face, _module_outputs(module, x)[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(qd.ConfigError, match="output_names has 2 names for 3 tensors"):
        from_torch(module, x[:1], output_names=["b", "face"])
    with pytest.raises(qd.ConfigError, match="distinct"):
        from_torch(module, x[:1], output_names=["b", "b", "eyes"])


def test_hugging_face_model_output_keys_name_the_outputs(rng: np.random.Generator) -> None:
    outputs = pytest.importorskip("transformers.modeling_outputs")

    class Encoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(5, 5)

        def forward(self, x: Any) -> Any:
            h = self.fc(x)  # hidden_states and attentions stay None: not outputs
            return outputs.BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=h.mean(1))

    torch.manual_seed(5)
    module = Encoder().eval()
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)
    model = from_torch(module, x)
    assert [o.name for o in model.graph.output] == ["last_hidden_state", "pooler_output"]
    with torch.no_grad():
        want = module(torch.from_numpy(x))
    hidden, pooled = run_onnx(model, {"x": x})
    np.testing.assert_allclose(pooled, want.pooler_output.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hidden, want.last_hidden_state.numpy(), rtol=1e-4, atol=1e-5)
