"""voicefleet's single-use voice worker: one LiveKit Agents job per process, a Letta brain.

`python -m voicefleet_worker` is the entrypoint (docs/contracts.md, "Worker process").
"""
