"""voicefleet's gateway: the HTTP service behind the ingress, and the browser client it serves.

Layers, importing only downward:
    app (routes, middleware, composition) → sessions, agents, tokens, auth, limits (services)
    → naming, errors, config (pure) ; kube, agents' Letta client (network I/O) at the edge.
From the operator it imports only `voicefleet_operator.api` (the VoiceSession models).
"""
