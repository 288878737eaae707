"""Print the pinned requirements of pyproject.toml's extras, one per line, for `pip install -r`.

The images install dependencies from this list before copying the source, so editing the code
does not rebuild the dependency layers.

    python3 requirements.py serve [export ...] [--onnxruntime onnxruntime-gpu]
"""

import argparse
import re
import tomllib
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("extras", nargs="+")
parser.add_argument(
    "--onnxruntime",
    default="onnxruntime",
    choices=["onnxruntime", "onnxruntime-gpu"],
    help="onnxruntime-gpu for CUDA images (never both: they install the same module)",
)
parser.add_argument("--pyproject", type=Path, default=Path(__file__).with_name("pyproject.toml"))
args = parser.parse_args()

project = tomllib.loads(args.pyproject.read_text())["project"]
extras = project["optional-dependencies"]


def expand(requirement: str) -> list[str]:
    """A requirement, or the requirements of one of our own extras (`w2v-asr[torch]`)."""
    own = re.fullmatch(rf"{project['name']}\[(.+)\]", requirement)
    return [line for extra in own.group(1).split(",") for line in expand_extra(extra)] if own else [requirement]


def expand_extra(name: str) -> list[str]:
    return [line for requirement in extras[name] for line in expand(requirement)]


lines = list(project["dependencies"])
for extra in args.extras:
    lines += expand_extra(extra)
for line in dict.fromkeys(lines):  # in order, once each
    print(re.sub(r"^onnxruntime==", f"{args.onnxruntime}==", line))
