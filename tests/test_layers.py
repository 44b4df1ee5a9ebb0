"""Imports only go down: shopguide (base) < serving < streams < trainer < console (command, demo).

serving answers, streams moves events (and asks serving), trainer learns (reading events and
publishing to serving); the console wires them together. Any import of a higher layer fails here.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"shopguide": 0, "serving": 1, "streams": 2, "trainer": 3, "console": 4}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_package_imports_a_higher_one(package):
    upward = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            target = LAYERS.get(name.split(".")[0])
            if target is not None and target > LAYERS[package]:
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}
    assert packages == set(LAYERS)
