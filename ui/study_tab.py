"""The Study tab: stored studies (verdicts, plots, examples), and a small study run from the app (not hosted)."""
import functools

import gradio as gr

from comparisons.core.config import PAIRINGS
from comparisons.errors import UsageError
from comparisons.specs import study_spec
from comparisons.workflows.report import study_view
from comparisons.workflows.study import run_study
from sampler_lib import SAMPLERS
from ui.errors import run_checked, user_error

MAX_APP_STUDY_SAMPLES = 64  # a study started from the app stays small; the CLI runs the big ones


def study_names(lab):
    return [s["name"] for s in lab.store.studies()]


def show_study(lab, name, hosted=False):
    """Header, verdict table, plots and examples of a stored study. Hosted: aggregates only, no example pairs
    (their ids, links and labelled images would un-blind the pairs a campaign serves)."""
    if not name:
        return "No study selected. Run one below or with `python -m comparisons study`.", None, "", ""
    view = run_checked(study_view, lab.store, name)
    examples = ("<p>Example pairs open in a local app only: this public demo shows aggregates.</p>" if hosted
                else view["examples"])
    return view["header"], view["table"], view["plots"], examples


def start_study_ui(lab, settings, name, questions, samplers, steps, seeds, prompts, progress):
    """Run a small study (at most MAX_APP_STUDY_SAMPLES samples) and show it."""
    if settings.hosted:
        raise user_error(ValueError("studies are not started in the hosted demo; run them locally"))
    model = lab.model(settings.model)

    def build():
        spec = study_spec(model, name=name, model_name=settings.model, questions=",".join(questions or []),
                          samplers=",".join(samplers or []), steps=str(steps), seeds=str(seeds),
                          prompts=str(prompts))
        if len(spec.samples()) > MAX_APP_STUDY_SAMPLES:
            raise UsageError(f"the app runs studies of at most {MAX_APP_STUDY_SAMPLES} samples (prompts x seeds; "
                             f"asked {len(spec.samples())}); use fewer seeds, or python -m comparisons study")
        return spec

    spec = run_checked(build)
    run_checked(run_study, lab.store, model, lab.lpips(), spec, batch=16,
                progress=lambda done, total: progress(done / max(total, 1), desc=f"study {spec.name}"))
    return (gr.update(choices=study_names(lab), value=spec.name), *show_study(lab, spec.name))


def build_study_tab(lab, settings):
    with gr.Tab("Study") as tab:
        gr.Markdown("A study answers a question over many seeds, step counts and samplers: every cell compares "
                    "A and B against a converged reference of the same sample. Open an example to see that pair "
                    "in the flicker view.")
        with gr.Row():
            choice = gr.Dropdown(study_names(lab), value=None, label="stored studies", elem_id="study-choice",
                                 scale=3)
            refresh = gr.Button("Refresh", elem_id="refresh-studies", scale=0, min_width=100)
        header = gr.Markdown(elem_id="study-header")
        table = gr.Dataframe(elem_id="study-table", interactive=False)
        plots = gr.HTML(elem_id="study-plots")
        examples = gr.HTML(elem_id="study-examples")
        outputs = [header, table, plots, examples]
        if not settings.hosted:
            with gr.Accordion(f"Run a small study (at most {MAX_APP_STUDY_SAMPLES} samples)", open=False):
                with gr.Row():
                    name = gr.Textbox("app-study", label="name", elem_id="study-name")
                    questions = gr.Dropdown(list(PAIRINGS), value=["final-zero", "sigma-min-vs-model"],
                                            multiselect=True, label="questions")
                    samplers = gr.Dropdown(list(SAMPLERS), value=["heun"], multiselect=True, label="samplers")
                with gr.Row():
                    steps = gr.Textbox("4,10", label="steps (comma-separated)")
                    seeds = gr.Textbox("0-7", label="seeds (e.g. 0-7 or 0,3,5)")
                    prompts = gr.Textbox("a red circle", label="prompts (comma-separated)")
                run = gr.Button("Run study", variant="primary", elem_id="run-study")

            def on_run(progress=gr.Progress(), *values):
                return start_study_ui(lab, settings, *values, progress=progress)

            run.click(on_run, [name, questions, samplers, steps, seeds, prompts], [choice, *outputs],
                      concurrency_id="generate", concurrency_limit=settings.max_concurrent,
                      api_visibility="private")
    show = functools.partial(show_study, lab, hosted=settings.hosted is not None)
    choice.change(show, choice, outputs, api_visibility="private")
    refresh.click(lambda: gr.update(choices=study_names(lab)), None, choice, api_visibility="private")
    tab.select(lambda: gr.update(choices=study_names(lab)), None, choice, api_visibility="private")
