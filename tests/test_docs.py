"""The README stays a first page and every docs page is reachable from the site's navigation.

The strict site build itself (broken links, missing anchors, docstring references to missing names)
is `make test-docs`, part of `make test`; these checks are the ones mkdocs does not make: the
README's length and first lines, the links from the README (outside the site), and a page left out
of `nav` named by its path.
"""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README_MAX_LINES = 200
# Pages kept out of the navigation on purpose (relative to docs/); also mkdocs.yml's `not_in_nav`.
EXCLUDED: set[str] = set()


class _Loader(yaml.SafeLoader):
    """safe_load that reads tags such as `!!python/name:...` (mkdocs.yml may hold them) as None."""


_Loader.add_multi_constructor("", lambda loader, suffix, node: None)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _mkdocs() -> dict:
    return yaml.load(_read(os.path.join(ROOT, "mkdocs.yml")), Loader=_Loader)


def _nav_pages(node) -> list[str]:
    """Every page path in a mkdocs nav (lists of pages, {title: page} and {section: [...]})."""
    if isinstance(node, str):
        return [] if "://" in node else [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def _docs_pages() -> set[str]:
    pages = set()
    for folder, _, files in os.walk(DOCS):
        for name in files:
            if name.endswith(".md"):
                pages.add(os.path.relpath(os.path.join(folder, name), DOCS).replace(os.sep, "/"))
    return pages


def test_readme_is_short():
    lines = _read(os.path.join(ROOT, "README.md")).splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines (limit {README_MAX_LINES}): move the detail to a page of docs/"
    )


def test_readme_starts_with_the_two_commands():
    head = "\n".join(_read(os.path.join(ROOT, "README.md")).splitlines()[:8])
    for command in ("make demo", "make test"):
        assert re.search(rf"^{command}\b", head, re.M), f"README.md's first lines must show `{command}`"


def test_readme_links_resolve():
    """Relative links of the README (read on GitHub, outside the site) point at existing files."""
    text = _read(os.path.join(ROOT, "README.md"))
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "README.md links to no docs page"
    broken = [t for t in targets if "://" not in t and not os.path.exists(os.path.join(ROOT, t.split("#")[0]))]
    assert not broken, f"README.md links to missing files: {broken}"


def test_every_docs_page_is_in_nav():
    cfg = _mkdocs()
    nav = _nav_pages(cfg.get("nav", []))
    not_in_nav = set((cfg.get("not_in_nav") or "").split()) | EXCLUDED
    pages = _docs_pages()
    missing = sorted(pages - set(nav) - not_in_nav)
    assert not missing, f"docs pages not in mkdocs.yml's nav (add them, or to not_in_nav): {missing}"
    absent = sorted(set(nav) - pages)
    assert not absent, f"mkdocs.yml's nav names pages that do not exist in docs/: {absent}"
    twice = sorted({page for page in nav if nav.count(page) > 1})
    assert not twice, f"mkdocs.yml's nav names these pages more than once: {twice}"


def test_api_reference_covers_the_public_modules():
    """The API pages render the public modules from their docstrings (mkdocstrings `::: module`)."""
    text = "".join(_read(os.path.join(DOCS, "api", name)) for name in os.listdir(os.path.join(DOCS, "api")))
    for module in (
        "semiearth.purify",
        "semiearth.ops",
        "semiearth.config",
        "semiearth.data.registry",
        "semiearth.train.methods",
        "semiearth.purify.classifiers.registry",
    ):
        assert re.search(rf"^::: {re.escape(module)}$", text, re.M), f"no API page renders {module}"
