"""The demo recogniser debugs with a 16-bit layer, through an onnxruntime optimizer bug at opset 21."""

from __future__ import annotations

import quantdebug as qd
from quantdebug.demo import CALIB_SEED, ocr_dataset, rec_model_path


def test_the_recogniser_debugs_with_a_16_bit_layer() -> None:
    """A 16-bit node puts the model at opset 21. There onnxruntime's QDQ propagation, pushing a twin's
    DequantizeLinear through a Slice whose zero point its s8->u8 conversion made uint8, writes a
    QuantizeLinear that contradicts that zero point, and the debug model does not load. The debugger
    loads it without that transformer; the fidelity check shows the deployed part is unchanged."""
    options = qd.DebugOptions(progress=False)
    config = qd.QuantConfig(node_precision={"p2o.Conv.28": "int16"})
    debugger = qd.QuantizationDebugger(
        str(rec_model_path()),
        ocr_dataset(4, seed=CALIB_SEED),
        debug_dataset=ocr_dataset(2, seed=1),
        quant_config=config,
        debug_options=options,
    )
    debugger.run()
    assert debugger.fidelity == 0.0, "the debug model's own outputs are the deployed model's, bit for bit"
    rows = {r.node_name: r for r in debugger._require_rows()}
    assert rows["p2o.Conv.28"].precision == "int16"
