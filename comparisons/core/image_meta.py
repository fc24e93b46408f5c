"""What an image made elsewhere says about itself: AUTOMATIC1111/Forge infotext, ComfyUI's prompt graph (or, without
one, the editor's workflow), or this tool's own text chunks, read into one set of field names. Nothing is guessed:
text that cannot be parsed is kept raw (clipped) and said so.

`metadata(text)` returns {"format", "fields", "passes", "raw", "note"}:
- `passes`: the sampling passes in execution order, each a dict of the PASS_FIELDS it states (a ComfyUI sampler
  node followed through its links to its text encoders, loaders and latent; A1111's first pass, refiner and hires
  fix). A seed is stated only for a pass that adds noise; a size that cannot be resolved reads
  "unresolved (from node #N)"; a combined prompt is the sorted list of its texts.
- `fields`: one flat dict over FIELDS (and "guidance"): the last pass's sampler, scheduler, cfg, denoise and
  guidance; steps run by the last pass, summed over a schedule split across passes (20 + 5 of 25 reads 25); the
  models in pass order joined by " + " when they differ; prompt and negative prompt from the first pass stating
  them, the seed from the first pass adding noise; the output size. A1111's other keys keep their own names.
"""
import ast
import bisect
import json
import math
import operator
import re

# One vocabulary over the three sources; a field a source does not write is absent, never filled in.
FIELDS = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg", "seed", "denoise", "size", "model",
          "model_hash")
# What one sampling pass may state, in the order it is shown.
PASS_FIELDS = ("node", "kind", "prompt", "negative_prompt", "guidance", "cfg", "model", "sampler", "scheduler",
               "steps", "start_step", "end_step", "steps_run", "add_noise", "seed", "denoise", "size")
# What varies from one sample to the next: a cell is never named by its values (it would make a cell per pair).
PER_SAMPLE = ("prompt", "negative_prompt", "seed")
RAW_LIMIT = 4000  # characters of unparsed text kept per key in the results file (the stored image keeps it whole)
# Characters of each text chunk parsed at most (a longer one is kept raw, clipped, and the note says so): A1111's
# infotext is a few kB; ComfyUI's graphs are JSON (parsed in linear time), tens of kB for large workflows.
PARSE_LIMIT = {"parameters": 64 << 10, "prompt": 256 << 10, "workflow": 256 << 10}
MAX_SAMPLERS = 256   # sampling nodes in one graph, at most (more: kept raw)
MAX_PASSES = 32      # passes listed, at most (the note says when more ran)
MAX_TEXTS = 32       # texts of one combined prompt listed, at most
META_BUDGET = 24 << 10  # characters of one file's parsed fields and passes as JSON (a pair's two fit a bundle)
_DEPTH = 64          # links followed from one input, at most (a graph may be cyclic or very deep)

_A1111 = {"Steps": "steps", "Sampler": "sampler", "Schedule type": "scheduler", "CFG scale": "cfg", "Seed": "seed",
          "Denoising strength": "denoise", "Size": "size", "Model": "model", "Model hash": "model_hash"}
_OURS = ("model", "prompt", "seed", "pairing", "config")  # the text chunks workflows.lab writes into every PNG
_OUR_CONFIG = {"sampler": "sampler", "schedule": "scheduler", "steps": "steps", "guidance_scale": "cfg"}
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
# Inputs holding a prompt's text, in the order a multi-text encoder's texts are named (CLIPTextEncodeSDXL's text_g
# and text_l, CLIPTextEncodeFlux's clip_l and t5xxl, CLIPTextEncodeSD3's clip_l, clip_g, t5xxl, …).
_TEXT_KEYS = ("text", "prompt", "text_g", "text_l", "clip_l", "clip_g", "t5xxl", "llama", "bert", "mt5xl")
_MODEL_KEYS = ("ckpt_name", "unet_name", "model_name", "gguf_name", "model_path")
_VALUE_KEYS = ("value", "seed", "noise_seed", "int", "float", "number", "string", "text", "Text", "STRING", "INT",
               "FLOAT")
_LATENT_KEYS = ("samples", "latent", "latent_image", "pixels", "image", "images", "source")
ZEROED = "(zeroed)"


def metadata(text):
    """{format, fields, passes, raw, note} from an image's text chunks (`text`: key -> str). format is 'a1111',
    'comfyui', 'ab-lab', 'none' (no generation text) or 'unparsed' (text kept raw, `note` says why)."""
    text = {str(k): v if isinstance(v, str) else str(v) for k, v in (text or {}).items()}
    keys = [k for k in ("parameters", "prompt", "workflow", "config") if k in text]
    too_long = [k for k in ("parameters", "prompt", "workflow") if len(text.get(k, "")) > PARSE_LIMIT[k]]
    try:
        if "parameters" in text:
            if "parameters" in too_long:
                return _unparsed(text, keys, _too_long(text, "parameters"))
            return _result("a1111", *_a1111(text["parameters"]))
        if "prompt" in text and text["prompt"].lstrip().startswith("{"):
            if "prompt" in too_long:
                return _unparsed(text, keys, _too_long(text, "prompt"))
            return _result("comfyui", *comfyui_passes(_json_graph(text["prompt"], "'prompt'")))
        if "config" in text and "pairing" in text:
            fields = parse_ours(text)
            return _result("ab-lab", fields, [{"node": "", "kind": "ab-lab", **{
                k: v for k, v in fields.items() if k in PASS_FIELDS}}])
        if "workflow" in text:
            if "workflow" in too_long:
                return _unparsed(text, keys, _too_long(text, "workflow"))
            graph = workflow_graph(_json_graph(text["workflow"], "'workflow'", nodes_list=True))
            return _result("comfyui", *comfyui_passes(graph),
                           note="read from the editor's workflow (the file has no prompt graph): the values as saved "
                                "in the editor")
    except ValueError as exc:
        return _unparsed(text, keys, f"kept raw: {exc}")
    return {"format": "none", "fields": {}, "passes": [], "raw": {}, "note": "no generation parameters in the file"}


def _too_long(text, key):
    return (f"kept raw: the {key!r} text is {len(text[key])} characters, more than the {PARSE_LIMIT[key]} read "
            "(shown clipped)")


def _unparsed(text, keys, note):
    return {"format": "unparsed", "fields": {}, "passes": [], "raw": _raw(text, keys), "note": note}


def _raw(text, keys):
    return {k: _clip(text[k], RAW_LIMIT) for k in keys}


def _clip(text, limit):
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _result(fmt, fields, passes, note=""):
    """Parsed fields and passes, numbers as entered, texts clipped like raw text (the stored image keeps them
    whole), within META_BUDGET (texts clipped shorter when a file states very much)."""
    extra = []
    if len(passes) > MAX_PASSES:
        extra.append(f"{len(passes)} sampling passes: the first {MAX_PASSES} listed")
        passes = passes[:MAX_PASSES]
    for limit in (RAW_LIMIT, 1000, 250, 60):
        clean_fields = {k: _clean(v, limit) for k, v in fields.items()}
        clean_passes = [{k: _clean(p[k], limit) for k in PASS_FIELDS if k in p} for p in passes]
        if len(json.dumps({"f": clean_fields, "p": clean_passes})) <= META_BUDGET:
            break
    else:
        clean_passes = clean_passes[:4]
        extra.append("more than a pair may keep: the first 4 passes listed")
    if limit != RAW_LIMIT:
        extra.append(f"texts clipped to {limit} characters to fit what a pair keeps")
    return {"format": fmt, "fields": clean_fields, "passes": clean_passes, "raw": {},
            "note": "; ".join([note] * bool(note) + extra)}


def _clean(value, limit=RAW_LIMIT):
    """A stated value as stored: numbers as entered (4.0200000000000005 -> 4.02), texts clipped, lists of texts."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        items = [_clip(str(v), limit) for v in value[:MAX_TEXTS]]
        return items + [f"… ({len(value) - MAX_TEXTS} more)"] * (len(value) > MAX_TEXTS)
    return _clip(str(value), limit)


def _number(value):
    """'20' -> 20, '7.5' -> 7.5; anything else as it was written (never a guessed number)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return _clean(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
            return _clean(number) if math.isfinite(number) else value
    return value


# ---- AUTOMATIC1111 / Forge ---------------------------------------------------------------------------------------

_RUN = re.compile(r"[\w \-/]+")
_WORD = re.compile(r"\w")
_SPACE = re.compile(r"\s*")
_QUOTE = re.compile(r'(?<!\\)(?:\\\\)*"')  # a quote after an even run of backslashes: not escaped


def a1111_pairs(line):
    """The 'Key: value' pairs of an infotext's last line as A1111's own pattern finds them
    (modules/infotext_utils.py: `\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`, values quoted as JSON
    strings when they hold a comma, a colon or a line break), in time linear in the line: each colon's key is the
    run of key characters before it, each quoted value closes at the next quote not escaped."""
    runs = {m.end(): m.start() for m in _RUN.finditer(line)}
    quotes = [m.end() - 1 for m in _QUOTE.finditer(line)]
    pairs, pos, n = [], 0, len(line)
    while pos < n:
        colon = line.find(":", pos)
        if colon < 0:
            break
        start = runs.get(colon)
        word = _WORD.search(line, max(start, pos), colon) if start is not None else None
        if word is None or colon - word.start() < 2:
            pos = colon + 1
            continue
        key = line[word.start():colon]
        v = _SPACE.match(line, colon + 1).end()
        if v < n and line[v] == '"':
            k = bisect.bisect_right(quotes, v)
            close = quotes[k] if k < len(quotes) else -1
            if close > v + 1 and (close + 1 == n or line[close + 1] == ","):
                pairs.append((key, line[v:close + 1]))
                pos = close + 2
                continue
        comma = line.find(",", v)
        end = n if comma < 0 else comma
        pairs.append((key, line[v:end]))
        pos = end + 1
    return pairs


def parse_a1111(infotext):
    """AUTOMATIC1111/Forge `parameters`: the prompt, 'Negative prompt: …', then one line of 'Key: value, …'.
    Read as A1111's own parse_generation_parameters reads it (the last line counts as parameters when at least
    three pairs match); keys outside FIELDS are kept under their own names."""
    *lines, last = infotext.strip().split("\n")
    pairs = a1111_pairs(last)
    if len(pairs) < 3:
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
    for key, value in pairs:
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"the quoted value of {key!r} is not a JSON string") from None
        name = _A1111.get(key.strip(), key.strip())
        fields[name] = _number(value) if name in ("steps", "cfg", "seed", "denoise") else value
    return fields


def _a1111(infotext):
    """(fields, passes) of an infotext: the first pass ('base'), the refiner pass ('Refiner', switched at
    'Refiner switch at' of the steps, as A1111 switches: at the first step whose fraction of the steps reaches
    it) and the hires fix ('Hires upscale'/'Hires resize'/'Hires steps'; its steps 'Hires steps' or the first
    pass's, its denoise 'Denoising strength', its size the upscaled one)."""
    fields = parse_a1111(infotext)
    get = fields.get
    hires = any(k in fields for k in ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler"))
    base = {"node": "", "kind": "base"}
    for k in ("prompt", "negative_prompt", "cfg", "model", "sampler", "scheduler", "steps", "seed", "size"):
        if k in fields:
            base[k] = fields[k]
    if "denoise" in fields and not hires:  # img2img: its own denoise; with a hires fix, the second pass's
        base["denoise"] = fields["denoise"]
    passes = [base]
    steps = get("steps")
    switch = _number(get("Refiner switch at"))
    if "Refiner" in fields:
        refiner = {"node": "", "kind": "refiner", **{k: base[k] for k in ("prompt", "negative_prompt", "cfg")
                                                      if k in base}, "model": get("Refiner")}
        refiner.update({k: base[k] for k in ("sampler", "scheduler") if k in base})
        if isinstance(steps, int) and isinstance(switch, (int, float)) and not isinstance(switch, bool):
            at = sum(1 for i in range(min(steps, 10 ** 5)) if i / steps < switch)
            base.update(start_step=0, end_step=at, steps_run=at)
            refiner.update(steps=steps, start_step=at, end_step=steps, steps_run=steps - at)
        passes.append(refiner)
    if hires:
        second = {"node": "", "kind": "hires fix"}
        for k, key in (("prompt", "Hires prompt"), ("negative_prompt", "Hires negative prompt")):
            if get(key) or k in base:
                second[k] = get(key) or base[k]
        for k, key in (("cfg", "Hires CFG Scale"), ("sampler", "Hires sampler"), ("scheduler", "Hires schedule type")):
            if get(key) not in (None, "", "Use same sampler", "Use same scheduler") or k in base:
                value = get(key) if get(key) not in (None, "", "Use same sampler", "Use same scheduler") else base[k]
                second[k] = _number(value) if k == "cfg" else value
        if get("Hires checkpoint") not in (None, "", "Use same checkpoint"):
            second["model"] = get("Hires checkpoint")
        elif "model" in base and "Refiner" not in fields:
            second["model"] = base["model"]
        hires_steps = _number(get("Hires steps", 0))
        if hires_steps or "steps" in base:
            second["steps"] = hires_steps or base["steps"]
        if "seed" in base:  # the second pass adds noise from the same seed
            second["seed"] = base["seed"]
        if "denoise" in fields:
            second["denoise"] = fields["denoise"]
        size = _hires_size(get("size"), get("Hires resize"), _number(get("Hires upscale")))
        if size:
            second["size"] = size
        passes.append(second)
    summary = summarise(passes)
    return {**fields, **summary}, passes


def _hires_size(size, resize, scale):
    if isinstance(resize, str) and re.fullmatch(r"\d+x\d+", resize.strip()) and resize.strip() != "0x0":
        return resize.strip()
    m = re.fullmatch(r"(\d+)x(\d+)", size.strip()) if isinstance(size, str) else None
    if m and isinstance(scale, (int, float)) and not isinstance(scale, bool):
        return f"{int(int(m[1]) * scale)}x{int(int(m[2]) * scale)}"
    return None


def summarise(passes):
    """The flat fields of a list of passes (see the module's docstring)."""
    out = {}
    if not passes:
        return out
    for k in ("prompt", "negative_prompt"):
        stated = [p[k] for p in passes if k in p]
        if stated:
            out[k] = stated[0]
    last = passes[-1]
    for k in ("sampler", "scheduler", "cfg", "denoise", "guidance"):
        if k in last:
            out[k] = last[k]
    if "steps_run" in last:
        chain, total = last, last["steps_run"]
        for p in reversed(passes[:-1]):
            if ("steps_run" in p and p.get("steps") == chain.get("steps") and "end_step" in p
                    and p["end_step"] == chain.get("start_step")):
                total, chain = total + p["steps_run"], p
            else:
                break
        out["steps"] = total
    elif "steps" in last:
        out["steps"] = last["steps"]
    seeds = [p["seed"] for p in passes if "seed" in p]
    if seeds:
        out["seed"] = seeds[0]
    models = list(dict.fromkeys(str(p["model"]) for p in passes if "model" in p))
    if models:
        out["model"] = models[0] if len(models) == 1 else " + ".join(models)
    sizes = [p["size"] for p in passes if "size" in p]
    if sizes:
        out["size"] = sizes[-1]
    return out


# ---- ComfyUI -----------------------------------------------------------------------------------------------------

def _json_graph(text, what, nodes_list=False):
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"ComfyUI's {what} text is not JSON") from None
    if nodes_list:
        if not isinstance(value, dict) or not isinstance(value.get("nodes"), list) or not value["nodes"]:
            raise ValueError("a ComfyUI workflow without its prompt graph, and no nodes in it")
        return value
    if not isinstance(value, dict) or not all(isinstance(n, dict) for n in value.values()):
        raise ValueError(f"ComfyUI's {what} JSON is not a graph of nodes")
    return value


def parse_comfyui(prompt_json):
    """ComfyUI's `prompt` chunk (the API graph that ran) as flat fields (see `metadata` for its passes)."""
    return comfyui_passes(_json_graph(prompt_json, "'prompt'"))[0]


def node_key(node_id):
    """Node ids in numeric order ('3' before '24'; '75:12', a subgraph's node, by its numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(node_id)) if p)


class _Unresolved:
    """A value behind a link that does not resolve to a literal: said so, with the node it comes from."""

    def __init__(self, node):
        self.node = node

    def __str__(self):
        return f"unresolved (from node #{self.node})"


def comfyui_passes(graph):
    """(fields, passes) of an API graph {id: {class_type, inputs}}: every sampling node followed through its
    links, in execution order (a pass that takes another's output runs after it; ties by node id, numerically)."""
    g = _Graph(graph)
    samplers = [k for k, n in g.nodes.items() if _is_sampler(n)]
    if not samplers:
        raise ValueError("ComfyUI's graph has no KSampler or SamplerCustom node")
    if len(samplers) > MAX_SAMPLERS:
        raise ValueError(f"ComfyUI's graph has {len(samplers)} sampling nodes, more than the {MAX_SAMPLERS} read")
    passes = [g.sampling_pass(k) for k in g.execution_order(samplers)]
    return summarise(passes), passes


def _is_sampler(node):
    inputs = node["inputs"]
    if node["class_type"] in _SAMPLER_NODES:
        return True
    return ("latent_image" in inputs and any(k in inputs for k in ("positive", "guider"))
            and any(k in inputs for k in ("steps", "sigmas")))


class _Graph:
    def __init__(self, graph):
        self.nodes = {}
        for k, n in graph.items():
            if isinstance(n, dict):
                inputs = n.get("inputs")
                self.nodes[str(k)] = {"class_type": str(n.get("class_type", "")),
                                      "inputs": inputs if isinstance(inputs, dict) else {}}
        self.memo = {}

    def link(self, value):
        """(node id, output) of a link, or None for a literal value."""
        if (isinstance(value, list) and len(value) == 2 and str(value[0]) in self.nodes
                and isinstance(value[1], int) and not isinstance(value[1], bool)):
            return str(value[0]), value[1]
        return None

    def _cached(self, kind, link, fn):
        key = (kind, link)
        if key not in self.memo:
            self.memo[key] = None  # a cycle reads as nothing
            self.memo[key] = fn()
        return self.memo[key]

    # values ---------------------------------------------------------------------------------------------------

    def value(self, value, depth=0):
        """A literal, or the literal a link resolves to through primitive, string and math nodes; else
        _Unresolved naming the node where it stopped."""
        ln = self.link(value)
        if ln is None:
            if isinstance(value, list):
                return _Unresolved(value[0] if value else "?")
            return value
        if depth > _DEPTH:
            return _Unresolved(ln[0])
        return self._cached("value", ln, lambda: self._node_value(ln, depth))

    def _node_value(self, ln, depth):
        node_id = ln[0]
        node = self.nodes[node_id]
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "StringConcatenate" and "string_a" in inputs and "string_b" in inputs:
            parts = [self.value(inputs[k], depth + 1) for k in ("string_a", "delimiter", "string_b")]
            if all(isinstance(p, str) for p in parts[::2]):
                return parts[0] + (parts[1] if isinstance(parts[1], str) else "") + parts[2]
            return _Unresolved(node_id)
        if "math" in cls.lower() or "expression" in inputs or (("op" in inputs or "operation" in inputs)
                                                               and "a" in inputs):
            return self._math(node_id, inputs, depth)
        for key in _VALUE_KEYS:
            if key in inputs:
                return self.value(inputs[key], depth + 1)
        return _Unresolved(node_id)

    def _math(self, node_id, inputs, depth):
        """An arithmetic node: an expression over a, b, c, … (SimpleMath+, MathExpression|pysssss) or an operation
        on a and b (ComfyMath's Add, Sub, Mul, Div, …)."""
        names = {k: self.value(v, depth + 1) for k, v in inputs.items() if len(k) == 1}
        if any(not _is_number(v) for v in names.values()):
            return _Unresolved(node_id)
        op = inputs.get("op", inputs.get("operation"))
        expression = next((inputs[k] for k in ("expression", "expr", "value")
                           if isinstance(inputs.get(k), str)), None)
        try:
            if isinstance(op, str) and "a" in names and "b" in names:
                fn = _OPS.get(op.lower())
                if fn is None:
                    return _Unresolved(node_id)
                result = fn(names["a"], names["b"])
            elif expression is not None and len(expression) <= 200:
                result = _evaluate(ast.parse(expression, mode="eval").body, names)
            else:
                return _Unresolved(node_id)
        except (ValueError, ArithmeticError, SyntaxError, KeyError, TypeError, RecursionError):
            return _Unresolved(node_id)
        return result if _is_number(result) else _Unresolved(node_id)

    # what a pass states ---------------------------------------------------------------------------------------

    def sampling_pass(self, node_id):
        node = self.nodes[node_id]
        cls, inputs = node["class_type"], node["inputs"]
        out = {"node": node_id, "kind": cls}
        guider_ln = self.link(inputs.get("guider"))
        guider = self.nodes[guider_ln[0]] if guider_ln else None
        g_cls, g_in = (guider["class_type"], guider["inputs"]) if guider else (cls, inputs)
        if g_cls == "DualCFGGuider":
            positive = (sorted(self.texts(g_in.get("cond1")) or []) + sorted(self.texts(g_in.get("cond2")) or [])
                        or None)
            negative = self.texts(g_in.get("negative"))
            guidance = self.guidance(g_in.get("cond1"))
            cfgs = [self.value(g_in.get(k)) for k in ("cfg_conds", "cfg_cond2_negative")]
            if all(_is_number(c) for c in cfgs):
                out["cfg"] = f"{_clean(cfgs[0])} (conds), {_clean(cfgs[1])} (cond2 vs negative)"
        else:
            pos_key = "positive" if "positive" in g_in else "conditioning"
            positive = self.texts(g_in.get(pos_key))
            negative = self.texts(g_in.get("negative")) if "negative" in g_in else None
            guidance = self.guidance(g_in.get(pos_key))
            if "cfg" in g_in:
                out["cfg"] = self.value(g_in["cfg"])
        if positive:
            out["prompt"] = _one_or_list(positive, g_cls != "DualCFGGuider")
        if negative:
            out["negative_prompt"] = _one_or_list(negative, True)
        if guidance is not None:
            out["guidance"] = guidance
        model = self.model(g_in.get("model", inputs.get("model")))
        if model is not None:
            out["model"] = model
        self._sampler(inputs, out)
        self._schedule(cls, inputs, out)
        self._noise(cls, inputs, out)
        size = self.size(inputs.get("latent_image"))
        if size is not None:
            out["size"] = size
        order = {k: i for i, k in enumerate(PASS_FIELDS)}
        return {k: str(v) if isinstance(v, _Unresolved) else v
                for k, v in sorted(out.items(), key=lambda kv: order[kv[0]])}

    def _sampler(self, inputs, out):
        if "sampler_name" in inputs:
            out["sampler"] = self.value(inputs["sampler_name"])
            return
        ln = self.link(inputs.get("sampler"))
        if ln:
            src = self.nodes[ln[0]]
            out["sampler"] = (self.value(src["inputs"]["sampler_name"]) if "sampler_name" in src["inputs"]
                              else src["class_type"])  # SamplerDPMPP_2M_SDE, SamplerEulerAncestral, …

    def _schedule(self, cls, inputs, out):
        if "sigmas" in inputs:
            sig = self.sigmas(inputs["sigmas"]) or {}
            out.update({k: v for k, v in sig.items() if k in ("scheduler", "steps", "denoise")})
            if "start" in sig and _is_number(sig.get("steps")):
                out.update(start_step=sig["start"], end_step=sig["end"], steps_run=max(0, sig["end"] - sig["start"]))
            return
        for k, name in (("scheduler", "scheduler"), ("steps", "steps"), ("denoise", "denoise")):
            if name in inputs:
                out[k] = self.value(inputs[name])
        if "start_at_step" in inputs or "end_at_step" in inputs:
            steps = out.get("steps")
            start, end = self.value(inputs.get("start_at_step", 0)), self.value(inputs.get("end_at_step", 10000))
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (steps, start, end)):
                start, end = max(0, min(start, steps)), max(0, min(end, steps))
                out.update(start_step=start, end_step=end, steps_run=max(0, end - start))

    def _noise(self, cls, inputs, out):
        if "noise" in inputs:  # SamplerCustomAdvanced: RandomNoise or DisableNoise
            ln = self.link(inputs["noise"])
            if ln is None:
                return
            src = self.nodes[ln[0]]
            if src["class_type"] == "DisableNoise":
                out["add_noise"] = False
                return
            seed_key = next((k for k in ("noise_seed", "seed") if k in src["inputs"]), None)
            if seed_key:
                out["add_noise"] = True
                out["seed"] = self.value(src["inputs"][seed_key])
            return
        seed_key = next((k for k in ("seed", "noise_seed") if k in inputs), None)
        if "add_noise" in inputs:
            add = _flag(self.value(inputs["add_noise"]))
            if add is None:
                return
            out["add_noise"] = add
            if add and seed_key:
                out["seed"] = self.value(inputs[seed_key])
        elif seed_key:  # KSampler: always adds noise from its seed
            out["seed"] = self.value(inputs[seed_key])

    # following links ------------------------------------------------------------------------------------------

    def texts(self, value, depth=0):
        """The prompt texts behind a conditioning link: a list (several when combined), or None when nothing is
        known. A node with positive and negative outputs (ControlNetApplyAdvanced, InpaintModelConditioning, …)
        passes on the input its output index names: 0 the positive, 1 the negative."""
        ln = self.link(value)
        if ln is None or depth > _DEPTH:
            return None
        return self._cached("texts", ln, lambda: self._texts(ln, depth))

    def _texts(self, ln, depth):
        node_id, output = ln
        node = self.nodes[node_id]
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "ConditioningZeroOut":
            return [ZEROED]
        if "positive" in inputs and "negative" in inputs:
            if output not in (0, 1):
                return None
            return self.texts(inputs["positive" if output == 0 else "negative"], depth + 1)
        out = []
        encoded = [(k, self.value(inputs[k])) for k in _TEXT_KEYS if k in inputs]
        if encoded:
            if any(isinstance(v, _Unresolved) for _, v in encoded):
                out.append(str(next(v for _, v in encoded if isinstance(v, _Unresolved))))
            else:
                distinct = list(dict.fromkeys(str(v) for _, v in encoded if str(v).strip()))
                out.append(distinct[0] if len(distinct) == 1 else
                           "\n".join(f"{k}: {v}" for k, v in encoded if str(v).strip()) if distinct else "")
        for k in sorted((k for k in inputs if k.startswith("conditioning")), key=node_key):
            sub = self.texts(inputs[k], depth + 1)
            if sub is None and self.link(inputs[k]):
                sub = [str(_Unresolved(self.link(inputs[k])[0]))]
            out += sub or []
        if out:
            return out
        return [str(_Unresolved(node_id))] if any(self.link(v) for v in inputs.values()) else None

    def guidance(self, value, depth=0):
        """The nearest guidance on a conditioning path (FluxGuidance, CLIPTextEncodeFlux)."""
        ln = self.link(value)
        if ln is None or depth > _DEPTH:
            return None
        return self._cached("guidance", ln, lambda: self._guidance(ln, depth))

    def _guidance(self, ln, depth):
        node_id, output = ln
        inputs = self.nodes[node_id]["inputs"]
        if "guidance" in inputs:
            value = self.value(inputs["guidance"])
            return value if _is_number(value) else None
        if "positive" in inputs and "negative" in inputs:
            return self.guidance(inputs["positive" if output == 0 else "negative"], depth + 1) if output < 2 else None
        for k in sorted((k for k in inputs if k.startswith("conditioning")), key=node_key):
            found = self.guidance(inputs[k], depth + 1)
            if found is not None:
                return found
        return None

    def model(self, value, depth=0):
        """The model file behind a MODEL link: a checkpoint, UNet or diffusion model loader's file, through LoRA
        loaders, ModelSampling* and other patches (their `model` input)."""
        ln = self.link(value)
        if ln is None or depth > _DEPTH:
            return None if ln is None else str(_Unresolved(ln[0]))
        return self._cached("model", ln, lambda: self._model(ln, depth))

    def _model(self, ln, depth):
        node_id = ln[0]
        inputs = self.nodes[node_id]["inputs"]
        for k in _MODEL_KEYS:
            if k in inputs:
                name = self.value(inputs[k])
                return str(name)
        if isinstance(inputs.get("model"), str):
            return inputs["model"]
        if "model" in inputs:
            return self.model(inputs["model"], depth + 1)
        if "model1" in inputs and "model2" in inputs:
            return f"merge({self.model(inputs['model1'], depth + 1)}, {self.model(inputs['model2'], depth + 1)})"
        return str(_Unresolved(node_id))

    def sigmas(self, value, depth=0):
        """{scheduler, steps, denoise[, start, end]} of a SIGMAS link: BasicScheduler's scheduler, another
        scheduler node's class (KarrasScheduler, AlignYourStepsScheduler, …); SplitSigmas' outputs as the steps
        they keep."""
        ln = self.link(value)
        if ln is None or depth > _DEPTH:
            return None
        return self._cached("sigmas", ln, lambda: self._sigmas(ln, depth))

    def _sigmas(self, ln, depth):
        node_id, output = ln
        node = self.nodes[node_id]
        cls, inputs = node["class_type"], node["inputs"]
        if "sigmas" in inputs:
            base = dict(self.sigmas(inputs["sigmas"], depth + 1) or {})
            steps = base.get("steps")
            if cls in ("SplitSigmas", "SplitSigmasDenoise") and isinstance(steps, int) and not isinstance(steps, bool):
                lo, hi = base.get("start", 0), base.get("end", steps)
                if cls == "SplitSigmas":
                    step = self.value(inputs.get("step"))
                    at = min(lo + step, hi) if isinstance(step, int) and not isinstance(step, bool) else None
                else:
                    d = self.value(inputs.get("denoise"))
                    at = max(lo, hi - round((hi - lo) * d)) if _is_number(d) else None
                if at is None or output not in (0, 1):
                    return {k: v for k, v in base.items() if k not in ("start", "end")}
                base.update(start=lo if output == 0 else at, end=at if output == 0 else hi)
            return base
        out = {"scheduler": self.value(inputs["scheduler"]) if "scheduler" in inputs else cls}
        for k in ("steps", "denoise"):
            if k in inputs:
                out[k] = self.value(inputs[k])
        return out

    def size(self, value, depth=0):
        """'WxH' of a latent or image link: an empty latent's width and height (links resolved), upscaled or
        scaled on the way, a sampler's input's; "unresolved (from node #N)" when a link does not resolve to a
        number; None when the graph does not state it (an image loaded from a file)."""
        ln = self.link(value)
        if ln is None or depth > _DEPTH:
            return None
        return self._cached("size", ln, lambda: self._size(ln, depth))

    def _size(self, ln, depth):
        node_id = ln[0]
        node = self.nodes[node_id]
        cls, inputs = node["class_type"], node["inputs"]
        if _is_sampler(node):
            return self.size(inputs.get("latent_image"), depth + 1)
        if "width" in inputs and "height" in inputs:
            w, h = self.value(inputs["width"]), self.value(inputs["height"])
            for v in (w, h):
                if isinstance(v, _Unresolved):
                    return str(v)
            if not (_is_number(w) and _is_number(h)) or w <= 0 or h <= 0:
                return str(_Unresolved(node_id))
            return f"{_num_text(w)}x{_num_text(h)}"
        source = next((inputs[k] for k in _LATENT_KEYS if k in inputs and self.link(inputs[k])), None)
        if "scale_by" in inputs:
            scale, below = self.value(inputs["scale_by"]), self.size(source, depth + 1)
            m = re.fullmatch(r"(\d+)x(\d+)", below or "")
            if not m or not _is_number(scale):
                return below if below is None or below.startswith("unresolved") else str(_Unresolved(node_id))
            unit = 8 if "latent" in cls.lower() else 1  # a latent is scaled in latent pixels (8 image pixels)
            return "x".join(str(round(int(v) / unit * scale) * unit) for v in m.groups())
        return self.size(source, depth + 1) if source is not None else None

    # execution order ------------------------------------------------------------------------------------------

    def execution_order(self, samplers):
        """The sampling nodes in the order they run: each after every sampling node upstream of it (through any
        input: its latent, an image decoded from another pass, …); among the ready ones the lowest node id."""
        index = {k: i for i, k in enumerate(samplers)}
        upstream = {}
        for start in samplers:
            stack, visiting = [(start, False)], set()
            while stack:
                nid, done = stack.pop()
                if nid in upstream:
                    continue
                sources = [ln[0] for ln in map(self.link, self.nodes[nid]["inputs"].values()) if ln]
                if done:
                    bits = 0
                    for src in sources:
                        bits |= upstream.get(src, 0) | (1 << index[src] if src in index else 0)
                    upstream[nid] = bits
                elif nid not in visiting:
                    visiting.add(nid)
                    stack.append((nid, True))
                    stack += [(s, False) for s in sources if s not in upstream and s not in visiting]
        order, placed = [], 0
        left = sorted(samplers, key=node_key)
        while left:
            ready = next((k for k in left if not upstream[k] & ~placed & ~(1 << index[k])), left[0])
            order.append(ready)
            placed |= 1 << index[ready]
            left.remove(ready)
        return order


def _num_text(value):
    return str(int(value)) if float(value).is_integer() else str(_clean(value))


def _one_or_list(texts, sort):
    texts = sorted(texts) if sort else list(texts)
    return texts[0] if len(texts) == 1 else texts


def _flag(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("enable", "disable", "true", "false"):
        return value.lower() in ("enable", "true")
    return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_OPS = {"add": operator.add, "sub": operator.sub, "subtract": operator.sub, "mul": operator.mul,
        "multiply": operator.mul, "div": operator.truediv, "divide": operator.truediv,
        "floordiv": operator.floordiv, "mod": operator.mod, "max": max, "min": min}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_FUNCS = {"round": round, "int": int, "float": float, "abs": abs, "min": min, "max": max, "floor": math.floor,
          "ceil": math.ceil}


def _evaluate(node, names):
    """+ - * / // % on numbers and the node's inputs a, b, c, …, and round/int/abs/min/max/floor/ceil: nothing else
    (an expression is data, never code)."""
    if isinstance(node, ast.Constant) and _is_number(node.value):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left, names), _evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords and 0 < len(node.args) <= 4):
        return _FUNCS[node.func.id](*(_evaluate(a, names) for a in node.args))
    raise ValueError("not arithmetic")


# ---- the editor's workflow (no prompt graph) ---------------------------------------------------------------------

# Widget values in the order the editor saves them (`widgets_values`), per node class; None: a widget that is no
# input (control_after_generate). A node not listed keeps only its linked inputs (and a dict of widget values).
WIDGETS = {
    "KSampler": ("seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", None, "steps", "cfg", "sampler_name", "scheduler",
                         "start_at_step", "end_at_step", "return_with_leftover_noise"),
    "SamplerCustom": ("add_noise", "noise_seed", None, "cfg"),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g",
                           "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("ascore", "width", "height", "text"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl", "guidance"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl", "empty_padding"),
    "FluxGuidance": ("guidance",),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "UnetLoaderGGUF": ("unet_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "EmptyHunyuanLatentVideo": ("width", "height", "length", "batch_size"),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "LatentUpscaleBy": ("upscale_method", "scale_by"),
    "ImageScale": ("upscale_method", "width", "height", "crop"),
    "ImageScaleBy": ("upscale_method", "scale_by"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "KarrasScheduler": ("steps", "sigma_max", "sigma_min", "rho"),
    "ExponentialScheduler": ("steps", "sigma_max", "sigma_min"),
    "AlignYourStepsScheduler": ("model_type", "steps", "denoise"),
    "SDTurboScheduler": ("steps", "denoise"),
    "BetaSamplingScheduler": ("steps", "alpha", "beta"),
    "SplitSigmas": ("step",),
    "SplitSigmasDenoise": ("denoise",),
    "RandomNoise": ("noise_seed", None),
    "CFGGuider": ("cfg",),
    "DualCFGGuider": ("cfg_conds", "cfg_cond2_negative", "style"),
    "ConditioningSetArea": ("width", "height", "x", "y", "strength"),
    "ConditioningSetAreaPercentage": ("width", "height", "x", "y", "strength"),
    "ConditioningSetTimestepRange": ("start", "end"),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "InpaintModelConditioning": ("noise_mask",),
    "PrimitiveNode": ("value", None),
    "PrimitiveInt": ("value", None),
    "PrimitiveFloat": ("value",),
    "PrimitiveString": ("value",),
    "PrimitiveStringMultiline": ("value",),
}


def workflow_graph(workflow):
    """The editor's workflow ({nodes: [{id, type, mode, inputs, widgets_values}], links: [[id, from, from slot,
    to, to slot, type]]}) as an API graph: widget values named per WIDGETS, links followed through Reroute and
    bypassed nodes; muted and bypassed nodes left out (they do not run)."""
    nodes = {str(n.get("id")): n for n in workflow["nodes"] if isinstance(n, dict)}
    links = {}
    for ln in workflow.get("links") or []:
        if isinstance(ln, list) and len(ln) >= 6:
            links[ln[0]] = (str(ln[1]), ln[2], ln[5])
        elif isinstance(ln, dict) and "id" in ln:
            links[ln["id"]] = (str(ln.get("origin_id")), ln.get("origin_slot"), ln.get("type"))

    def origin(link_id, depth=0):
        if link_id not in links or depth > _DEPTH:
            return None
        node_id, slot, kind = links[link_id]
        node = nodes.get(node_id)
        if node is None:
            return None
        if node.get("type") == "Reroute" or node.get("mode") == 4:  # passes its input of the same type through
            ins = [i for i in node.get("inputs") or [] if isinstance(i, dict) and i.get("link") is not None]
            same = [i for i in ins if i.get("type") == kind] or (ins if node.get("type") == "Reroute" else [])
            return origin(same[0]["link"], depth + 1) if same else None
        return [node_id, slot if isinstance(slot, int) else 0]

    graph = {}
    for node_id, node in nodes.items():
        if node.get("mode") in (2, 4) or node.get("type") == "Reroute":
            continue
        cls, inputs, widgets = str(node.get("type", "")), {}, node.get("widgets_values")
        if isinstance(widgets, dict):
            inputs.update(widgets)
        elif isinstance(widgets, list) and cls in WIDGETS:
            inputs.update({k: v for k, v in zip(WIDGETS[cls], widgets) if k is not None})
        for i in node.get("inputs") or []:
            if isinstance(i, dict) and i.get("link") is not None and isinstance(i.get("name"), str):
                src = origin(i["link"])
                if src is not None:
                    inputs[i["name"]] = src
        graph[node_id] = {"class_type": cls, "inputs": inputs}
    return graph


# ---- this tool's own text chunks ---------------------------------------------------------------------------------

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


# ---- comparing two files -----------------------------------------------------------------------------------------

def comparable(a, b):
    """Two files' values as flat dicts to compare: `a` and `b` are fields dicts, or whole `metadata` results, whose
    passes then count too, as 'pass 2 steps_run' … when either file has more than one (a pass's node id and class
    are how the graph was drawn, not what ran, so never compared)."""
    (fa, pa), (fb, pb) = _split(a), _split(b)
    fa, fb = dict(fa), dict(fb)
    if max(len(pa), len(pb)) > 1:
        for flat, passes in ((fa, pa), (fb, pb)):
            for i, p in enumerate(passes, 1):
                flat.update({f"pass {i} {k}": v for k, v in p.items() if k not in ("node", "kind")})
    return fa, fb


def _split(x):
    if isinstance(x, dict) and "fields" in x and "format" in x:
        return x.get("fields") or {}, x.get("passes") or []
    return x or {}, []


def _base_name(key):
    m = re.fullmatch(r"pass \d+ (.+)", key)
    return m[1] if m else key


def _order(key):
    m = re.fullmatch(r"pass (\d+) (.+)", key)
    if m:
        return (1, int(m[1]), PASS_FIELDS.index(m[2]) if m[2] in PASS_FIELDS else len(PASS_FIELDS), m[2])
    return (0, FIELDS.index(key) if key in FIELDS else len(FIELDS), 0, key)


def differing(a, b, skip=PER_SAMPLE):
    """The fields whose values A and B state differently (a field only one states counts), in FIELDS order, the
    rest alphabetically, then the passes' (see `comparable`), without the per-sample ones in `skip` (in any pass)."""
    fa, fb = comparable(a, b)
    keys = sorted(set(fa) | set(fb), key=_order)
    return [k for k in keys if _base_name(k) not in skip and fa.get(k) != fb.get(k)]


def cell_name(a, b, labels):
    """A campaign cell named by what its images say differs ('scheduler: karras vs beta'), or by the labels when
    they say nothing that differs; '; seed differs' is added when A's and B's seeds do."""
    fa, fb = comparable(a, b)
    diff = differing(a, b)
    name = "; ".join(f"{k}: {_short(fa.get(k))} vs {_short(fb.get(k))}" for k in diff) or f"{labels[0]} vs {labels[1]}"
    extra = [k for k in ("seed", "prompt") if k in fa and k in fb and fa[k] != fb[k]]
    return name + "".join(f"; {k} differs" for k in extra)


def _short(value):
    text = "(none)" if value is None else " | ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def value_text(value, limit=200):
    """A stated value on one line of text: texts quoted, line breaks as ' ⏎ ', control characters escaped, a list
    as [ … | … ], booleans as yes/no, a missing value '(not stated)'."""
    if value is None:
        return "(not stated)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "[" + " | ".join(value_text(v, max(40, limit // max(1, len(value)))) for v in value) + "]"
    if not isinstance(value, str):
        return str(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", value.replace("\r\n", "\n").replace("\n", " ⏎ "))
    return "'" + (text if len(text) <= limit else text[:limit - 1] + "…") + "'"


def pass_title(p, number):
    """'pass 1 · #10 KSamplerAdvanced · steps 0–20 of 25' (A1111's: 'pass 2 · hires fix · steps 15')."""
    parts = [f"pass {number}"]
    who = (f"#{p['node']} " if p.get("node") else "") + str(p.get("kind", ""))
    if who.strip():
        parts.append(_CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", who.strip()))
    if "start_step" in p and "end_step" in p and "steps" in p:
        parts.append(f"steps {p['start_step']}–{p['end_step']} of {p['steps']}")
    elif "steps" in p:
        parts.append(f"steps {p['steps']}")
    return " · ".join(parts)
