"""Load fairseq wav2vec 2.0 checkpoints (pretrained, or CTC fine-tuned with their dictionary).

fairseq is not needed: the checkpoint is read with `torch.load`, its config (a dict in
fairseq >= 0.10, an `argparse.Namespace` before) is translated to a `Wav2Vec2Config`, and
its keys are renamed to ours by the table below.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any

import torch

from ..config import FeatureSettings, Wav2Vec2Config
from ..ctc import CTCVocabulary
from .checkpoint_types import Checkpoint, CheckpointError, build_checkpoint

# fairseq key (after the fine-tuning prefix is removed) -> our key.
_KEY_MAP = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"wav2vec2.feature_extractor.conv_layers.\1.conv.\2"),
    # Group-norm family: GroupNorm is module 2 of the first layer; layer-norm family: LayerNorm inside a
    # transpose wrapper, module 2.1 of every layer.
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)",
        r"wav2vec2.feature_extractor.conv_layers.\1.layer_norm.\2",
    ),
    (r"layer_norm\.(weight|bias)", r"wav2vec2.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"wav2vec2.feature_projection.projection.\1"),
    (r"mask_emb", r"wav2vec2.masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.weight_g", r"wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", r"wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.bias", r"wav2vec2.encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"wav2vec2.encoder.layer_norm.\1"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
        r"wav2vec2.encoder.layers.\1.attention.\2_proj.\3",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"wav2vec2.encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"wav2vec2.encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"wav2vec2.encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"wav2vec2.encoder.layers.\1.final_layer_norm.\2"),
    (r"quantizer\.vars", r"quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"final_proj\.(weight|bias)", r"project_hid.\1"),
]
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."
_CTC_HEAD = {"w2v_encoder.proj.weight": "lm_head.weight", "w2v_encoder.proj.bias": "lm_head.bias"}


def load_fairseq_checkpoint(path: Path, dictionary: str | Path | None = None) -> Checkpoint:
    saved = _read(path)
    model_cfg, task_cfg = _configs(saved, path)
    if (model_cfg.get("_name") or model_cfg.get("arch")) == "wav2vec":  # wav2vec (1.0) and vq-wav2vec
        raise CheckpointError(
            f"'{path}' is a wav2vec (1.0) / vq-wav2vec checkpoint, not wav2vec 2.0: it has no "
            "CTC head to transcribe with; `python -m model features` reads its representations"
        )
    finetuned = "w2v_encoder.proj.weight" in saved["model"]
    if finetuned:
        pretrained = _as_dict(model_cfg.get("w2v_args"))
        if not pretrained:
            raise CheckpointError(
                f"'{path}' is a fine-tuned fairseq checkpoint without the pretraining config "
                "(w2v_args); it cannot be rebuilt"
            )
        architecture = _as_dict(pretrained.get("model", pretrained))
    else:
        architecture = model_cfg
    config = _to_config(architecture, fine_tuning=model_cfg if finetuned else None)
    state = _rename(saved["model"], path)
    features = FeatureSettings.for_model(config, sampling_rate=int(task_cfg.get("sample_rate", 16000)))
    features.do_normalize = bool(task_cfg.get("normalize", config.feat_extract_norm == "layer"))
    vocab = _dictionary(path, dictionary, state["lm_head.weight"].shape[0]) if finetuned else None
    return build_checkpoint(config, state, features, vocab, source=str(path))


def _read(path: Path) -> dict[str, Any]:
    try:
        # Old checkpoints keep their options as an argparse.Namespace; allow exactly that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(f"could not read '{path}' as a fairseq checkpoint: {reason}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(f"'{path}' is not a fairseq checkpoint: it has no 'model' state dict")
    return saved


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, argparse.Namespace):
        return vars(value)
    return dict(value) if value else {}


def _configs(saved: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model options, task options) from either checkpoint layout."""
    if saved.get("cfg"):
        cfg = _as_dict(saved["cfg"])
        return _as_dict(cfg.get("model")), _as_dict(cfg.get("task"))
    if saved.get("args") is not None:
        args = _as_dict(saved["args"])  # one flat namespace for model and task options
        return args, args
    raise CheckpointError(f"'{path}' has neither 'cfg' nor 'args': its architecture is unknown")


def _to_config(arch: dict[str, Any], fine_tuning: dict[str, Any] | None) -> Wav2Vec2Config:
    if arch.get("quantize_input") or arch.get("quantize_targets") is False:
        raise CheckpointError(
            "fairseq wav2vec 2.0 variants with quantized inputs or unquantized targets "
            "have no Hugging Face equivalent and are not supported"
        )
    if int(arch.get("pos_conv_depth", 1)) != 1:
        raise CheckpointError("fairseq models with a multi-layer positional convolution are not supported")
    layers = _literal(arch.get("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"))
    hidden = int(arch.get("encoder_embed_dim", 768))
    final_dim = int(arch.get("final_dim", 0)) or hidden
    values = {
        "feat_extract_norm": "layer" if arch.get("extractor_mode", "default") == "layer_norm" else "group",
        "conv_dim": [int(dim) for dim, _, _ in layers],
        "conv_kernel": [int(kernel) for _, kernel, _ in layers],
        "conv_stride": [int(stride) for _, _, stride in layers],
        "conv_bias": bool(arch.get("conv_bias", False)),
        "hidden_size": hidden,
        "num_hidden_layers": int(arch.get("encoder_layers", 12)),
        "num_attention_heads": int(arch.get("encoder_attention_heads", 12)),
        "intermediate_size": int(arch.get("encoder_ffn_embed_dim", 3072)),
        "hidden_act": arch.get("activation_fn", "gelu"),
        "do_stable_layer_norm": bool(arch.get("layer_norm_first", False)),
        "num_conv_pos_embeddings": int(arch.get("conv_pos", 128)),
        "num_conv_pos_embedding_groups": int(arch.get("conv_pos_groups", 16)),
        "num_codevectors_per_group": int(arch.get("latent_vars", 320)),
        "num_codevector_groups": int(arch.get("latent_groups", 2)),
        "codevector_dim": int(arch.get("latent_dim", 0)) or final_dim,
        "proj_codevector_dim": final_dim,
        "num_negatives": int(arch.get("num_negatives", 100)),
        "contrastive_logits_temperature": float(arch.get("logit_temp", 0.1)),
    }
    # Dropout and masking: the fine-tuning run's values where there is one.
    options = fine_tuning or arch
    for ours, theirs, default in (
        ("hidden_dropout", "dropout", 0.1),
        ("attention_dropout", "attention_dropout", 0.1),
        ("activation_dropout", "activation_dropout", 0.0),
        ("feat_proj_dropout", "dropout_input", 0.0),
        ("layerdrop", "layerdrop" if fine_tuning else "encoder_layerdrop", 0.0),
        ("mask_time_prob", "mask_prob", 0.65),
        ("mask_time_length", "mask_length", 10),
        ("mask_feature_prob", "mask_channel_prob", 0.0),
        ("mask_feature_length", "mask_channel_length", 10),
    ):
        values[ours] = options.get(theirs, default)
    values["feat_quantizer_dropout"] = arch.get("dropout_features", 0.0)
    if fine_tuning:
        values["final_dropout"] = fine_tuning.get("final_dropout", 0.0)
    return Wav2Vec2Config.from_dict(values)


def _literal(text: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's `conv_feature_layers` expression: list/tuple literals joined by `+` and `*`."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise CheckpointError(f"unsupported conv_feature_layers expression: {text!r}")

    return value(ast.parse(text, mode="eval").body)


def _rename(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    renamed = {}
    unknown = []
    for key, tensor in state.items():
        if key in _CTC_HEAD:
            renamed[_CTC_HEAD[key]] = tensor
            continue
        for pattern, replacement in _KEY_MAP:
            ours, count = re.subn(f"^{pattern}$", replacement, key.removeprefix(_FINETUNED_PREFIX))
            if count:
                renamed[ours] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"'{path}' has weights with no wav2vec 2.0 equivalent: {', '.join(unknown[:4])}")
    return renamed


def _dictionary(path: Path, dictionary: str | Path | None, outputs: int) -> CTCVocabulary:
    dictionary = Path(dictionary) if dictionary else path.with_name("dict.ltr.txt")
    if not dictionary.is_file():
        raise CheckpointError(
            f"'{path}' is a fine-tuned fairseq checkpoint; its dictionary (dict.ltr.txt) "
            f"was not found at '{dictionary}'"
        )
    vocab = CTCVocabulary.from_fairseq_dictionary(dictionary)
    if len(vocab) != outputs:
        raise CheckpointError(
            f"'{dictionary}' has {len(vocab)} symbols with fairseq's four specials, but the "
            f"checkpoint's CTC head has {outputs} outputs"
        )
    return vocab
