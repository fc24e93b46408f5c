"""What a hosted demo lets one visitor ask for: caps per request and a per-session rate limit."""
import functools
import math
import threading
import time
import unicodedata
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

from comparisons.errors import InputError, RateLimited


@dataclass(frozen=True)
class HostedLimits:
    max_steps: int = 100                    # steps per arm in one request
    generations_per_minute: int = 6         # per client address (new sessions do not reset it)
    global_work_per_minute: int = 12_000    # all addresses together, in steps x images (60 pairs of 100 steps)
    votes_per_minute: int = 30              # per client address
    generations_in_flight: int = 2          # queued or running generations per client address
    queue_size: int = 64                    # requests waiting at most, all kinds together
    max_concurrent: int = 1                 # generations running at once
    max_prompt: int = 500                   # characters
    max_note: int = 500                     # characters
    body_limit: int = 64 * 1024             # bytes in one request (413 beyond); no uploads at all
    max_votes_per_address: int = 100       # counted votes from one address in one campaign
    exports_per_minute: int = 2             # /export_votes per address, with --export-token only


def check_text(name, text, limit, line_breaks=False):
    """Refuse free text (prompt, note) before any work: over-long, not storable as UTF-8 (a lone surrogate), or
    holding control characters (a note may hold line breaks and tabs; the CSV export quotes them)."""
    if text is None:
        return text
    text = str(text)
    if len(text) > limit:
        raise InputError(f"the {name} is {len(text)} characters long; at most {limit} are allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"the {name} holds a character that cannot be stored (at position {exc.start}); "
                         "retype it") from None
    allowed = "\n\r\t" if line_breaks else ""
    bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in allowed), None)
    if bad is not None:
        raise InputError(f"the {name} holds the control character U+{ord(bad):04X}; remove it")
    return text


def client_address(request, trust_proxy=False, hops=1):
    """Who is asking: the connecting address, or, behind `hops` trusted proxies, the X-Forwarded-For entry the
    outermost of them added (the `hops`-th from the right; entries left of it are whatever the client sent).

    A visitor chooses their own session id, so limits are keyed on this instead. Without `trust_proxy` no
    forwarded header changes who a client is, from any address (app.py also tells uvicorn to trust none).
    """
    if trust_proxy:
        entries = [e.strip() for e in (request.headers.get("x-forwarded-for") or "").split(",") if e.strip()]
        if entries:
            return entries[-hops if len(entries) >= hops else 0][:64]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class GenerationGate:
    """At most `per_address` generations queued or running per address; `slots` run at once. Waiting
    generations are served by address in turn (round robin), so a flood from some addresses delays another
    visitor by at most one generation per flooding address, not by everything they queued."""

    def __init__(self, per_address=2, slots=1):
        self.per_address, self.slots = per_address, slots
        self._lock = threading.Condition()
        self._in_flight, self._running = {}, 0
        self._queues, self._turns = {}, deque()  # address -> its waiting tickets; addresses in serving order

    def _next(self):
        return self._queues[self._turns[0]][0] if self._turns else None

    @contextmanager
    def enter(self, address):
        with self._lock:
            if self._in_flight.get(address, 0) >= self.per_address:
                raise RateLimited(f"at most {self.per_address} generations at a time per visitor in this demo; "
                                  "wait for yours to finish")
            self._in_flight[address] = self._in_flight.get(address, 0) + 1
            ticket = object()
            if address not in self._queues:
                self._queues[address] = deque()
                self._turns.append(address)
            self._queues[address].append(ticket)
            self._lock.wait_for(lambda: self._next() is ticket and self._running < self.slots)
            # Served: this address goes to the back of the line if it has more waiting.
            self._turns.popleft()
            self._queues[address].popleft()
            if self._queues[address]:
                self._turns.append(address)
            else:
                del self._queues[address]
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
    """Sliding-window limit of `limit` units per `window` seconds for each key (a request is one unit, or its
    work); thread-safe."""

    def __init__(self, limit, window=60.0, clock=time.monotonic, max_keys=100_000):
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._events, self._used, self._lock = {}, {}, threading.Lock()

    def check(self, key, what="requests", cost=1):
        """Count `cost` units for `key` (a request is 1; work is steps x images), or raise RateLimited without
        counting them."""
        if cost > self.limit:
            raise RateLimited(f"this request alone asks for {cost} of the {self.limit} {what} allowed per "
                              f"{self.window:g} s in this demo; ask for less")
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            used = self._used.get(key, 0)
            while events and events[0][0] <= now - self.window:
                used -= events.popleft()[1]
            if used + cost > self.limit:
                # Wait until enough of the oldest units leave the window for this request to fit.
                free, wait = self.limit - used, 0.0
                for at, units in events:
                    free += units
                    if free >= cost:
                        wait = at + self.window - now
                        break
                self._used[key] = used
                raise RateLimited(f"too many {what}: at most {self.limit} per {self.window:g} s in this demo; "
                                  f"try again in {max(1, math.ceil(wait))} s")
            events.append((now, cost))
            self._used[key] = used + cost
            if len(self._events) > self.max_keys:
                self._prune(now)

    def _prune(self, now):
        for key in [k for k, ev in self._events.items() if not ev or ev[-1][0] <= now - self.window]:
            del self._events[key]
            self._used.pop(key, None)


def check_caps(limits, *configs):
    """Refuse configs above the hosted caps with a message that says what to change."""
    for cfg in configs:
        if cfg.steps > limits.max_steps:
            raise InputError(f"this hosted demo runs at most {limits.max_steps} steps per image (asked "
                             f"{cfg.steps}); lower the steps, or run the app locally for more")


IMMUTABLE = "public, max-age=31536000, immutable"


class Doors:
    """The app's own doors in front of Gradio (a pure ASGI middleware, app.py passes it to launch's FastAPI app):

    - GET /pair-image/v1/TOKEN.png: a campaign's image as displayed (`image_path(token)`: a file or None), cached
      for a year (its bytes never change), so a served pair is a few hundred bytes of HTML, not megabytes;
    - GET /pair-zip/SERVE_ID.zip: a voted pair's zip, made now (`pair_zip(serve_id)`: a file, deleted once sent,
      or None), when `pair_zip` is given (a local app, or --pair-downloads);
    - hosted (`body_limit` set): no file comes in (Gradio's upload routes answer 403) and no request body over
      `body_limit` bytes (413), counted as it arrives, whatever Content-Length says.
    """

    REFUSED_UPLOADS = ("/gradio_api/upload", "/gradio_api/process_recording", "/upload")

    def __init__(self, app, image_path=None, pair_zip=None, body_limit=None):
        self.app, self.image_path, self.pair_zip, self.body_limit = app, image_path, pair_zip, body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith("/pair-image/"):
            return await self._file(scope, receive, send, self.image_path, path, "/pair-image/v1/", ".png",
                                    {"cache-control": IMMUTABLE}, "image/png")
        if path.startswith("/pair-zip/") and self.pair_zip is not None:
            return await self._file(scope, receive, send, self.pair_zip, path, "/pair-zip/", ".zip",
                                    {"cache-control": "no-store"}, "application/zip", delete=True)
        if self.body_limit is None:
            return await self.app(scope, receive, send)
        if path.rstrip("/") in self.REFUSED_UPLOADS:
            return await _plain(send, 403, "uploads are closed on this public demo")
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await _plain(send, 400, "bad Content-Length")
        if declared > self.body_limit:
            return await _plain(send, 413, f"request bodies are limited to {self.body_limit} bytes here")
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        # Read the body (at most body_limit + 1 bytes) before the app sees any of it, then hand it over as one.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.body_limit:
                return await _plain(send, 413, f"request bodies are limited to {self.body_limit} bytes here")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return await self.app(scope, replay, send)

    async def _file(self, scope, receive, send, lookup, path, prefix, suffix, headers, media_type, delete=False):
        import anyio
        from starlette.background import BackgroundTask
        WholeFileResponse = _whole_file_response()  # noqa: N806 - a class
        name = path[len(prefix):] if path.startswith(prefix) else ""
        found = None
        if scope.get("method") in ("GET", "HEAD") and name.endswith(suffix) and lookup is not None:
            found = await anyio.to_thread.run_sync(lookup, name[:-len(suffix)])
        if found is None:
            return await _plain(send, 404, "not found")
        task = BackgroundTask(lambda: found.unlink(missing_ok=True)) if delete else None
        response = WholeFileResponse(found, media_type=media_type, headers=headers, background=task,
                                     filename=found.name if delete else None)
        return await response(scope, receive, send)


@functools.cache
def _whole_file_response():
    """Starlette's FileResponse reading a file whole (made on first use: this module imports no web framework)."""
    from starlette.responses import FileResponse

    class WholeFileResponse(FileResponse):
        """A file in one read and one send (up to 16 MiB), not Starlette's 64 kB chunks: a 1024² display PNG was 22
        reads in worker threads and 22 sends, 14 ms of a server's CPU per image under 50 voters (#36)."""
        chunk_size = 16 * 1024 * 1024
    return WholeFileResponse


async def _plain(send, status, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
