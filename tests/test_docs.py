"""The documentation holds together: the site builds without a warning, the README stays the front door, every
relative link of README.md and CONTRIBUTING.md reaches a file (and a heading), and every `lowloss.…` name and
repository path the pages quote exists."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FRONT_PAGES = [README, ROOT / "CONTRIBUTING.md"]
"""The pages read on the repository itself, whose relative links must resolve there."""
PAGES = [*FRONT_PAGES, *sorted((ROOT / "docs").rglob("*.md"))]
MAX_README_LINES = 250
TWO_COMMANDS = """# lowloss

```bash
make run    # set up .venv from the lock, then run the default workflow on scikit-learn's embedded digits
make test   # set up .venv from the lock, then run the test suite (CPU only, no downloads)
```
"""

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
IMAGE_TAG = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"", re.I)
NAME = re.compile(r"(?<![\w/.-])lowloss(?:\.[A-Za-z_]\w*)+")
DIRECTIVE = re.compile(r"^:::\s*(lowloss(?:\.[A-Za-z_]\w*)*)", re.M)
REPO_PATH = re.compile(
    r"(?:src|tests|rules|configs|schemas|scripts|benchmarks|profiles|envs|docs|report)/[\w./-]*"
    r"|config\.yaml|Snakefile|Makefile|pyproject\.toml|requirements\.lock|mkdocs\.yml|CITATION\.cff|LICENSE"
)


def prose(text: str) -> str:
    """The page without its fenced code blocks and code spans (where a `[x](y)` is no link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def code(text: str) -> list[str]:
    """Every fenced code block and code span of the page, as text."""
    blocks = [match.group(0) for match in FENCE.finditer(text)]
    spans = [match.group(2) for match in CODE_SPAN.finditer(FENCE.sub("", text))]
    return blocks + spans


def relative_links(text: str) -> list[str]:
    """Targets of the page's links and images (inline, reference-style, <img>) that point into the repository."""
    found = [*LINK.findall(prose(text)), *REFERENCE.findall(prose(text)), *IMAGE_TAG.findall(text)]
    return [target for target in found if not re.match(r"[a-z][a-z0-9+.-]*:|#|//", target, re.I)]


def anchors(page: Path) -> set[str]:
    """The ids of a Markdown page's headings, as the toc extension makes them (`{ #id }` wins)."""
    from markdown.extensions.toc import slugify

    ids = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*(?:\{\s*#([^\s}]+)[^}]*\})?\s*$", line)
        if heading:
            title = re.sub(r"[`*_]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)))
            ids.add(heading.group(2) or slugify(title, "-"))
    return ids


def test_the_site_builds_without_a_warning(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the config, not the working folder, places every file
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "nets" / "index.html").is_file()


def test_the_readme_is_the_front_door():
    text = README.read_text()
    assert text.startswith(TWO_COMMANDS)
    assert len(text.splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("page", FRONT_PAGES, ids=[page.name for page in FRONT_PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for link in relative_links(page.read_text()):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading '#{anchor}' in {path.relative_to(ROOT)}")
    assert broken == []


def test_the_link_finder_finds_links_and_leaves_code_alone():
    text = "![fig](docs/a.png) [b](docs/b.md#x) [w](https://x.org) [c](#y) `[d](no.md)`\n[e]: docs/e.md\n"
    assert relative_links(text) == ["docs/a.png", "docs/b.md#x", "docs/e.md"]


def resolves(name: str) -> bool:
    """Whether `name` is an importable module, or attributes reached from the longest importable prefix."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def quoted_names() -> dict[str, list[str]]:
    """Every `lowloss.…` name quoted in code on a page (and every `::: name` of the API reference): the pages."""
    names: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        found = {name for snippet in code(text) for name in NAME.findall(snippet)} | set(DIRECTIVE.findall(text))
        for name in found:
            names.setdefault(name.rstrip("."), []).append(str(page.relative_to(ROOT)))
    return names


def test_every_quoted_lowloss_name_exists():
    names = quoted_names()
    assert len(names) > 50  # the finder works
    missing = {name: pages for name, pages in sorted(names.items()) if not resolves(name)}
    assert missing == {}


def test_the_api_reference_covers_every_public_module():
    """Every module of `src/lowloss/` but the private ones (`_lazy`, `__main__`) and the package itself (its
    version) has its `::: name` on a page of docs/reference/."""
    package = ROOT / "src" / "lowloss"
    modules = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) > 1 and not any(part.startswith("_") for part in parts):
            modules.add(".".join(parts))
    documented = {
        name for page in (ROOT / "docs" / "reference").glob("*.md") for name in DIRECTIVE.findall(page.read_text())
    }
    assert (sorted(modules - documented), sorted(documented - modules)) == ([], [])  # (undocumented, stale)


def test_every_quoted_repository_path_exists():
    missing = []
    for page in PAGES:
        for snippet in code(page.read_text()):
            if REPO_PATH.fullmatch(snippet) and not (ROOT / snippet).exists():
                missing.append(f"{page.relative_to(ROOT)}: {snippet}")
    assert missing == []


def test_the_benchmarks_summary_is_what_the_results_give():
    """docs/results.md's table of evaluation benchmarks is generated from benchmarks/RESULTS.md, never typed."""
    from benchmarks.run import results_rows, summary_table

    assert (ROOT / "benchmarks" / "summary.md").read_text() == summary_table(results_rows())
    with pytest.raises(SystemExit, match="RESULTS.md has no row 'MNIST shapes: linear leg"):
        summary_table({})
