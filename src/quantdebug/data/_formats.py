"""Datasets from files for the command line: .npz/.npy files, folders of .npy files or images, and module:function.

``open_data(spec, inputs=..., image=...)`` returns a callable dataset (each call a fresh iterable of samples).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np

from quantdebug.data._dataset import InputSpec
from quantdebug.errors import ConfigError, DatasetError, mismatch, missing_extra, suggest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUTS = ("NCHW", "NHWC")

PICKLED = "holds pickled Python objects, which are never loaded; store plain numeric arrays"


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How image files become input tensors: ``((pixel * scale) - mean) / std``, channels in model order.

    ``size`` is (height, width), or None for the model's fixed size (or each image's own size);
    ``mean`` and ``std`` hold one value, or one per channel in the model's channel order (after ``bgr``).
    """

    size: tuple[int, int] | None = None
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    bgr: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DatasetError(f"image layout {self.layout!r} is not valid; choose NCHW or NHWC")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise DatasetError(f"image size must be two positive integers HxW; got {self.size!r}")
        if not self.mean or not self.std:
            raise DatasetError("image mean and std need at least one value")
        if any(s == 0 for s in self.std):
            raise DatasetError(f"image std must not contain 0; got {list(self.std)}")


class DataSource:
    """A re-iterable dataset read from disk or from Python code; calling it yields the samples."""

    def __init__(self, factory: Callable[[], Iterable[Any]], description: str, count: int | None) -> None:
        self._factory = factory
        self.description = description
        self.count = count
        self.max_samples: int | None = None

    def __call__(self) -> Iterable[Any]:
        items = self._factory()
        if self.max_samples is None:
            return items
        return _take(items, self.max_samples)

    def __repr__(self) -> str:
        return f"DataSource({self.description})"


def _take(items: Iterable[Any], n: int) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i >= n:
            break
        yield item


def open_data(
    spec: str,
    *,
    inputs: Sequence[InputSpec] | None = None,
    image: ImageOptions | None = None,
    max_samples: int | None = None,
    what: str = "data",
) -> DataSource:
    """Open ``spec`` as a dataset for a model with ``inputs`` (names and shapes are checked where known).

    ``spec`` is one of:

    * ``file.npz``: one array per input name, samples along the first axis (a one-input model may use
      any single key);
    * ``file.npy``: one array for a one-input model, samples along the first axis;
    * a folder of ``.npy`` files, one sample per file in sorted name order, for a one-input model; or a
      folder holding one subfolder per model input (named exactly as the input), each with the same
      ``.npy`` file names, paired by name;
    * a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) for a one-input image model, in sorted
      name order, preprocessed with ``image``;
    * ``module:function`` or ``path/to/file.py:function``: a function returning a dataset (a callable or
      a list of samples), or a generator function yielding samples, or a list of samples.
    """
    if max_samples is not None and max_samples < 1:
        raise DatasetError(f"max_samples must be a positive integer; got {max_samples}")
    source = _open(spec, list(inputs) if inputs is not None else None, image or ImageOptions(), what)
    source.max_samples = max_samples
    if max_samples is not None and source.count is not None:
        source.count = min(source.count, max_samples)
    return source


def _open(spec: str, inputs: list[InputSpec] | None, image: ImageOptions, what: str) -> DataSource:
    if not spec:
        raise DatasetError("the data path is empty")
    path = Path(spec)
    if path.is_dir():
        return _open_folder(path, inputs, image)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _open_npz(path, inputs)
        if suffix == ".npy":
            return _open_npy_file(path, inputs)
        if suffix in IMAGE_SUFFIXES:
            raise DatasetError(f"data {spec!r} is a single image; give the folder that holds the images")
        raise DatasetError(
            f"data file {spec!r} has an unknown format; use .npz, .npy, a folder of .npy files or images, "
            "or module:function"
        )
    if ":" in spec and not path.exists():
        target, _, attr = spec.rpartition(":")
        if target and attr and not target.endswith(("/", "\\")):
            return _open_python(target, attr, spec, what)
    if path.exists():
        raise DatasetError(f"data path {spec!r} is neither a file nor a folder")
    raise DatasetError(f"data path {spec!r} does not exist")


# -- arrays -------------------------------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise DatasetError(f"{str(path)!r} {PICKLED}") from exc
        raise DatasetError(f"{str(path)!r} is not a valid .npy file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {str(path)!r} as a .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"{str(path)!r} is not a .npy array file")
    return array


def _with_batch_axis(array: np.ndarray, spec: InputSpec | None) -> np.ndarray:
    """Add the batch axis to one sample that lacks it (rank one less than the model input's)."""
    if spec is not None and spec.shape is not None and array.ndim + 1 == len(spec.shape):
        return array[None]
    return array


def _sample_slicer(array: np.ndarray, spec: InputSpec | None) -> Callable[[int], np.ndarray]:
    """Sample ``i`` of samples stacked along axis 0: ``a[i:i+1]``, or ``a[i]`` for a model without a batch axis."""
    if spec is not None and spec.shape is not None and array.ndim == len(spec.shape) + 1:
        return lambda i: array[i]
    return lambda i: array[i : i + 1]


def _match_keys(keys: list[str], inputs: list[InputSpec] | None, what: str) -> dict[str, str]:
    """{key in the file: model input name}; errors when the names do not fit the model."""
    if inputs is None:
        return {k: k for k in keys}
    names = [s.name for s in inputs]
    if set(keys) == set(names):
        return {k: k for k in keys}
    if len(names) == 1 and len(keys) == 1:
        return {keys[0]: names[0]}
    unknown = [k for k in keys if k not in names]
    missing = [n for n in names if n not in keys]
    hint = suggest(unknown[0], missing) if unknown and missing else ""
    message = f"{what} names {keys} do not match the model's inputs {names} ({mismatch(unknown, missing)})"
    raise DatasetError(message + (f";{hint}" if hint else ""))


def _spec_of(inputs: list[InputSpec] | None, name: str) -> InputSpec | None:
    return next((s for s in inputs or () if s.name == name), None)


def _stacked_source(arrays: dict[str, np.ndarray], inputs: list[InputSpec] | None, where: str) -> DataSource:
    """Samples along the first axis of each array, as dicts {input_name: sample}."""
    counts = {name: (a.shape[0] if a.ndim else -1) for name, a in arrays.items()}
    scalar = [name for name, n in counts.items() if n < 0]
    if scalar:
        raise DatasetError(f"{where}: array {scalar[0]!r} is a scalar; stack the samples along the first axis")
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in counts.items())
        raise DatasetError(f"{where}: the arrays hold different numbers of samples along the first axis ({detail})")
    count = next(iter(counts.values()))
    if count == 0:
        raise DatasetError(f"{where} holds no samples (the first axis has length 0)")
    slicers = {name: _sample_slicer(a, _spec_of(inputs, name)) for name, a in arrays.items()}

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for i in range(count):
            yield {name: cut(i) for name, cut in slicers.items()}

    return DataSource(samples, f"{count} samples from {where}", count)


def _open_npz(path: Path, inputs: list[InputSpec] | None) -> DataSource:
    where = repr(str(path))
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise DatasetError(f"cannot read {where} ({exc.strerror or exc})") from exc
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DatasetError(f"{where} is not an .npz archive (save one with np.savez(path, input_name=array, ...))")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            raw = {k: archive[k] for k in keys}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise DatasetError(f"{where} {PICKLED}") from exc
        raise DatasetError(f"{where} is not a valid .npz file ({exc})") from exc
    except Exception as exc:
        raise DatasetError(f"cannot read {where} as an .npz file ({type(exc).__name__}: {exc})") from exc
    if not keys:
        raise DatasetError(f"{where} is empty: it holds no arrays")
    mapping = _match_keys(keys, inputs, f"{where}: the array")
    return _stacked_source({mapping[k]: v for k, v in raw.items()}, inputs, where)


def _open_npy_file(path: Path, inputs: list[InputSpec] | None) -> DataSource:
    where = repr(str(path))
    if inputs is not None and len(inputs) != 1:
        raise DatasetError(
            f"{where} holds one array but the model has {len(inputs)} inputs ({', '.join(s.name for s in inputs)}); "
            "use an .npz file with one array per input name"
        )
    array = _load_npy(path)
    name = inputs[0].name if inputs else "input"
    return _stacked_source({name: array}, inputs, where)


# -- folders ------------------------------------------------------------------------------------------


def _visible(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DatasetError(f"cannot list data folder {str(folder)!r} ({exc.strerror or exc})") from exc
    return [p for p in entries if not p.name.startswith(".")]


def _open_folder(folder: Path, inputs: list[InputSpec] | None, image: ImageOptions) -> DataSource:
    entries = _visible(folder)
    if not entries:
        raise DatasetError(f"data folder {str(folder)!r} is empty")
    files = [p for p in entries if not p.is_dir()]
    dirs = [p for p in entries if p.is_dir()]
    if any(p.suffix.lower() == ".npy" for p in files):
        if dirs:
            raise DatasetError(
                f"data folder {str(folder)!r} mixes .npy files and subfolders ({dirs[0].name!r}); use one .npy file "
                "per sample, or one subfolder of .npy files per model input"
            )
        return _open_npy_folder(folder, files, inputs)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        if dirs:
            raise DatasetError(
                f"image folder {str(folder)!r} contains the subfolder {dirs[0].name!r}; put the images directly in it"
            )
        return _open_image_folder(folder, files, inputs, image)
    if files:
        raise DatasetError(
            f"data folder {str(folder)!r} holds no .npy or image files (found {files[0].name!r}); supported: "
            f".npy, {', '.join(IMAGE_SUFFIXES)}"
        )
    return _open_npy_subfolders(folder, dirs, inputs)


def _open_npy_folder(folder: Path, files: list[Path], inputs: list[InputSpec] | None) -> DataSource:
    where = repr(str(folder))
    other = [p for p in files if p.suffix.lower() != ".npy"]
    if other:
        raise DatasetError(f"data folder {where} holds {other[0].name!r}, which is not a .npy file")
    if inputs is not None and len(inputs) != 1:
        names = [s.name for s in inputs]
        raise DatasetError(
            f"data folder {where} holds .npy files directly, which suits a one-input model, but the model has "
            f"inputs {names}; make one subfolder per input ({', '.join(n + '/' for n in names)}) with equal file names"
        )
    for p in files:
        _check_npy_header(p)
    spec = inputs[0] if inputs else None

    def samples() -> Iterator[np.ndarray]:
        for p in files:
            yield _with_batch_axis(_load_npy(p), spec)

    return DataSource(samples, f"{len(files)} samples from {where}", len(files))


def _check_npy_header(path: Path) -> None:
    """Read only the header: catch files that are not plain .npy arrays before any work starts."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{str(path)!r} is not a valid .npy file ({exc})") from exc
    if dtype.hasobject:
        raise DatasetError(f"{str(path)!r} {PICKLED}")


def _open_npy_subfolders(folder: Path, dirs: list[Path], inputs: list[InputSpec] | None) -> DataSource:
    where = repr(str(folder))
    mapping = _match_keys([d.name for d in dirs], inputs, f"data folder {where}: the subfolder")
    files: dict[str, dict[str, Path]] = {}
    for d in dirs:
        entries = _visible(d)
        bad = [p for p in entries if p.is_dir() or p.suffix.lower() != ".npy"]
        if bad:
            raise DatasetError(f"subfolder {str(d)!r} holds {bad[0].name!r}, which is not a .npy file")
        if not entries:
            raise DatasetError(f"subfolder {str(d)!r} is empty")
        files[mapping[d.name]] = {p.name: p for p in entries}
    names = list(files)
    stems = list(files[names[0]])
    for name in names[1:]:
        only_first = sorted(set(stems) - set(files[name]))
        only_here = sorted(set(files[name]) - set(stems))
        if only_first or only_here:
            odd = (only_first or only_here)[0]
            raise DatasetError(
                f"data folder {where}: subfolders {names[0]!r} and {name!r} do not hold the same file names "
                f"({odd!r} is in only one); samples are paired by file name"
            )
    for per_input in files.values():
        for p in per_input.values():
            _check_npy_header(p)
    specs = {name: _spec_of(inputs, name) for name in names}

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for stem in stems:
            yield {name: _with_batch_axis(_load_npy(files[name][stem]), specs[name]) for name in names}

    return DataSource(samples, f"{len(stems)} samples from {where} (one subfolder per input)", len(stems))


# -- images -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ImagePlan:
    mode: str  # PIL mode: "RGB", "L" or "RGBA"
    size: tuple[int, int] | None  # (height, width)
    batch_axis: bool


def _image_plan(spec: InputSpec | None, options: ImageOptions) -> _ImagePlan:
    shape = spec.shape if spec is not None else None
    described = f"the model input ({spec.describe()})" if spec is not None else "the model input"
    if shape is not None and len(shape) not in (3, 4):
        raise DatasetError(
            f"image folders need a model input of rank 4 (N,C,H,W or N,H,W,C); {described} has rank {len(shape)}"
        )
    batch_axis = shape is None or len(shape) == 4
    dims = shape[1:] if shape is not None and len(shape) == 4 else shape
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    if dims is not None:
        c, h, w = (dims[0], dims[1], dims[2]) if options.layout == "NCHW" else (dims[2], dims[0], dims[1])
        channels = c if isinstance(c, int) and c > 0 else None
        height = h if isinstance(h, int) and h > 0 else None
        width = w if isinstance(w, int) and w > 0 else None
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if channels is not None and channels not in modes:
        other = "NHWC" if options.layout == "NCHW" else "NCHW"
        raise DatasetError(
            f"{described} has {channels} channels in {options.layout} layout; images give 1, 3 or 4 "
            f"(is the layout {other}? pass --layout {other})"
        )
    mode = modes[channels or 3]
    n = len(mode)
    for label, values in (("mean", options.mean), ("std", options.std)):
        if len(values) not in (1, n):
            raise DatasetError(f"image {label} has {len(values)} values but the images have {n} channels ({mode})")
    size = options.size
    if size is None and height is not None and width is not None:
        size = (height, width)
    elif size is not None and height is not None and width is not None and size != (height, width):
        raise DatasetError(f"image size {size[0]}x{size[1]} does not fit {described}")
    return _ImagePlan(mode, size, batch_axis)


def _open_image_folder(
    folder: Path, files: list[Path], inputs: list[InputSpec] | None, options: ImageOptions
) -> DataSource:
    try:  # an optional dependency: the images extra
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise missing_extra("reading a folder of images", "Pillow", "images", exc) from exc

    where = repr(str(folder))
    if inputs is not None and len(inputs) != 1:
        raise DatasetError(
            f"image folder {where} gives one image per sample, but the model has {len(inputs)} inputs "
            f"({', '.join(s.name for s in inputs)}); use an .npz file or module:function"
        )
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{str(p)!r} in image folder {where} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        try:
            with Image.open(p) as img:
                img.size  # noqa: B018 (the header is enough to know it is an image)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DatasetError(f"{str(p)!r} in image folder {where} cannot be read as an image ({exc})") from exc
    spec = inputs[0] if inputs else None
    plan = _image_plan(spec, options)
    dtype = np.float32
    if spec is not None and spec.dtype.kind == "f":
        dtype = spec.dtype.type
    mean = np.asarray(options.mean, dtype=np.float32)
    std = np.asarray(options.std, dtype=np.float32)

    def load(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as opened:
                img = opened.convert(plan.mode)
            if plan.size is not None and img.size != (plan.size[1], plan.size[0]):
                img = img.resize((plan.size[1], plan.size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot decode image {str(path)!r} ({exc})") from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if options.bgr and pixels.shape[2] >= 3:
            pixels = pixels[:, :, [2, 1, 0, *range(3, pixels.shape[2])]]
        pixels = (pixels * np.float32(options.scale) - mean) / std
        if options.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        if plan.batch_axis:
            pixels = pixels[None]
        return np.ascontiguousarray(pixels, dtype=dtype)

    def samples() -> Iterator[np.ndarray]:
        for p in files:
            yield load(p)

    return DataSource(samples, f"{len(files)} images from {where}", len(files))


# -- Python code --------------------------------------------------------------------------------------


def _import_target(target: str, spec: str, what: str = "data") -> Any:
    """Import ``target`` (a module or a .py file); errors start with ``what`` and ``spec`` (the option's name)."""
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file:
        path = Path(target)
        if not path.is_file():
            raise DatasetError(f"{what} {spec!r}: Python file {target!r} does not exist")
        name = f"_quantdebug_data_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise DatasetError(f"{what} {spec!r}: cannot import {target!r} as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # so the file can import its neighbours
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DatasetError(f"{what} {spec!r}: running {target!r} raised {type(exc).__name__}: {exc}") from exc
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # console scripts do not put the working folder on the path
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            neither = "no data path and " if what.endswith("data") else ""  # a data spec may be a path too
            raise DatasetError(f"{what} {spec!r}: {neither}no Python module named {target!r}") from exc
        raise DatasetError(f"{what} {spec!r}: importing {target!r} raised {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise DatasetError(f"{what} {spec!r}: importing {target!r} raised {type(exc).__name__}: {exc}") from exc


def _python_object(target: str, attr: str, spec: str, what: str) -> Any:
    """``target``'s attribute ``attr`` (dotted); a missing one is named with the closest public names."""
    obj: Any = _import_target(target, spec, what)
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_") and not inspect.ismodule(getattr(obj, n, None))]
            hint = suggest(part, public)
            raise DatasetError(f"{what} {spec!r}: {target!r} has no attribute {part!r};{hint}".rstrip(";"))
        obj = getattr(obj, part)
    return obj


def _open_python(target: str, attr: str, spec: str, what: str) -> DataSource:
    obj = _python_object(target, attr, spec, what)
    where = f"{spec}"
    if inspect.isgeneratorfunction(obj):
        return DataSource(obj, f"samples from {where}", None)
    if callable(obj) and not isinstance(obj, type):
        try:
            result = obj()
        except Exception as exc:
            raise DatasetError(f"{what} {spec!r}: calling {attr}() raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, Iterator):
            factory: Callable[[], Iterable[Any]] = obj  # the function itself returns fresh iterators
            return DataSource(factory, f"samples from {where}", None)
        obj = result
    if callable(obj):
        return DataSource(obj, f"samples from {where}", None)
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | dict):
        items = obj
        count = len(items) if isinstance(items, Sized) else None
        return DataSource(lambda: items, f"{count if count is not None else 'the'} samples from {where}", count)
    raise DatasetError(
        f"{what} {spec!r} gave a {type(obj).__name__}; it must be a dataset function (returning an iterable of "
        "samples), a generator function, or a list of samples"
    )


def load_callable(spec: str, what: str = "eval function") -> Callable[..., Any]:
    """``module:function`` or ``path/file.py:function`` -> the function (for ``fix --eval``).

    Errors are ConfigErrors starting with ``what`` (the command line passes ``--eval``).
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"{what} {spec!r} is not module:function or file.py:function")
    try:
        obj = _python_object(target, attr, spec, what)
    except DatasetError as exc:  # the eval function is not data: a ConfigError, with the same message
        raise ConfigError(str(exc)) from exc.__cause__
    if not callable(obj):
        raise ConfigError(f"{what} {spec!r} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]
