"""Write a tiny random wav2vec 2.0 CTC model (base family) as a Hugging Face folder, with our own
model package: the smoke test runs this inside the tools image, which has torch but no transformers.

    python3 tiny_model.py OUT_FOLDER
"""

import sys

import torch

from model.config import FeatureSettings, Wav2Vec2Config
from model.ctc import CTCVocabulary
from model.pytorch.checkpoint import Checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForCTC, init_weights

TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

torch.manual_seed(0)
config = Wav2Vec2Config(
    vocab_size=len(TOKENS),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=[16] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    conv_bias=False,
)
model = init_weights(Wav2Vec2ForCTC(config), config).eval()
with torch.no_grad():
    model.lm_head.weight.mul_(40.0)  # sharper random logits: greedy paths emit many characters
vocab = CTCVocabulary(tokens=dict(enumerate(TOKENS)))
print(Checkpoint(model, config, FeatureSettings(), vocab).save(sys.argv[1]))
