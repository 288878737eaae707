"""The commands of `python -m training`, one module each: `add_parser(commands)` registers the
command's parser (and its `run(args) -> int` as the parser's `run` default) next to the code that
runs it. Each module imports its heavy parts (torch, the synthesizers) only when it runs, so
`--help` and the data commands start quickly."""

from __future__ import annotations

from . import connect, evaluate, lm, manifest, package, plot, pseudo_label, synth, train

# In the order `--help` lists them.
COMMANDS = (manifest, lm, synth, connect, package, pseudo_label, evaluate, train, plot)
