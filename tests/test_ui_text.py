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
