"""voicefleet's kopf operator: VoiceSession → one LiveKit room and one worker pod per connection.

Layers, importing only downward:
    handlers (kopf registration) → reconcile (observe, plan, apply, status)
    → plan, manifests, conditions, naming, api (pure); clients/ (network I/O) at the edge.

The resource's own names (group, version, kind) live in `api.py`. This file holds no code,
so the package also imports as a namespace package (as an editable install made before
the file existed maps it).
"""
