"""Export wav2vec 2.0 CTC models to ONNX (fp32, int8, fp16) and TensorRT, verified against PyTorch.

`model.onnx` runs an exported folder with onnxruntime, without torch; `export.tensorrt` builds
TensorRT engines for it and imports no torch either (the server uses both).
"""
