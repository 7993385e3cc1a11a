"""examples/vlmpp_in_your_loop.py: VLM-PP in a plain PyTorch FixMatch loop that is not ours."""

import ast
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "vlmpp_in_your_loop.py")
pytestmark = pytest.mark.filterwarnings("ignore")


def test_example_is_short_and_uses_only_semiearth_purify_in_its_loop():
    """Under 100 lines; its semiearth imports are semiearth.purify, except the synthetic scenes that
    stand in for the user's data inside `synthetic()`."""
    source = open(EXAMPLE).read()
    assert len(source.splitlines()) < 100
    tree = ast.parse(source)
    data_helper = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "synthetic")
    allowed_there = {id(n) for n in ast.walk(data_helper)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("semiearth"):
            if node.module != "semiearth.purify":
                assert id(node) in allowed_there and node.module == "semiearth.data.synthetic", node.module
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("semiearth") for a in node.names)
    assert "semiearth.models" not in source


def test_example_trains_a_few_iterations_with_vlmpp(capsys):
    spec = importlib.util.spec_from_file_location("vlmpp_in_your_loop", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--iters", "3", "--size", "64", "--labeled", "3", "--unlabeled", "8"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("iter ")]
    assert len(lines) == 3
    assert any(int(re.search(r"regions (\d+)", ln).group(1)) > 0 for ln in lines), lines
