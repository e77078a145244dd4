"""Bundled demo: a real pretrained model (PP-OCRv4 text recogniser) with rendered inputs of known ground truth."""

from quantdebug.demo._ocr import (
    CALIB_SEED,
    EVAL_SEED,
    QUANT_OPSET,
    REC_MODEL_NAME,
    DemoDataError,
    Metric,
    OcrDataset,
    Sample,
    cer,
    charset,
    decode,
    edit_distance,
    font_path,
    line_accuracy,
    load_rec_model,
    make_eval_fn,
    make_lines,
    ocr_dataset,
    ocr_labels,
    rec_model_path,
    recognize,
    render_line,
    save_rec_model,
)
from quantdebug.demo._story import DemoResult, run_demo
from quantdebug.support import publish as _publish

__all__ = [
    "CALIB_SEED",
    "EVAL_SEED",
    "QUANT_OPSET",
    "REC_MODEL_NAME",
    "DemoDataError",
    "DemoResult",
    "Metric",
    "OcrDataset",
    "Sample",
    "cer",
    "charset",
    "decode",
    "edit_distance",
    "font_path",
    "line_accuracy",
    "load_rec_model",
    "make_eval_fn",
    "make_lines",
    "ocr_dataset",
    "ocr_labels",
    "rec_model_path",
    "recognize",
    "render_line",
    "run_demo",
    "save_rec_model",
]

_publish(__name__, globals(), __all__)
