"""How the package's source reads, checked: one line width (100) and one import style (absolute
`tinyphi3.` imports, no relative ones), so a reader can find a module from any import line."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinyphi3"
GPU_PACKAGE = ROOT / "tinyphi3_gpu"
WIDTH = 100


def source_files():
    """The Python files of both packages (tinyphi3 and its GPU backend, tinyphi3_gpu)."""
    return sorted(PACKAGE.rglob("*.py")) + sorted(GPU_PACKAGE.rglob("*.py"))


def long_lines(text: str, width: int = WIDTH) -> list:
    """Line numbers (1-based) of the lines longer than `width` characters."""
    return [i for i, line in enumerate(text.splitlines(), 1) if len(line) > width]


def relative_imports(text: str) -> list:
    """Line numbers of `from . import x` / `from .mod import x` statements."""
    return [node.lineno for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.ImportFrom) and node.level]


def test_every_line_fits_in_100_characters():
    offenders = {str(p.relative_to(ROOT)): long_lines(p.read_text(encoding="utf-8"))
                 for p in source_files() + sorted(GPU_PACKAGE.rglob("*.cu"))}
    offenders = {path: lines for path, lines in offenders.items() if lines}
    assert not offenders, f"lines over {WIDTH} characters: {offenders}"


def test_imports_are_absolute():
    offenders = {str(p.relative_to(ROOT)): relative_imports(p.read_text(encoding="utf-8"))
                 for p in source_files()}
    offenders = {path: lines for path, lines in offenders.items() if lines}
    assert not offenders, f"relative imports: {offenders}"


def test_the_checks_can_fail():
    """Negative control: each check finds what it looks for."""
    assert long_lines("x = 1\n" + "y = '" + "a" * 100 + "'\n") == [2]
    assert relative_imports("import os\nfrom . import model\nfrom .nn import layers\n") == [2, 3]
    assert relative_imports("from tinyphi3.nn import layers\n") == []
