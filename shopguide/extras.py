"""The optional installs (pyproject's extras) and the modules that tell whether each is present.

The core install runs the worker, replay, the broker and the Triton client; a subcommand that
needs more declares it with `needs(parser, ...)`, and the command checks before running it, so a
lean install answers with the pip line to run instead of an ImportError.
"""
from __future__ import annotations

import argparse
import importlib.util

# The top-level modules of each extra's distributions (tests/test_extras.py keeps this in step
# with pyproject.toml); found on the path without importing them, which for torch takes seconds.
EXTRAS = {
    "train": ("torch", "transformers", "tokenizers", "onnx", "onnxscript", "onnxruntime", "matplotlib"),
    "local": ("pytriton", "onnxruntime", "tokenizers"),
}


def missing(extras) -> list[str]:
    """The extras among `extras` with a module that cannot be found."""
    return [extra for extra in extras
            if any(importlib.util.find_spec(module) is None for module in EXTRAS[extra])]


def install_line(extras) -> str:
    return f"pip install 'shopguide[{','.join(extras)}]'"


def needs(parser: argparse.ArgumentParser, *extras: str) -> None:
    """Mark a subcommand as needing `extras`; its help says so, and main() checks before it runs."""
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"no such extra: {', '.join(sorted(unknown))}")
    parser.set_defaults(needs=(parser.prog, extras))
    parser.epilog = f"needs: {install_line(extras)}"


def unmet(args: argparse.Namespace) -> str | None:
    """The one line to print when the parsed subcommand needs an extra that is not installed."""
    prog, extras = getattr(args, "needs", (None, ()))
    absent = missing(extras)
    return f"{prog} needs: {install_line(absent)}" if absent else None
