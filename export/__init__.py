"""Exporters: TFLite / TF graph / torch -> ONNX, each writing a JSON manifest next to the artifact."""
