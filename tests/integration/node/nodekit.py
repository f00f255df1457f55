"""What the node tests share: whether the stack under test has the real node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voicefleet_stack import node
from voicefleet_stack.stack import voicefleet_home


def real_node_enabled() -> bool:
    """The stack of VOICEFLEET_STACK_ENV has node-0; else whether the session's own stack
    will start it (`voicefleet up`'s default: where the machine can run it)."""
    given = os.environ.get("VOICEFLEET_STACK_ENV")
    if given:
        return (Path(given).parent / "node" / "node.json").exists()
    return node.decide(voicefleet_home(), voicefleet_home() / "bin" / "current")[0]


NEEDS_NODE = pytest.mark.skipif(
    not real_node_enabled(),
    reason="the real node is off: VOICEFLEET_REAL_NODE=0, or this machine cannot run it "
    "(`voicefleet up` says why), or VOICEFLEET_STACK_ENV points at a stack without it",
)
