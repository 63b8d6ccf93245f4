"""Bounded retry policy for API-server answers that ask us to come back later (429, 5xx)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits grow exponentially from ``base_s`` unless the
    server says ``Retry-After``, and no single wait exceeds ``max_wait_s``."""

    attempts: int = 4
    base_s: float = 0.2
    max_wait_s: float = 5.0

    def delay(self, attempt: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        advised = retry_after(headers)
        if advised is not None:
            return min(advised, self.max_wait_s)
        backoff = self.base_s * 2.0 ** (attempt - 1)
        return min(backoff * (0.5 + random.random() / 2), self.max_wait_s)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), if any."""
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
