"""The lean proxy: mitmdump's command line with only the built-in addons Govrix needs.

    python -m addon.lean [any mitmdump option]          # what `scripts/govrix up` runs
    mitmdump -s addon/main.py [any mitmdump option]     # the compatible way, same behaviour

Why: mitmproxy dispatches every event (a dozen per HTTP flow) to every addon in its chain, and
mitmdump loads about 35; profiled at saturation, ~40% of the event loop went to that dispatch
while our hooks took 2-5%. This master starts with the addons a governance proxy uses and keeps
every other one *dormant*: its options are registered (so every mitmdump flag and ``--set``
parses and means the same) and the addon joins the chain, at its usual place, the moment one of
its options is set. Nothing a user relies on is lost; what nobody asked for costs nothing.

Always in the chain, and why:

- ``Core``: option validation and the core commands.
- ``Block``: refuses clients from public addresses unless ``block_global`` is turned off, as
  mitmdump does; a proxy listening on 0.0.0.0 must not become an open relay.
- ``DisableH2C``: kills h2c upgrades and HTTP/2 prior knowledge over plain text, which mitmproxy
  cannot inspect (a request nobody could see would skip every gate).
- ``Onboarding``: serves http://mitm.it, where users fetch the CA certificate
  (``--set onboarding=false`` removes it as in mitmdump).
- ``Proxyserver``, ``NextLayer``, ``TlsConfig``: the servers, protocol detection
  (``ignore_hosts``/``allow_hosts``/``tcp_hosts``), certificates.
- ``KeepServing``, ``ErrorCheck``: mitmdump's lifecycle (exit on startup errors, ``--rfile``).
- ``Govrix``: the product (addon/proxy.py).

Dormant until one of their options differs from its default (or the condition named): every
other default addon (``ProxyAuth`` when ``proxyauth`` is set, ``UpstreamAuth``, ``ScriptLoader``
for ``-s``, ``Save``/``SaveHar``, the map/modify addons, replay, sticky auth/cookies,
``AntiCache``/``AntiComp``, ``BlockList``), ``DnsResolver`` and ``StripDnsHttpsRecords`` when a
``dns`` mode listens, ``UpdateAltSvc`` when a ``reverse`` mode does, ``Dumper`` unless ``-q``
(``flow_detail`` 0), ``ReadFileStdin`` for ``-r``. Addons with commands only, for the
interactive tools (``Browser``, ``Comment``, ``Cut``, ``Export``, ``CommandHistory``), are not
registered (their options parse) but never join the chain: mitmdump offers no prompt to run them.

An addon joins the chain when the options change (at start, after the command line is applied,
before the servers start: ``running`` comes later) and stays; it never leaves mid-flight.

**Workers.** With ``GOVRIX_PROXY_REUSE_PORT=1`` (``up`` sets it when ``GOVRIX_PROXY_WORKERS`` is
above 1) every TCP listener is opened with ``SO_REUSEPORT``, as nginx's ``reuseport`` and Envoy
do: several processes bind the same port and the kernel spreads new connections over them. There
is no broker of ours in the path; a connection stays with the process that accepted it.

``-s addon/main.py`` given to this master is refused (exit status 2, or the option change rolled
back later): it would load a second Govrix addon that gates, records and chains every call twice.
Other scripts load as with mitmdump.
"""

# mitmproxy's addon classes and managers are untyped; this module only wires them together.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.addons import (
    anticache,
    anticomp,
    block,
    blocklist,
    browser,
    clientplayback,
    command_history,
    comment,
    core,
    cut,
    disable_h2c,
    dns_resolver,
    dumper,
    errorcheck,
    export,
    keepserving,
    maplocal,
    mapremote,
    modifybody,
    modifyheaders,
    next_layer,
    onboarding,
    proxyauth,
    proxyserver,
    readfile,
    save,
    savehar,
    script,
    serverplayback,
    stickyauth,
    stickycookie,
    strip_dns_https_records,
    tlsconfig,
    update_alt_svc,
    upstream_auth,
)

__all__ = ["LeanMaster", "main"]

log = logging.getLogger("govrix.lean")

#: When a dormant addon must run: given the options and the names of the options it registered.
Wanted = Callable[[options.Options, frozenset[str]], bool]


def _any_option_set(opts: options.Options, names: frozenset[str]) -> bool:
    return any(opts._options[name].current() != opts._options[name].default for name in names)


def _mode_kind(kind: str) -> Wanted:
    def wanted(opts: options.Options, names: frozenset[str]) -> bool:
        modes: Sequence[str] = opts.mode
        return any(m.split(":", 1)[0].split("@", 1)[0] == kind for m in modes) or (
            _any_option_set(opts, names - {"strip_ech"})  # strip_ech defaults to on: not a wish
        )

    return wanted


def _dumping(opts: options.Options, _names: frozenset[str]) -> bool:
    detail: int = opts.flow_detail
    return detail > 0


def _never(_opts: options.Options, _names: frozenset[str]) -> bool:
    return False


def _always(_opts: options.Options, _names: frozenset[str]) -> bool:
    return True


def _default_addons(govrix: object) -> list[tuple[object, Wanted]]:
    """Every addon mitmdump would load, in mitmdump's order, with when it is wanted.

    The order matters: an addon sees a flow before the ones after it (proxy auth before Govrix's
    gates, as in mitmdump, where scripts come after the built-ins).
    """
    return [
        (core.Core(), _always),
        (browser.Browser(), _never),
        (block.Block(), _always),
        (strip_dns_https_records.StripDnsHttpsRecords(), _mode_kind("dns")),
        (blocklist.BlockList(), _any_option_set),
        (anticache.AntiCache(), _any_option_set),
        (anticomp.AntiComp(), _any_option_set),
        (clientplayback.ClientPlayback(), _any_option_set),
        (command_history.CommandHistory(), _never),
        (comment.Comment(), _never),
        (cut.Cut(), _never),
        (disable_h2c.DisableH2C(), _always),
        (export.Export(), _never),
        (onboarding.Onboarding(), lambda o, _n: bool(o.onboarding)),
        (proxyauth.ProxyAuth(), _any_option_set),
        (proxyserver.Proxyserver(), _always),
        (script.ScriptLoader(), _any_option_set),
        (dns_resolver.DnsResolver(), _mode_kind("dns")),
        (next_layer.NextLayer(), _always),
        (serverplayback.ServerPlayback(), _any_option_set),
        (mapremote.MapRemote(), _any_option_set),
        (maplocal.MapLocal(), _any_option_set),
        (modifybody.ModifyBody(), _any_option_set),
        (modifyheaders.ModifyHeaders(), _any_option_set),
        (stickyauth.StickyAuth(), _any_option_set),
        (stickycookie.StickyCookie(), _any_option_set),
        (save.Save(), _any_option_set),
        (savehar.SaveHar(), _any_option_set),
        (tlsconfig.TlsConfig(), _always),
        (upstream_auth.UpstreamAuth(), _any_option_set),
        (update_alt_svc.UpdateAltSvc(), _mode_kind("reverse")),
        (dumper.Dumper(), _dumping),
        (keepserving.KeepServing(), _always),
        (readfile.ReadFileStdin(), _any_option_set),
        (errorcheck.ErrorCheck(), _always),
        (govrix, _always),
    ]


class LeanMaster(master.Master):
    """A mitmproxy master whose chain holds only the addons wanted by the current options."""

    def __init__(self, opts: options.Options, govrix: object | None = None) -> None:
        super().__init__(opts, with_termlog=True)
        if govrix is None:
            from addon.proxy import Govrix

            govrix = Govrix()
        self._order: list[object] = []
        self._dormant: dict[int, tuple[object, Wanted, frozenset[str]]] = {}
        for addon, wanted in _default_addons(govrix):
            self._order.append(addon)
            if wanted is _always:
                self.addons.add(addon)
                continue
            before = set(opts.keys())
            # Registered (options, commands) but not in the chain: the CLI parses as mitmdump's
            # and no event reaches it.
            self.addons.register(addon)
            self._dormant[id(addon)] = (addon, wanted, frozenset(set(opts.keys()) - before))
        self._started = False
        opts.changed.connect(self._options_changed)

    async def run(self) -> None:
        """Wake what the command line asked for, then run as mitmdump does.

        Not at construction: mitmproxy applies the command line after building the master, and
        the defaults alone would wake e.g. the dumper that ``-q`` then silences.
        """
        self._started = True
        if twice := _govrix_scripts(self.options.scripts):
            # Two Govrix addons would gate, record and chain every call twice.
            print(
                f"govrix: the lean proxy runs the Govrix addon already; drop -s {twice[0]} "
                "(mitmdump -s addon/main.py is the other, compatible way to run it)",
                file=sys.stderr,
            )
            raise SystemExit(2)
        self._wake(set(self.options.keys()))
        await super().run()

    @property
    def dormant(self) -> list[str]:
        """Names of the addons not in the chain (for tests and ``--options`` readers)."""
        return sorted(type(a).__name__ for a, _w, _n in self._dormant.values())

    def _options_changed(self, updated: set[str]) -> None:
        if not self._started:
            return
        if "scripts" in updated and (twice := _govrix_scripts(self.options.scripts)):
            raise exceptions.OptionsError(
                f"{twice[0]} is the Govrix addon, which the lean proxy runs already"
            )
        self._wake(updated)

    def _wake(self, updated: set[str]) -> None:
        """Put every dormant addon its options now ask for into the chain, at its place."""
        for key, (addon, wanted, names) in list(self._dormant.items()):
            if not wanted(self.options, names) or self._dormant.pop(key, None) is None:
                continue  # not wanted, or woken by a nested change while configuring
            self.addons.chain.insert(self._place(addon), addon)
            self.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(self.options.keys())))
            log.debug("lean proxy: %s joins the chain (%s)", type(addon).__name__, updated)

    def _place(self, addon: object) -> int:
        """The chain index right after the nearest addon that precedes ``addon`` in mitmdump's order.

        The chain also holds addons outside that order (the master's own log addon, first).
        """
        chain = self.addons.chain
        for earlier in reversed(self._order[: self._order.index(addon)]):
            for i, a in enumerate(chain):
                if a is earlier:
                    return i + 1
        return 0


_MAIN = Path(__file__).resolve().parent / "main.py"
REUSE_PORT_ENV = "GOVRIX_PROXY_REUSE_PORT"


def reuse_port_wanted(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(REUSE_PORT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def listen_with_reuse_port() -> None:
    """Make mitmproxy's TCP listeners bind with ``SO_REUSEPORT`` (module docstring, Workers).

    mitmproxy opens them in ``AsyncioServerInstance.listen`` with ``asyncio.start_server`` and no
    way to pass ``reuse_port``; this wraps that one method, for TCP-only modes on a fixed port
    (what a worker listens on), and leaves every other case (UDP, port 0) to mitmproxy.
    """
    from mitmproxy.proxy import mode_servers

    cls: Any = mode_servers.AsyncioServerInstance
    if getattr(cls.listen, "govrix_reuse_port", False):
        return
    original = cls.listen

    async def listen(self: Any, host: str, port: int) -> list[Any]:
        if self.mode.transport_protocol == "tcp" and port:
            return [await asyncio.start_server(self.handle_stream, host, port, reuse_port=True)]
        return list(await original(self, host, port))

    listen.govrix_reuse_port = True  # type: ignore[attr-defined]
    cls.listen = listen


def _govrix_scripts(scripts: Sequence[str]) -> list[str]:
    """The scripts in ``scripts`` that are our own entry point (addon/main.py), as given."""
    out = []
    for path in scripts:
        try:
            if Path(path).expanduser().resolve() == _MAIN:
                out.append(path)
        except (OSError, RuntimeError):
            continue
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m addon.lean``: mitmdump's ``main`` with :class:`LeanMaster`."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import run

    def extra(args: Any) -> dict[str, str]:
        if args.filter_args:  # as mitmdump: a trailing filter expression applies to all three
            v = " ".join(args.filter_args)
            return {"save_stream_filter": v, "readfile_filter": v, "dumper_filter": v}
        return {}

    if reuse_port_wanted():
        listen_with_reuse_port()
    run(LeanMaster, cmdline.mitmdump, sys.argv[1:] if argv is None else argv, extra)


if __name__ == "__main__":
    main()
