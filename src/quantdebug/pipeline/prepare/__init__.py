"""Load and prepare: read the model (external data included) and pre-process it once, cached."""
