"""What a hosted demo lets one visitor ask for: caps per request and a per-session rate limit."""
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

from comparisons.errors import InputError, RateLimited


@dataclass(frozen=True)
class HostedLimits:
    max_steps: int = 100                    # steps per arm in one request
    generations_per_minute: int = 6         # per client address (new sessions do not reset it)
    global_generations_per_minute: int = 60  # all addresses together
    votes_per_minute: int = 30              # per client address
    generations_in_flight: int = 2          # queued or running generations per client address
    queue_size: int = 64                    # requests waiting at most, all kinds together
    max_concurrent: int = 1                 # generations running at once
    max_prompt: int = 500                   # characters
    max_note: int = 500                     # characters


def check_text(name, text, limit):
    """Refuse over-long free text (prompt, note) before any work."""
    if text is not None and len(str(text)) > limit:
        raise InputError(f"the {name} is {len(str(text))} characters long; at most {limit} are allowed")
    return text


def client_address(request, trust_proxy=False):
    """Who is asking: the connecting address, or the first X-Forwarded-For entry behind a trusted proxy.

    A visitor chooses their own session id, so limits are keyed on this instead. Trust the header only
    behind a proxy that sets it (Hugging Face Spaces does); otherwise anyone could claim any address.
    """
    if trust_proxy:
        forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class GenerationGate:
    """At most `per_address` generations queued or running per address; `slots` run at once, in turn."""

    def __init__(self, per_address=2, slots=1):
        self.per_address, self.slots = per_address, slots
        self._lock = threading.Condition()
        self._in_flight, self._running, self._waiting = {}, 0, deque()

    @contextmanager
    def enter(self, address):
        with self._lock:
            if self._in_flight.get(address, 0) >= self.per_address:
                raise RateLimited(f"at most {self.per_address} generations at a time per visitor in this demo; "
                                  "wait for yours to finish")
            self._in_flight[address] = self._in_flight.get(address, 0) + 1
            ticket = object()
            self._waiting.append(ticket)
            # First come, first served: a flood from one address holds at most `per_address` places.
            self._lock.wait_for(lambda: self._waiting[0] is ticket and self._running < self.slots)
            self._waiting.popleft()
            self._running += 1
            self._lock.notify_all()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._in_flight[address] -= 1
                if not self._in_flight[address]:
                    del self._in_flight[address]
                self._lock.notify_all()


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
            raise InputError(f"this hosted demo runs at most {limits.max_steps} steps per image (asked "
                             f"{cfg.steps}); lower the steps, or run the app locally for more")
