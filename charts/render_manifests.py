"""Keep manifests/ and the Helm chart equal: render the plain manifests from the chart.

`python charts/render_manifests.py` (`make manifests`) writes
- charts/voicefleet/files/crds.yaml: a byte copy of manifests/crd.yaml (the CRD's source);
- manifests/rbac.yaml: the operator's and the gateway's ServiceAccounts and Roles;
- manifests/admission.yaml: the MutatingAdmissionPolicy that sets the operator's finalizer;
- manifests/operator.yaml: the operator Deployment, its Services and the worker NetworkPolicy;
all rendered by `helm template` with the chart's default values, release `voicefleet` in
namespace `voicefleet-system`. `--check` writes nothing and exits 1 if a file is out of date
(tests/unit/chart/test_manifests.py runs it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "voicefleet"
RELEASE, NAMESPACE = "voicefleet", "voicefleet-system"

HEADERS = {
    "rbac.yaml": """\
# GENERATED from charts/voicefleet by `make manifests` (charts/render_manifests.py); do not edit.
# Least-privilege RBAC of the operator and the gateway: ServiceAccounts in voicefleet-system,
# namespaced Roles in voicefleet (where VoiceSessions live); no ClusterRole.
#   kubectl create namespace voicefleet-system; kubectl create namespace voicefleet
#   kubectl apply -f manifests/crd.yaml -f manifests/rbac.yaml
""",
    "admission.yaml": """\
# GENERATED from charts/voicefleet by `make manifests` (charts/render_manifests.py); do not edit.
#   kubectl apply -f manifests/admission.yaml   (optional; Kubernetes >= 1.36)
""",
    "operator.yaml": """\
# GENERATED from charts/voicefleet by `make manifests` (charts/render_manifests.py); do not edit.
# The operator Deployment (chart defaults), its webhook and metrics Services, and the worker
# NetworkPolicy. First create the LiveKit credentials it reads and apply crd.yaml + rbac.yaml:
#   kubectl -n voicefleet-system create secret generic voicefleet-livekit \\
#     --from-literal=LIVEKIT_API_KEY=... --from-literal=LIVEKIT_API_SECRET=...
#   kubectl apply -f manifests/operator.yaml
# LiveKit and Letta URLs are the chart's defaults (namespace voicefleet-deps); for other
# values render your own: helm template voicefleet charts/voicefleet -n voicefleet-system -f my.yaml
""",
}
SHOW_ONLY = {
    "rbac.yaml": ["templates/operator/rbac.yaml", "templates/gateway/rbac.yaml"],
    "admission.yaml": ["templates/operator/finalizer-policy.yaml"],
    "operator.yaml": [
        "templates/operator/deployment.yaml",
        "templates/operator/service.yaml",
        "templates/worker/networkpolicy.yaml",
    ],
}


def helm_binary() -> str:
    """helm from VOICEFLEET_BIN, else the cache `make bins` fills, else PATH."""
    home = Path(os.environ.get("VOICEFLEET_HOME", Path.home() / ".cache" / "voicefleet"))
    for candidate in (
        Path(os.environ.get("VOICEFLEET_BIN", "/nonexistent")) / "helm",
        home / "bin" / "current" / "helm",
    ):
        if candidate.is_file():
            return str(candidate)
    return "helm"


def render(name: str) -> str:
    args = [helm_binary(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for template in SHOW_ONLY[name]:
        args += ["--show-only", template]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    # `# Source:` lines name chart paths; the header says where the file comes from.
    body = "\n".join(line for line in out.splitlines() if not line.startswith("# Source: "))
    return HEADERS[name] + body.removeprefix("---\n").strip() + "\n"


def expected_files() -> dict[Path, str]:
    files = {REPO / "manifests" / name: render(name) for name in SHOW_ONLY}
    files[CHART / "files" / "crds.yaml"] = (REPO / "manifests" / "crd.yaml").read_text()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(REPO))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("out of date (run `make manifests`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
