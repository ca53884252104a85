"""What ``up`` will run and where: the listeners (ports, modes) and the command lines.

Read from the environment (``GOVRIX_PROXY_PORT``, ``GOVRIX_API_PORT``, ``GOVRIX_PROXY_MODE``,
``GOVRIX_REVERSE``, ``GOVRIX_PROXY_METRICS_PORT`` or ``metrics_port`` in ``GOVRIX_CONFIG``,
``GOVRIX_PROXY_WORKERS``).

**Workers.** ``GOVRIX_PROXY_WORKERS=N`` (default ``auto``: one per two cores, 1 to 8) starts N
proxy processes, ``proxy``, ``proxy-2``, … on the same listeners (``SO_REUSEPORT``, see
addon/lean.py), each with its recorder process, its spool (``spool-N``), its pid file
(``proxy-N.pid``) and its metrics port (``GOVRIX_PROXY_METRICS_PORT`` + N - 1); the database,
the CA, the identity secret and the policy are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

from scripts.pidfiles import HOME
from scripts.ports import Port

PROXY_PORT = int(os.environ.get("GOVRIX_PROXY_PORT", "4000"))
API_PORT = int(os.environ.get("GOVRIX_API_PORT", "4001"))
DEFAULT_METRICS_PORT = 4002
#: Where ``up`` listens unless told otherwise: loopback only.
DEFAULT_HOST = "127.0.0.1"

REVERSE_BASES = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai",
    "groq": "https://api.groq.com",
    "deepseek": "https://api.deepseek.com",
    "openrouter": "https://openrouter.ai",
    "xai": "https://api.x.ai",
}


def _reverse(env: Mapping[str, str]) -> list[tuple[str, int]]:
    """``GOVRIX_REVERSE`` as (base URL, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in filter(None, (env.get("GOVRIX_REVERSE") or "").split(",")):
        target, _, port = item.strip().rpartition("=")
        base = REVERSE_BASES.get(target, target)
        if not base.startswith(("http://", "https://")) or not port.isdigit():
            raise SystemExit(
                f"GOVRIX_REVERSE: cannot read {item!r} (want provider=port or https://host=port)"
            )
        out.append((base, int(port)))
    return out


def proxy_modes(env: Mapping[str, str] = os.environ) -> list[str]:
    """mitmproxy ``--mode`` arguments: explicit (or transparent) on the main port, plus one
    reverse listener per entry of ``GOVRIX_REVERSE`` ("openai=4010,anthropic=4011", or
    "https://my-gateway.internal=4012")."""
    main = env.get("GOVRIX_PROXY_MODE", "regular")
    if main not in ("regular", "transparent"):
        raise SystemExit(f"GOVRIX_PROXY_MODE: expected regular|transparent, got {main!r}")
    modes = ["--mode", main]
    for base, port in _reverse(env):
        modes += ["--mode", f"reverse:{base}@{port}"]
    return modes


def metrics_port(env: Mapping[str, str] = os.environ) -> int:
    """The proxy's metrics port as the addon reads it: the environment, then GOVRIX_CONFIG."""
    raw = env.get("GOVRIX_PROXY_METRICS_PORT")
    if raw:
        with contextlib.suppress(ValueError):
            return int(float(raw))
    path = env.get("GOVRIX_CONFIG")
    if path:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, TypeError, ValueError):
            return int(
                tomllib.loads(Path(path).read_text()).get("metrics_port", DEFAULT_METRICS_PORT)
            )
    return DEFAULT_METRICS_PORT


def default_workers(cores: int | None = None) -> int:
    """One proxy worker per two cores (a worker is an event loop plus its recorder process, and
    PostgreSQL and the API need the rest), at least 1, at most 8."""
    n = os.cpu_count() if cores is None else cores
    return max(1, min(8, (n or 1) // 2))


def workers(env: Mapping[str, str] = os.environ) -> int:
    """``GOVRIX_PROXY_WORKERS``: a whole number >= 1, or ``auto`` (the default)."""
    raw = (env.get("GOVRIX_PROXY_WORKERS") or "auto").strip().lower()
    if raw == "auto":
        return default_workers()
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"GOVRIX_PROXY_WORKERS: expected a whole number >= 1 or auto, got {raw!r}")
    return int(raw)


def worker_name(i: int) -> str:
    """``proxy`` for the first worker, ``proxy-2``… after: the name of its record and pid file."""
    return "proxy" if i == 1 else f"proxy-{i}"


def worker_metrics_port(i: int, env: Mapping[str, str] = os.environ) -> int:
    """Worker ``i``'s metrics port (0: metrics disabled)."""
    mp = metrics_port(env)
    return mp + i - 1 if mp else 0


def worker_env(i: int, n: int, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What worker ``i`` of ``n`` gets on top of the stack's environment (nothing when n is 1)."""
    if n == 1:
        return {}
    return {
        "GOVRIX_PROXY_WORKER": str(i),
        "GOVRIX_PROXY_REUSE_PORT": "1",
        "GOVRIX_PROXY_METRICS_PORT": str(worker_metrics_port(i, env)),
    }


def metrics_urls(env: Mapping[str, str] = os.environ) -> list[str]:
    """The scrape endpoint of every worker (the API's proxy health reads them)."""
    return [
        f"http://127.0.0.1:{mp}/metrics"
        for i in range(1, workers(env) + 1)
        if (mp := worker_metrics_port(i, env))
    ]


def planned_ports(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> list[Port]:
    """Every port ``up`` will listen on, with its role and the setting that moves it."""
    out: list[Port] = []
    if not args.no_proxy:
        out.append(Port("proxy", args.proxy_host, PROXY_PORT, "GOVRIX_PROXY_PORT"))
        out += [
            Port(f"reverse proxy to {base}", args.proxy_host, port, "GOVRIX_REVERSE")
            for base, port in _reverse(env)
        ]
        for i in range(1, workers(env) + 1):
            if mp := worker_metrics_port(i, env):
                out.append(Port("proxy metrics", "127.0.0.1", mp, "GOVRIX_PROXY_METRICS_PORT"))
    if not args.no_api:
        out.append(Port("api", args.api_host, API_PORT, "GOVRIX_API_PORT"))
    return out


def children(
    args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> list[tuple[str, list[str]]]:
    """(name, command line) of each process ``up`` starts: the API, then the proxy workers
    (``worker_env`` says what each worker's environment adds)."""
    env_py = sys.executable
    out: list[tuple[str, list[str]]] = []
    if not args.no_api:
        out.append(("api", [env_py, "-m", "api", "--host", args.api_host, "--port", str(API_PORT)]))
    if not args.no_proxy:
        # The lean master (addon/lean.py): mitmdump's command line and behaviour, with only the
        # built-in addons the options ask for; `mitmdump -s addon/main.py` is the same proxy.
        cmd = [
            env_py,
            "-m",
            "addon.lean",
            "-q",
            *proxy_modes(env),
            "--listen-host",
            args.proxy_host,
            "--listen-port",
            str(PROXY_PORT),
            "--set",
            f"confdir={HOME / 'mitmproxy'}",
        ]
        out += [(worker_name(i), cmd) for i in range(1, workers(env) + 1)]
    return out
