"""Every design-doc citation in the code resolves (docs/architecture.md, "The public API" and the rest):
a comment or docstring that says `docs/architecture.md, "Section"` (or `README "Section"`) names a
heading that exists, so a reader who follows it lands somewhere. Cheap: text only, nothing imported."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = {"docs/architecture.md": REPO / "docs" / "architecture.md", "docs/performance.md": REPO / "docs" / "performance.md",
        "README": REPO / "README.md"}
# `docs/architecture.md, "Section"`, `docs/architecture.md "Section"`, `docs/architecture.md ("Section"`,
# `README "Section"`, `README, "Section"` (a citation may continue with more quoted sections: `"A" / "B"`).
CITATION = re.compile(r'(docs/architecture\.md|docs/performance\.md|README(?:\.md)?)[,:]?\s*\(?((?:"[A-Z][^"\n]{1,80}"(?:\s*(?:/|,|and)\s*)?)+)')
SOURCES = ("engine", "tests", "scripts", "benchmarks", "conf", "pyproject.toml", "Makefile")


def headings(doc: Path) -> set[str]:
    if not doc.exists():
        return set()
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", doc.read_text(), re.MULTILINE)}


def citations() -> list[tuple[str, str, str]]:
    out = []
    for folder in SOURCES:
        top = REPO / folder
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.suffix not in (".py", ".yaml", ".sh", ".js", ".toml", "") or not path.is_file() \
                    or "__pycache__" in path.parts or path == Path(__file__):
                continue
            for m in CITATION.finditer(path.read_text(errors="replace")):
                doc = m.group(1).removesuffix(".md") if m.group(1).startswith("README") else m.group(1)
                line = path.read_text(errors="replace")[: m.start()].count("\n") + 1
                for section in re.findall(r'"([^"\n]+)"', m.group(2)):
                    out.append((f"{path.relative_to(REPO)}:{line}", doc, section))
    return out


def test_every_doc_citation_names_a_heading_that_exists() -> None:
    found = citations()
    assert len(found) > 50  # the pattern still matches how the code cites
    known = {doc: headings(path) for doc, path in DOCS.items()}
    # A README heading cited by its text without the backticked command part counts too.
    known["README"] |= {re.sub(r":\s*`.*`$", "", h) for h in known["README"]}
    broken = [f"{where}: {doc}, \"{section}\"" for where, doc, section in found
              if section not in known[doc] and not any(h.startswith(section) for h in known[doc])]
    assert not broken, "citations of sections that do not exist (rename the citation or add the section):\n" + \
        "\n".join(broken)


def test_the_readme_layout_table_names_every_package_and_folder() -> None:
    text = (REPO / "README.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    cells = " ".join(line.split("|")[1] for line in layout.splitlines() if line.startswith("| `"))
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    tracked = {line.split("/", 1)[0] for line in listed.splitlines() if "/" in line and not line.startswith(".")}
    missing = [f"{name}/" for name in sorted(tracked) if f"`{name}/" not in cells and name != "engine"]
    missing += [f"engine/{p.name}" for p in sorted((REPO / "engine").iterdir())
                if (p.is_dir() and p.name not in {"__pycache__", "_shipped"} and f"`engine/{p.name}`" not in cells)
                or (p.suffix == ".py" and f"`engine/{p.name}`" not in cells)]
    assert not missing, f"README 'Layout' does not list: {', '.join(missing)}"
