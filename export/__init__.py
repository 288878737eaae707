"""Export wav2vec 2.0 CTC models to ONNX (fp32, int8, fp16) and TensorRT, verified against PyTorch.

`export.runtime` runs an exported folder with onnxruntime and imports no torch; the service uses it.
"""
