"""The embedded default PostgreSQL: a private cluster of this checkout (DESIGN.md §2).

Used when ``GOVRIX_DATABASE_URL`` is unset. Binaries come from the system (``pg_config --bindir``,
then ``/usr/lib/postgresql/*/bin``) and, when the machine has none, from the ``pgserver`` wheel.
``initdb`` refuses to run as root, so as root the cluster belongs to an unprivileged user
(``postgres`` when it exists, else ``govrix``, created on demand) and every server command runs
through ``runuser``. The server listens on 127.0.0.1 only, with a generated password
(scram-sha-256), on a port that does not collide with a system server (54329 and up).

Where it lives: ``$GOVRIX_HOME/pg`` always holds what the tools read (``password``, ``port`` and
``url``, mode 600). The server's own files (data directory, socket, log) live there too, unless
that user cannot reach the checkout (a clone in root's 0700 home, normal in containers): then
they go to ``/var/lib/govrix/<hash of $GOVRIX_HOME>``, owned by that user, and
``$GOVRIX_HOME/pg/location`` points there, so ``status``, ``stop`` and ``url`` find the cluster
from the checkout alone.

    scripts/govrix pg start|stop|status|url      (python -m scripts.pgembed …)

(About 440 lines: placing, creating, starting and stopping the cluster share its layout and its
owner, and read best together.)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".govrix"
DEFAULT_PORT = 54329
DB_NAME = "govrix"
DB_USER = "govrix"
#: Where the server's files go when its user cannot reach the checkout (one folder per checkout).
SYSTEM_ROOT = Path("/var/lib/govrix")


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be created or started; the message says what to do."""


@dataclass(frozen=True)
class Cluster:
    """Where the embedded cluster lives and how to reach it."""

    home: Path

    @property
    def state(self) -> Path:
        """What the tools read: password, port, url and the location pointer (owned by us)."""
        return self.home / "pg"

    @property
    def location_file(self) -> Path:
        return self.state / "location"

    @property
    def base(self) -> Path:
        """The server's folder (data, socket, log): ``state`` unless the pointer says elsewhere."""
        try:
            return Path(self.location_file.read_text().strip())
        except FileNotFoundError:
            return self.state

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def password_file(self) -> Path:
        return self.state / "password"

    @property
    def port_file(self) -> Path:
        return self.state / "port"

    @property
    def url_file(self) -> Path:
        """The URL, rewritten at each start: what ``GOVRIX_DATABASE_URL_FILE`` reads by default."""
        return self.state / "url"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://{DB_USER}:{self.password()}@127.0.0.1:{self.port()}/{dbname}"


def find_bindir() -> Path:
    """System binaries first, then the pgserver wheel's bundled ones."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout
            candidates.append(Path(out.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    # find_spec, not import: importing pgserver has side effects (platformdirs warnings).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise EmbeddedError(
        "no PostgreSQL server binaries found (looked at pg_config --bindir, "
        "/usr/lib/postgresql/*/bin and the pgserver wheel). Install one of: "
        "'apt-get install postgresql', or 'uv sync --extra embedded' for the pgserver wheel; "
        "or point GOVRIX_DATABASE_URL at an existing server."
    )


def _server_user() -> str | None:
    """The unprivileged owner when we are root; None when we can run the server ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "govrix"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "govrix"],
        check=True,
    )
    return "govrix"


def _as_owner(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *cmd]
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(cmd)]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    wanted = os.environ.get("GOVRIX_PG_PORT")
    if wanted:
        return int(wanted)
    for port in range(DEFAULT_PORT, DEFAULT_PORT + 50):
        if _port_free(port):
            return port
    raise EmbeddedError(f"no free port in {DEFAULT_PORT}..{DEFAULT_PORT + 49} on 127.0.0.1")


def _reachable(path: Path, user: str) -> bool:
    """``user`` can traverse ``path`` (so every parent of it too)."""
    probe = subprocess.run(_as_owner(["test", "-x", str(path)], user), capture_output=True)
    return probe.returncode == 0


def system_base(home: Path, root: Path | None = None) -> Path:
    """The server's folder for the checkout whose state is ``home`` when that checkout is out
    of the server user's reach: one per checkout, keyed by a hash of its resolved path."""
    key = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return (root or SYSTEM_ROOT) / key


def choose_base(
    c: Cluster, user: str | None, reachable: Callable[[Path, str], bool] = _reachable
) -> Path:
    """Where a new cluster's server files go: beside the tools' files (``c.state``), unless
    ``user`` (the unprivileged owner, None when that is us) cannot reach them."""
    if user is None or reachable(c.state, user):
        return c.state
    return system_base(c.home)


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Replace ``path`` with ``text`` in a file nobody else can read, from its creation on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if owner is not None:
            shutil.chown(tmp, owner)
        f.write(text)
    tmp.replace(path)


def _claim_system_base(c: Cluster, base: Path, user: str) -> None:
    """Make ``base`` ours (owned by ``user``, 0700) and point ``c`` at it."""
    if not base.parent.exists():
        base.parent.mkdir(parents=True)
        base.parent.chmod(0o755)  # whatever the umask: the server's user must traverse it
    base.mkdir(mode=0o700, exist_ok=True)
    old = base / "data"
    if (old / "PG_VERSION").exists():
        # Left by an earlier checkout at the same path whose state (and password) is gone.
        if (old / "postmaster.pid").exists():
            raise EmbeddedError(
                f"{old} belongs to an earlier GOVRIX_HOME at {c.home} and its server still "
                f"runs; stop it (runuser -u {user} -- pg_ctl -D {old} stop) or remove {base}"
            )
        aside = base / f"data.orphaned-{time.strftime('%Y%m%dT%H%M%S')}"
        old.rename(aside)
        print(f"govrix: moved an earlier checkout's cluster aside to {aside}", file=sys.stderr)
    elif old.exists():
        shutil.rmtree(old)  # an initdb that failed
    (base / "checkout").write_text(f"{c.home}\n")  # which checkout this folder serves
    shutil.chown(base, user)
    if not _reachable(base, user):
        raise EmbeddedError(
            f"{base} is not reachable by the unprivileged user {user!r} that must own the "
            "cluster (initdb refuses root); set GOVRIX_DATABASE_URL to use another server."
        )
    c.location_file.write_text(f"{base}\n")


def cluster(home: Path | None = None) -> Cluster:
    env_home = os.environ.get("GOVRIX_HOME")
    return Cluster(home or (Path(env_home) if env_home else DEFAULT_HOME))


def is_running(c: Cluster) -> bool:
    if not (c.data / "postmaster.pid").exists() or not c.port_file.exists():
        return False
    bindir = find_bindir()
    res = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(c.port()), "-q"],
        capture_output=True,
    )
    return res.returncode == 0


def init(c: Cluster) -> None:
    """Create the cluster once: initdb with a generated password, loopback only."""
    if (c.data / "PG_VERSION").exists():
        return
    bindir = find_bindir()
    user = _server_user()
    c.state.mkdir(parents=True, exist_ok=True)
    if not c.password_file.exists():
        _write_private(c.password_file, secrets.token_urlsafe(24) + "\n")
    c.location_file.unlink(missing_ok=True)  # no cluster yet: choose its place afresh
    base = choose_base(c, user)
    if user is not None and base != c.state:
        _claim_system_base(c, base, user)
    if c.data.exists():
        shutil.rmtree(c.data)
    c.data.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(c.base, user)
        shutil.chown(c.data, user)
    pwfile = c.base / ".initdb-pw"
    _write_private(pwfile, c.password() + "\n", owner=user)
    cmd = [
        str(bindir / "initdb"),
        "-D",
        str(c.data),
        "-U",
        DB_USER,
        "--pwfile",
        str(pwfile),
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-instructions",
    ]
    try:
        res = subprocess.run(_as_owner(cmd, user), capture_output=True, text=True)
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        shutil.rmtree(c.data, ignore_errors=True)
        raise EmbeddedError(f"initdb failed:\n{res.stdout}\n{res.stderr}")
    conf = c.data / "postgresql.conf"
    with conf.open("a") as f:
        f.write(
            "\n# govrix embedded defaults\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{c.base}'\n"
            "max_connections = 200\n"
            "shared_buffers = 256MB\n"
            "synchronous_commit = on\n"
            "fsync = on\n"
            "shared_preload_libraries = 'pg_stat_statements'\n"
        )


def start(c: Cluster | None = None, *, timeout: float = 30.0) -> Cluster:
    """Start the cluster (creating it first if needed); idempotent."""
    c = c or cluster()
    init(c)
    if is_running(c):
        _write_url(c)
        return c
    bindir = find_bindir()
    user = _server_user()
    port = _pick_port()
    c.port_file.write_text(f"{port}\n")
    if user is not None:
        with contextlib.suppress(FileNotFoundError):
            c.log.touch()
            shutil.chown(c.log, user)
    if not (bindir.parent / "lib").exists() or not _has_pg_stat_statements(bindir):
        _drop_preload(c)
    cmd = [
        str(bindir / "pg_ctl"),
        "-D",
        str(c.data),
        "-l",
        str(c.log),
        "-o",
        f"-p {port}",
        "-w",
        "-t",
        str(int(timeout)),
        "start",
    ]
    res = subprocess.run(_as_owner(cmd, user), capture_output=True, text=True)
    if res.returncode != 0:
        tail = c.log.read_text()[-2000:] if c.log.exists() else ""
        raise EmbeddedError(
            f"PostgreSQL did not start on 127.0.0.1:{port}.\n{res.stdout}{res.stderr}\n"
            f"server log ({c.log}):\n{tail}"
        )
    _wait_ready(c, timeout)
    _write_url(c)
    return c


def _write_url(c: Cluster) -> None:
    url = c.url() + "\n"
    with contextlib.suppress(FileNotFoundError):
        if c.url_file.read_text() == url:
            return
    _write_private(c.url_file, url)


def _has_pg_stat_statements(bindir: Path) -> bool:
    res = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True)
    if res.returncode != 0:
        return False
    return (Path(res.stdout.strip()) / "pg_stat_statements.so").exists()


def _drop_preload(c: Cluster) -> None:
    conf = c.data / "postgresql.conf"
    text = conf.read_text()
    conf.write_text(text.replace("shared_preload_libraries = 'pg_stat_statements'\n", ""))


def _wait_ready(c: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(c):
            return
        time.sleep(0.1)
    raise EmbeddedError(f"PostgreSQL started but is not accepting connections; see {c.log}")


def stop(c: Cluster | None = None, *, mode: str = "fast") -> None:
    c = c or cluster()
    if not (c.data / "postmaster.pid").exists():
        return
    bindir = find_bindir()
    cmd = [str(bindir / "pg_ctl"), "-D", str(c.data), "-m", mode, "-w", "stop"]
    subprocess.run(_as_owner(cmd, _server_user()), capture_output=True, text=True)


def ensure_database(c: Cluster, dbname: str = DB_NAME) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def status(c: Cluster | None = None) -> str:
    c = c or cluster()
    if not (c.data / "PG_VERSION").exists():
        return f"not created ({c.data})"
    if is_running(c):
        return f"running on 127.0.0.1:{c.port()} (data {c.data})"
    return f"stopped (data {c.data})"


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    c = cluster()
    try:
        if cmd == "start":
            start(c)
            ensure_database(c)
            print(status(c))
        elif cmd == "stop":
            stop(c)
            print(status(c))
        elif cmd == "status":
            print(status(c))
        elif cmd == "url":
            if not c.port_file.exists():
                raise EmbeddedError(f"not created yet ({c.state}); run `{argv[0]} start`")
            print(c.url())
        else:
            print(f"usage: {argv[0]} start|stop|status|url", file=sys.stderr)
            return 2
    except EmbeddedError as e:
        print(f"govrix: embedded PostgreSQL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
