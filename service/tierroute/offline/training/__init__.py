"""Offline training of the router classifier: data, cross-validation, calibration, export.

Needs the `train` extra (scikit-learn, skl2onnx, onnx). Importing this package or its `cli`
module stays light; the heavy libraries load only when training runs, so the serving CLI can
register the `train` subcommand without pulling scikit-learn in.
"""
