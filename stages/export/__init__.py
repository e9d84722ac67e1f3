"""Stage ``export@<seed>-<framework>`` (stock) or ``export-tuned@<seed>-<framework>``: one trained
replicate exported to ONNX by its framework's own route, run on ONNX Runtime.

``python -m stages.export`` (see ``__main__.py``). Modules: ``runtime`` (the ONNX Runtime session
and its timing, evaluate's design), ``agreement`` (the export against the framework's own
probabilities). Only the named framework is imported, with ONNX Runtime (docs/onnx.md).
"""
