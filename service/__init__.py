"""FastAPI transcription server for exported wav2vec 2.0 CTC models. Imports no torch."""
