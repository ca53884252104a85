"""Proxy settings: environment first (``GOVRIX_*``), then one optional TOML file (``GOVRIX_CONFIG``).

Parsed once, at start and when mitmproxy's options change, into a frozen record; hooks read it and
never parse anything themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from addon.budgets import BudgetSpec, parse_configured

FailMode = Literal["last_known", "fail_open", "fail_closed"]


class ConfigError(ValueError):
    """A setting is malformed; the message names it."""


# National phone formats recognized by default (addon/pii/phones.py); '+'/'00' numbers always are.
# National phone formats recognized by default: North America, the EU's larger members and their
# neighbours, and the largest markets elsewhere whose numbers agents see (English, Spanish and
# Portuguese speaking countries, Russia, Israel, India, China, Japan, Korea). A region costs
# nothing on text without candidates; on a candidate it is one metadata check (cached).
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    *("US", "CA", "MX", "BR", "AR", "CO", "CL"),
    *("GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "LU", "ES", "PT", "IT", "GR"),
    *("SE", "NO", "DK", "FI", "PL", "CZ", "SK", "RO", "RU"),
    *("IL", "IN", "CN", "JP", "KR", "AU", "NZ"),
)


def parse_phone_regions(name: str, value: str) -> tuple[str, ...]:
    """Comma-separated ISO 3166 region codes (``US,GB,DE``), checked against phonenumbers."""
    import phonenumbers  # only when the setting is given: its metadata loads lazily anyway

    codes = tuple(dict.fromkeys(c.strip().upper() for c in value.split(",") if c.strip()))
    unknown = [c for c in codes if c not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ConfigError(f"{name}: unknown phone regions {', '.join(unknown)}")
    return codes


def phone_regions_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``GOVRIX_PII_PHONE_REGIONS``, else the default.

    The scanner (addon/pii/phones.py) reads it when imported, in the proxy and in the recorder
    process alike, so the setting is an environment variable only.
    """
    value = (os.environ if env is None else env).get("GOVRIX_PII_PHONE_REGIONS")
    if not value:
        return DEFAULT_PHONE_REGIONS
    return parse_phone_regions("GOVRIX_PII_PHONE_REGIONS", value)


def internal_domains_from(
    env: Mapping[str, str], configured: Sequence[str] = ()
) -> tuple[str, ...]:
    """``GOVRIX_INTERNAL_DOMAINS`` (``acme.com,acme.io``), else the file's ``internal_domains``."""
    from api.scoring.values import parse_domains

    raw = env.get("GOVRIX_INTERNAL_DOMAINS")
    try:
        return parse_domains(raw if raw is not None else ",".join(configured))
    except ValueError as e:
        raise ConfigError(f"GOVRIX_INTERNAL_DOMAINS: {e}") from None


class Upstream(msgspec.Struct, frozen=True):
    """Where one provider's traffic really goes (``GOVRIX_UPSTREAM_<PROVIDER>``)."""

    scheme: str
    host: str
    port: int
    path_prefix: str


class FileConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The optional TOML file; every key has the same meaning as its ``GOVRIX_*`` variable."""

    database_url: str | None = None
    database_url_file: str | None = None
    home: str | None = None
    upstreams: dict[str, str] = {}
    openai_compatible_hosts: dict[str, str] = {}
    record_other_hosts: bool = True
    unparseable: str = "refuse"
    gate_errors: str = "refuse"
    budget_wait: float = 10.0
    budget_unpriced: str = "refuse"
    session_idle_minutes: float = 30.0
    proxy_token: str | None = None
    fail_mode: FailMode = "last_known"
    policy_file: str | None = None
    metrics_port: int = 4002
    metrics_host: str = "127.0.0.1"
    retention_days: int | None = None
    pii_scan: bool = True
    identity_secret: str | None = None
    default_completion_tokens: int = 1024
    budgets: list[dict[str, object]] = []
    mcp_servers: dict[str, str] = {}
    proxy_customer_id: str = "proxy"
    recorder: str = "process"
    recorder_nice: int = 10
    internal_domains: list[str] = []


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None
    home: Path
    upstreams: dict[str, Upstream]
    openai_compatible_hosts: dict[str, str]
    #: Calls to hosts that are neither an LLM provider nor MCP become metadata-only events.
    record_other_hosts: bool
    session_idle_seconds: float
    proxy_token: str | None
    fail_mode: FailMode
    policy_file: Path | None
    metrics_port: int
    #: Where the metrics endpoint listens (GOVRIX_PROXY_METRICS_HOST): loopback unless a
    #: scraper on another host or pod must reach it.
    metrics_host: str = "127.0.0.1"
    retention_days: int | None
    pii_scan: bool
    #: Regions whose national phone formats the PII scanner recognizes (GOVRIX_PII_PHONE_REGIONS).
    pii_phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    identity_secret: bytes
    default_completion_tokens: int = 1024
    budgets: tuple[BudgetSpec, ...] = ()
    #: MCP servers the operator vouches for: host[:port] -> server name (is_verified = true).
    mcp_servers: dict[str, str] = {}
    #: customer_id under which inline scores are stored (readable at GET /scores/{id}).
    proxy_customer_id: str = "proxy"
    #: Where captures become events: "process" (a child process, the default) or "inline".
    recorder: str = "process"
    #: How far the recorder process steps back for the proxy (0 = not at all); see addon/recorder/__main__.py.
    recorder_nice: int = 10
    #: A body an enforcement gate must read and cannot: "refuse" (400) or "forward".
    unparseable: str = "refuse"
    #: A gate of ours that raises: "refuse" (503 governance_error) or "forward" (noted on the
    #: event). Either way the call is recorded.
    gate_errors: str = "refuse"
    #: Seconds a call refused only for room held by calls in flight waits for them (0: no wait).
    budget_wait: float = 10.0
    #: A USD budget and a model without a price: "refuse" (403) or "allow" (counted as $0).
    budget_unpriced: str = "refuse"
    #: Domains (and their subdomains) whose addresses and hosts are internal destinations for the
    #: risk scorer (GOVRIX_INTERNAL_DOMAINS, comma-separated); anything else is external.
    internal_domains: tuple[str, ...] = ()
    #: Which of several proxy processes on one port this is (GOVRIX_PROXY_WORKER, 1-based; `up`
    #: sets it when GOVRIX_PROXY_WORKERS > 1): its own spool and pid file, everything else shared.
    worker: int = 1

    @property
    def spool_dir(self) -> Path:
        return self.home / ("spool" if self.worker == 1 else f"spool-{self.worker}")

    @property
    def pid_file(self) -> Path:
        """Written once the addon runs: a readiness signal for scripts (``up`` waits on it)."""
        return self.home / ("proxy.pid" if self.worker == 1 else f"proxy-{self.worker}.pid")


def parse_upstream(name: str, url: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"GOVRIX_UPSTREAM_{name.upper()}: expected http(s)://host[:port][/path], got {url!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected a boolean, got {value!r}")


def _choice(name: str, env: Mapping[str, str], default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name}: expected {'|'.join(allowed)}, got {value!r}")
    return value


def _identity_secret(home: Path, configured: str | None) -> bytes:
    """The key of the provider-API-key hash. Shared by every proxy instance for stable agent ids."""
    if configured:
        return configured.encode()
    path = home / "identity_secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    # Several proxies may start at once (workers): write a private file whole, then link it into
    # place; a second one finds the first's secret, never an empty or half-written file.
    try:
        home.mkdir(parents=True, exist_ok=True)
        secret = os.urandom(32).hex().encode()
        tmp = home / f".identity_secret.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            secret = path.read_bytes().strip()
        finally:
            tmp.unlink(missing_ok=True)
        return secret
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e}") from e


#: Where the embedded cluster of ``scripts/govrix`` writes its URL, under ``GOVRIX_HOME``.
EMBEDDED_URL_FILE = Path("pg") / "url"


def _url_from_file(configured: str | None, home: Path) -> str | None:
    """The database URL kept in a file: ``GOVRIX_DATABASE_URL_FILE``, else the embedded
    cluster's when there is one (a missing default file means no database: spool only)."""
    path = Path(configured) if configured else home / EMBEDDED_URL_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if configured:
            raise ConfigError(f"GOVRIX_DATABASE_URL_FILE: {path} does not exist") from None
        return None
    except OSError as e:
        raise ConfigError(f"GOVRIX_DATABASE_URL_FILE: cannot read {path}: {e}") from e


def load(env: Mapping[str, str] | None = None, config_file: str | None = None) -> Settings:
    """Build the settings from a TOML file (optional) overlaid with the environment."""
    env = os.environ if env is None else env
    path = config_file or env.get("GOVRIX_CONFIG")
    fc = FileConfig()
    if path:
        try:
            fc = msgspec.toml.decode(Path(path).read_bytes(), type=FileConfig)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ConfigError(f"GOVRIX_CONFIG {path}: {e}") from e

    home = Path(env.get("GOVRIX_HOME") or fc.home or ".govrix").resolve()
    upstreams = {k.lower(): parse_upstream(k, v) for k, v in fc.upstreams.items()}
    for key, value in env.items():
        if key.startswith("GOVRIX_UPSTREAM_") and value:
            name = key.removeprefix("GOVRIX_UPSTREAM_").lower().replace("_", "-")
            upstreams[name] = parse_upstream(name, value)

    compatible = dict(fc.openai_compatible_hosts)
    for item in filter(None, (env.get("GOVRIX_OPENAI_COMPATIBLE_HOSTS") or "").split(",")):
        host, _, name = item.strip().partition("=")
        compatible[host.strip().lower()] = (name or host).strip()

    mcp_servers = {k.lower(): v for k, v in fc.mcp_servers.items()}
    for item in filter(None, (env.get("GOVRIX_MCP_SERVERS") or "").split(",")):
        host, _, name = item.strip().partition("=")
        mcp_servers[host.strip().lower()] = (name or host).strip()

    fail_mode = env.get("GOVRIX_FAIL_MODE") or fc.fail_mode
    if fail_mode not in ("last_known", "fail_open", "fail_closed"):
        raise ConfigError(
            f"GOVRIX_FAIL_MODE: expected last_known|fail_open|fail_closed, got {fail_mode!r}"
        )

    def num(name: str, default: float) -> float:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None

    recorder = (env.get("GOVRIX_RECORDER") or fc.recorder).strip().lower()
    if recorder not in ("process", "inline"):
        raise ConfigError(f"GOVRIX_RECORDER: expected process|inline, got {recorder!r}")
    nice = num("GOVRIX_RECORDER_NICE", fc.recorder_nice)
    if nice != int(nice) or not 0 <= nice <= 19:
        raise ConfigError(f"GOVRIX_RECORDER_NICE: expected 0..19, got {nice!r}")

    unparseable = _choice("GOVRIX_UNPARSEABLE", env, fc.unparseable, ("refuse", "forward"))
    gate_errors = _choice("GOVRIX_GATE_ERRORS", env, fc.gate_errors, ("refuse", "forward"))
    unpriced = _choice("GOVRIX_BUDGET_UNPRICED", env, fc.budget_unpriced, ("refuse", "allow"))
    worker = num("GOVRIX_PROXY_WORKER", 1)
    if worker < 1 or worker != int(worker):
        raise ConfigError(f"GOVRIX_PROXY_WORKER: expected a whole number >= 1, got {worker:g}")
    budget_wait = num("GOVRIX_BUDGET_WAIT", fc.budget_wait)
    if not 0 <= budget_wait <= 300:
        raise ConfigError(f"GOVRIX_BUDGET_WAIT: expected 0..300 seconds, got {budget_wait!r}")

    retention_raw = env.get("GOVRIX_RETENTION_DAYS")
    retention = int(num("GOVRIX_RETENTION_DAYS", 0)) if retention_raw else fc.retention_days
    policy = env.get("GOVRIX_POLICY_FILE") or fc.policy_file
    database_url = (
        env.get("GOVRIX_DATABASE_URL")
        or fc.database_url
        or _url_from_file(env.get("GOVRIX_DATABASE_URL_FILE") or fc.database_url_file, home)
    )
    try:
        budgets = tuple(parse_configured(fc.budgets))
    except ValueError as e:
        raise ConfigError(f"GOVRIX_CONFIG {path}: {e}") from e
    internal_domains = internal_domains_from(env, fc.internal_domains)
    return Settings(
        database_url=database_url,
        home=home,
        upstreams=upstreams,
        openai_compatible_hosts=compatible,
        record_other_hosts=_bool("GOVRIX_RECORD_OTHER_HOSTS", env["GOVRIX_RECORD_OTHER_HOSTS"])
        if "GOVRIX_RECORD_OTHER_HOSTS" in env
        else fc.record_other_hosts,
        session_idle_seconds=num("GOVRIX_SESSION_IDLE_MINUTES", fc.session_idle_minutes) * 60,
        proxy_token=env.get("GOVRIX_PROXY_TOKEN") or fc.proxy_token,
        fail_mode=fail_mode,  # type: ignore[arg-type]
        policy_file=Path(policy) if policy else None,
        metrics_port=int(num("GOVRIX_PROXY_METRICS_PORT", fc.metrics_port)),
        metrics_host=env.get("GOVRIX_PROXY_METRICS_HOST") or fc.metrics_host,
        retention_days=retention,
        pii_scan=_bool("GOVRIX_PII_SCAN", env["GOVRIX_PII_SCAN"])
        if "GOVRIX_PII_SCAN" in env
        else fc.pii_scan,
        pii_phone_regions=phone_regions_from_env(env),
        identity_secret=_identity_secret(
            home, env.get("GOVRIX_IDENTITY_SECRET") or fc.identity_secret
        ),
        default_completion_tokens=int(
            num("GOVRIX_DEFAULT_COMPLETION_TOKENS", fc.default_completion_tokens)
        ),
        budgets=budgets,
        mcp_servers=mcp_servers,
        proxy_customer_id=env.get("GOVRIX_PROXY_CUSTOMER_ID") or fc.proxy_customer_id,
        recorder=recorder,
        recorder_nice=int(nice),
        unparseable=unparseable,
        gate_errors=gate_errors,
        budget_wait=budget_wait,
        budget_unpriced=unpriced,
        worker=int(worker),
        internal_domains=internal_domains,
    )
