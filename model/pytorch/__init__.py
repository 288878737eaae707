"""wav2vec 2.0 in PyTorch: modules, the assembled models, checkpoint I/O (Hugging Face and fairseq),
and the PyTorch recognizer."""
