"""What a hosted demo lets one visitor ask for: caps per request and a per-session rate limit."""
import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HostedLimits:
    max_steps: int = 100             # steps per arm in one request
    generations_per_minute: int = 6  # per session
    votes_per_minute: int = 30       # per session
    queue_size: int = 16             # requests waiting at most
    max_concurrent: int = 1          # generations running at once


class RateLimited(ValueError):
    """Too many requests from one session; the message says how long to wait."""


class RateLimiter:
    """Sliding-window limit of `limit` events per `window` seconds for each key; thread-safe."""

    def __init__(self, limit, window=60.0, clock=time.monotonic, max_keys=100_000):
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._events, self._lock = {}, threading.Lock()

    def check(self, key, what="requests"):
        """Count one event for `key`, or raise RateLimited without counting it."""
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                wait = math.ceil(events[0] + self.window - now)
                raise RateLimited(f"too many {what}: at most {self.limit} per {self.window:g} s in this demo; "
                                  f"try again in {wait} s")
            events.append(now)
            if len(self._events) > self.max_keys:
                self._prune(now)

    def _prune(self, now):
        for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.window]:
            del self._events[key]


def check_caps(limits, *configs):
    """Refuse configs above the hosted caps with a message that says what to change."""
    for cfg in configs:
        if cfg.steps > limits.max_steps:
            raise ValueError(f"this hosted demo runs at most {limits.max_steps} steps per image (asked "
                             f"{cfg.steps}); lower the steps, or run the app locally for more")
