"""Token buckets per (customer_id, tier), in process memory.

Limits are therefore per API process: N processes behind a load balancer admit up to N times the
configured rate. That is the documented trade-off for zero extra round trips per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

from api.actions.config import RateLimit

_EPSILON = 1e-9


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now


class RateLimiter:
    """`take(customer, tier)` returns 0 when admitted, else the seconds to wait (>= 1)."""

    def __init__(
        self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Handlers run on one event loop, but the lock keeps the buckets right if a caller
        # ever uses the limiter from threads.
        self._lock = threading.Lock()

    def take(self, customer_id: str, tier: str) -> int:
        """Spend one token; on refusal, the whole seconds until one is available."""
        limit = self._limits.get(tier)
        if limit is None:
            return 0  # an unknown tier cannot be created (CHECK constraint); do not block
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((customer_id, tier))
            if bucket is None:
                bucket = self._buckets[(customer_id, tier)] = _Bucket(limit.burst, now)
            else:
                elapsed = now - bucket.updated
                bucket.tokens = min(limit.burst, bucket.tokens + elapsed * limit.rate)
                bucket.updated = now
            if bucket.tokens >= 1.0 - _EPSILON:  # float refill: 0.1 s x 10/s is 0.999...
                bucket.tokens = max(0.0, bucket.tokens - 1.0)
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / limit.rate))
