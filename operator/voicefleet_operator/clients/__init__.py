"""The only modules that do network I/O: Kubernetes (kube.py) and LiveKit (livekit.py)."""
