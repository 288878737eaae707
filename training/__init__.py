"""Training wav2vec 2.0: manifests, evaluation (and, to come, pretraining, CTC fine-tuning, self-training)."""
