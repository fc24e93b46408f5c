"""Issue #32's defaults and words: custom panels that start identical, menus whose chosen value reads, the
visibility rule at the real display scale, and CLI tables whose columns never run together."""
from types import SimpleNamespace

import gradio as gr

from comparisons.core.config import SAMPLER_NOTES, SamplerConfig


class _Model:
    def prompts(self):
        return ["a red circle"]


def _compare_widgets():
    from ui.compare import build_compare_tab
    lab = SimpleNamespace(model=lambda name: _Model())
    settings = SimpleNamespace(model="embedded", models=["embedded"], generate_workers=1, hosted=None)
    with gr.Blocks():
        return build_compare_tab(lab, settings, export_dir=None)


def test_custom_panels_start_identical_and_differ_only_where_changed():
    from ui.inputs import CUSTOM_FIELDS, custom_config
    w = _compare_widgets()
    form = {name: {f: w[f"{name}:{f}"].value for f, _, _ in CUSTOM_FIELDS} for name in ("A", "B")}
    assert form["A"] == form["B"]
    a = custom_config("A", form["A"])
    assert a == SamplerConfig() and a.quantize == "off"
    b = custom_config("B", {**form["B"], "sampler": "dpmpp_2m"})
    changed = {k for k, v in a.to_dict().items() if b.to_dict()[k] != v}
    assert changed == {"sampler"}


def test_menu_labels_start_with_the_name():
    from ui.compare import SAMPLER_CHOICES, SCHEDULE_CHOICES
    for label, value in SAMPLER_CHOICES + SCHEDULE_CHOICES:
        assert label.startswith(f"{value} · "), label
    assert dict((v, k) for k, v in SAMPLER_CHOICES)["heun"].endswith(SAMPLER_NOTES["heun"])


def test_visibility_rule_states_the_real_display_scale():
    import numpy as np

    from comparisons.core.visibility import DISPLAY_MAX, RULE, display_scale, rule, visibility
    small = rule(64, 64)
    assert f"shown at {DISPLAY_MAX} px (upscaled ×4 from 64 px)" in small and display_scale(64, 64) == 4
    big = rule(1024, 1024)
    assert "upscaled" not in big and "native size, 1024 px" in big and display_scale(1024, 1024) == 1
    assert "upscaled to" not in RULE and "native size" in RULE
    # The line the app shows carries the rule for the images at hand (identical images: no FLIP run).
    image = np.zeros((1024, 768, 3), np.uint8)
    assert visibility(image, image, 0.0)["rule"] == big
    assert visibility(image[:64, :48], image[:64, :48], 0.0)["rule"] == rule(64, 48)


def _cell(question, sampler, **extra):
    nan = float("nan")
    return {"question": question, "sampler": sampler, "steps": 10, "n": 4, "a_closer_rate": 1.0, "ci_low": 0.51,
            "ci_high": 1.0, "p_holm": 0.125, "mean_diff": 0.1, "diff_ci_low": nan, "diff_ci_high": nan,
            "lpips_ab": 0.34, "visible_share": 1.0, "verdict": "inconclusive", **extra}


def test_cli_tables_never_run_columns_together():
    from comparisons.cli import study_table, text_table
    out = study_table([_cell("final-zero@align_your_steps", "dpmpp_2m"),
                       _cell("sigma-min-vs-model@linear_quadratic", "dpmpp_2s_ancestral")])
    lines = out.splitlines()
    assert "final-zero@align_your_steps" in lines[2] and "final-zero@align_your_stepsdpmpp_2m" not in out
    for line, (q, s) in zip(lines[2:], [("final-zero@align_your_steps", "dpmpp_2m"),
                                        ("sigma-min-vs-model@linear_quadratic", "dpmpp_2s_ancestral")]):
        assert line.split()[:2] == [q, s]
    # Every column starts where its header does, at least two spaces after the previous one's widest entry.
    head = lines[0]
    assert lines[2].index("dpmpp_2m") == lines[3].index("dpmpp_2s_ancestral") == head.index("sampler")
    assert head.index("sampler") >= len("sigma-min-vs-model@linear_quadratic") + 2
    assert text_table(["a", "b"], [["x" * 30, "y"]], right=("b",)).splitlines()[2] == "x" * 30 + "  y"


def test_cli_campaign_table_separates_long_cells():
    from comparisons.cli import campaign_table
    nan = float("nan")
    row = {"question": "scheduler: karras vs align_your_steps; sampler: euler vs dpmpp_2m", "sampler": "",
           "steps": 0, "voters": "all", "votes": 12345, "pairs": 3, "sessions": 2, "flagged": 0, "a": 1, "b": 2,
           "tie": 0, "both_bad": 0, "a_win_rate": 0.5, "ci_low": 0.1, "ci_high": 0.9, "p_value": 1.0,
           "a_win_rate_corrected": nan, "left_rate": 0.5, "left_p": 1.0, "votes_verdict": "no preference yet",
           "lpips_verdict": "no reference image (image files)", "agreement": "—",
           "top_address_share": nan, "top_address_votes": 0, "votes_wo_top": 12345, "a_wo_top": 1, "b_wo_top": 2,
           "a_win_rate_wo_top": 1 / 3, "p_value_wo_top": 1.0}
    out = campaign_table("c", [row, {**row, "voters": "without flagged"}])
    line = next(x for x in out.splitlines() if x.startswith(row["question"]))
    assert line[len(row["question"]):].startswith("  ") and "12345" in line.split()
