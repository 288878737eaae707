"""`python -m training pretrain` and `finetune`: a config and its overrides, then the run."""

from __future__ import annotations

import argparse
from pathlib import Path

RESCHEDULE = (
    "with --resume: follow this config's learning-rate schedule from the step reached (say, after "
    "raising max_steps), instead of the run's own"
)


def _keys_epilog(kind: type) -> str:
    """The config keys of `kind` with their defaults, from the dataclass itself (never out of date)."""
    from ..config import config_keys

    return (
        "config keys with their defaults (set them in the --config file, or as key=value overrides;\n"
        "model.KEY sets a Wav2Vec2Config field over the model's preset):\n" + config_keys(kind)
    )


def add_parser(commands) -> None:
    from ..config import FinetuneConfig, PretrainConfig

    pretrain = commands.add_parser(
        "pretrain",
        help="self-supervised pretraining on unlabeled audio",
        epilog=_keys_epilog(PretrainConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pretrain.add_argument("--config", type=Path, help="YAML or JSON config (presets in training/configs/)")
    pretrain.add_argument("--resume", type=Path, help="a checkpoint folder of this run to continue from")
    pretrain.add_argument("--reschedule", action="store_true", help=RESCHEDULE)
    pretrain.add_argument("overrides", nargs="*", help="key=value settings over the config, e.g. max_steps=1000")

    finetune = commands.add_parser(
        "finetune",
        help="CTC fine-tuning (from a pretrained checkpoint or scratch)",
        epilog=_keys_epilog(FinetuneConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_argument("--config", type=Path, help="YAML or JSON config (examples in training/configs/)")
    finetune.add_argument("--resume", type=Path, help="a checkpoint folder of this run to continue from")
    finetune.add_argument("--reschedule", action="store_true", help=RESCHEDULE)
    finetune.add_argument(
        "overrides", nargs="*", help="key=value settings over the config, e.g. init=runs/pt/checkpoint-9"
    )
    pretrain.set_defaults(run=run)
    finetune.set_defaults(run=run)


def run(args) -> int:
    """pretrain or finetune: the config and its overrides, then the run."""
    from ..config import FinetuneConfig, PretrainConfig, load_config

    if args.command == "pretrain":
        from ..pretrain import pretrain as train

        config = load_config(PretrainConfig, args.config, args.overrides)
        missing = "" if config.manifest else "no manifest: set manifest in the config or as manifest=PATH"
    else:
        from ..finetune import finetune as train

        config = load_config(FinetuneConfig, args.config, args.overrides)
        missing = (
            ""
            if config.train_manifest
            else ("no training data: set train_manifest in the config or as train_manifest=PATH")
        )
    if missing:
        raise ValueError(missing)
    print(f"saved {train(config, args.resume, args.reschedule)}")
    return 0
