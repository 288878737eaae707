"""wav2vec 2.0 speech recognition: the torch-free core, and the PyTorch model in `model.pytorch`.

The core imports no torch (the server runs on it): audio in (`model.audio`), configs
(`model.config`), vocabulary (`model.ctc`), model references (`model.hub`), the recognizer
interface (`model.recognizer`) with its ONNX Runtime backend (`model.onnx`), long-audio windows
(`model.windows`), decoding (`model.decoding`) and transcription (`model.transcribe`).
`model.pytorch` holds the PyTorch model, checkpoint I/O and the PyTorch recognizer.
"""
