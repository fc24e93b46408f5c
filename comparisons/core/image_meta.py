"""What an image made elsewhere says about itself: AUTOMATIC1111/Forge infotext, ComfyUI's prompt graph, or this
tool's own text chunks, read into one set of field names. Nothing is guessed: text that cannot be parsed is kept
raw (clipped) and said so."""
import json
import re

# One vocabulary over the three sources; a field a source does not write is absent, never filled in.
FIELDS = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg", "seed", "denoise", "size", "model",
          "model_hash")
# What varies from one sample to the next: a cell is never named by its values (it would make a cell per pair).
PER_SAMPLE = ("prompt", "negative_prompt", "seed")
RAW_LIMIT = 4000  # characters of unparsed text kept per key in the results file (the stored image keeps it whole)
# A1111's own pattern for "Key: value" pairs of the last line (modules/infotext_utils.py), values quoted as JSON
# strings when they hold a comma, a colon or a line break.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_A1111 = {"Steps": "steps", "Sampler": "sampler", "Schedule type": "scheduler", "CFG scale": "cfg", "Seed": "seed",
          "Denoising strength": "denoise", "Size": "size", "Model": "model", "Model hash": "model_hash"}
_OURS = ("model", "prompt", "seed", "pairing", "config")  # the text chunks workflows.lab writes into every PNG
_OUR_CONFIG = {"sampler": "sampler", "schedule": "scheduler", "steps": "steps", "guidance_scale": "cfg"}
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")


def metadata(text):
    """{format, fields, raw, note} from an image's text chunks (`text`: key -> str). format is 'a1111', 'comfyui',
    'ab-lab', 'none' (no generation text) or 'unparsed' (text kept raw, `note` says why)."""
    text = {str(k): v if isinstance(v, str) else str(v) for k, v in (text or {}).items()}
    try:
        if "parameters" in text:
            return _result("a1111", parse_a1111(text["parameters"]))
        if "prompt" in text and text["prompt"].lstrip().startswith("{"):
            return _result("comfyui", parse_comfyui(text["prompt"]))
        if "config" in text and "pairing" in text:
            return _result("ab-lab", parse_ours(text))
    except ValueError as exc:
        keys = [k for k in ("parameters", "prompt", "workflow", "config") if k in text]
        return {"format": "unparsed", "fields": {}, "raw": _raw(text, keys), "note": f"kept raw: {exc}"}
    if "workflow" in text:
        return {"format": "unparsed", "fields": {}, "raw": _raw(text, ["workflow"]),
                "note": "kept raw: a ComfyUI workflow without its prompt graph (the graph names the values run)"}
    return {"format": "none", "fields": {}, "raw": {}, "note": "no generation parameters in the file"}


def _result(fmt, fields):
    """Parsed fields, each text clipped like raw text (a value stays readable; the stored image keeps it whole)."""
    clipped = {k: v[:RAW_LIMIT] + f"… ({len(v)} characters)" if isinstance(v, str) and len(v) > RAW_LIMIT else v
               for k, v in fields.items()}
    return {"format": fmt, "fields": clipped, "raw": {}, "note": ""}


def _raw(text, keys):
    return {k: text[k] if len(text[k]) <= RAW_LIMIT else text[k][:RAW_LIMIT] + f"… ({len(text[k])} characters)"
            for k in keys}


def parse_a1111(infotext):
    """AUTOMATIC1111/Forge `parameters`: the prompt, 'Negative prompt: …', then one line of 'Key: value, …'.
    Read as A1111's own parse_generation_parameters reads it (the last line counts as parameters when at least
    three pairs match); keys outside FIELDS are kept under their own names."""
    *lines, last = infotext.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        raise ValueError("an A1111 'parameters' text without its 'Steps: …, Sampler: …' line")
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    fields = {"prompt": "\n".join(prompt)}
    if in_negative:
        fields["negative_prompt"] = "\n".join(negative)
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"the quoted value of {key!r} is not a JSON string") from None
        name = _A1111.get(key.strip(), key.strip())
        fields[name] = _number(value) if name in ("steps", "cfg", "seed", "denoise") else value
    return fields


def parse_comfyui(prompt_json):
    """ComfyUI's `prompt` chunk (the API graph that ran): each sampler node's sampler, scheduler, steps, cfg, seed
    and denoise, followed through its links (KSamplerSelect, BasicScheduler, RandomNoise, CFGGuider), with the
    positive and negative text, the checkpoint and the latent size. With several sampler nodes each field is
    named by its node ('#10 steps'): which one made the image is not recorded, so none is picked."""
    try:
        graph = json.loads(prompt_json)
    except (ValueError, RecursionError):
        raise ValueError("ComfyUI's 'prompt' text is not JSON") from None
    if not isinstance(graph, dict) or not all(isinstance(n, dict) for n in graph.values()):
        raise ValueError("ComfyUI's 'prompt' JSON is not a graph of nodes")
    nodes = sorted((k for k, n in graph.items() if n.get("class_type") in _SAMPLER_NODES),
                   key=lambda k: (len(k), k))
    if not nodes:
        raise ValueError("ComfyUI's graph has no KSampler or SamplerCustom node")
    per_node = [_comfy_sampler(graph, graph[k]) for k in nodes]
    if len(per_node) == 1:
        return per_node[0]
    return {f"#{k} {name}": value for k, fields in zip(nodes, per_node) for name, value in fields.items()}


def _comfy_sampler(graph, node):
    inputs = node.get("inputs") or {}
    value = lambda src, *names: next((_follow(graph, src, n) for n in names if n in src), None)  # noqa: E731
    fields = {"sampler": value(inputs, "sampler_name"), "scheduler": value(inputs, "scheduler"),
              "steps": value(inputs, "steps"), "cfg": value(inputs, "cfg"),
              "seed": value(inputs, "seed", "noise_seed"), "denoise": value(inputs, "denoise")}
    for link, names in (("sampler", ("sampler_name",)), ("sigmas", ("scheduler", "steps", "denoise")),
                        ("noise", ("noise_seed",)), ("guider", ("cfg",))):
        src = _node(graph, inputs.get(link))
        if src is not None:
            for name in names:
                key = {"sampler_name": "sampler", "noise_seed": "seed"}.get(name, name)
                if fields.get(key) is None and name in (src.get("inputs") or {}):
                    fields[key] = _follow(graph, src["inputs"], name)
    if fields["scheduler"] is None and inputs.get("sigmas") is not None:
        src = _node(graph, inputs["sigmas"])
        if src is not None:
            fields["scheduler"] = src.get("class_type")  # KarrasScheduler, AlignYourStepsScheduler, …
    guider = _node(graph, inputs.get("guider")) or node
    for side, key in (("positive", "prompt"), ("negative", "negative_prompt")):
        fields[key] = _text_of(graph, (guider.get("inputs") or {}).get(side))
    model = _upstream(graph, (guider.get("inputs") or {}).get("model"), ("ckpt_name", "unet_name"))
    latent = _upstream(graph, inputs.get("latent_image"), ("width",))
    fields["model"] = model
    if latent is not None:
        src = _upstream_node(graph, inputs.get("latent_image"), ("width",))
        fields["size"] = f"{src['inputs']['width']}x{src['inputs'].get('height')}"
    return {k: _number(v) if k in ("steps", "cfg", "seed", "denoise") else v
            for k, v in fields.items() if v is not None}


def _node(graph, link):
    """The node a link [node id, output] points at, or None for a literal value."""
    if isinstance(link, list) and len(link) == 2 and str(link[0]) in graph:
        return graph[str(link[0])]
    return None


def _follow(graph, inputs, name, depth=0):
    """An input's value, through a primitive node's link (ComfyUI's 'convert widget to input')."""
    value = inputs.get(name)
    src = _node(graph, value)
    if src is None or depth > 4:
        return None if src is not None else value
    src_inputs = src.get("inputs") or {}
    for key in (name, "value", "seed", "int", "float", "string", "text"):
        if key in src_inputs:
            return _follow(graph, src_inputs, key, depth + 1)
    return None


def _text_of(graph, link, depth=0):
    """The prompt text behind a conditioning link (CLIPTextEncode's text, CLIPTextEncodeSDXL's text_g)."""
    src = _node(graph, link)
    if src is None or depth > 6:
        return None
    inputs = src.get("inputs") or {}
    for key in ("text", "text_g", "prompt"):
        if key in inputs:
            text = _follow(graph, inputs, key)
            if isinstance(text, str):
                return text
    for key in ("conditioning", "conditioning_1", "positive"):  # through a conditioning combine or a ControlNet
        if key in inputs:
            return _text_of(graph, inputs[key], depth + 1)
    return None


def _upstream_node(graph, link, keys, depth=0):
    src = _node(graph, link)
    if src is None or depth > 8:
        return None
    inputs = src.get("inputs") or {}
    if any(k in inputs for k in keys):
        return src
    for key in ("model", "samples", "latent", "latent_image"):  # through LoRA loaders, samplers, upscales
        if key in inputs:
            return _upstream_node(graph, inputs[key], keys, depth + 1)
    return None


def _upstream(graph, link, keys):
    src = _upstream_node(graph, link, keys)
    if src is None:
        return None
    return next(src["inputs"][k] for k in keys if k in src["inputs"])


def parse_ours(text):
    """This tool's own chunks (workflows.lab): model, prompt, seed, pairing and the arm's SamplerConfig JSON."""
    try:
        config = json.loads(text["config"])
    except ValueError:
        raise ValueError("this tool's 'config' text is not JSON") from None
    if not isinstance(config, dict):
        raise ValueError("this tool's 'config' text is not a JSON object")
    fields = {"prompt": text.get("prompt", ""), "seed": _number(text.get("seed")), "model": text.get("model"),
              "pairing": text.get("pairing")}
    fields.update({ours: config[k] for k, ours in _OUR_CONFIG.items() if k in config})
    fields.update({k: v for k, v in config.items() if k not in _OUR_CONFIG})
    return {k: v for k, v in fields.items() if v is not None}


def _number(value):
    """'20' -> 20, '7.5' -> 7.5; anything else as it was written (never a guessed number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def differing(a, b, skip=PER_SAMPLE):
    """The fields whose values A and B state differently (a field only one states counts), in FIELDS order then
    the rest alphabetically, without the per-sample ones in `skip`."""
    keys = [k for k in FIELDS if k in a or k in b] + sorted((set(a) | set(b)) - set(FIELDS))
    return [k for k in keys if k not in skip and a.get(k) != b.get(k)]


def cell_name(a, b, labels):
    """A campaign cell named by what its images say differs ('scheduler: karras vs beta'), or by the labels when
    they say nothing that differs; '; seed differs' is added when A's and B's seeds do."""
    diff = differing(a, b)
    name = "; ".join(f"{k}: {_short(a.get(k))} vs {_short(b.get(k))}" for k in diff) or f"{labels[0]} vs {labels[1]}"
    extra = [k for k in ("seed", "prompt") if k in a and k in b and a[k] != b[k]]
    return name + "".join(f"; {k} differs" for k in extra)


def _short(value):
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 40 else text[:39] + "…"
