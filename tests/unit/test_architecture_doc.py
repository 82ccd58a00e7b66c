"""docs/architecture.md stays true to the tree: its Module map names every module of both packages and nothing
else, and every section the code cites exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = {"agent": "tensorfleet_agent", "tensorfleet_desktop": "tensorfleet_desktop"}
# Generated code is not described module by module (the Module map says where it comes from).
GENERATED = ("tensorfleet_agent._generated", "tensorfleet_desktop.ui._resources_rc")
# Where code may cite the document: sources, tests, protos, scripts, packaging and the README.
CITING = ("agent", "tensorfleet_desktop", "tests", "proto", "scripts", "benchmarks", "packaging", ".ci")
CITING_SUFFIXES = (".py", ".proto", ".toml", ".md", ".sh", ".cfg", ".ini", "")
# The section name in straight or curly quotes (\u2018 \u2019 \u201c \u201d), possibly wrapped in a comment.
CITATION = re.compile(
    r"docs/architecture\.md,\s*(?:#\s*)?['\"\u2018\u201c]([^'\"\u2019\u201d]{1,120})['\"\u2019\u201d]"
)


def _sections(text: str) -> dict[str, str]:
    """Each '## ' heading's body."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _generated(name: str) -> bool:
    return any(name == g or name.startswith(g + ".") for g in GENERATED)


def modules_in_tree() -> set[str]:
    found = set()
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            name = _module_name(path)
            if not _generated(name):
                found.add(name)
    return found


def modules_in_map() -> list[str]:
    """One module per line: "- `dotted.name`: what it is for"."""
    body = _sections(DOC.read_text(encoding="utf-8")).get("Module map", "")
    return re.findall(r"^- `([A-Za-z_][\w.]*)`", body, flags=re.MULTILINE)


def test_the_module_map_lists_every_module_and_only_those() -> None:
    listed = modules_in_map()
    assert listed, "docs/architecture.md has no 'Module map' section with lines like \"- `package.module`: ...\""
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    tree = modules_in_tree()
    missing = sorted(tree - set(listed))
    gone = sorted(set(listed) - tree)
    assert not (missing or gone or duplicates), (
        "docs/architecture.md, 'Module map' differs from the tree:\n"
        f"  in the tree, not in the map: {missing}\n"
        f"  in the map, not in the tree: {gone}\n"
        f"  listed twice: {duplicates}"
    )


def _title(quoted: str) -> str:
    """A cited section name, whatever the line wrapping and comment markers inside the quotes."""
    return " ".join(re.sub(r"\n\s*#?", " ", quoted).split())


def _cited_sections() -> dict[str, list[str]]:
    cited: dict[str, list[str]] = {}
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in CITING:
        if (ROOT / folder).is_dir():
            files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in CITING_SUFFIXES]
    for path in files:
        if "__pycache__" in path.parts or not path.exists():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for match in CITATION.finditer(text):
            title = _title(match.group(1))
            line = text.count("\n", 0, match.start()) + 1
            cited.setdefault(title, []).append(f"{path.relative_to(ROOT)}:{line}")
    return cited


def test_every_cited_section_exists() -> None:
    headings = set(_sections(DOC.read_text(encoding="utf-8")))
    unknown = {title: where for title, where in _cited_sections().items() if title not in headings}
    assert not unknown, f"citations of docs/architecture.md name sections it does not have: {unknown}"


def test_the_citation_pattern_finds_wrapped_citations() -> None:
    """The check above must see a citation whether it sits on one line or wraps in a comment."""
    text = (
        "see (docs/architecture.md,\n# 'Nothing is lost'), docs/architecture.md, 'Security' and "
        "docs/architecture.md, \u2018The path of a\n    job\u2019."
    )
    found = [_title(m.group(1)) for m in CITATION.finditer(text)]
    assert found == ["Nothing is lost", "Security", "The path of a job"]
