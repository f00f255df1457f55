"""Import rules of STYLE.md for the worker, checked on its source."""

from __future__ import annotations

import ast
from pathlib import Path

import voicefleet_worker.config

PACKAGE = Path(voicefleet_worker.config.__file__).parent


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_memory_imports_letta_client() -> None:
    users = [
        p.name for p in modules() if any(n.split(".")[0] == "letta_client" for n in imports_of(p))
    ]
    assert users == ["memory.py"]


def test_worker_never_imports_the_operator_or_the_gateway() -> None:
    for path in modules():
        roots = {n.split(".")[0] for n in imports_of(path)}
        assert not roots & {"voicefleet_operator", "voicefleet_web"}, path


def test_every_module_says_what_it_is_for() -> None:
    for path in modules():
        assert ast.get_docstring(ast.parse(path.read_text())), path


def test_no_module_level_mutable_state() -> None:
    mutable = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    for path in modules():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, mutable):
                raise AssertionError(f"{path.name}:{node.lineno} module-level mutable value")
            if isinstance(node, ast.Global):
                raise AssertionError(f"{path.name}:{node.lineno} global statement")
