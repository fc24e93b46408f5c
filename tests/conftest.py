import importlib.util
import os
import sys
import types
from pathlib import Path

# One torch thread per test process, and through the environment per app, CLI or Ray process a test starts: on a
# busy 2-core machine a second OpenMP thread spins waiting for a core (measured under load 6-13: test_embedded's
# two sampling tests took 87 s of CPU at 2 threads, 24 s at 1), and `make test` runs two workers side by side.
# One count everywhere also keeps float sums in one order, serial or parallel. Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import pytest  # noqa: E402
import torch  # noqa: E402

from sampler_lib import scaled_linear_alphas_cumprod  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


def load_kdiffusion():
    """k-diffusion 0.1.1.post1's sampling and external modules, without its heavy package __init__."""
    if "k_diffusion.sampling" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    import k_diffusion.external
    import k_diffusion.sampling
    return k_diffusion.sampling, k_diffusion.external


@pytest.fixture(scope="session")
def lpips_metric():
    """One LPIPS (the real AlexNet trunk) for the whole run: loading it is a second or two a module."""
    from comparisons.core.metrics import LPIPS
    return LPIPS()


@pytest.fixture(scope="session")
def sd_alphas_cumprod():
    return scaled_linear_alphas_cumprod()


def toy_eps(x, t, **_):
    """A smooth nonlinear stand-in for a network: eps depends on x and on the (fractional) timestep."""
    t = t.float()[:, None, None, None]
    return torch.tanh(x * (0.5 + t / 1000)) + 0.05 * torch.sin(t / 37.0)


def run_cli(args, subprocess_=False):
    """`python -m comparisons ARGS`: (exit code, stdout, stderr lines that are not warnings).

    In this process by default (the same main() the module runs, without paying for a new interpreter and
    torch); in a real subprocess with `subprocess_=True`, offline, for the entry point itself and for
    anything that would reach for the network (loading an unknown model).
    """
    import contextlib
    import io
    import os
    import subprocess
    import sys
    if subprocess_:
        proc = subprocess.run([sys.executable, "-m", "comparisons", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        from comparisons.cli import main
        out_buf, err_buf = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err_buf):
            try:
                code = main(list(args), out=out_buf)
            except SystemExit as exc:  # argparse's own refusals
                code = exc.code
        out, err = out_buf.getvalue(), err_buf.getvalue()
    assert "Traceback" not in err, err[-3000:]
    return code, out, [line for line in err.splitlines() if "warn" not in line.lower()]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveApp:
    """app.py in a subprocess on a free loopback port; stopped by the fixture that started it."""

    def __init__(self, results, *extra, env=None):
        import os
        import subprocess
        import sys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.results = results
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        self.log = open(Path(results).parent / "app.log", "a")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port),
                                      "--results", str(results), *extra], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout=300):  # a fail-safe: a busy 2-core machine took over 120 s to start one
        import time
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("app did not start in time")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except Exception:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, for one test module."""
    from playwright.sync_api import expect, sync_playwright
    # A wait or an expect ends as soon as its condition holds; its timeout is a fail-safe, so make it one that a
    # machine 3x slower and busy does not reach (Playwright's defaults: 30 s for a wait, 5 s for an expect).
    expect.set_options(timeout=20_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh 1280x1600 page (its own context) in the module's browser."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, accept_downloads=True)
    ctx.set_default_timeout(90_000)  # a fail-safe, see browser()
    page = ctx.new_page()
    yield page
    ctx.close()


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    app = LiveApp(tmp_path_factory.mktemp("app") / "results.db")
    yield app
    app.stop()


def fill_checked(field, value, tries=3):
    """Fill a Playwright field and see the value stay: a field mounted late (an accordion's first opening) can take
    the first fill away, and a lost value would run the default instead of what the test means."""
    from playwright.sync_api import expect
    for _ in range(tries - 1):
        field.fill(value)
        try:
            expect(field).to_have_value(value, timeout=2_000)
            return
        except AssertionError:
            continue
    field.fill(value)
    expect(field).to_have_value(value)


# -- `make test-fast`: what starts something, runs a study or samples a model is marked slow -------------------------
# A test is `slow` when its source, or the source of a fixture it uses (directly or through other fixtures), starts a
# server, a browser, Ray or another process, runs a study, or loads a model to sample it: found in the source, so a
# new test that does is marked without anyone remembering to (refusals, which stop before any work, stay fast).
# SLOW_MODULES, SLOW_FIXTURES and SLOW_TESTS add what the source does not show (real model weights, images or latents
# at full size, a loop over every sampler or thousands of rows), by measured durations. `make test-fast` runs
# `-m "not slow"`; `make test` runs everything.
SLOW_SOURCE = ("LiveApp(", "sync_playwright", "ray.init", "subprocess.run(", "subprocess.Popen(", "subprocess_=True",
               "multiprocessing.", "load_model(", "Lab(", "start_study_ui(", "run_study(", "_study_args(", "*STUDY",
               '["study", "--')
SLOW_FIXTURES = {"browser", "page", "live_app", "ray_local", "sizes", "folder_campaign"}
SLOW_MODULES = {"test_browser", "test_glance", "test_hostile_visitor", "test_hosted", "test_hosted_compare",
                "test_instrument_browser", "test_ray", "test_study_app", "test_stable_diffusion", "test_sdxl",
                "test_sd3", "test_flux", "test_noise_speed", "test_image_speed"}
SLOW_TESTS = {"test_every_sampler_schedule_and_mode_gives_a_finite_image",
              "test_flip_rule_on_cases_a_person_can_check", "test_noise_keeps_the_flows_marginal_on_a_point_mass",
              "test_trainer_runs_two_steps_into_a_tmp_folder",
              "test_every_config_that_validates_gives_a_finite_schedule",
              "test_refused_commands_create_no_results_file", "test_page_payload_with_1000_pairs_and_5000_votes",
              "test_inspect_downscales_lpips_above_its_pixel_cap_and_says_so",
              "test_cli_and_app_offer_it_beside_the_default", "test_inspect_cli_writes_the_page_maps_and_json",
              "test_only_visible_drops_pairs_below_visibility_per_cell",
              "test_skip_unmatched_leaves_them_out_and_says_so",
              "test_multistep_and_ancestral_samplers_survive_repeated_rounded_sigmas",
              "test_slices_of_samples_give_the_outputs_of_one_batch"}
_STARTS = {}


def _starts_something(func):
    import inspect
    if func not in _STARTS:
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            source = ""
        _STARTS[func] = any(s in source for s in SLOW_SOURCE)
    return _STARTS[func]


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
        if (module is not None and module.__name__.rpartition(".")[2] in SLOW_MODULES
                or getattr(item, "originalname", item.name) in SLOW_TESTS
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or _starts_something(getattr(item, "function", None))
                or any(_starts_something(f) for f in fixtures)):
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (`make test` runs two)
        _schedule_for_workers(items)


# -- `make test`: two pytest-xdist workers (-n 2), scheduled by pytest_xdist_make_scheduler below -----------------
# A module whose tests share a costly module-scoped fixture (an app, a browser, Ray, a stored study) is one unit of
# work, run on one worker, so each app starts once; every other test is a unit of its own. (xdist's own
# `--dist loadgroup` cannot do this here: it renames node ids through an attribute pytest 9.2 no longer reads.)
# Units run heaviest first and the milliseconds-long ones last, so neither worker idles at the end while the other
# finishes a long test: HEAVY lists, heaviest first, what took over ~20 s (measured with --durations).
SHARED_MODULES = {"test_app_api", "test_browser", "test_bundle_import", "test_campaign", "test_flux", "test_glance",
                  "test_hosted", "test_hosted_compare", "test_hostile_visitor", "test_instrument_browser",
                  "test_own_images", "test_public_demo", "test_ray", "test_sd3", "test_sdxl", "test_send_to_compare",
                  "test_stable_diffusion", "test_study_app", "test_study_plots"}
LIGHT_SHARED = {"embedded", "model", "sd"}  # module fixtures that cost a tenth of a second: no reason to group
HEAVY = ("test_study.py::test_compiled_path_keeps_static_shapes", "test_study.py::test_study_killed_after",
         "test_study_app.py", "test_ray.py", "test_campaign.py", "test_hostile_visitor.py", "test_public_demo.py",
         "test_own_images.py", "test_named_schedules.py::test_the_app_study_form",
         "test_study.py::test_bf16_and_compiled", "test_glance.py", "test_instrument_browser.py",
         "test_send_to_compare.py", "test_browser.py", "test_hosted_compare.py", "test_hosted.py",
         "test_named_schedules.py::test_every_sampler", "test_embedded.py::test_ten_step",
         "test_embedded_flow.py::test_faithful", "test_study.py::test_tiny_study", "test_sd3.py", "test_sdxl.py",
         "test_flux.py", "test_bundle_import.py")


def _unit(nodeid):
    path = nodeid.partition("::")[0]
    return path if path.rpartition("/")[2].removesuffix(".py") in SHARED_MODULES else nodeid


def _schedule_for_workers(items):
    """Every worker orders its (identical) collection so: each shared module's tests together, heaviest unit first."""
    units = {}
    for item in items:
        units.setdefault(_unit(item.nodeid), []).append(item)
        info = getattr(item, "_fixtureinfo", None)
        shared = [d.argname for defs in (info.name2fixturedefs.values() if info else ()) for d in defs
                  if d.scope in ("package", "module", "class") and d.argname not in LIGHT_SHARED]
        if shared and _unit(item.nodeid) == item.nodeid:
            import warnings
            warnings.warn(f"{item.nodeid} shares module fixture(s) {', '.join(shared)}: add its module to "
                          f"SHARED_MODULES in tests/conftest.py so one worker sets them up (or to LIGHT_SHARED)",
                          pytest.PytestWarning, stacklevel=1)

    def rank(unit):
        where = units[unit][0].nodeid.rpartition("/")[2]
        heavy = [k for k, prefix in enumerate(HEAVY) if where.startswith(prefix)]
        return heavy[0] if heavy else len(HEAVY) + (0 if units[unit][0].get_closest_marker("slow") else 1)

    items[:] = [item for unit in sorted(units, key=rank) for item in units[unit]]  # sorted() keeps ties in order


def pytest_xdist_make_scheduler(config, log):
    """Units of work as _unit says, handed out in the collection's order (the workers' _schedule_for_workers)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _unit(nodeid)

    config.option.loadscopereorder = False
    return SharedModuleScheduling(config, log)
