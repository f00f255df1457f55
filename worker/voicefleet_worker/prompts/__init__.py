"""The worker's fixed texts, kept as Markdown files beside this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Prompts:
    greeting: str  # spoken when the user joins; never sent to Letta
    apology: str  # spoken and transcribed when Letta fails
    instructions: str  # the AgentSession's instructions (Letta holds the real persona)

    @classmethod
    def load(cls) -> Prompts:
        def read(name: str) -> str:
            return (_HERE / f"{name}.md").read_text(encoding="utf-8").strip()

        return cls(
            greeting=read("greeting"), apology=read("apology"), instructions=read("instructions")
        )
