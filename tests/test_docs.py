"""The docs a clone ships: the method page (docs/method.md) names modules and code that exist, and nothing points
at files outside the repository (the method notes the project started from are not in a user's clone)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "indexer", "trainer", "web", "world", "bench", "coinage")
METHOD = ROOT / "docs" / "method.md"


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_nothing_points_outside_the_repository():
    files = _sources() + [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "tests").rglob("*.py")]
    stale = [f"{p.relative_to(ROOT)}:{n}" for p in files if p != Path(__file__)
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if "METHOD.md" in line or "../shared/" in line]
    assert not stale, f"point these at docs/method.md (or a file in the repository): {stale}"
    assert "`docs/method.md`" in (ROOT / "README.md").read_text()


def test_the_method_page_names_modules_and_code_that_exist():
    text = METHOD.read_text()
    paths = set(re.findall(r"\b((?:engine|indexer|trainer|web|world|bench|tests|docs)/[\w/]+\.(?:py|md))", text))
    assert len(paths) >= 20 and not [p for p in paths if not (ROOT / p).is_file()], paths
    source = "\n".join(p.read_text() for p in _sources() + list((ROOT / "tests").glob("test_*.py")))
    defined = set(re.findall(r"(?:def|class)\s+(\w+)", source)) | set(re.findall(r"^\s+(\w+)\s*[:=]", source, re.M))
    names = set(re.findall(r"`([A-Za-z_]\w*(?:\.\w+)*)(?:\(\))?`", text))
    code = {n for n in names if "." in n or "_" in n.strip("_") or re.match(r"[A-Z][a-z]+[A-Z]", n)}
    missing = sorted(n for n in code if n.split(".")[-1] not in defined and not re.search(rf"\b{re.escape(n)}\b", source))
    assert not missing, f"docs/method.md names code that does not exist: {missing}"
