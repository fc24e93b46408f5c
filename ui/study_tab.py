"""The Study tab: stored studies (verdicts, plots, examples), and a small study run from the app (not hosted)."""
import functools
import html
import re

import gradio as gr

from comparisons.analysis.stats import VERDICT_RULES
from comparisons.core.config import PAIRINGS, SCHEDULES
from comparisons.core.grid import STUDY_QUESTIONS
from comparisons.errors import UsageError
from comparisons.specs import study_spec
from comparisons.workflows.report import study_grid_html, study_view
from comparisons.workflows.study import run_study
from comparisons.workflows.xyz import AXES, DEFAULT_AXES
from sampler_lib import SAMPLERS
from ui import views
from ui.errors import run_checked, user_error

MAX_APP_STUDY_SAMPLES = 64  # a study started from the app stays small; the CLI runs the big ones
# The verdict table: what tells cells apart and the verdict; the rest of a cell under its "more".
STUDY_MAIN = ["question", "sampler", "steps", "n", "A closer [95% CI]", "p_holm", "mean diff [95% CI]", "verdict"]


def study_names(lab):
    return [s["name"] for s in lab.store.studies()]


def empty_state(lab, hosted=False, campaign=False):
    """What the tab says when no study is shown: how many are stored and how to make or open one."""
    names = study_names(lab)
    if names:
        return f"Pick one of the {len(names)} stored stud{'y' if len(names) == 1 else 'ies'} above."
    if campaign:
        return ("No studies in this results file: a campaign's pairs can arrive in a bundle without their study. "
                "The campaign's votes are in the Results tab.")
    if hosted:
        return "No studies in this demo's results file yet."
    return ("No studies in this results file yet. Run a small one below, or a big one with "
            "`python -m comparisons study --out DIR` into the same results file: it is listed when you open this "
            "tab.")


def show_study(lab, name, hosted=False, campaign=False):
    """Header, verdict table, plots and examples of a stored study; the empty state when none is picked. Hosted or
    serving a campaign: the examples without links (a public demo shows aggregates only, and only the Compare
    tab opens a stored pair)."""
    if not name:
        return empty_state(lab, hosted, campaign), "", "", ""
    view = run_checked(study_view, lab.store, name)
    if hosted:
        examples = "<p>Example pairs open in a local app only: this public demo shows aggregates.</p>"
    elif campaign:
        examples = ("<p>Example pairs open in a local app without --campaign (the Compare tab shows a stored pair "
                    "by its link).</p>")
    else:
        examples = view["examples"]
    table = view["table"].copy()
    table["A closer [95% CI]"] = [f"{r:.3f} [{lo:.2f}, {hi:.2f}]" if r == r else ""
                                  for r, lo, hi in zip(table["a_closer_rate"], table["ci_low"], table["ci_high"])]
    table["mean diff [95% CI]"] = [_signed(d, lo, hi) for d, lo, hi in zip(table["mean_diff"], table["diff_ci_low"],
                                                                           table["diff_ci_high"])]
    table = table.drop(columns=["diff_ci_low", "diff_ci_high"])
    rules = (f'<p class="verdict-rules" id="study-verdict-rules"><b>verdict</b>: {html.escape(VERDICT_RULES)} '
             "mean diff: LPIPS(A, ref) − LPIPS(B, ref), negative when A is closer (bootstrap 95% interval).</p>")
    fitted = views.fitted_table(table, STUDY_MAIN, "study-rows", "This study has no rows yet.",
                                optional=("mean diff [95% CI]",))
    return view["header"], fitted + (rules if len(table) else ""), view["plots"], examples


def _signed(value, lo, hi):
    """'-0.0123 [-0.0200, -0.0050]'; the value alone without an interval; '' without a value."""
    if value != value:
        return ""
    return f"{value:+.4f}" + ("" if lo != lo or hi != hi else f" [{lo:+.4f}, {hi:+.4f}]")


def show_grid(lab, name, x, y, z):
    """The picked study's X/Y/Z grid; a refusal is one message where the grid would be."""
    if not name:
        return "<p>Pick a stored study above first.</p>"
    try:
        return run_checked(study_grid_html, lab.store, name, x, y, z or None)
    except gr.Error as err:
        return views.form_error_html(err.message, "grid-axes")


def app_words(message):
    """A study_spec message in the app's field names: '--steps' is the 'steps' field here."""
    return re.sub(r"--(steps|seeds|prompts|samplers|schedules|questions|name)\b", r"\1", message)


def start_study_ui(lab, settings, name, questions, samplers, steps, seeds, prompts, schedules, progress):
    """Run a small study (at most MAX_APP_STUDY_SAMPLES samples) and show it; a refusal is said under the Run
    button in the app's field names (the first output), nothing stored."""
    if settings.hosted:
        raise user_error(ValueError("studies are not started in the hosted demo; run them locally"))
    model = lab.model(settings.model)

    def build():
        spec = study_spec(model, name=name, model_name=settings.model, questions=",".join(questions or []),
                          samplers=",".join(samplers or []), steps=str(steps), seeds=str(seeds),
                          prompts=str(prompts), schedules=",".join(schedules or []))
        if len(spec.samples()) > MAX_APP_STUDY_SAMPLES:
            raise UsageError(f"the app runs studies of at most {MAX_APP_STUDY_SAMPLES} samples (prompts x seeds; "
                             f"asked {len(spec.samples())}); use fewer seeds, or python -m comparisons study")
        return spec

    work = {"done": 0, "total": 1}

    def opened(c):
        work["total"] = max(1, c.reference_work + c.arm_work)

    def advance(phase, amount):
        # One bar for the whole study: the references' and the arms' item-steps together (workflows.study).
        if phase in ("references", "arms"):
            work["done"] += amount
            progress(min(1.0, work["done"] / work["total"]), desc=f"study {name}: {phase}")

    try:
        spec = run_checked(build)
        run_checked(run_study, lab.store, model, lab.lpips(), spec, batch=16, progress=advance, on_census=opened)
    except gr.Error as err:
        return views.form_error_html(app_words(err.message)), gr.update(), gr.update(), gr.update(), gr.update(), \
            gr.update()
    return ("", gr.update(choices=study_names(lab), value=spec.name), *show_study(lab, spec.name))


def build_study_tab(lab, settings):
    hosted, campaign = settings.hosted is not None, bool(settings.campaign)
    with gr.Tab("Study") as tab:
        gr.Markdown("A study answers a question over many seeds, step counts and samplers: every cell compares "
                    "A and B against a converged reference of the same sample."
                    + ("" if hosted or campaign else " Open an example to see that pair in the flicker view."))
        with gr.Row():
            choice = gr.Dropdown(study_names(lab), value=None, label="stored studies", elem_id="study-choice",
                                 scale=3)
            refresh = gr.Button("Refresh", elem_id="refresh-studies", scale=0, min_width=100)
        header = gr.Markdown(empty_state(lab, hosted, campaign), elem_id="study-header")
        table = gr.HTML(elem_id="study-table")
        plots = gr.HTML(elem_id="study-plots")
        examples = gr.HTML(elem_id="study-examples")
        outputs = [header, table, plots, examples]
        if not hosted:  # a public demo shows aggregates only, as with the examples
            with gr.Accordion("X/Y/Z grid: every image of the study side by side", open=False):
                with gr.Row(elem_id="grid-axes"):
                    grid_x = gr.Dropdown(list(AXES), value=DEFAULT_AXES[0], label="columns", elem_id="grid-x")
                    grid_y = gr.Dropdown(list(AXES), value=DEFAULT_AXES[1], label="rows", elem_id="grid-y")
                    grid_z = gr.Dropdown(["", *AXES], value=DEFAULT_AXES[2], label="panels (optional)",
                                         elem_id="grid-z")
                    draw = gr.Button("Show grid", elem_id="show-grid", scale=0, min_width=110)
                grid = gr.HTML(elem_id="study-grid")
        if not hosted:
            with gr.Accordion(f"Run a small study (at most {MAX_APP_STUDY_SAMPLES} samples)", open=False):
                with gr.Row():
                    name = gr.Textbox("app-study", label="name", elem_id="study-name")
                    questions = gr.Dropdown(list(PAIRINGS) + list(STUDY_QUESTIONS),
                                            value=["final-zero", "sigma-min-vs-model"], multiselect=True,
                                            label="questions")
                    samplers = gr.Dropdown(list(SAMPLERS), value=["heun"], multiselect=True, label="samplers")
                    schedules = gr.Dropdown(list(SCHEDULES), value=[], multiselect=True, elem_id="study-schedules",
                                            label="schedules (each question under each; none: Karras)")
                with gr.Row():
                    steps = gr.Textbox("4,10", label="steps (comma-separated)")
                    seeds = gr.Textbox("0-7", label="seeds (e.g. 0-7 or 0,3,5)")
                    prompts = gr.Textbox("a red circle", label="prompts (comma-separated)")
                run = gr.Button("Run study", variant="primary", elem_id="run-study")
                status = gr.HTML("", elem_id="study-status")

            def on_run(progress=gr.Progress(), *values):
                return start_study_ui(lab, settings, *values, progress=progress)

            run.click(lambda: "", None, status, queue=False, api_visibility="private").then(
                on_run, [name, questions, samplers, steps, seeds, prompts, schedules], [status, choice, *outputs],
                concurrency_id="generate", concurrency_limit=settings.max_concurrent, api_visibility="private",
                show_progress_on=status)
    show = functools.partial(show_study, lab, hosted=hosted, campaign=campaign)
    read = dict(api_visibility="private", concurrency_id="read", concurrency_limit=16)
    choice.change(show, choice, outputs, show_progress_on=header, **read)
    if not hosted:
        draw.click(functools.partial(show_grid, lab), [choice, grid_x, grid_y, grid_z], grid, **read)

    def listed(current):
        """The stored studies, read now (a study the CLI just made included); the newest shown if none is."""
        names = study_names(lab)
        return gr.update(choices=names, value=current if current in names else (names[-1] if names else None))
    for trigger in (refresh.click, tab.select):
        trigger(listed, choice, choice, **read)  # a new value shows that study (choice.change)
