"""Run the whole stack in the foreground: PostgreSQL, migrations, the API and the proxy.

    python -m scripts.stack up [--no-api] [--no-proxy]   (Ctrl-C stops API and proxy)
    python -m scripts.stack down | status

With ``GOVRIX_DATABASE_URL`` unset the embedded cluster under ``.govrix/`` is used (DESIGN.md §2).
With ``GOVRIX_API_KEY`` unset a key is generated once into ``.govrix/api_key`` (mode 600).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts import migrate, pgembed

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("GOVRIX_HOME", ROOT / ".govrix"))
PROXY_PORT = int(os.environ.get("GOVRIX_PROXY_PORT", "4000"))
API_PORT = int(os.environ.get("GOVRIX_API_PORT", "4001"))


def database_url() -> str:
    url = os.environ.get("GOVRIX_DATABASE_URL")
    if url:
        return url
    c = pgembed.start()
    pgembed.ensure_database(c)
    return c.url()


def api_key() -> str:
    key = os.environ.get("GOVRIX_API_KEY")
    if key:
        return key
    path = HOME / "api_key"
    if not path.exists():
        HOME.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


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


def proxy_modes(env: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """mitmproxy ``--mode`` arguments: explicit (or transparent) on the main port, plus one
    reverse listener per entry of ``GOVRIX_REVERSE`` ("openai=4010,anthropic=4011", or
    "https://my-gateway.internal=4012")."""
    main = env.get("GOVRIX_PROXY_MODE", "regular")
    if main not in ("regular", "transparent"):
        raise SystemExit(f"GOVRIX_PROXY_MODE: expected regular|transparent, got {main!r}")
    modes = ["--mode", main]
    for item in filter(None, (env.get("GOVRIX_REVERSE") or "").split(",")):
        target, _, port = item.strip().rpartition("=")
        base = REVERSE_BASES.get(target, target)
        if not base.startswith(("http://", "https://")) or not port.isdigit():
            raise SystemExit(f"GOVRIX_REVERSE: cannot read {item!r} (want provider=port or https://host=port)")
        modes += ["--mode", f"reverse:{base}@{port}"]
    return modes


def _children(url: str, key: str, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    env_py = sys.executable
    out: list[tuple[str, list[str]]] = []
    if not args.no_api:
        out.append(("api", [env_py, "-m", "api", "--host", args.api_host, "--port", str(API_PORT)]))
    if not args.no_proxy:
        mitmdump = str(Path(env_py).parent / "mitmdump")
        out.append(
            (
                "proxy",
                [
                    mitmdump,
                    "-q",
                    *proxy_modes(),
                    "--listen-host",
                    args.proxy_host,
                    "--listen-port",
                    str(PROXY_PORT),
                    "--set",
                    f"confdir={HOME / 'mitmproxy'}",
                    "-s",
                    str(ROOT / "addon" / "main.py"),
                ],
            )
        )
    return out


def up(args: argparse.Namespace) -> int:
    try:
        url = database_url()
    except pgembed.EmbeddedError as e:
        print(f"govrix: cannot start PostgreSQL: {e}", file=sys.stderr)
        return 1
    applied = migrate.apply(url)
    print(
        f"govrix: database ready ({'migrations applied: ' + ', '.join(applied) if applied else 'schema up to date'})"
    )
    key = api_key()
    env = os.environ | {"GOVRIX_DATABASE_URL": url, "GOVRIX_API_KEY": key, "GOVRIX_HOME": str(HOME)}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name, cmd in _children(url, key, args):
        procs.append((name, subprocess.Popen(cmd, env=env, cwd=ROOT)))
    ca = HOME / "mitmproxy" / "mitmproxy-ca-cert.pem"
    key_hint = (
        "$(cat .govrix/api_key)" if not os.environ.get("GOVRIX_API_KEY") else "$GOVRIX_API_KEY"
    )
    print(
        "\n".join(
            [
                "",
                "Govrix Scout is up.",
                f"  proxy : http://127.0.0.1:{PROXY_PORT}   (CA certificate: {ca}, written at first start)",
                f"  api   : http://127.0.0.1:{API_PORT}     (key in {HOME / 'api_key'})",
                "",
                "Point an agent at it:",
                f"  export HTTPS_PROXY=http://my-agent:x@127.0.0.1:{PROXY_PORT}",
                f"  export SSL_CERT_FILE={ca}  REQUESTS_CA_BUNDLE={ca}  NODE_EXTRA_CA_CERTS={ca}",
                "",
                "Try it:",
                f"  curl --proxy http://my-agent:x@127.0.0.1:{PROXY_PORT} --cacert {ca} \\",
                '       https://api.openai.com/v1/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\',
                '       -H \'Content-Type: application/json\' -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}\'',
                f'  curl -H "Authorization: Bearer {key_hint}" http://127.0.0.1:{API_PORT}/api/v1/events',
                "",
            ]
        ),
        flush=True,
    )
    if not procs:
        return 0
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, p in procs:
            rc = p.poll()
            if rc is not None:
                print(
                    f"govrix: {name} exited with status {rc}; stopping the stack", file=sys.stderr
                )
                stopping, code = True, rc or 1
        time.sleep(0.2)
    for _, p in procs:
        if p.poll() is None:
            p.terminate()
    for _, p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return code


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="govrix")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start everything in the foreground")
    p_up.add_argument("--no-api", action="store_true")
    p_up.add_argument("--no-proxy", action="store_true")
    p_up.add_argument("--proxy-host", default=os.environ.get("GOVRIX_PROXY_HOST", "127.0.0.1"))
    p_up.add_argument("--api-host", default=os.environ.get("GOVRIX_API_HOST", "127.0.0.1"))
    sub.add_parser("down", help="stop the embedded PostgreSQL")
    sub.add_parser("status", help="show where things are")
    args = ap.parse_args(argv[1:])
    if args.cmd == "up":
        return up(args)
    if args.cmd == "down":
        pgembed.stop()
        print(f"embedded PostgreSQL: {pgembed.status()}")
        return 0
    print(f"embedded PostgreSQL: {pgembed.status()}")
    print(
        f"GOVRIX_DATABASE_URL: {'set' if os.environ.get('GOVRIX_DATABASE_URL') else 'unset (embedded)'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
