"""Optional installs: shopguide/extras.py agrees with pyproject's extras, and with no extra
installed every --help works and a command that needs one says which, in one line."""
import argparse
import contextlib
import importlib.metadata
import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from shopguide.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_extras_modules_match_pyproject():
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    distributions = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        declared = {normalized(re.match(r"[\w.-]+", requirement).group()) for requirement in optional[extra]}
        assert {normalized(d) for module in modules for d in distributions[module]} == declared, extra


def _commands(parser: argparse.ArgumentParser, prefix=()):
    """Every runnable subcommand as its argv prefix, e.g. ("bench", "model")."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _commands(child, (*prefix, name))


def without_extras() -> None:
    """Run in a child Python: hide every extra's modules, then ask each subcommand for --help."""
    for module in {m for modules in EXTRAS.values() for m in modules}:
        sys.modules[module] = None  # importing fails and find_spec answers None, as when not installed
    from console.cli import build_parser, main

    results = {}
    for command in _commands(build_parser()):
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            main([*command, "--help"])
        results[" ".join(command)] = out.getvalue()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["train", "--data", "x", "--out", "y"])
    print(json.dumps({"help": results, "train": [code, stderr.getvalue()]}))


def test_every_help_works_and_a_command_needing_an_extra_says_so_in_one_line():
    child = subprocess.run([sys.executable, "-c", "import tests.test_extras as t; t.without_extras()"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert len(report["help"]) > 20 and all(text.startswith("usage: shopguide") for text in report["help"].values())
    assert "needs: pip install 'shopguide[train]'" in report["help"]["train"]
    assert "needs: pip install 'shopguide[train,local]'" in report["help"]["demo"]
    assert "needs:" not in report["help"]["worker"]
    assert report["train"] == [1, "shopguide train needs: pip install 'shopguide[train]'\n"]
