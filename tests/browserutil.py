"""Helpers for the browser tests (tests/test_browser.py): Debian's chromium through Playwright,
agents calling through the real proxy, and the README's screenshots.

Playwright never downloads a browser here: chromium is launched from ``CHROMIUM``
(``/usr/bin/chromium``, or ``GOVRIX_CHROMIUM``), headless, with a fresh profile (Playwright makes
a temporary user-data-dir per launch and removes it on close). The flags keep it from calling
home: in a closed network its background requests would fail, and nothing should leave loopback.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from addon import ids
from tests.proxyharness import Proxy

if TYPE_CHECKING:  # Playwright is imported only where it is known to be installed
    from playwright.sync_api import ViewportSize

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("GOVRIX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS = ROOT / "docs" / "screenshots"
OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (the dev group of pyproject.toml: `uv sync`)"
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (Debian: `apt-get install chromium`; .ci/run does)"
    return None


def launch(playwright: Any) -> Any:
    """A headless chromium from ``CHROMIUM``; never one Playwright would download."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


def screenshots_enabled() -> bool:
    """Only ``GOVRIX_SCREENSHOTS=1`` (``scripts/govrix screenshots``) rewrites the PNGs."""
    return os.environ.get("GOVRIX_SCREENSHOTS") == "1"


def shoot(page: Any, name: str) -> Path | None:
    """``docs/screenshots/<name>.png`` of the viewport (1280x800), when enabled."""
    if not screenshots_enabled():
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    return path


class Agent:
    """An agent calling the fake provider through the proxy, named by its proxy credentials
    (``http://<name>:x@proxy``), on one kept-alive connection (one TLS handshake)."""

    def __init__(self, proxy: Proxy, name: str, session: str | None = None) -> None:
        self.name = name
        self.id = ids.agent_id("name:" + name)
        headers = {"x-govrix-session": session} if session else {}
        self.http = httpx.Client(
            proxy=f"http://{name}:x@127.0.0.1:{proxy.port}",
            verify=proxy.ssl_context(),
            timeout=30,
            headers=headers,
        )

    def chat(
        self,
        text: str = "Summarise yesterday's support tickets.",
        *,
        model: str = "gpt-4o-mini",
        usage: tuple[int, int] | None = None,
        headers: dict[str, str] | None = None,
        max_tokens: int | None = None,
    ) -> httpx.Response:
        h = dict(headers or {})
        if usage is not None:
            h["x-fake-usage"] = f"{usage[0]},{usage[1]}"
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.http.post(OPENAI, json=body, headers=h)

    def claude(self, text: str, model: str = "claude-3-5-sonnet-20241022") -> httpx.Response:
        return self.http.post(
            ANTHROPIC,
            json={
                "model": model,
                "max_tokens": 256,
                "messages": [{"role": "user", "content": text}],
            },
            headers={"anthropic-version": "2023-06-01"},
        )

    def mcp(
        self, url: str, tool: str, arguments: dict[str, Any], rpc_id: int = 1
    ) -> httpx.Response:
        """A JSON-RPC ``tools/call`` to an MCP server (``GOVRIX_MCP_SERVERS`` names it)."""
        return self.http.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": rpc_id,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            },
        )

    def close(self) -> None:
        self.http.close()


def first_status(
    agent: Agent, status: int, deadline: float, **chat: Any
) -> tuple[float, httpx.Response]:
    """Call until an answer has ``status``; (monotonic time it arrived, that answer). Fails when
    none does within ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: httpx.Response | None = None
    while time.monotonic() < end:
        last = agent.chat(**chat)
        if last.status_code == status:
            return time.monotonic(), last
        time.sleep(0.01)
    got = None if last is None else (last.status_code, last.text[:200])
    raise AssertionError(f"no {status} within {deadline}s (last: {got})")
