"""The README and docs/ are part of the contract with newcomers: keep their generated parts true."""

from __future__ import annotations

import re
from pathlib import Path

from stream.schemes.docs import presets_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_preset_tables_match_the_scheme_files() -> None:
    schemes = (ROOT / "docs" / "schemes.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- presets:begin -->\n(.*)<!-- presets:end -->", schemes, re.S)
    assert section is not None
    assert section.group(1).strip() == presets_markdown().strip()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(scripts/\w+)", quickstart, re.M)
    assert commands == ["scripts/demo", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec scripts/test\b", ci, re.M)


def test_every_link_between_the_readme_and_docs_resolves() -> None:
    """A relative link names a file that exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), (page.name, target)
