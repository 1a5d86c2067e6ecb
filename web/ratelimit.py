"""Rate limiting of failed sign-ins on the staff pages (``POST /signin``).

An in-process limiter: each failed sign-in counts against the client's address and, for a
password sign-in, against the username too. Five failures of one key inside fifteen minutes
and that key is refused (``429`` with ``Retry-After``) until its oldest failure leaves the
window; while refused, credentials are not even checked, so guessing learns nothing.

The address is ``request.remote``, the peer of the TCP connection, unless the setting
``trust_forwarded_for`` says a proxy of the operator's sits in front: then it is the last
entry of ``X-Forwarded-For``, the one that proxy added (entries before it are whatever the
client wrote). Without that setting the header is never read, since any client could claim a
new address with each guess; behind an untrusted proxy every client would share its address.

A success clears the counts of the address and username that succeeded and nothing else: one
user signing in never resets the failures of another address. The counts live in this process
(several ``archive serve`` processes each count their own) and are bounded in memory. Time is
the app's clock (``web.keys.CLOCK``), so tests can move it.
"""

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiohttp import web

from web.keys import SETTINGS

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
MAX_KEYS = 100_000  # failure records kept at most; the oldest keys go first beyond it


def client_address(request: web.Request) -> str | None:
    """The client's address: the last ``X-Forwarded-For`` entry when the operator's proxy is
    trusted (``trust_forwarded_for``), else the TCP peer."""
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        last = forwarded[-1].split(",")[-1].strip() if forwarded else ""
        if last:
            return last
    return request.remote


@dataclass
class SignInLimiter:
    """Failed sign-ins per key (``addr:<address>`` or ``user:<username>``) within a window."""

    max_failures: int = MAX_FAILURES
    window: timedelta = WINDOW
    max_keys: int = MAX_KEYS
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)

    @staticmethod
    def keys(address: str | None, username: str | None = None) -> list[str]:
        """The keys a sign-in attempt counts against."""
        found = [f"addr:{address or '-'}"]
        if username and username.strip():
            found.append(f"user:{username.strip().lower()}")
        return found

    def _recent(self, key: str, now: datetime) -> deque[datetime] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, keys: list[str], now: datetime) -> int | None:
        """Whole seconds until every key may try again, or ``None`` if none is blocked."""
        wait = timedelta(0)
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                # Allowed again once enough failures have left the window.
                oldest_kept = times[len(times) - self.max_failures]
                wait = max(wait, oldest_kept + self.window - now)
        if wait <= timedelta(0):
            return None
        return max(1, int(-(-wait.total_seconds() // 1)))

    def failed(self, keys: list[str], now: datetime) -> None:
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    # The key that first failed longest ago goes: O(1), never a sweep.
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque()
            times.append(now)
            while len(times) > self.max_failures:  # more are never needed to decide
                times.popleft()

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


SIGNIN_LIMITER = web.AppKey("signin_limiter", SignInLimiter)


def setup_ratelimit(app: web.Application, limiter: SignInLimiter | None = None) -> None:
    """Give the app its sign-in limiter (``create_app`` calls this)."""
    app[SIGNIN_LIMITER] = limiter or SignInLimiter()
