"""Image files as other tools write them, for the tests of inspect and of campaigns from folders or a manifest.

AUTOMATIC1111/Forge: one `parameters` tEXt chunk (modules/processing.py create_infotext: the prompt, 'Negative
prompt: …', then 'Key: value' pairs joined by ', ', a value quoted as JSON when it holds ',', ':' or a line break).
ComfyUI: SaveImage writes `prompt` (the API graph that ran) and `workflow` (the editor's graph) as tEXt chunks.
"""
import json

import numpy as np
from PIL import Image, PngImagePlugin


def picture(size, seed, shift=0):
    """A smooth, deterministic RGB image (gradients, a disc and fine texture); `shift` moves the disc by whole pixels
    and tints it, so two pictures differ visibly but not everywhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x * 200 + 30, y * 180 + 40, (1 - x) * 150 + 60], -1)
    cx, cy, r = 0.5 + shift / size, 0.45, 0.22
    disc = (x - cx) ** 2 + (y - cy) ** 2 < r * r
    img[disc] = [220 - 3 * shift, 90 + 2 * shift, 60]
    img += rng.normal(0, 2.0, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def a1111_infotext(prompt="a lighthouse at dusk, oil painting", negative="blurry, lowres", steps=20,
                   sampler="DPM++ 2M", scheduler="Karras", cfg=7, seed=1234, size=512, model="sd_xl_base_1.0"):
    params = {"Steps": steps, "Sampler": sampler, "Schedule type": scheduler, "CFG scale": cfg, "Seed": seed,
              "Size": f"{size}x{size}", "Model hash": "31e35c80fc", "Model": model,
              "Lora hashes": json.dumps("add_detail: 7c6bad76eb54, film: 0d9bd1b873"), "Version": "v1.10.1"}
    line = ", ".join(f"{k}: {v}" for k, v in params.items())
    return f"{prompt}\nNegative prompt: {negative}\n{line}"


def comfyui_graph(prompt="a lighthouse at dusk, oil painting", negative="blurry, lowres", steps=20,
                  sampler="euler", scheduler="karras", cfg=8.0, seed=156680208700286, size=512,
                  ckpt="sd_xl_base_1.0.safetensors", denoise=1.0):
    """ComfyUI's default graph in API form (the `prompt` chunk), node ids as ComfyUI numbers them."""
    return {
        "3": {"inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
                         "denoise": denoise, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["5", 0]}, "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": ckpt}, "class_type": "CheckpointLoaderSimple",
              "_meta": {"title": "Load Checkpoint"}},
        "5": {"inputs": {"width": size, "height": size, "batch_size": 1}, "class_type": "EmptyLatentImage",
              "_meta": {"title": "Empty Latent Image"}},
        "6": {"inputs": {"text": prompt, "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "7": {"inputs": {"text": negative, "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
              "_meta": {"title": "VAE Decode"}},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage",
              "_meta": {"title": "Save Image"}},
    }


def comfyui_workflow(graph):
    """The editor's graph (the `workflow` chunk), enough of its shape: nodes with widgets_values, links."""
    ks = graph["3"]["inputs"]
    return {"last_node_id": 9, "last_link_id": 9, "version": 0.4, "links": [[1, 4, 0, 3, 0, "MODEL"]],
            "nodes": [{"id": 3, "type": "KSampler", "pos": [863, 186], "size": [315, 262], "mode": 0,
                       "widgets_values": [ks["seed"], "fixed", ks["steps"], ks["cfg"], ks["sampler_name"],
                                          ks["scheduler"], ks["denoise"]]}]}


def save_a1111(path, image, **params):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_infotext(size=image.width, **params))
    image.save(path, format="PNG", pnginfo=info)
    return path


def save_comfyui(path, image, **params):
    graph = comfyui_graph(size=image.width, **params)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps(comfyui_workflow(graph)))
    image.save(path, format="PNG", pnginfo=info)
    return path
