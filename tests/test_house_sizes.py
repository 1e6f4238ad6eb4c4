"""The house stays readable: no class over 400 lines and no function over 120 lines in the shipped
code (``services/`` and ``libs/``, the simulator included).

A size is counted from the ``class``/``def`` line to its last line, docstring and blank lines
included, as a reader scrolls it. ``python tests/test_house_sizes.py`` prints the largest.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("services", "libs")
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 120


@dataclass(frozen=True)
class Block:
    kind: str  # "class" or "function"
    where: str  # path:line qualified.name
    lines: int


def blocks(root: Path = REPO) -> list[Block]:
    found: list[Block] = []
    for top in SHIPPED:
        for path in sorted((root / top).rglob("*.py")):
            if ".venv" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            _walk(tree, [], path.relative_to(root).as_posix(), found)
    return found


def _walk(node: ast.AST, names: list[str], path: str, found: list[Block]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            qualified = [*names, child.name]
            lines = (child.end_lineno or child.lineno) - child.lineno + 1
            found.append(Block(kind, f"{path}:{child.lineno} {'.'.join(qualified)}", lines))
            _walk(child, qualified, path, found)
        else:
            _walk(child, names, path, found)


def test_walk_measures_classes_and_nested_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "libs" / "x"
    pkg.mkdir(parents=True)
    (tmp_path / "services").mkdir()
    (pkg / "m.py").write_text(
        "class A:\n"
        "    def f(self):\n"
        "        def g():\n"
        "            return 1\n"
        "        return g()\n"
        "\n"
        "async def h():\n"
        "    pass\n"
    )
    measured = {(b.kind, b.where.split(" ")[1], b.lines) for b in blocks(tmp_path)}
    assert measured == {("class", "A", 5), ("function", "A.f", 4), ("function", "A.f.g", 2),
                        ("function", "h", 2)}


def test_no_class_over_400_lines() -> None:
    too_big = [f"{b.where}: {b.lines}" for b in blocks() if b.kind == "class" and b.lines > MAX_CLASS_LINES]
    assert not too_big, "classes over 400 lines (split them along a real seam):\n" + "\n".join(too_big)


def test_no_function_over_120_lines() -> None:
    too_long = [f"{b.where}: {b.lines}" for b in blocks()
                if b.kind == "function" and b.lines > MAX_FUNCTION_LINES]
    assert not too_long, "functions over 120 lines (split them along a real seam):\n" + "\n".join(too_long)


if __name__ == "__main__":
    largest = sorted(blocks(), key=lambda b: b.lines, reverse=True)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for kind in ("class", "function"):
        print(f"largest {kind}es:" if kind == "class" else f"largest {kind}s:")
        for b in [b for b in largest if b.kind == kind][:count]:
            print(f"  {b.lines:4d}  {b.where}")
