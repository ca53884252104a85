"""The lean proxy master (addon/lean.py): same options as mitmdump, dormant addons wake on demand."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import exceptions, options

from addon.lean import LeanMaster

ROOT = Path(__file__).resolve().parent.parent


class _Probe:
    """Stands in for the Govrix addon: the chain's last place, no database."""


def _names(m: LeanMaster) -> list[str]:
    return [type(a).__name__ for a in m.addons.chain]


def _started(**opts: object) -> LeanMaster:
    """A master after the command line applied ``opts`` and ``run`` woke what they ask for."""

    async def build() -> LeanMaster:
        o = options.Options()
        m = LeanMaster(o, govrix=_Probe())
        o.update(**opts)
        m._started = True  # what run() does before bringing up the servers
        m._wake(set(o.keys()))
        return m

    return asyncio.run(build())


def test_quiet_default_chain_holds_only_the_needed_addons() -> None:
    m = _started(flow_detail=0)
    assert _names(m) == [
        "TermLog", "Core", "Block", "DisableH2C", "Onboarding", "Proxyserver", "NextLayer",
        "TlsConfig", "KeepServing", "ErrorCheck", "_Probe",
    ]  # fmt: skip
    assert {"ProxyAuth", "Dumper", "ScriptLoader", "Save"} <= set(m.dormant)


def test_without_quiet_the_dumper_prints_as_mitmdump() -> None:
    assert "Dumper" in _names(_started())


def test_proxyauth_wakes_before_the_product_addon() -> None:
    names = _names(_started(flow_detail=0, proxyauth="user:pass"))
    assert names.index("ProxyAuth") < names.index("Proxyserver") < names.index("_Probe")


@pytest.mark.parametrize(
    ("opts", "woken"),
    [
        ({"mode": ["reverse:http://127.0.0.1:9@8081"]}, "UpdateAltSvc"),
        ({"mode": ["dns@5353"]}, "DnsResolver"),
        ({"anticache": True}, "AntiCache"),
        ({"modify_headers": ["/~q/X-A/b"]}, "ModifyHeaders"),
        ({"upstream_auth": "u:p"}, "UpstreamAuth"),
        ({"stickycookie": "~q"}, "StickyCookie"),
    ],
)
def test_an_option_wakes_its_addon_at_its_place(opts: dict[str, object], woken: str) -> None:
    m = _started(flow_detail=0, **opts)
    names = _names(m)
    assert woken in names and woken not in m.dormant
    assert names[-1] == "_Probe"  # built-ins first, as mitmdump orders them


def test_a_later_option_change_wakes_too() -> None:
    m = _started(flow_detail=0)
    assert "BlockList" not in _names(m)
    m.options.update(block_list=[":~d example.invalid:403"])
    assert "BlockList" in _names(m)


def test_the_command_line_knows_every_mitmdump_option() -> None:
    """``--options`` lists the same option names as mitmdump's (the CLI parses the same)."""

    def names(cmd: list[str]) -> set[str]:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        return {line.split(":", 1)[0] for line in out.stdout.splitlines() if line[:1].isalpha()}

    lean = names([sys.executable, "-m", "addon.lean", "--options"])
    dump = names([str(Path(sys.executable).parent / "mitmdump"), "--options"])
    govrix_own = {n for n in lean - dump if n.startswith("govrix")}
    assert dump - lean == set()
    assert lean - dump == govrix_own


def test_the_govrix_script_given_again_is_refused() -> None:
    """``-s addon/main.py`` on the lean master would run two Govrix addons: it says so and exits."""
    out = subprocess.run(
        [sys.executable, "-m", "addon.lean", "-q", "--listen-port", "0", "-s", "addon/main.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "runs the Govrix addon already" in out.stderr
    assert "drop -s addon/main.py" in out.stderr


def test_a_later_scripts_change_to_the_govrix_script_is_rolled_back() -> None:
    m = _started(flow_detail=0)
    with pytest.raises(exceptions.OptionsError, match="lean proxy runs already"):
        m.options.update(scripts=[str(ROOT / "addon" / "main.py")])
    assert m.options.scripts == []
    assert "ScriptLoader" not in _names(m)
