"""The peer the benchmarks compare against: LiteLLM's proxy (an OpenAI-compatible gateway).

Installed on demand into its own venv (``.govrix/bench/litellm-venv``, ``uv venv`` + ``uv pip
install``), never a project dependency. It runs as ``litellm --config <generated config>`` with
one model pointing at the fake upstream's OpenAI-compatible endpoint, no database, no master
key, telemetry off, the bundled model cost map (no fetch), ``--num_workers`` 1 or more. Clients
call it as an OpenAI base URL (origin-form ``POST /v1/chat/completions`` to its port): it is a
gateway, not an HTTP proxy. When it cannot be installed, ``install`` raises ``PeerUnavailable``
with the exact reason, and the benchmarks go on with the other proxies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from scripts.ports import http_ok

from .client import API_KEY, Target
from .cpu import tree_cpu
from .procs import ROOT, LoggedProcess, free_port

VENV = ROOT / ".govrix" / "bench" / "litellm-venv"
#: Pinned to the peer issue 14 measured (litellm 1.108.7, published 2026-11-12), and the whole
#: resolution, dependencies included, held to the registry as it was the day after, so a
#: re-install never picks up a later release of litellm or of anything it pulls in. Never an
#: unpinned install: litellm 1.82.7 and 1.82.8 on the registry were a credential stealer
#: (published 2026-03-24 from a hijacked maintainer account, BerriAI/litellm#24518).
SPEC = "litellm[proxy]==1.108.7"
EXCLUDE_NEWER = "2026-11-13T00:00:00Z"
INSTALL_TIMEOUT_S = 600.0
#: The model name clients ask for (``client.chat_body``'s model).
MODEL = "gpt-4o-mini"


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why, exactly."""


def _uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    tool = ROOT / ".govrix" / "tools" / "bin" / "uv"  # where scripts/govrix installs uv
    return str(tool) if tool.exists() else None


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def install(venv: Path = VENV) -> Path:
    """The ``litellm`` executable in ``venv``, installed first if missing or of another pin."""
    exe = venv / "bin" / "litellm"
    marker = venv / "govrix-bench-spec"
    want = f"{SPEC} --exclude-newer {EXCLUDE_NEWER}\n"
    if exe.exists() and marker.exists() and marker.read_text() == want:
        return exe
    uv = _uv()
    if uv is None:
        raise PeerUnavailable(
            "no uv on PATH nor in .govrix/tools/bin (scripts/govrix installs it there)"
        )
    steps = [
        [uv, "venv", "--clear", "--python", sys.executable, str(venv)],
        [
            uv, "pip", "install", "--python", str(venv / "bin" / "python"),
            "--exclude-newer", EXCLUDE_NEWER, SPEC,
        ],
    ]  # fmt: skip
    print(f"installing {SPEC} into {venv} (one time) ...", flush=True)
    for cmd in steps:
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(
                f"`{' '.join(cmd)}` did not finish within {INSTALL_TIMEOUT_S:g}s"
            ) from None
        except OSError as e:
            raise PeerUnavailable(f"`{' '.join(cmd)}` could not run: {e}") from e
        if done.returncode != 0:
            raise PeerUnavailable(
                f"`{' '.join(cmd)}` failed (exit {done.returncode}): {_tail(done.stderr)}"
            )
    if not exe.exists():
        raise PeerUnavailable(f"installed {SPEC}, but {exe} is missing")
    marker.write_text(want)
    return exe


def peer_spec() -> str:
    """The pinned version, for reports."""
    return SPEC.partition("==")[2]


def config(upstream_port: int) -> str:
    """One model served by the fake upstream; nothing else switched on.

    The master key is the key the bench clients send (``client.API_KEY``): LiteLLM refuses to
    start without one since 1.10x, and without a database it checks a request's key against it
    alone, which is how a user runs it."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench-peer\n"
        "general_settings:\n"
        f"  master_key: {API_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )


@dataclass
class LiteLLM(LoggedProcess):
    """One ``litellm`` gateway process (and its workers), in its own process group."""

    LOG: ClassVar[str] = "litellm.log"

    name: str
    home: Path
    exe: Path
    upstream_port: int
    workers: int = 1
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    sent: int = 0

    def command(self) -> list[str]:
        return [
            str(self.exe), "--config", str(self.home / "config.yaml"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--num_workers", str(self.workers), "--telemetry", "False",
        ]  # fmt: skip

    def start(self) -> None:
        self.port = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.yaml").write_text(config(self.upstream_port))
        drop = ("GOVRIX_", "LITELLM_", "DATABASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
        env |= {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled map: no fetch at start
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        with open(self.home / self.LOG, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers in its group: stopped together
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Ready: ``/health/liveliness`` answers 200 (the model list is loaded by then)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: litellm exited: {self.output()}")
            if http_ok("127.0.0.1", self.port, "/health/liveliness"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: not ready within {timeout}s: {self.output()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        # A worker that outlived its master is still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the whole gateway (master and workers), and 0 (no recorder)."""
        assert self.proc is not None
        return tree_cpu(self.proc.pid), 0.0

    def target(self, upstream: object = None, *, tls: bool = False) -> Target:
        """Origin-form requests to the gateway itself (an OpenAI base URL), never through it."""
        return Target(self.port)
