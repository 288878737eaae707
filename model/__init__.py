"""wav2vec 2.0 in PyTorch: config, modules, checkpoint I/O, audio in and text out.

`model.audio`, `model.ctc`, `model.config` and `model.hub` import no torch; the service uses
them without it. Import the torch parts from their modules (`model.wav2vec2`,
`model.checkpoint`, `model.transcribe`).
"""
