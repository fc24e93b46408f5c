"""'Send to Compare' (issue #32): a file's resolved settings mapped to the nearest config this tool runs, what
cannot be carried over named; and, in Chromium, the Inspect tab's buttons filling the Compare form."""
import pytest

from comparisons.core.config import SamplerConfig
from comparisons.core.image_meta import metadata
from comparisons.core.remake import settings_from_metadata

EMBEDDED_PROMPTS = ["a red circle", "a blue square"]


def a1111(sampler, extra="", prompt="a red circle", negative=None):
    neg = f"\nNegative prompt: {negative}" if negative else ""
    return {"parameters": f"{prompt}{neg}\nSteps: 20, Sampler: {sampler}, {extra}CFG scale: 7, Seed: 1234, "
                          "Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0"}


def mapped(text, **kw):
    return settings_from_metadata(metadata(text)["fields"], "embedded", ["embedded"], EMBEDDED_PROMPTS, **kw)


def test_a1111_old_style_sampler_name_carries_its_schedule():
    settings, unmapped = mapped(a1111("DPM++ 2M Karras"))
    cfg = settings["config"]
    assert (cfg["sampler"], cfg["schedule"], cfg["steps"], cfg["guidance_scale"]) == ("dpmpp_2m", "karras", 20, 7.0)
    assert settings["seed"] == 1234 and settings["prompt"] == "a red circle" and settings["model"] == "embedded"
    assert unmapped == ["model sd_xl_base_1.0 (this tool has: embedded; embedded used)"]
    # Everything not stated stays at this tool's defaults: a nearest config, never a guessed one.
    rest = {k: v for k, v in cfg.items() if k not in ("sampler", "schedule", "steps", "guidance_scale")}
    assert rest == {k: v for k, v in SamplerConfig().to_dict().items() if k in rest}


@pytest.mark.parametrize("sampler, extra, want", [
    ("Euler a", "Schedule type: Karras, ", ("euler_ancestral", "karras")),
    ("DPM++ 2M SDE", "Schedule type: Exponential, ", ("dpmpp_2m_sde", "exponential")),
    ("DPM++ 2M SDE Exponential", "", ("dpmpp_2m_sde", "exponential")),
    ("UniPC", "Schedule type: SGM Uniform, ", ("uni_pc", "sgm_uniform")),
    ("DDIM", "Schedule type: Uniform, ", ("ddim", "normal")),
    ("LMS", "Schedule type: Align Your Steps, ", ("lms", "align_your_steps")),
])
def test_a1111_names(sampler, extra, want):
    settings, _ = mapped(a1111(sampler, extra))
    assert (settings["config"]["sampler"], settings["config"]["schedule"]) == want


def test_automatic_and_unknown_names_are_named_not_guessed():
    settings, unmapped = mapped(a1111("Restart", "Schedule type: Automatic, "))
    assert settings["config"]["sampler"] == SamplerConfig.sampler
    assert "sampler 'Restart' (heun used)" in unmapped
    assert any(u.startswith("schedule Automatic") for u in unmapped)


def test_comfyui_names_are_ours():
    fields = {"sampler": "dpmpp_2m", "scheduler": "foo", "steps": 12, "cfg": 4.5, "seed": 7, "prompt": "a cat",
              "negative_prompt": "blurry", "denoise": 0.6, "size": "512x512", "model": "v1-5.safetensors"}
    settings, unmapped = settings_from_metadata(fields, "embedded", ["embedded"], EMBEDDED_PROMPTS, size="64x64")
    assert settings["config"]["sampler"] == "dpmpp_2m" and settings["config"]["steps"] == 12
    assert settings["config"]["guidance_scale"] == 4.5 and settings["seed"] == 7
    assert settings["prompt"] is None  # the embedded model knows only its own prompts
    text = "; ".join(unmapped)
    for part in ("model v1-5.safetensors (this tool has: embedded", "scheduler 'foo'", "prompt 'a cat'",
                 "negative prompt 'blurry'", "denoise 0.6", "size 512x512 (the embedded model makes 64x64)"):
        assert part in text, (part, text)
    # A model reading free text takes any prompt; a model the tool has is kept.
    settings, unmapped = settings_from_metadata({**fields, "scheduler": "beta", "model": "sd15"}, "embedded",
                                                ["embedded", "sd15"], None)
    assert settings["model"] == "sd15" and settings["prompt"] == "a cat" and settings["config"]["schedule"] == "beta"
    assert not any(u.startswith(("model", "prompt", "scheduler")) for u in unmapped)


def test_gpu_variant_and_out_of_range_values():
    settings, unmapped = settings_from_metadata({"sampler": "dpmpp_sde_gpu", "scheduler": "karras", "steps": 5000,
                                                 "cfg": 3, "seed": -1, "prompt": "a red circle"}, "embedded")
    assert settings["config"]["sampler"] == "dpmpp_sde" and settings["config"]["steps"] == SamplerConfig.steps
    assert settings["seed"] is None and settings["prompt"] == "a red circle"
    text = "; ".join(unmapped)
    assert "dpmpp_sde_gpu's noise" in text and "steps 5000" in text and "seed -1" in text


def test_this_tools_own_png_maps_back():
    fields = {"sampler": "uni_pc", "scheduler": "kl_optimal", "steps": 10, "cfg": 3.0, "seed": 5,
              "prompt": "a blue square", "model": "embedded"}
    settings, unmapped = settings_from_metadata(fields, "embedded", ["embedded"], EMBEDDED_PROMPTS)
    assert unmapped == [] and settings["config"] == SamplerConfig(sampler="uni_pc", schedule="kl_optimal",
                                                                  steps=10).to_dict()


# ---- in Chromium ----------------------------------------------------------------------------------------------

def save_png(path, parameters, shade=0):
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("parameters", parameters)
    pixels = np.full((64, 64, 3), 40 + shade, np.uint8)
    pixels[16:48, 16:48] = (200, 30 + shade, 30)
    Image.fromarray(pixels).save(path, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    long = "a_very_long_file_name_made_by_a_comfyui_batch_run_with_every_setting_in_it_"
    a = save_png(root / f"{long}A_00001_.png", "a red circle\nNegative prompt: blurry\nSteps: 12, Sampler: DPM++ 2M "
                 "Karras, CFG scale: 4.5, Seed: 4242, Size: 64x64, Model: sd_xl_base_1.0.safetensors")
    b = save_png(root / f"{long}B_00001_.png", "a blue square\nSteps: 9, Sampler: Euler a, Schedule type: foo, "
                 "CFG scale: 2, Seed: 77, Size: 64x64", shade=3)
    return a, b


def _inspect(page, url, pngs):
    page.goto(url)
    page.get_by_role("tab", name="Inspect").click()
    for side, path in zip("ab", pngs):
        page.set_input_files(f"#inspect-{side} input[type=file]", str(path))
        page.wait_for_function(f"() => document.querySelector('#inspect-{side}').innerText.includes('_00001_')")


def test_send_a_and_b_to_compare_fill_the_form(live_app, browser, pngs):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _inspect(page, live_app.url, pngs)
    page.click("#send-a-to-compare")
    # The Compare tab is shown, its form a custom pair of the mapped config.
    expect(page.locator("#sent-from-inspect")).to_contain_text("Sent from Inspect", timeout=60_000)
    expect(page.locator("#seed input, #seed textarea").first).to_have_value("4242")
    expect(page.locator("#pairing input")).to_have_value("custom")
    sent = page.inner_text("#sent-from-inspect")
    assert "model sd_xl_base_1.0.safetensors (this tool has: embedded" in sent
    assert "negative prompt 'blurry'" in sent and "dpmpp_2m, karras, 12 steps, guidance 4.5, convention a1111" in sent
    for panel in ("a", "b"):
        expect(page.locator(f"#custom-{panel}-steps input, #custom-{panel}-steps textarea").first).to_have_value("12")
        expect(page.locator(f"#custom-{panel}-guidance-scale input, #custom-{panel}-guidance-scale textarea").first
               ).to_have_value("4.5")
        assert page.locator(f"#custom-{panel}-sampler input").input_value().startswith("dpmpp_2m · ")
        assert page.locator(f"#custom-{panel}-schedule input").input_value().startswith("karras · ")
        assert page.locator(f"#custom-{panel}-convention input").input_value().startswith("a1111 — ")  # A1111's file
    assert page.locator("#prompt input").input_value() == "a red circle"
    # B: a scheduler this tool does not have is named, the rest carried over.
    page.get_by_role("tab", name="Inspect").click()
    page.click("#send-b-to-compare")
    expect(page.locator("#sent-from-inspect")).to_contain_text("B · ", timeout=60_000)
    expect(page.locator("#seed input, #seed textarea").first).to_have_value("77")
    assert "scheduler 'foo'" in page.inner_text("#sent-from-inspect")
    assert page.locator("#custom-a-sampler input").input_value().startswith("euler_ancestral · ")
    assert page.locator("#prompt input").input_value() == "a blue square"
    # Both files remade as one pair: B's scheduler is not one this tool runs, so the tab refuses it, named.
    page.get_by_role("tab", name="Inspect").click()
    page.click("#remake-pair-in-compare")
    expect(page.locator("#inspect-error")).to_contain_text("image B: cannot remake it here: scheduler 'foo'",
                                                           timeout=60_000)
    page.close()


def test_sampler_menu_shows_the_sampler_name(live_app, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(live_app.url)
    field = page.locator("#sampler input")
    field.wait_for()
    assert field.input_value().startswith("heun · ")
    # The field shows the longest sampler name whole (the rest of the label is cut at its right edge), and the
    # controls stay on one row at 1280 px.
    from sampler_lib import SAMPLERS
    longest = max(SAMPLERS, key=len)
    shown, needed = page.evaluate("""(name) => {
        const input = document.querySelector('#sampler input');
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = getComputedStyle(input).font;
        return [input.clientWidth, ctx.measureText(name).width]; }""", longest)
    assert shown >= needed, (longest, shown, needed)
    tops = {round(page.locator(f"#{i}").bounding_box()["y"]) for i in ("prompt", "seed", "model", "pairing",
                                                                         "steps", "sampler", "guidance")}
    assert len(tops) == 1, tops
    page.close()


def test_phone_inspect_names_wrap_and_hints_are_for_touch(live_app, browser, pngs):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                              device_scale_factor=2)
    page = ctx.new_page()
    _inspect(page, live_app.url, pngs)
    page.click("#inspect-run")
    page.wait_for_selector("#inspect-pair img.zoom-img", timeout=60_000)
    captions = page.locator("#inspect-pair figcaption")
    boxes = [captions.nth(i).bounding_box() for i in range(captions.count())]
    assert len(boxes) == 2
    left, right = sorted(boxes, key=lambda b: b["x"])
    overlap = left["x"] + left["width"] > right["x"] and left["y"] < right["y"] + right["height"] \
        and right["y"] < left["y"] + left["height"]
    assert not overlap, boxes
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes), boxes
    # Touch hints shown, pointer hints (hover, wheel) not.
    touch = page.locator("#inspect-touch-hint")
    assert touch.is_visible() and "pinch" in touch.inner_text()
    for hint in page.locator("#inspect-stage .key-hint").all():
        assert not hint.is_visible()
    # Two fingers spread to twice their distance: both images zoom ×2 together (static/viewer.js).
    before = float(page.evaluate("() => document.querySelector('#inspect-pair-left-box').dataset.px"))
    page.evaluate("""() => {
        const box = document.querySelector('#inspect-pair-left-box'), r = box.getBoundingClientRect();
        const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
        const fire = (type, id, x) => box.dispatchEvent(new PointerEvent(type, {pointerId: id, pointerType: 'touch',
            clientX: x, clientY: cy, bubbles: true, button: 0}));
        fire('pointerdown', 1, cx - 10); fire('pointerdown', 2, cx + 10);
        fire('pointermove', 2, cx + 30); fire('pointerup', 1, cx - 10); fire('pointerup', 2, cx + 30); }""")
    after = [float(page.evaluate(f"() => document.querySelector('#inspect-pair-{side}-box').dataset.px"))
             for side in ("left", "right")]
    assert after == [2 * before, 2 * before], (before, after)
    from tests.conftest import ARTIFACTS
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inspect-phone.png"), full_page=True)
    ctx.close()
