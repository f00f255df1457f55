"""The Letta side of the local stack: scripted model, PostgreSQL with pgvector, Letta server.

Three parts, started in this order:

- ``model``: the deterministic scripted model (`scripted_model.py`), an OpenAI-compatible
  endpoint on ``ctx.ports["model"]``;
- ``postgres``: PostgreSQL 16 with pgvector from the PyPI wheel ``pgserver`` (installed into
  the Letta virtualenv by ``tools/install-letta.sh``), run in the foreground as the
  unprivileged user ``nobody`` (postgres refuses root), TCP on 127.0.0.1 only, its unix
  socket inside its data directory; the database ``letta`` with the ``vector`` extension;
- ``letta``: ``letta server`` 0.16.8 on ``ctx.ports["letta"]`` with a clean environment
  pointing at the model and the database; the schema is migrated with alembic before the
  first start.

`ensure_demo_agent` creates the demo agent ``Agent_66`` once the server is healthy.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .parts import Part, StackContext

RUN_AS = "nobody"
RUN_AS_GROUP = "nogroup"
DB_NAME = "letta"
DB_USER = "letta"
DEMO_AGENT = "Agent_66"
EMBEDDING_HANDLE = "openai/text-embedding-3-small"
OFFLINE_PROXY = "http://127.0.0.1:9"  # nothing listens there: outbound downloads fail at once
LETTA_HEALTH_PATH = "/v1/health/"

_VERSIONS_ENV = Path(__file__).resolve().parent.parent / "versions.env"
_DEFAULT_VERSIONS = {"LETTA_VERSION": "0.16.8", "PGSERVER_VERSION": "0.1.4"}


def _versions() -> dict[str, str]:
    values = dict(_DEFAULT_VERSIONS)
    if _VERSIONS_ENV.exists():
        for line in _VERSIONS_ENV.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip().strip("\"'")
    return values


LETTA_VERSION = _versions()["LETTA_VERSION"]


# ----------------------------------------------------------------------------- install


def letta_install_dir(home: Path) -> Path:
    """Where tools/install-letta.sh puts the Letta server (venv/, src/, .ready)."""
    return home / f"letta-{LETTA_VERSION}"


def letta_installed(home: Path) -> bool:
    return (letta_install_dir(home) / ".ready").is_file()


def _venv(home: Path) -> Path:
    return letta_install_dir(home) / "venv"


def _pg_install(home: Path) -> Path:
    """pgserver's PostgreSQL tree (bin/, lib/, share/) inside the Letta virtualenv."""
    found = sorted(_venv(home).glob("lib/python3*/site-packages/pgserver/pginstall"))
    if not found:
        raise FileNotFoundError(
            f"pgserver is not installed in {_venv(home)}: run tools/install-letta.sh"
        )
    return found[-1]


def _base_env(home_dir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home_dir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_unprivileged(argv: list[str]) -> list[str]:
    """argv run as `nobody` when we are root (the same wrapping the supervisor uses)."""
    if not _is_root():
        return argv
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS_GROUP}", "--init-groups", *argv]


def _run(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> str:
    """Run a command to completion; raise with its output when it fails."""
    proc = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc.stdout


# ----------------------------------------------------------------------------- model


def scripted_model_part(ctx: StackContext) -> Part:
    """The scripted model on 127.0.0.1:ctx.ports["model"] (stdlib only, any python3)."""
    port = ctx.ports["model"]
    script = Path(__file__).resolve().parent / "scripted_model.py"
    url = f"http://127.0.0.1:{port}"
    cwd = ctx.data("model")
    return Part(
        name="model",
        argv=[sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        env=_base_env(cwd) | {"PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        health=lambda: _http_ok(f"{url}/health"),
        timeout=15.0,
        description=f"deterministic scripted model (OpenAI API) on {url}/v1",
    )


def model_base_url(ctx: StackContext) -> str:
    """The scripted model's OpenAI base URL (with /v1), as Letta's OPENAI_BASE_URL."""
    return f"http://127.0.0.1:{ctx.ports['model']}/v1"


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- postgres


def _pg_dir(ctx: StackContext) -> Path:
    return ctx.data("postgres")


def _pg_data(ctx: StackContext) -> Path:
    return _pg_dir(ctx) / "pgdata"


def _pg_password(ctx: StackContext) -> str:
    """The database password, generated once and kept in the stack folder (root only)."""
    path = _pg_dir(ctx) / "password"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(24))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def letta_pg_uri(ctx: StackContext) -> str:
    """LETTA_PG_URI of the stack's database."""
    port = ctx.ports["postgres"]
    return f"postgresql://{DB_USER}:{_pg_password(ctx)}@127.0.0.1:{port}/{DB_NAME}"


def _socket_dir_option(pgdata: Path, port: int) -> str:
    # A unix socket path must fit in sun_path (108 bytes); without room, TCP only.
    if len(str(pgdata / f".s.PGSQL.{port}")) < 100:
        return str(pgdata)
    return ""


def _grant_traverse(path: Path) -> None:
    """Let `nobody` reach `path`: add search (x, not read) permission on blocking ancestors.

    Only needed as root with a home under a private folder such as /root (mode 0700).
    """
    for parent in [*reversed(path.parents), path]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            return
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            print(f"[letta] granted search permission to others on {parent}", file=sys.stderr)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _pg_env(ctx: StackContext) -> dict[str, str]:
    return _base_env(_pg_dir(ctx)) | {
        "PGPASSWORD": _pg_password(ctx),
        "PGCONNECT_TIMEOUT": "5",
    }


def _psql(ctx: StackContext, sql: str, database: str = DB_NAME) -> str:
    """Run SQL as the database owner over TCP; returns unaligned tuples-only output."""
    psql = _pg_install(ctx.home) / "bin" / "psql"
    argv = [
        str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA",
        "-h", "127.0.0.1", "-p", str(ctx.ports["postgres"]), "-U", DB_USER, "-d", database,
        "-c", sql,
    ]  # fmt: skip
    return _run(argv, _pg_env(ctx), timeout=60).strip()


def ensure_database(ctx: StackContext) -> None:
    """Create the `letta` database and the pgvector extension if missing (idempotent)."""
    exists = _psql(ctx, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'", "postgres")
    if exists != "1":
        _psql(ctx, f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}", "postgres")
    _psql(ctx, "CREATE EXTENSION IF NOT EXISTS vector")


def postgres_part(ctx: StackContext) -> Part:
    """PostgreSQL with pgvector on 127.0.0.1:ctx.ports["postgres"], in the foreground.

    `prepare` initialises the cluster once (as `nobody` when root, owner `letta`, password
    auth over TCP) and keeps the data folder owned by the user the server runs as;
    `after_healthy` creates the database `letta` and the `vector` extension if missing.
    SIGTERM is postgres' smart shutdown: it waits for clients (stop Letta first).
    """
    port = ctx.ports["postgres"]
    pg_dir = _pg_dir(ctx)
    pgdata = _pg_data(ctx)
    password = _pg_password(ctx)

    def pg_bin(name: str) -> str:
        return str(_pg_install(ctx.home) / "bin" / name)

    def prepare() -> None:
        uid, gid = os.geteuid(), os.getegid()
        if _is_root():
            entry = pwd.getpwnam(RUN_AS)
            uid, gid = entry.pw_uid, entry.pw_gid
            _grant_traverse(_pg_install(ctx.home))
            _grant_traverse(pg_dir)
        if (pgdata / "PG_VERSION").exists():
            if pgdata.stat().st_uid != uid:
                _chown_tree(pgdata, uid, gid)
            pgdata.chmod(0o700)
            return
        staging = pg_dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        pwdir = pg_dir / "pwfile.init"  # initdb wants an empty folder: the file goes beside it
        shutil.rmtree(pwdir, ignore_errors=True)
        pwdir.mkdir(mode=0o700)
        pwfile = pwdir / "pwfile"
        pwfile.write_text(password + "\n")
        for path in (staging, pwdir, pwfile):
            os.chown(path, uid, gid)
        argv = [
            pg_bin("initdb"), "-D", str(staging), "-U", DB_USER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--no-locale", "--no-instructions",
        ]  # fmt: skip
        try:
            _run(_as_unprivileged(argv), _base_env(pg_dir), cwd=pg_dir, timeout=180)
        finally:
            shutil.rmtree(pwdir, ignore_errors=True)
        staging.rename(pgdata)

    def health() -> bool:
        argv = [pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"]
        return subprocess.run(argv, env=_base_env(pg_dir), timeout=10, check=False).returncode == 0

    argv = [
        pg_bin("postgres"),
        "-D", str(pgdata),
        "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", f"unix_socket_directories={_socket_dir_option(pgdata, port)}",
        "-c", "max_connections=200",  # Letta pools up to ~80 connections per process
        "-c", "shared_buffers=64MB",
        "-c", "synchronous_commit=off",  # a crash may lose the last commits, never corrupts
        "-c", "logging_collector=off",
        "-c", "log_min_messages=warning",
    ]  # fmt: skip
    return Part(
        name="postgres",
        argv=argv,
        env=_base_env(pg_dir),
        cwd=pg_dir,
        health=health,
        timeout=60.0,
        prepare=prepare,
        after_healthy=lambda: ensure_database(ctx),
        run_as=RUN_AS,
        stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM waits for clients to leave
        description=f"PostgreSQL 16 + pgvector (pgserver) on 127.0.0.1:{port}",
    )


# ----------------------------------------------------------------------------- letta


def _alembic_heads(versions_dir: Path) -> set[str]:
    """Head revisions of the migration graph, read from the migration files."""
    revisions: set[str] = set()
    parents: set[str] = set()
    rev_re = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
    down_re = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.M)
    for path in versions_dir.glob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        rev = rev_re.search(text)
        if rev is None:
            continue
        revisions.add(rev.group(1))
        down = down_re.search(text)
        if down is not None:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    return revisions - parents


def letta_env(ctx: StackContext) -> dict[str, str]:
    """The complete, clean environment of the Letta server (and its migrations)."""
    letta_dir = ctx.data("letta")
    venv_bin = _venv(ctx.home) / "bin"
    env = _base_env(letta_dir / "home") | {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(_venv(ctx.home)),
        "LETTA_DIR": str(letta_dir / "home" / ".letta"),
        "LETTA_PG_URI": letta_pg_uri(ctx),
        "OPENAI_API_KEY": "dummy",
        "OPENAI_BASE_URL": model_base_url(ctx),
        "COMPOSIO_DISABLE_VERSION_CHECK": "true",
        "LETTA_DISABLE_TRACING": "true",
        "HTTPS_PROXY": OFFLINE_PROXY,
        "HTTP_PROXY": OFFLINE_PROXY,
        "https_proxy": OFFLINE_PROXY,
        "http_proxy": OFFLINE_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        "TIKTOKEN_CACHE_DIR": str(letta_dir / "tiktoken"),
        "NLTK_DATA": str(letta_dir / "nltk_data"),
    }
    return env


def letta_server_env(ctx: StackContext) -> dict[str, str]:
    """The server's environment: `letta_env` with a pool of database connections.

    Letta 0.16 opens a new database connection per query by default (NullPool), and each
    one pays PostgreSQL's SCRAM handshake in Python: ~0.5 s of a 0.7 s turn with the
    scripted model. With a pool a turn takes ~0.17 s, and loading an agent and starting a
    conversation ~0.04 s instead of ~0.25 s (BENCHMARKS.md). Letta's pooled engine asks
    for TLS unless the URI says otherwise; the stack's loopback PostgreSQL has none. (The
    migrations keep the plain URI: their driver takes no `sslmode`.)
    """
    env = letta_env(ctx)
    env["LETTA_DISABLE_SQLALCHEMY_POOLING"] = "false"
    env["LETTA_PG_URI"] = f"{env['LETTA_PG_URI']}?sslmode=disable"
    return env


def migrate(ctx: StackContext) -> bool:
    """`alembic upgrade head` unless the database is already at head; True if it ran."""
    src = letta_install_dir(ctx.home) / "src"
    heads = _alembic_heads(src / "alembic" / "versions")
    current: set[str] = set()
    if _psql(ctx, "SELECT to_regclass('public.alembic_version') IS NOT NULL") == "t":
        current = set(_psql(ctx, "SELECT version_num FROM alembic_version").split())
    if heads and current == heads:
        return False
    env = letta_env(ctx)
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    alembic = str(_venv(ctx.home) / "bin" / "alembic")
    _run([alembic, "-c", str(src / "alembic.ini"), "upgrade", "head"], env, cwd=src, timeout=600)
    return True


def letta_part(ctx: StackContext) -> Part:
    """`letta server` on 127.0.0.1:ctx.ports["letta"] using the stack's model and database.

    `prepare` makes sure the database exists and migrates it (`alembic upgrade head`) when
    it is not at head yet. Health: GET /v1/health/.
    """
    port = ctx.ports["letta"]
    letta_dir = ctx.data("letta")
    cwd = letta_dir / "run"
    url = f"http://127.0.0.1:{port}"

    def prepare() -> None:
        if not letta_installed(ctx.home):
            raise RuntimeError(f"Letta is not installed in {letta_install_dir(ctx.home)}")
        for path in (cwd, letta_dir / "home" / ".letta", letta_dir / "tiktoken"):
            path.mkdir(parents=True, exist_ok=True)
        ensure_database(ctx)
        migrate(ctx)

    argv = [
        str(_venv(ctx.home) / "bin" / "letta"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Part(
        name="letta",
        argv=argv,
        env=letta_server_env(ctx),
        cwd=cwd,
        health=lambda: _http_ok(f"{url}{LETTA_HEALTH_PATH}"),
        timeout=120.0,
        prepare=prepare,
        description=f"Letta server {LETTA_VERSION} on {url}",
    )


def letta_base_url(ctx: StackContext) -> str:
    return f"http://127.0.0.1:{ctx.ports['letta']}"


# ----------------------------------------------------------------------------- demo agent


def _openai_base(model_base_url: str) -> str:
    base = model_base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _model_ids(model_base_url: str) -> list[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{_openai_base(model_base_url)}/models", timeout=10) as response:
        body = json.load(response)
    return [str(m["id"]) for m in body.get("data", []) if "id" in m]


def ensure_demo_agent(
    letta_base_url: str,
    model_base_url: str,
    *,
    name: str = DEMO_AGENT,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> str:
    """Create the Letta agent `name` (default Agent_66) if missing; return its id.

    `model_base_url` is the scripted model's URL, with or without ``/v1``. The model handle
    is ``openai-proxy/<first model it lists>``, the embedding ``openai/text-embedding-3-small``;
    memory blocks ``human`` (empty) and ``persona``. Never ``letta/letta-free``. An existing
    agent whose stored model endpoint is not `model_base_url` (Letta keeps the endpoint it saw
    first in its database) is pointed at it again. Needs `letta-client`.
    """
    from letta_client import Letta

    client = Letta(base_url=letta_base_url, api_key=api_key, timeout=timeout)
    endpoint = _openai_base(model_base_url)
    existing = [a for a in client.agents.list(name=name) if a.name == name]
    if existing:
        agent = sorted(existing, key=lambda a: str(a.created_at or ""))[0]
    else:
        ids = _model_ids(model_base_url)
        if not ids:
            raise RuntimeError(f"{model_base_url} lists no model")
        wanted = f"openai-proxy/{ids[0]}"
        deadline = time.monotonic() + timeout
        while True:  # Letta lists provider models asynchronously after start
            handles = {m.handle for m in client.models.list() if m.handle}
            if wanted in handles:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Letta does not offer {wanted}; it offers {sorted(handles)}")
            time.sleep(1.0)
        agent = client.agents.create(
            name=name,
            model=wanted,
            embedding=EMBEDDING_HANDLE,
            memory_blocks=[
                {"label": "human", "value": "", "limit": 5000},
                {
                    "label": "persona",
                    "value": f"I am {name}, a voice assistant. I keep what the user tells me.",
                    "limit": 5000,
                },
            ],
            tags=["voicefleet", "demo"],
        )
    config = agent.llm_config
    if config is not None and str(config.api_model_endpoint or "").rstrip("/") != endpoint:
        fixed = config.model_dump(by_alias=True, exclude_none=True) | {"model_endpoint": endpoint}
        client.agents.update(agent.id, llm_config=fixed)  # type: ignore[arg-type]
    return str(agent.id)
