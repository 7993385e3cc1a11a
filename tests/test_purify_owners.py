"""One owner per geometry (issue 23, item 4): no classifier, nor the purifier, imports a helper from a
sibling classifier (shared helpers live in classifiers/_base.py, classifiers/_shared.py and
purify/regions.py), and the window starts have one definition (semiearth.eval.inference)."""

import ast
from pathlib import Path

import semiearth

ROOT = Path(semiearth.__file__).parent
CLASSIFIERS = ROOT / "purify" / "classifiers"
SHARED = {"_base", "_shared", "classes", "registry", "__init__"}  # modules that are no classifier


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_module_imports_a_sibling_classifier():
    classifiers = {p.stem for p in CLASSIFIERS.glob("*.py")} - SHARED
    tables = {"registry", "__init__"}  # the lists of classifiers name them all
    users = [p for p in CLASSIFIERS.glob("*.py") if p.stem not in tables]
    users += [ROOT / "purify" / "purifier.py", ROOT / "purify" / "regions.py"]
    for path in users:
        siblings = {
            m.rsplit(".", 1)[-1] for m in imported_modules(path) if m.startswith("semiearth.purify.classifiers.")
        }
        wrong = (siblings & classifiers) - {path.stem}
        # the noisy oracle is an oracle (a subclass), the one sibling import that is a type, not a helper
        if path.stem == "noisy_oracle":
            wrong -= {"oracle"}
        assert not wrong, f"{path.relative_to(ROOT)} imports the classifier module(s) {sorted(wrong)}"


def test_window_starts_have_one_definition():
    owners = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("starts"):
                body = [n for n in node.body if not isinstance(n, ast.Expr)]  # past the docstring
                if any(isinstance(n, (ast.If, ast.For)) for n in body):  # computes them, not delegates
                    owners.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert owners == ["eval/inference.py:window_starts"], owners
