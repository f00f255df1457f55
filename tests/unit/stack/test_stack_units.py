"""Pure parts of the local stack: the env file contract, certificates, ports."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from voicefleet_stack import letta, stack
from voicefleet_stack.certs import CertificateAuthority
from voicefleet_stack.kube import ControlPlane
from voicefleet_stack.parts import StackContext

SPEC_ENV_KEYS = [
    "KUBECONFIG",
    "NAMESPACE",
    "OPERATOR_NAMESPACE",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LETTA_BASE_URL",
    "GATEWAY_URL",
    "GATEWAY_TOKEN",
    "WEBHOOK_URL",
    "VOICEFLEET_BIN",
    "PYTHON",
]


def _ctx(tmp_path: Path) -> StackContext:
    ctx = stack.new_context(tmp_path)
    return StackContext(
        home=tmp_path,
        stack_dir=tmp_path,
        bin_dir=tmp_path / "bin",
        ports=ctx.ports,
        values=ctx.values,
    )


def test_env_file_has_exactly_the_spec_keys_and_round_trips(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    path = stack.write_env(ctx, ControlPlane(ctx))
    lines = path.read_text().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == SPEC_ENV_KEYS
    values = stack.read_env_file(path)
    assert values["NAMESPACE"] == "voicefleet"
    assert values["LIVEKIT_URL"].startswith("ws://127.0.0.1:")
    assert values["LIVEKIT_API_SECRET"] == ctx.values["LIVEKIT_API_SECRET"]
    assert path.stat().st_mode & 0o077 == 0  # holds secrets: owner only


def test_every_stack_gets_fresh_keys_and_distinct_ports(tmp_path: Path) -> None:
    a, b = stack.new_context(tmp_path), stack.new_context(tmp_path)
    assert a.values["LIVEKIT_API_SECRET"] != b.values["LIVEKIT_API_SECRET"]
    assert a.values["GATEWAY_TOKEN"] != b.values["GATEWAY_TOKEN"]
    assert len(a.values["LIVEKIT_API_SECRET"]) >= 32  # LiveKit refuses shorter secrets
    tcp = [p for k, p in a.ports.items() if k != "livekit_udp_start"]
    assert len(set(tcp)) == len(tcp)


def test_client_certificates_carry_the_identity_rbac_sees(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("admin", "voicefleet-admin", orgs=("system:masters",))
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "voicefleet-admin"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    assert cert.issuer == ca.cert.subject
    assert pair.key.stat().st_mode & 0o077 == 0


def test_control_plane_parts_bind_to_loopback_only(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    cp = ControlPlane(ctx)
    cp.generate_pki()
    argv = " ".join(
        cp.etcd().argv + cp.apiserver().argv + cp.controller_manager().argv + cp.scheduler().argv
    )
    assert "0.0.0.0" not in argv
    assert "--authorization-mode=Node,RBAC" in argv
    assert "--bind-address=127.0.0.1" in argv


def test_letta_server_keeps_a_pool_of_database_connections(tmp_path: Path) -> None:
    """Letta's default opens a connection (and a SCRAM handshake) per query: ~0.5 s a turn."""
    ctx = _ctx(tmp_path)
    server = letta.letta_server_env(ctx)
    assert server["LETTA_DISABLE_SQLALCHEMY_POOLING"] == "false"
    # its pooled engine asks for TLS unless told; the stack's loopback database has none
    assert server["LETTA_PG_URI"] == letta.letta_pg_uri(ctx) + "?sslmode=disable"
    # the migrations' driver refuses `sslmode`: they keep the plain URI
    migrations = letta.letta_env(ctx)
    assert migrations["LETTA_PG_URI"] == letta.letta_pg_uri(ctx)
    assert "LETTA_DISABLE_SQLALCHEMY_POOLING" not in migrations
    assert letta.letta_part(ctx).env == server
