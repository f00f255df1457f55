"""The operator's layers import only downward (STYLE.md): handlers → reconcile → builders; clients at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "operator" / "voicefleet_operator"
PURE = {"api", "naming", "conditions", "config", "manifests", "plan"}
# module → what it must never import (modules of this package, or third-party roots)
FORBIDDEN = {
    **{
        m: {
            "reconcile",
            "handlers",
            "webhook",
            "metrics",
            "clients",
            "kopf",
            "kubernetes",
            "aiohttp",
            "livekit",
            "prometheus_client",
        }
        for m in PURE
    },
    "clients.kube": {"reconcile", "handlers", "webhook", "kopf"},
    "clients.livekit": {"reconcile", "handlers", "webhook", "kopf"},
    "reconcile": {"handlers", "webhook", "kopf"},
    "webhook": {"reconcile", "handlers", "kopf", "clients"},
    "metrics": {"reconcile", "handlers", "clients", "kopf"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    package_parts = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add((node.module or "").split(".")[0])
                continue
            base = list(package_parts[: len(package_parts) - (node.level - 1)])
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None:
                found.update(".".join([*base, alias.name]) for alias in node.names)
            else:
                found.add(".".join(target))
                found.add(target[0])
    return found


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_layers_import_only_downward(module: str) -> None:
    path = PACKAGE / (module.replace(".", "/") + ".py")
    imported = _imports(path)
    assert not imported & FORBIDDEN[module], (
        f"{module} imports {sorted(imported & FORBIDDEN[module])}"
    )


def test_only_the_clients_do_network_io() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module.startswith("clients") or module in ("handlers", "__main__", "webhook", "metrics"):
            continue
        imported = _imports(path)
        assert not imported & {"kubernetes", "livekit", "aiohttp", "httpx", "urllib", "socket"}, (
            module
        )
