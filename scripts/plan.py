"""What ``up`` will run and where: the listeners (ports, modes) and the command lines.

Read from the environment (``GOVRIX_PROXY_PORT``, ``GOVRIX_API_PORT``, ``GOVRIX_PROXY_MODE``,
``GOVRIX_REVERSE``, ``GOVRIX_PROXY_METRICS_PORT`` or ``metrics_port`` in ``GOVRIX_CONFIG``).
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


def planned_ports(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> list[Port]:
    """Every port ``up`` will listen on, with its role and the setting that moves it."""
    out: list[Port] = []
    if not args.no_proxy:
        out.append(Port("proxy", args.proxy_host, PROXY_PORT, "GOVRIX_PROXY_PORT"))
        out += [
            Port(f"reverse proxy to {base}", args.proxy_host, port, "GOVRIX_REVERSE")
            for base, port in _reverse(env)
        ]
        if mp := metrics_port(env):
            out.append(Port("proxy metrics", "127.0.0.1", mp, "GOVRIX_PROXY_METRICS_PORT"))
    if not args.no_api:
        out.append(Port("api", args.api_host, API_PORT, "GOVRIX_API_PORT"))
    return out


def children(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name, command line) of each process ``up`` starts: the API, then the proxy."""
    env_py = sys.executable
    out: list[tuple[str, list[str]]] = []
    if not args.no_api:
        out.append(("api", [env_py, "-m", "api", "--host", args.api_host, "--port", str(API_PORT)]))
    if not args.no_proxy:
        # The lean master (addon/lean.py): mitmdump's command line and behaviour, with only the
        # built-in addons the options ask for; `mitmdump -s addon/main.py` is the same proxy.
        out.append(
            (
                "proxy",
                [
                    env_py,
                    "-m",
                    "addon.lean",
                    "-q",
                    *proxy_modes(),
                    "--listen-host",
                    args.proxy_host,
                    "--listen-port",
                    str(PROXY_PORT),
                    "--set",
                    f"confdir={HOME / 'mitmproxy'}",
                ],
            )
        )
    return out
