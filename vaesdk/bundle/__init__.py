"""Layer 4, the bundle: the format's definition and its manifest checks (`format`), reading
ONNX files without onnx (`onnx_proto`), safe reading of a bundle from disk (`reading`),
editing a bundle in place (`editing`), and the bundled models by name (`registry`)."""
