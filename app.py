"""Sampler A/B Lab: the Gradio app. It lays out and wires; every decision lives in comparisons/sampler_lib.

    python app.py [--host 127.0.0.1] [--port 7860] [--results results/results.db] [--model embedded] [--share]
"""
import atexit
import functools
import hmac
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from comparisons.core.config import CUSTOM, PAIRINGS, SamplerConfig  # noqa: E402
from comparisons.errors import DuplicateVote, StoreError, UsageError  # noqa: E402
from comparisons.results.export import pair_zip  # noqa: E402
from comparisons.results.store import DEFAULT_PATH  # noqa: E402
from comparisons.specs import OneLineParser  # noqa: E402
from comparisons.workflows.blind import PairImages, address_key, cast_vote, next_campaign_pair, session_key  # noqa: E402
from comparisons.workflows.campaign import definition_of as campaign_definition  # noqa: E402
from comparisons.workflows.lab import Lab  # noqa: E402
from ui import views  # noqa: E402
from ui.compare import (  # noqa: E402
    ComparedImages,
    build_compare_tab,
    open_stored_pair,
    serve_pair,
    stored_pair_outputs,
)
from ui.errors import run_checked, user_error  # noqa: E402
from ui.inputs import preset_configs  # noqa: E402
from ui.inspect_tab import build_inspect_tab  # noqa: E402
from ui.limits import (  # noqa: E402
    Doors,
    GenerationGate,
    HostedLimits,
    RateLimiter,
    check_caps,
    check_text,
    client_address,
)
from ui.results_tab import build_results_tab, export_files  # noqa: E402
from ui.study_tab import build_study_tab  # noqa: E402
from ui.vote_view import SEEN_ALL, build_vote_tab  # noqa: E402

STATIC = Path(__file__).resolve().parent / "static"
HOSTED_RESULTS = Path("/data") / "results" / "results.db"  # the persistent volume of a Space


class Settings:
    """What the command line chose; read-only once the app is built."""

    def __init__(self, args):
        self.model = args.model
        self.trust_proxy = getattr(args, "trust_proxy", False)
        self.proxy_hops = getattr(args, "proxy_hops", 1)
        self.export_notes = getattr(args, "export_notes", False)
        self.campaign = getattr(args, "campaign", None)
        self.hosted = HostedLimits() if args.hosted else None
        # Hosted: /export_votes only with --export-token (then asked for it and rate limited); a pair's zip only
        # with --pair-downloads (it says which image was A, so a later serving of that pair could be recognised).
        self.export_token = getattr(args, "export_token", None)
        self.pair_downloads = not args.hosted or getattr(args, "pair_downloads", False)
        self.max_votes_per_address = (getattr(args, "max_votes_per_address", None) or HostedLimits.max_votes_per_address
                                      if args.hosted else None)
        self.store, self.images = None, None  # bound to the app's store by build_app
        limits = self.hosted or HostedLimits()
        self.max_prompt, self.max_note = limits.max_prompt, limits.max_note
        if self.hosted:
            # A hosted demo serves exactly the model it was started with; no name comes from a visitor.
            self.models = [args.model]
            self.max_concurrent, self.queue_size = self.hosted.max_concurrent, self.hosted.queue_size
            # Keyed on the client address: a visitor picks their own session id, not their address.
            self.generate_limit = RateLimiter(self.hosted.generations_per_minute)
            # Overall, work is counted (steps x images), not requests: a 100-step pair costs ten 10-step ones.
            self.global_limit = RateLimiter(self.hosted.global_work_per_minute)
            self.vote_limit = RateLimiter(self.hosted.votes_per_minute)
            # Campaign pairs served (images read, sides drawn): twice the vote rate covers skipping.
            self.serve_limit = RateLimiter(2 * self.hosted.votes_per_minute)
            self.export_limit = RateLimiter(self.hosted.exports_per_minute)
            self.gate = GenerationGate(self.hosted.generations_in_flight, self.hosted.max_concurrent)
            # Generation requests wait at the gate, not in Gradio's queue: there they are served by address in
            # turn, and votes never queue behind them. Enough workers for every place the gate can hold.
            self.generate_workers = 32
        else:
            # The embedded models (eps, then its rectified-flow twin), then the one asked for.
            embedded = ["embedded", "embedded-flow"]
            self.models = embedded + ([args.model] if args.model not in embedded else [])
            self.max_concurrent, self.queue_size = args.max_concurrent, args.queue_size
            self.gate = GenerationGate(per_address=args.queue_size, slots=args.max_concurrent)
            self.generate_workers = args.max_concurrent

    def address(self, request):
        return client_address(request, self.trust_proxy, self.proxy_hops)

    def bind(self, lab):
        """The store sessions and addresses are keyed by; a campaign's images served by URL."""
        self.store = lab.store
        # The images the Doors serve by URL: a campaign's pairs, or the pairs the Compare tab makes.
        self.images = PairImages(lab.store, self.campaign) if self.campaign else ComparedImages(lab.store)

    def session(self, request):
        """The session a campaign's servings and votes are kept under. Hosted: made by the server from the address
        and Gradio's session hash (blind.session_key), never the id a visitor sends; locally Gradio's own."""
        if self.hosted:
            return session_key(self.store, self.address(request), request.session_hash)
        return request.session_hash

    def vote_address(self, request):
        """Hosted: the salted hash of the voter's address a campaign vote keeps (one counted vote per pair and
        address, at most --max-votes-per-address); locally None (no such rule)."""
        return address_key(self.store, self.address(request)) if self.hosted else None

    def admit_export(self, request):
        """Hosted: /export_votes answers only to the X-Export-Token header given by --export-token, twice a
        minute per address."""
        if self.hosted:
            given = (request.headers.get("x-export-token") or "") if request is not None else ""
            if not (self.export_token and hmac.compare_digest(given.encode(), self.export_token.encode())):
                raise UsageError("exporting votes from this demo needs its export token (X-Export-Token header)")
            self.export_limit.check(self.address(request), "exports from your address")

    def admit_generation(self, request, prompt, cfg_a, cfg_b):
        """Input limits everywhere; hosted caps and rate limits per address and overall."""
        check_text("prompt", prompt, self.max_prompt)
        if self.hosted:
            check_caps(self.hosted, cfg_a, cfg_b)
            self.generate_limit.check(self.address(request), "generations from your address")
            self.global_limit.check("everyone", "sampling steps (steps x images) in this demo overall",
                                    cost=cfg_a.steps + cfg_b.steps)

    def generation(self, request):
        """Hold a place among the generations running (at most a few per address); a context manager."""
        return self.gate.enter(self.address(request))

    def admit_serve(self, request):
        """Hosted: campaign pairs served per address are rate-limited like votes."""
        if self.hosted:
            self.serve_limit.check(self.address(request), "pairs served to your address")

    def admit_vote(self, request, note):
        check_text("note", note, self.max_note, line_breaks=True)
        if self.hosted:
            self.vote_limit.check(self.address(request), "votes from your address")


# ---- API ------------------------------------------------------------------------------------------

def pair_payload(out, campaign=False):
    """A served pair as the API returns it: its serving id, both images as shown, distances, visibility. A campaign's
    pair carries no `identical` (an attention check is served like any pair); served with URLs (hosted), `left` and
    `right` are the images' paths on this server (/pair-image/v1/…png, also `left_url`, `right_url`), not data."""
    m = out["metrics"]
    # The API calls the serving id `pair_id` (gradio_client users rely on it); the stored pair's id is not sent.
    if "left_url" in out:
        images = {"left": out["left_url"], "right": out["right_url"], "left_url": out["left_url"],
                  "right_url": out["right_url"]}
    else:
        images = {"left": views.data_url(out["left"]), "right": views.data_url(out["right"])}
    marks = {} if campaign else {"identical": m["max_abs_diff"] == 0}
    return {"pair_id": out["serve_id"], **images, "lpips": m["lpips"], "ssim": m["ssim"],
            "psnr": None if math.isinf(m["psnr"]) else m["psnr"], **marks, "visibility": out["visibility"]}


def build_api(lab, settings, export_dir):
    """The named endpoints gradio_client users rely on: /generate_pair (or /next_pair with --campaign),
    /vote, /export_votes."""

    def generate_pair(prompt: str, seed: float, pairing: str, steps: float, sampler: str,
                      request: gr.Request) -> dict:
        """Run a blind pair served to this session; returns pair_id (this serving's id, the one /vote takes),
        the two images as shown (left, right) as PNG data URLs, its distances and its visibility line."""
        if pairing == CUSTOM:
            raise user_error(ValueError("the API takes a preset pairing: " + ", ".join(PAIRINGS)))
        cfg_a, cfg_b = run_checked(preset_configs, pairing, steps, sampler, SamplerConfig.guidance_scale)
        out = serve_pair(lab, settings, request, prompt, seed, settings.model, pairing, cfg_a, cfg_b)
        return pair_payload(out)

    def next_pair(request: gr.Request) -> dict:
        """The next pair of this app's campaign for this session (fewest votes first, never one it has seen),
        in the same form as /generate_pair; an error once the session has seen every pair."""
        run_checked(settings.admit_serve, request)
        out = run_checked(next_campaign_pair, lab, settings.campaign, settings.session(request),
                          address=settings.vote_address(request), images=settings.images if settings.hosted else None)
        if out is None:
            raise user_error(ValueError(SEEN_ALL))
        return pair_payload(out, campaign=True)

    def vote(pair_id: str, choice: str, note: str, request: gr.Request) -> dict:
        """Record a blind vote (left/right/tie/both_bad) on a pair served to this session; returns what was
        recorded and the reveal."""
        run_checked(settings.admit_vote, request, note)
        rules = {}
        if settings.campaign:
            # A campaign's session is the server's (hosted: keyed on the address); hosted, one counted vote per pair
            # and address, and a reveal that never says which side showed which.
            rules = dict(session=settings.session(request), address=settings.vote_address(request),
                         max_per_address=settings.max_votes_per_address, blind=settings.hosted is not None)
        try:
            result = run_checked(cast_vote, lab.store, pair_id, choice, rules.pop("session", request.session_hash),
                                 note, **rules)
        except DuplicateVote as exc:
            raise user_error(exc) from exc
        # As /generate_pair: `pair_id` here is the serving id the caller voted with.
        return {**{k: v for k, v in result.items() if k != "serve_id"}, "pair_id": result["serve_id"]}

    if settings.campaign:
        # A campaign serves its fixed pairs only: no visitor makes new ones.
        gr.api(next_pair, api_name="next_pair", concurrency_id="vote", concurrency_limit=64)
    else:
        gr.api(generate_pair, api_name="generate_pair", concurrency_id="generate",
               concurrency_limit=settings.generate_workers)
    gr.api(vote, api_name="vote", concurrency_id="vote", concurrency_limit=64)
    if settings.hosted and not settings.export_token:
        return  # a public demo exports nothing unless its operator gave a token

    def export_votes(request: gr.Request):
        run_checked(settings.admit_export, request)
        return str(export_files(lab, settings, export_dir)[1])

    export_file = gr.File(visible=False)
    export_trigger = gr.Button(visible=False)
    export_trigger.click(export_votes, None, export_file, api_name="export_votes", concurrency_id="export",
                         concurrency_limit=1 if settings.hosted else 16)


def build_app(lab, settings):
    # Gradio's file cache holds every image it served: files older than an hour are deleted hourly.
    settings.bind(lab)
    with gr.Blocks(title="Sampler A/B Lab", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Sampler A/B Lab\nIdentical seeds through two sampler configurations; sides are "
                    "randomized and hidden until you vote.", elem_id="title")
        if settings.hosted:
            # The caps are said up front, not only once a visitor runs into one.
            h = settings.hosted
            gr.Markdown(f"This public demo allows up to {h.max_steps} steps per image, {h.generations_per_minute} "
                        f"pairs and {h.votes_per_minute} votes a minute per visitor, {h.generations_in_flight} "
                        "pairs waiting at a time; visitors are served in turn. Run the app locally for more.",
                        elem_id="hosted-caps")
        # One export folder per server, rewritten in place and removed at exit.
        export_dir = Path(tempfile.mkdtemp(prefix="ab-lab-export-"))
        atexit.register(shutil.rmtree, export_dir, ignore_errors=True)
        if settings.campaign:
            _, serve_first, shown = build_vote_tab(lab, settings, export_dir,
                                                   campaign_definition(lab.store, settings.campaign))
            # Each visitor's first pair is served on page load (votes' concurrency group: never behind work).
            demo.load(serve_first, None, shown, api_visibility="private", concurrency_id="vote",
                      concurrency_limit=64)
            compare = None
        else:
            compare = build_compare_tab(lab, settings, export_dir)
        build_study_tab(lab, settings)
        if not settings.hosted:
            # Files from a visitor's disk, measured at up to 2048x2048: a local tool, not a public demo's.
            build_inspect_tab(lab)
        # The Results tab fills itself when opened (statistics, charts, a bootstrapped leaderboard): a page
        # load computes none of it. Results run apart from generations and never wait behind them.
        build_results_tab(lab, settings, export_dir)
        build_api(lab, settings, export_dir)

        # The page reads ?pair= itself; only a link with one asks the server for anything, so a plain
        # page load shows no pending state on the pair views.
        pair_param = gr.Textbox(visible=False, elem_id="pair-param")
        demo.load(None, None, pair_param, js="() => new URLSearchParams(window.location.search).get('pair') || ''",
                  api_visibility="private")
        if compare is not None:
            pair_param.change(functools.partial(open_stored_pair, lab, settings, compare), pair_param,
                              stored_pair_outputs(compare),
                              api_visibility="private", concurrency_id="read", concurrency_limit=16,
                              show_progress="hidden")
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.max_concurrent)
    # Gradio's queue looks for work every 1 ms while it has none: 8% of a core spent waiting, which a 2-core server
    # under 50 voters needs for them (#36). Every 5 ms: an event waits at most 5 ms more to start.
    if hasattr(demo._queue, "sleep_when_free"):
        demo._queue.sleep_when_free = 0.005
    demo.export_dir = export_dir
    demo.doors = functools.partial(Doors, image_path=settings.images.path if settings.images else None,
                                   pair_zip=functools.partial(voted_pair_zip, lab.store, export_dir)
                                   if settings.pair_downloads else None,
                                   body_limit=settings.hosted.body_limit if settings.hosted else None)
    return demo


def voted_pair_zip(store, export_dir, serve_id):
    """The zip of the pair served as `serve_id`, written now into a folder of its own (deleted once sent), or None:
    unknown, or not yet voted on by the session it was served to (the zip says which image was A)."""
    served = store.served(serve_id) if len(serve_id) == 32 else None
    if served is None or not store.voted(served["pair_id"], served["session"]):
        return None
    return pair_zip(store, served["pair_id"], tempfile.mkdtemp(prefix="zip-", dir=export_dir))


def launch_kwargs():
    """Local assets only: our CSS and the flicker, viewer and grid scripts, inlined into the page head; the theme's
    own font at weights 400 and 700 (Gradio's bundled Source Sans Pro SemiBold holds 55 glyphs, so text at 600
    would mix fonts letter by letter)."""
    scripts = "".join(f"<script>{(STATIC / name).read_text()}</script>"
                      for name in ("flicker.js", "viewer.js", "grid.js"))
    font = (gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif")
    return dict(css_paths=[STATIC / "app.css", STATIC / "grid.css"], head=scripts, theme=gr.themes.Default(font=font))


def stop_now(demo, *_):
    """SIGTERM (docker stop, a supervisor): stop within seconds. Every acknowledged vote is already committed
    (one transaction each, before the answer), so none is lost; the export folder is removed."""
    threading.Timer(3.0, os._exit, (0,)).start()  # whatever is still closing after 3 s is not waited for
    try:
        shutil.rmtree(demo.export_dir, ignore_errors=True)
        demo.close()
    finally:
        os._exit(0)


def parse_args(argv=None):
    """The command line; a bad flag is one line and exit 2."""
    try:
        return _parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _parse_args(argv):
    p = OneLineParser(prog="app.py", description="Sampler A/B Lab")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--results", help=f"SQLite results file (default {DEFAULT_PATH}; hosted: {HOSTED_RESULTS} "
                   "when /data exists)")
    p.add_argument("--model", default="embedded",
                   help="'embedded', 'embedded-flow' or a diffusers model id / folder")
    p.add_argument("--share", action="store_true", help="print a temporary public Gradio link")
    p.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    p.add_argument("--max-concurrent", type=int, default=1, help="generations run at once")
    p.add_argument("--queue-size", type=int, default=64, help="requests waiting at most")
    p.add_argument("--hosted", action="store_true",
                   help="public demo: steps <= 100, rate limits per client address, aggregates only, fixed model")
    p.add_argument("--trust-proxy", action="store_true",
                   help="key rate limits on the X-Forwarded-For address your proxy added (only behind a proxy that "
                        "sets it, such as Hugging Face Spaces); without it no forwarded header is believed")
    p.add_argument("--proxy-hops", type=int, default=1,
                   help="with --trust-proxy: proxies in front of the app that each add to X-Forwarded-For (default 1)")
    p.add_argument("--export-notes", action="store_true", help="hosted: include voters' notes in exported votes")
    p.add_argument("--campaign", help="serve this vote campaign's pairs (a Vote view, no generation); see "
                   "python -m comparisons campaign")
    p.add_argument("--max-votes-per-address", type=int, default=None,
                   help=f"hosted campaign: counted votes from one address (default "
                        f"{HostedLimits.max_votes_per_address}); one per pair and address in any case")
    p.add_argument("--export-token", default=os.environ.get("AB_LAB_EXPORT_TOKEN") or None,
                   help="hosted: open /export_votes to callers sending this X-Export-Token header (rate limited); "
                   "without it a hosted demo has no export (default: $AB_LAB_EXPORT_TOKEN, a Space's secret)")
    p.add_argument("--pair-downloads", action="store_true",
                   help="hosted: offer each voted pair's zip (it names which image was A); off by default")
    args = p.parse_args(argv)
    if args.proxy_hops < 1:
        p.error(f"--proxy-hops must be at least 1 (got {args.proxy_hops})")
    if args.max_votes_per_address is not None and args.max_votes_per_address < 1:
        p.error(f"--max-votes-per-address must be at least 1 (got {args.max_votes_per_address})")
    if args.export_token is not None and len(args.export_token) < 16:
        p.error("--export-token must be at least 16 characters")
    if args.results is None:
        args.results = str(HOSTED_RESULTS if args.hosted and HOSTED_RESULTS.parent.parent.is_dir() else DEFAULT_PATH)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        lab = Lab(args.results, lpips_weights=args.lpips_weights)
        damage = lab.store.quick_check()
        if damage:
            print(f"error: results file {args.results} is damaged (SQLite quick_check: {damage[:200]}); restore it "
                  "from a backup or choose another --results path", file=sys.stderr)
            sys.exit(2)
        lab.model(args.model)  # load before serving: a bad model name fails here, not for the first user
        lab.lpips()
        if args.campaign:
            campaign_definition(lab.store, args.campaign)
        lab.store.hold_open()  # no request pays for closing the file's last connection (a WAL checkpoint)
    except Exception as exc:  # noqa: BLE001 - any start-up failure is reported in one line
        hint = ""
        if isinstance(exc, StoreError) and str(args.results).startswith("/data/"):
            hint = (" — the volume mounted on /data must be writable by uid 1000: use a fresh named volume "
                    "(docker run -v ab-lab-data:/data ...) or `chown -R 1000:1000` the host folder")
        sys.exit(f"error: {exc}{hint}")
    demo = build_app(lab, Settings(args))
    # uvicorn believes X-Forwarded-For from loopback by default; here no proxy header is believed unless
    # --trust-proxy says so, and then ui.limits.client_address reads it (a same-host proxy opens nothing).
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    signal.signal(signal.SIGTERM, functools.partial(stop_now, demo))
    # Threads for votes and page loads beyond the ones generations may hold while they wait their turn.
    from starlette.middleware import Middleware
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, footer_links=["api"], max_threads=128,
                prevent_thread_lock=True, app_kwargs={"middleware": [Middleware(demo.doors)]}, **launch_kwargs())
    if args.share and not demo.share_url:
        demo.close()
        sys.exit("error: --share could not create a public link: it needs network access to Gradio's share "
                 "server. Check the connection, or drop --share and use the local URL above.")
    print(f"Results: {Path(args.results).resolve()}" + (" (hosted mode)" if args.hosted else ""), flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
