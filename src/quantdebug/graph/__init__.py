"""Loading, naming and pre-processing ONNX models, and building the debug graphs."""
