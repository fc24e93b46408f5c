"""Workflows read as ComfyUI ran them (core.image_meta): each graph shape below written from ComfyUI's node
definitions (nodes.py, comfy_extras/nodes_custom_sampler.py, nodes_flux.py, nodes_cond.py, nodes_mask.py), its
passes and flat fields asserted exactly; A1111's hires fix and refiner as passes; the A1111 parser linear; the
metadata table and the `differs:` line showing passes, lists and text as they are."""
import json
import re
import time

import pytest

from comparisons.core.image_meta import (
    PASS_FIELDS,
    PER_SAMPLE,
    a1111_pairs,
    cell_name,
    differing,
    metadata,
    parse_a1111,
    value_text,
)
from comparisons.workflows.inspect_pair import metadata_lines
from comparisons.workflows.pair_view import metadata_table

POS, NEG = "a lighthouse at dusk, oil painting", "blurry, lowres"


def ckpt(name="sd_xl_base_1.0.safetensors"):
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}


def enc(text, clip=("4", 1)):
    return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": list(clip)}}


def empty(w=1024, h=1024, cls="EmptyLatentImage"):
    return {"class_type": cls, "inputs": {"width": w, "height": h, "batch_size": 1}}


def ksampler(positive=("6", 0), negative=("7", 0), latent=("5", 0), model=("4", 0), seed=42, steps=20, cfg=7.0,
             sampler="euler", scheduler="normal", denoise=1.0):
    return {"class_type": "KSampler", "inputs": {
        "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": denoise,
        "model": list(model), "positive": list(positive), "negative": list(negative), "latent_image": list(latent)}}


def default(**kw):
    return {"3": ksampler(**kw), "4": ckpt(), "5": empty(), "6": enc(POS), "7": enc(NEG),
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}}}


def meta(graph):
    return metadata({"prompt": json.dumps(graph)})


PLAIN = {"node": "3", "kind": "KSampler", "prompt": POS, "negative_prompt": NEG, "cfg": 7.0,
         "model": "sd_xl_base_1.0.safetensors", "sampler": "euler", "scheduler": "normal", "steps": 20, "seed": 42,
         "denoise": 1.0, "size": "1024x1024"}
PLAIN_FIELDS = {k: v for k, v in PLAIN.items() if k not in ("node", "kind")}


def test_a_plain_ksampler_is_one_pass_and_its_fields():
    m = meta(default())
    assert m["format"] == "comfyui" and m["note"] == "" and m["raw"] == {}
    assert m["passes"] == [PLAIN] and m["fields"] == PLAIN_FIELDS
    assert set(m) == {"format", "fields", "passes", "raw", "note"}
    assert all(set(p) <= set(PASS_FIELDS) for p in m["passes"])


def test_controlnet_apply_advanced_keeps_positive_and_negative_apart():
    g = default(positive=("13", 0), negative=("13", 1))
    cn = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["12", 0], "strength": 1.0,
        "start_percent": 0.0, "end_percent": 1.0}}
    g.update({"10": cn, "13": {**cn, "inputs": {**cn["inputs"], "positive": ["10", 0], "negative": ["10", 1]}},
              "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
              "12": {"class_type": "LoadImage", "inputs": {"image": "pose.png"}}})
    m = meta(g)
    assert m["passes"] == [PLAIN] and m["fields"]["prompt"] == POS and m["fields"]["negative_prompt"] == NEG
    # The single-input ControlNetApply passes its conditioning on.
    g["14"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["6", 0], "control_net": ["11", 0],
                                                            "image": ["12", 0], "strength": 0.8}}
    g["3"]["inputs"].update(positive=["14", 0], negative=["7", 0])
    assert meta(g)["passes"] == [PLAIN]


def test_inpaint_model_conditioning_passes_each_side_and_its_latent():
    g = default(positive=("20", 0), negative=("20", 1), latent=("20", 2))
    g["20"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["12", 0], "mask": ["12", 1],
        "noise_mask": True}}
    g["12"] = {"class_type": "LoadImage", "inputs": {"image": "room.png"}}
    del g["5"]
    m = meta(g)
    # The latent comes from a loaded image: its size is not in the graph, so it is not stated.
    assert m["passes"] == [{k: v for k, v in PLAIN.items() if k != "size"}]


def test_a_zeroed_negative_reads_zeroed():
    g = default(negative=("30", 0))
    g["30"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
    m = meta(g)
    assert m["passes"][0]["prompt"] == POS and m["passes"][0]["negative_prompt"] == "(zeroed)"
    assert m["fields"]["negative_prompt"] == "(zeroed)"


def area_graph(order, wiring="chain"):
    """Area composition: five prompts, each in its own ConditioningSetArea, combined into the positive."""
    texts = ["night sky", "a castle", "a lake", "a forest", "mountains"]
    g = default(positive=("50", 0))
    for k, text in enumerate(texts):
        g[str(20 + k)] = enc(text)
        g[str(30 + k)] = {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": [str(20 + k), 0], "width": 512, "height": 512, "x": 128 * k, "y": 0, "strength": 1.0}}
    areas = [["30", 0]] + [[str(30 + k), 0] for k in order]
    if wiring == "chain":
        node = 40
        g[str(node)] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": areas[0],
                                                                         "conditioning_2": areas[1]}}
        for area in areas[2:]:
            g[str(node + 1)] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [str(node), 0],
                                                                                 "conditioning_2": area}}
            node += 1
    else:  # a tree, the other way round
        g["40"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": areas[4],
                                                                    "conditioning_2": areas[3]}}
        g["41"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": areas[2],
                                                                    "conditioning_2": areas[1]}}
        g["42"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["40", 0],
                                                                    "conditioning_2": ["41", 0]}}
        g["43"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["42", 0],
                                                                    "conditioning_2": areas[0]}}
        node = 43
    g["50"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": [str(node), 0],
                                                                         "start": 0.0, "end": 1.0}}
    return g


def test_area_composition_is_the_list_of_its_prompts_and_two_alike_do_not_differ():
    a, b = meta(area_graph([1, 2, 3, 4])), meta(area_graph([4, 3, 2, 1], wiring="tree"))
    combined = ["a castle", "a forest", "a lake", "mountains", "night sky"]
    assert a["passes"][0]["prompt"] == combined and a["fields"]["prompt"] == combined
    assert b["fields"] == a["fields"] and b["passes"] == a["passes"]
    assert differing(a, b, skip=()) == [] and differing(a["fields"], b["fields"], skip=()) == []
    # ConditioningConcat and ConditioningAverage: both texts too.
    g = default(positive=("60", 0))
    g["60"] = {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["6", 0],
                                                               "conditioning_from": ["61", 0]}}
    g["61"] = {"class_type": "ConditioningAverage", "inputs": {"conditioning_to": ["62", 0],
                                                                "conditioning_from": ["63", 0],
                                                                "conditioning_to_strength": 0.5}}
    g["62"], g["63"] = enc("b"), enc("a")
    assert meta(g)["fields"]["prompt"] == ["a", POS, "b"]


def sdxl_refiner(base_steps_end=20, refiner_noise="disable"):
    """SDXL base + refiner: two KSamplerAdvanced on one 25-step schedule; the refiner (node 9, a lower id) takes
    the base's latent with its leftover noise and adds none."""
    return {
        "4": ckpt(), "12": ckpt("sd_xl_refiner_1.0.safetensors"), "5": empty(), "6": enc(POS), "7": enc(NEG),
        "15": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 6.0, "width": 1024, "height": 1024,
                                                                       "text": POS, "clip": ["12", 1]}},
        "16": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 2.5, "width": 1024, "height": 1024,
                                                                       "text": NEG, "clip": ["12", 1]}},
        "10": {"class_type": "KSamplerAdvanced", "inputs": {
            "add_noise": "enable", "noise_seed": 721897303308196, "steps": 25, "cfg": 8.0, "sampler_name": "euler",
            "scheduler": "normal", "start_at_step": 0, "end_at_step": base_steps_end,
            "return_with_leftover_noise": "enable", "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "9": {"class_type": "KSamplerAdvanced", "inputs": {
            "add_noise": refiner_noise, "noise_seed": 0, "steps": 25, "cfg": 8.0, "sampler_name": "euler",
            "scheduler": "normal", "start_at_step": base_steps_end, "end_at_step": 10000,
            "return_with_leftover_noise": "disable", "model": ["12", 0], "positive": ["15", 0],
            "negative": ["16", 0], "latent_image": ["10", 0]}},
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["12", 2]}}}


def test_sdxl_base_and_refiner_are_two_passes_of_one_schedule():
    m = meta(sdxl_refiner())
    common = {"prompt": POS, "negative_prompt": NEG, "cfg": 8.0, "sampler": "euler", "scheduler": "normal",
              "steps": 25, "size": "1024x1024"}
    assert m["passes"] == [
        {"node": "10", "kind": "KSamplerAdvanced", **common, "model": "sd_xl_base_1.0.safetensors", "start_step": 0,
         "end_step": 20, "steps_run": 20, "add_noise": True, "seed": 721897303308196},
        {"node": "9", "kind": "KSamplerAdvanced", **common, "model": "sd_xl_refiner_1.0.safetensors",
         "start_step": 20, "end_step": 25, "steps_run": 5, "add_noise": False}]
    assert m["fields"] == {"prompt": POS, "negative_prompt": NEG, "sampler": "euler", "scheduler": "normal",
                           "cfg": 8.0, "steps": 25, "seed": 721897303308196, "size": "1024x1024",
                           "model": "sd_xl_base_1.0.safetensors + sd_xl_refiner_1.0.safetensors"}
    # Another switch point: the flat fields agree, the passes tell them apart (per-sample seed never counted).
    other = meta(sdxl_refiner(base_steps_end=15))
    assert other["fields"] == m["fields"]
    assert differing(m, other) == ["pass 1 end_step", "pass 1 steps_run", "pass 2 start_step", "pass 2 steps_run"]
    assert cell_name(m, other, ("x", "y")).startswith("pass 1 end_step: 20 vs 15; pass 1 steps_run: 20 vs 15")
    assert differing(m["fields"], other["fields"]) == []
    assert all(not re.match(rf"pass \d+ ({'|'.join(PER_SAMPLE)})$", k)
               for k in differing(m, meta(sdxl_refiner(refiner_noise="enable"))))


def flux(width=1024, height=1024, extra=None):
    g = {
        "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "11": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp16.safetensors",
                                                          "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "30": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["12", 0], "max_shift": 1.15, "base_shift": 0.5,
                                                             "width": width, "height": height}},
        "6": enc("a red fox in snow", clip=("11", 0)),
        "26": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3.5}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["30", 0], "conditioning": ["26", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 20, "denoise": 1.0,
                                                          "model": ["30", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 219670278747233}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["25", 0], "guider": ["22", 0],
                                                                 "sampler": ["16", 0], "sigmas": ["17", 0],
                                                                 "latent_image": ["27", 0]}}}
    g.update(extra or {})
    return g


FLUX = {"node": "13", "kind": "SamplerCustomAdvanced", "prompt": "a red fox in snow", "guidance": 3.5,
        "model": "flux1-dev.safetensors", "sampler": "euler", "scheduler": "simple", "steps": 20, "add_noise": True,
        "seed": 219670278747233, "denoise": 1.0, "size": "1024x1024"}


def test_flux_prompt_guidance_and_unet_through_the_custom_sampler():
    m = meta(flux())
    assert m["passes"] == [FLUX]
    assert m["fields"] == {"prompt": "a red fox in snow", "guidance": 3.5, "model": "flux1-dev.safetensors",
                           "sampler": "euler", "scheduler": "simple", "steps": 20, "seed": 219670278747233,
                           "denoise": 1.0, "size": "1024x1024"}
    # CLIPTextEncodeFlux states both texts and its guidance; a FluxGuidance after it wins (it is applied last).
    g = flux(extra={"6": {"class_type": "CLIPTextEncodeFlux", "inputs": {
        "clip": ["11", 0], "clip_l": "fox", "t5xxl": "a red fox in snow", "guidance": 2.0}}})
    assert meta(g)["passes"][0]["prompt"] == "clip_l: fox\nt5xxl: a red fox in snow"
    assert meta(g)["passes"][0]["guidance"] == 3.5
    g["22"]["inputs"]["conditioning"] = ["6", 0]
    assert meta(g)["passes"][0]["guidance"] == 2.0
    # DisableNoise: no noise added, so no seed stated; a Karras schedule split: the steps the pass keeps.
    g = flux(extra={"25": {"class_type": "DisableNoise", "inputs": {}},
                    "17": {"class_type": "KarrasScheduler", "inputs": {"steps": 30, "sigma_max": 14.6,
                                                                       "sigma_min": 0.03, "rho": 7.0}},
                    "18": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["17", 0], "step": 12}}})
    g["13"]["inputs"]["sigmas"] = ["18", 1]
    p = meta(g)["passes"][0]
    assert (p["add_noise"], "seed" in p, p["scheduler"], p["steps"], p["start_step"], p["end_step"],
            p["steps_run"]) == (False, False, "KarrasScheduler", 30, 12, 30, 18)


def test_dual_cfg_guider_states_both_prompts_and_both_scales():
    g = flux(extra={
        "7": enc("watercolour", clip=("11", 0)), "8": enc("ugly", clip=("11", 0)),
        "22": {"class_type": "DualCFGGuider", "inputs": {
            "model": ["30", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["8", 0], "cfg_conds": 5.0,
            "cfg_cond2_negative": 2.5, "style": "regular"}}})
    p = meta(g)["passes"][0]
    assert p["prompt"] == ["a red fox in snow", "watercolour"] and p["negative_prompt"] == "ugly"
    assert p["cfg"] == "5.0 (conds), 2.5 (cond2 vs negative)" and "guidance" not in p


def test_sizes_through_primitives_and_math_resolve_and_the_rest_say_unresolved():
    g = flux(width=["40", 0], height=["41", 0], extra={
        "40": {"class_type": "PrimitiveInt", "inputs": {"value": 768}},
        "42": {"class_type": "PrimitiveInt", "inputs": {"value": 640}},
        "41": {"class_type": "SimpleMath+", "inputs": {"value": "a * 2", "a": ["42", 0]}}})
    assert meta(g)["passes"][0]["size"] == "768x1280"
    g = flux(width=["32", 0], height=["32", 1], extra={
        "31": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "32": {"class_type": "GetImageSize", "inputs": {"image": ["31", 0]}}})
    m = meta(g)
    assert m["passes"][0]["size"] == "unresolved (from node #32)" == m["fields"]["size"]
    page = metadata_table({"A": {"file": "a.png", **m}, "B": {"file": "b.png", **meta(flux())}})
    assert "unresolved (from node #32)" in page and "[&#x27;32&#x27;" not in page and "['32'" not in page
    # A hostile expression is never run as code.
    g = flux(width=["41", 0], extra={"41": {"class_type": "SimpleMath+", "inputs": {"value": "__import__('os')"}}})
    assert meta(g)["passes"][0]["size"] == "unresolved (from node #41)"


def test_independent_passes_run_in_numeric_node_order_and_numbers_read_as_entered():
    g = default(cfg=4.0200000000000005)
    g["24"] = ksampler(seed=7, steps=30, cfg=4.0200000000000005, sampler="dpmpp_2m")
    m = meta(g)
    assert [p["node"] for p in m["passes"]] == ["3", "24"]
    assert m["passes"][0]["cfg"] == 4.02 and m["fields"]["cfg"] == 4.02
    assert "4.0200000000000005" not in json.dumps(m)
    # fields: the last pass's sampler and steps, the first seed
    assert (m["fields"]["sampler"], m["fields"]["steps"], m["fields"]["seed"]) == ("dpmpp_2m", 30, 42)
    # A pass that decodes another's image and encodes it again (a hires fix in pixels) runs after it.
    g = default()
    g["2"] = ksampler(latent=("21", 0), denoise=0.5, steps=15)
    g["20"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["8", 0], "upscale_method": "lanczos",
                                                        "scale_by": 1.5}}
    g["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}}
    m = meta(g)
    assert [p["node"] for p in m["passes"]] == ["3", "2"] and m["passes"][1]["size"] == "1536x1536"
    assert (m["fields"]["steps"], m["fields"]["denoise"], m["fields"]["size"]) == (15, 0.5, "1536x1536")


def ui_workflow():
    """The editor's graph (the `workflow` chunk) of the default graph: widgets_values, links, a Reroute on the
    positive, the seed from a primitive node, and a muted second KSampler that does not run."""
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 6, 0, 11, 0, "CONDITIONING"], [3, 11, 0, 3, 1, "CONDITIONING"],
             [4, 7, 0, 3, 2, "CONDITIONING"], [5, 5, 0, 3, 3, "LATENT"], [6, 4, 1, 6, 0, "CLIP"],
             [7, 4, 1, 7, 0, "CLIP"], [8, 10, 0, 3, 4, "INT"], [9, 3, 0, 12, 3, "LATENT"]]
    node = lambda i, t, widgets, inputs=(), mode=0: {  # noqa: E731
        "id": i, "type": t, "mode": mode, "widgets_values": widgets,
        "inputs": [{"name": n, "type": ty, "link": ln} for n, ty, ln in inputs]}
    return {"last_node_id": 12, "last_link_id": 9, "version": 0.4, "links": links, "nodes": [
        node(3, "KSampler", [5, "fixed", 20, 7.0, "euler", "normal", 1.0],
             [("model", "MODEL", 1), ("positive", "CONDITIONING", 3), ("negative", "CONDITIONING", 4),
              ("latent_image", "LATENT", 5), ("seed", "INT", 8)]),
        node(4, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"]),
        node(5, "EmptyLatentImage", [1024, 1024, 1]),
        node(6, "CLIPTextEncode", [POS], [("clip", "CLIP", 6)]),
        node(7, "CLIPTextEncode", [NEG], [("clip", "CLIP", 7)]),
        node(10, "PrimitiveNode", [42, "fixed"]),
        node(11, "Reroute", None, [("", "*", 2)]),
        node(12, "KSampler", [1, "fixed", 99, 7.0, "euler", "normal", 1.0], [("latent_image", "LATENT", 9)], mode=2)]}


def test_a_file_with_only_the_editors_workflow_is_read_from_it():
    m = metadata({"workflow": json.dumps(ui_workflow())})
    assert m["format"] == "comfyui" and m["passes"] == [PLAIN] and m["fields"] == PLAIN_FIELDS
    assert "editor's workflow" in m["note"]
    # With the prompt graph present, the graph is what ran and is read.
    both = metadata({"prompt": json.dumps(default(seed=9)), "workflow": json.dumps(ui_workflow())})
    assert both["fields"]["seed"] == 9 and both["note"] == ""


HIRES = ("a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, "
         "Size: 512x768, Model hash: 31e35c80fc, Model: sd15, Denoising strength: 0.45, Hires upscale: 2, "
         "Hires steps: 10, Hires upscaler: Latent")
REFINER = ("a cat\nNegative prompt: dog\nSteps: 25, Sampler: Euler, Schedule type: Automatic, CFG scale: 4.5, "
           "Seed: 5, Size: 1024x1024, Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0 [7440042bbd], "
           "Refiner switch at: 0.8, Version: v1.10.1")


def test_a1111_hires_fix_is_a_second_pass():
    m = metadata({"parameters": HIRES})
    common = {"node": "", "prompt": "a cat", "negative_prompt": "dog", "cfg": 7, "model": "sd15",
              "sampler": "DPM++ 2M", "scheduler": "Karras", "seed": 5}
    assert m["passes"] == [{**common, "kind": "base", "steps": 20, "size": "512x768"},
                           {**common, "kind": "hires fix", "steps": 10, "denoise": 0.45, "size": "1024x1536"}]
    f = m["fields"]
    assert (f["steps"], f["size"], f["denoise"], f["seed"], f["model"], f["model_hash"]) == \
        (10, "1024x1536", 0.45, 5, "sd15", "31e35c80fc")
    assert f["Hires upscaler"] == "Latent" and parse_a1111(HIRES)["steps"] == 20


def test_a1111_refiner_runs_the_rest_of_the_steps():
    m = metadata({"parameters": REFINER})
    common = {"node": "", "prompt": "a cat", "negative_prompt": "dog", "cfg": 4.5, "sampler": "Euler",
              "scheduler": "Automatic", "steps": 25}
    assert m["passes"] == [
        {**common, "kind": "base", "model": "sd_xl_base_1.0", "start_step": 0, "end_step": 20, "steps_run": 20,
         "seed": 5, "size": "1024x1024"},
        {**common, "kind": "refiner", "model": "sd_xl_refiner_1.0 [7440042bbd]", "start_step": 20, "end_step": 25,
         "steps_run": 5}]
    assert m["fields"]["steps"] == 25 and m["fields"]["model"] == "sd_xl_base_1.0 + sd_xl_refiner_1.0 [7440042bbd]"
    assert m["fields"]["Version"] == "v1.10.1"


def test_the_a1111_parser_is_linear_and_long_texts_are_not_parsed():
    def timed(text, repeat):
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            with pytest.raises(ValueError):
                parse_a1111(text)
            best = min(best, time.perf_counter() - t)
        return best

    def hostile(n):  # runs of word characters and spaces without a colon: the old pattern's quadratic case
        return ("a prompt\n" + "lorem ipsum dolor sit amet " * (n // 27 + 1))[:n]

    small, big = timed(hostile(16 << 10), 5), timed(hostile(1 << 20), 2)
    # 64 times the text: linear is ~64x (the old pattern took ~4096x: 2.8 s at 16k, hours at 1 MiB).
    assert big < max(small, 1e-4) * 64 * 8
    # Many pairs, many quotes that do not close a value: still linear (calibrated on 16k of the same).
    def pairs_time(n, repeat):
        line, best = 'ab: "x, ' * (n // 8), float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            assert len(a1111_pairs(line)) == n // 8
            best = min(best, time.perf_counter() - t)
        return best

    assert pairs_time(1 << 20, 1) < max(pairs_time(16 << 10, 5), 1e-4) * 64 * 8
    # Beyond PARSE_LIMIT the text is kept raw, clipped, and the note says why.
    m = metadata({"parameters": "x" * (1 << 20)})
    assert m["format"] == "unparsed" and m["fields"] == {} and m["passes"] == []
    assert "1048576 characters, more than the 65536 read" in m["note"]
    assert m["raw"]["parameters"].endswith("(1048576 characters)") and len(m["raw"]["parameters"]) < 5000


def test_the_pairs_match_a1111s_own_pattern():
    old = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
    cases = ['Steps: 20, Sampler: "a, b: c", CFG scale: 7', 'Lora hashes: "x: \\"q\\", y", Size: 1x1',
             ' a-b/c d: 1,e: "",f: "x" y, g:', 'k: "\\\\", z: 2', ':: a: b :c, dd:ee']
    for line in cases:
        assert a1111_pairs(line) == old.findall(line), line


def test_metadata_table_and_differs_line_show_passes_lists_and_plain_text():
    a = {"file": "a.png", **meta(sdxl_refiner())}
    b = {"file": "b.png", **meta(sdxl_refiner(base_steps_end=15))}
    page = metadata_table({"A": a, "B": b})
    assert "pass 1 · #10 KSamplerAdvanced · steps 0–20 of 25" in page
    assert "pass 2 · #9 KSamplerAdvanced · steps 15–25 of 25" in page
    compact = metadata_table({"A": a, "B": b}, compact=True)
    assert 'id="image-meta"' in compact and "steps_run" in compact
    # Combined prompts as list items; text escaped.
    c = {"file": "c.png", **meta(area_graph([1, 2, 3, 4]))}
    d = meta(default())
    d["passes"][0]["prompt"] = d["fields"]["prompt"] = '<a href="x">![t](http://e/x.png)\n\nnext'
    d = {"file": "d.png", **d}
    page = metadata_table({"A": c, "B": d})
    assert "<li>a castle</li>" in page and "<a href" not in page and "&lt;a href=&quot;x&quot;&gt;" in page
    lines = metadata_lines(c, d)
    differs = next(line for line in lines if line.startswith("differs: "))
    assert "\\n" not in differs and "⏎" in differs
    assert "prompt: ['a castle' | 'a forest' | 'a lake' | 'mountains' | 'night sky'] vs '<a href" in differs
    assert value_text("x\x1b[31m") == "'x\\x1b[31m'"
    lines = metadata_lines(a, b)
    assert "A pass 1 · #10 KSamplerAdvanced · steps 0–20 of 25" in lines
    assert any(line.startswith("differs: pass 1 end_step: 20 vs 15") for line in lines)


def test_a_file_that_states_very_much_stays_within_what_a_pair_keeps():
    g = default()
    for k in range(40):
        g[str(100 + k)] = ksampler(positive=(str(200 + k), 0), seed=k)
        g[str(200 + k)] = enc(f"prompt {k} " + "word " * 1000)
    m = meta(g)
    assert len(m["passes"]) == 32 and "41 sampling passes" in m["note"]
    assert len(json.dumps({"f": m["fields"], "p": m["passes"]})) <= 24 << 10
    assert [p["node"] for p in m["passes"][:3]] == ["3", "100", "101"]
