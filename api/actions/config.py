"""Settings of the scoring service, read once from the environment (``GOVRIX_*``).

- ``GOVRIX_RATE_STARTER`` / ``_PRO`` / ``_ENTERPRISE``: ``rate[:burst]`` requests per second per
  (customer, tier); the burst defaults to twice the rate.
- ``GOVRIX_LLM_ENABLED=1`` with ``GOVRIX_LLM_BASE_URL``, ``GOVRIX_LLM_MODEL``,
  ``GOVRIX_LLM_API_KEY`` (optional), ``GOVRIX_LLM_TIMEOUT``: the optional LLM second opinion.
- ``GOVRIX_SCORING_WORKERS``, ``_BATCH``, ``_MAX_ATTEMPTS``, ``_POLL``, ``_PAUSE``: the queue.
- ``GOVRIX_SCORING_SYNC_COMMIT=0``: `POST /events` does not wait for its WAL flush (see
  `sync_commit`; durable by default).
- ``GOVRIX_INTERNAL_DOMAINS``: comma-separated domains whose addresses and hosts are internal
  destinations for the scorer (the proxy reads the same variable, addon/config.py).
- ``GOVRIX_APIKEY_CACHE_SECONDS``: how long a valid key is trusted without asking the database
  (a revocation takes effect within this delay); 0 disables the cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from api.scoring import LLMConfig
from api.scoring.values import parse_domains

DEFAULT_RATES = {"starter": 10.0, "pro": 100.0, "enterprise": 1000.0}


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


class RateLimit(msgspec.Struct, frozen=True):
    """A token bucket: `rate` tokens per second, at most `burst` stored."""

    rate: float
    burst: float


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything tunable about the scoring service; defaults suit production."""

    rates: dict[str, RateLimit] = msgspec.field(
        default_factory=lambda: {t: RateLimit(r, 2 * r) for t, r in DEFAULT_RATES.items()}
    )
    llm: LLMConfig | None = None
    workers: int = 2  # queue worker tasks per API process
    worker_batch: int = 20  # queue rows claimed per transaction
    max_attempts: int = 5  # then the row is marked 'failed'
    backoff_base: float = 1.0  # seconds; doubled per attempt
    backoff_max: float = 300.0
    poll_interval: float = 1.0  # fallback when no NOTIFY arrives
    worker_pause: float = 0.0  # sleep between claimed batches (throttle; tests use it)
    key_cache_seconds: float = 5.0
    # POST /events waits for its WAL flush by default: a stored score is an audit record. With
    # GOVRIX_SCORING_SYNC_COMMIT=0 it commits with synchronous_commit=off, saving the flush
    # (milliseconds on a busy disk) at the price that a PostgreSQL crash may forget the last
    # fraction of a second of single events (never corrupts; the caller holds the score and a
    # resend re-scores it). Batches always commit synchronously: their queue is the promise.
    sync_commit: bool = True
    baseline_hours: int = 24  # window of the agent's baseline rate
    recent_actions: int = 20
    internal_domains: tuple[str, ...] = ()  # GOVRIX_INTERNAL_DOMAINS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``GOVRIX_*`` variables; raises `ConfigError` naming the bad one."""
        env = os.environ if env is None else env
        rates = {t: _rate(env, t, r) for t, r in DEFAULT_RATES.items()}
        llm = None
        if env.get("GOVRIX_LLM_ENABLED", "") in ("1", "true", "yes"):
            base_url, model = env.get("GOVRIX_LLM_BASE_URL"), env.get("GOVRIX_LLM_MODEL")
            if not base_url or not model:
                raise ConfigError("GOVRIX_LLM_ENABLED=1 needs GOVRIX_LLM_BASE_URL and _MODEL")
            llm = LLMConfig(
                base_url=base_url,
                model=model,
                api_key=env.get("GOVRIX_LLM_API_KEY") or None,
                timeout=_num(env, "GOVRIX_LLM_TIMEOUT", 5.0),
                enabled=True,
            )
        return cls(
            rates=rates,
            llm=llm,
            workers=int(_num(env, "GOVRIX_SCORING_WORKERS", 2)),
            worker_batch=max(1, int(_num(env, "GOVRIX_SCORING_BATCH", 20))),
            max_attempts=max(1, int(_num(env, "GOVRIX_SCORING_MAX_ATTEMPTS", 5))),
            poll_interval=_num(env, "GOVRIX_SCORING_POLL", 1.0),
            worker_pause=_num(env, "GOVRIX_SCORING_PAUSE", 0.0),
            key_cache_seconds=_num(env, "GOVRIX_APIKEY_CACHE_SECONDS", 5.0),
            sync_commit=env.get("GOVRIX_SCORING_SYNC_COMMIT", "1").lower()
            not in ("0", "false", "no", "off"),
            internal_domains=_domains(env),
        )


def _domains(env: Mapping[str, str]) -> tuple[str, ...]:
    try:
        return parse_domains(env.get("GOVRIX_INTERNAL_DOMAINS") or "")
    except ValueError as e:
        raise ConfigError(f"GOVRIX_INTERNAL_DOMAINS: {e}") from None


def _num(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be a number") from e
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def parse_rate(text: str) -> RateLimit:
    """``"100"`` → 100/s burst 200; ``"100:150"`` → 100/s burst 150."""
    rate_s, _, burst_s = text.partition(":")
    rate = float(rate_s)
    burst = float(burst_s) if burst_s else 2 * rate
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    return RateLimit(rate, burst)


def _rate(env: Mapping[str, str], tier: str, default: float) -> RateLimit:
    name = f"GOVRIX_RATE_{tier.upper()}"
    raw = env.get(name)
    if not raw:
        return RateLimit(default, 2 * default)
    try:
        return parse_rate(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be rate[:burst] with rate > 0, burst >= 1") from e
