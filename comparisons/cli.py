"""python -m comparisons {study, sweep, inspect, campaign, export, stats}: studies, sweeps, any two images, vote
campaigns, CSV, statistics."""
import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

from .core.config import (
    COMPILE_MODES,
    CONVENTION_NOTES,
    CUSTOM,
    MAX_STEPS,
    PAIRINGS,
    SamplerConfig,
    make_pair,
    schedule,
)
from .core.visibility import FLIP_VISIBLE
from .errors import ConfigError, ImageError, StoreError, UsageError, printable
from .results.store import DEFAULT_PATH, ResultsStore
from .specs import OneLineParser, parse_cells, parse_seeds, study_spec
from .workflows.xyz import AXES, DEFAULT_AXES, parse_axes


def check_writable(path, what, flag):
    """Refuse a path that cannot be written, without creating anything."""
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise UsageError(f"{what} {path} cannot be created: {probe} is a file; choose another {flag}")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{what} {path} is not writable; choose another {flag}")
    return path


def _study_parser(sub):
    from .core.grid import REFERENCE, REFERENCE_LADDER, REFERENCE_TOLERANCE
    s = sub.add_parser("study", help="answer questions over samplers x step counts x prompts x seeds")
    s.add_argument("--questions", default="", help=f"comma-separated presets: {', '.join(PAIRINGS)}")
    s.add_argument("--questions-file", help='JSON {"name": [{A overrides}, {B overrides}]}')
    s.add_argument("--samplers", default="heun")
    s.add_argument("--schedules", default="",
                   help="comma-separated schedules (sampler_lib.SCHEDULES): every question under each, cells named "
                        "question@schedule; the schedule question sets Karras against each")
    s.add_argument("--steps", default="4,7,10,25", help="comma-separated step counts")
    s.add_argument("--seeds", default="0-63", help="e.g. 0-255 or 0,3,7-9")
    s.add_argument("--prompts", default="a red circle",
                   help="comma-separated prompts; 'all' = every prompt of an embedded model")
    s.add_argument("--results", default=str(DEFAULT_PATH))
    s.add_argument("--out", required=True, help="folder for summary.csv, rows.csv and report.html")
    s.add_argument("--name", help="the study's name in the results file (default: the --out folder's name)")
    s.add_argument("--reference", default="{}",
                   help=f"reference config as (partial) JSON over {REFERENCE.to_json()}")
    s.add_argument("--batch", type=int, default=64, help="samples per chunk (each chunk runs every arm)")
    s.add_argument("--model", default="embedded")
    s.add_argument("--guidance", type=float, default=SamplerConfig.guidance_scale)
    s.add_argument("--precision", default="fp32", help="fp32, or bf16 (network under bfloat16 autocast)")
    s.add_argument("--compile", action="store_true", help="torch.compile the network (a GPU fast path)")
    s.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile's mode (implies --compile); reduce-overhead adds CUDA graphs on a GPU")
    s.add_argument("--visible-flip", type=float, default=FLIP_VISIBLE,
                   help="FLIP error (0-1] at which a pair counts as visibly different (README: 'When is a "
                        "difference visible?')")
    s.add_argument("--visible-lpips", type=float, help=argparse.SUPPRESS)  # the rule before FLIP; refused below
    s.add_argument("--reference-check", type=int, default=8,
                   help="samples whose reference is also computed in paper mode (the reference's uncertainty)")
    s.add_argument("--reference-steps", default="",
                   help="the reference's step count, or 'auto': the smallest rung of --reference-ladder whose "
                        "reference differs from the next rung's by less than --reference-tolerance (LPIPS, the "
                        "largest over the --reference-check samples)")
    s.add_argument("--reference-ladder", default=",".join(map(str, REFERENCE_LADDER)),
                   help="the step counts --reference-steps auto tries, smallest first")
    s.add_argument("--reference-tolerance", type=float, default=REFERENCE_TOLERANCE,
                   help="LPIPS a rung may differ from the next by (default: a tenth of the verdicts' equivalence "
                        "margin)")
    s.add_argument("--app-url", default="http://127.0.0.1:7860", help="where the report's example links point")
    s.add_argument("--grid", default=",".join(DEFAULT_AXES), metavar="X,Y[,Z]",
                   help="the X/Y/Z grid's columns, rows and panels in report.html and grid-*.png: two or three of "
                        f"{', '.join(AXES)} (the other axes at their first value)")
    s.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    s.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the shards on a Ray cluster: 'auto' (this machine's cluster, else a local one) "
                        "or HOST:PORT")
    s.add_argument("--ray-workers", type=int, help="actors to start (default: one per GPU, else one per CPU)")
    s.add_argument("--ray-gpus-per-worker", type=float, help="GPUs each actor asks for (default 1 on a GPU cluster)")


def _parser():
    p = OneLineParser(prog="python -m comparisons", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    _study_parser(sub)
    s = sub.add_parser("sweep", help="run paired configs over many seeds and record them")
    s.add_argument("--pairing", help=f"a preset: {', '.join(PAIRINGS)}")
    s.add_argument("--a", help="config A as (partial) JSON over the defaults, instead of --pairing")
    s.add_argument("--b", help="config B as (partial) JSON over the defaults, instead of --pairing")
    s.add_argument("--seeds", default="0-31")
    s.add_argument("--steps", type=int, default=7)
    s.add_argument("--sampler", default="heun")
    s.add_argument("--guidance", type=float, default=SamplerConfig.guidance_scale)
    s.add_argument("--convention", default=SamplerConfig.convention, choices=list(CONVENTION_NOTES),
                   help="whose noise scaling, schedule and sampler endings both arms follow (a config's own "
                        "'convention' wins): " + "; ".join(f"{k}: {v}" for k, v in CONVENTION_NOTES.items()))
    s.add_argument("--prompt", default="a red circle")
    s.add_argument("--model", default="embedded")
    s.add_argument("--results", default=str(DEFAULT_PATH))
    s.add_argument("--reference", action="store_true",
                   help="also measure each arm's LPIPS to a 200-step Heun image of the same seed "
                        "(cached in the results file, shared with studies)")
    s.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    e = sub.add_parser("export", help="write pairs.csv and votes.csv")
    e.add_argument("--results", default=str(DEFAULT_PATH))
    e.add_argument("--out", required=True)
    t = sub.add_parser("stats", help="print the vote statistics per question")
    t.add_argument("--results", default=str(DEFAULT_PATH))
    i = sub.add_parser("inspect", help="measure any two images of one size as a pair (nothing is sampled)")
    i.add_argument("a", help="image A (PNG, JPEG or WebP; 32x32 to 2048x2048 pixels)")
    i.add_argument("b", help="image B, the same size as A")
    i.add_argument("--out", help="folder for inspect.html, inspect.json, A.png, B.png and the four maps")
    i.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    i.add_argument("--remake", metavar="MODEL",
                   help="remake the pair here from the files' own metadata (ComfyUI, A1111) on MODEL, with their "
                        "tool's convention: prints the two configs and the sweep that runs them; with --out also "
                        "samples them into remade-A.png, remade-B.png and remake.json")
    _campaign_parser(sub)
    return p


def _campaign_parser(sub):
    c = sub.add_parser("campaign", help="blind vote campaigns over a study's pairs: create, export, import, stats")
    verbs = c.add_subparsers(dest="verb", required=True)
    v = verbs.add_parser("create", help="pick a study's pairs per cell (seeded), or pair image files made elsewhere, "
                                        "into a named campaign")
    v.add_argument("name")
    v.add_argument("--study", help="the study's name (study --name; default its --out folder's name)")
    v.add_argument("--from-folders", nargs=2, metavar=("DIR_A", "DIR_B"),
                   help="image files made elsewhere, paired by file name: A's folder and B's folder")
    v.add_argument("--from-manifest", metavar="PAIRS_CSV",
                   help="a CSV with columns a and b (paths relative to it) and optionally cell, prompt, seed; any "
                        "other column is kept with the pair")
    v.add_argument("--labels", help='the two sides\' names, e.g. "karras,beta" (default: the folders\' names, or A,B)')
    v.add_argument("--skip-unmatched", action="store_true",
                   help="with --from-folders: leave out files without a partner of the same name (said, not refused)")
    v.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    v.add_argument("--cells", help="question:sampler:steps cells, comma-separated (default: every cell)")
    v.add_argument("--per-cell", type=int, default=40, help="samples per cell at most (default 40)")
    v.add_argument("--only-visible", action="store_true", help="skip pairs below visibility (counted per cell)")
    v.add_argument("--seed", type=int, default=0, help="seed of the per-cell pick (default 0)")
    v.add_argument("--checks", type=float, default=0.1,
                   help="attention checks (an image against itself) per pair, 0 to 1 (default 0.1: one in ten)")
    v.add_argument("--results", default=str(DEFAULT_PATH))
    v = verbs.add_parser("export", help="write a campaign's pairs, images and definition as a zip")
    v.add_argument("name")
    v.add_argument("--out", required=True, help="bundle file, e.g. bundle.zip")
    v.add_argument("--results", default=str(DEFAULT_PATH))
    v = verbs.add_parser("import", help="load a bundle into a results file (again: no change)")
    v.add_argument("bundle")
    v.add_argument("--results", default=str(DEFAULT_PATH))
    v = verbs.add_parser("stats", help="votes per cell beside the study's LPIPS verdict")
    v.add_argument("name")
    v.add_argument("--results", default=str(DEFAULT_PATH))


def cmd_campaign(args, out):
    from .workflows import campaign
    if args.verb == "import":
        if not Path(args.bundle).is_file():
            raise UsageError(f"no bundle at {args.bundle}; give the zip `campaign export` wrote")
        checked = campaign.read_bundle(args.bundle)  # the whole bundle, before the results file is touched
        check_writable(args.results, "results file", "--results")
        held = _readable_store(args.results)
        if held is not None and held.campaign(checked[0]["name"]) is None:
            # Pairs the file holds with other contents are refused while it is opened read-only (nothing migrated).
            campaign.refuse_conflicts(held.pairs_with_ids([p["pair_id"] for p in checked[1]]), checked[1],
                                      args.bundle)
        done = campaign.import_bundle(ResultsStore(args.results), args.bundle, checked)
        print(f"campaign {checked[0]['name']}: {done['pairs']} pairs "
              + (f"imported into {args.results}" if done["new"] else f"already in {args.results}, nothing changed"),
              file=out)
        return
    store = _existing_store(args.results) if args.verb in ("export", "stats") else None
    if args.verb == "create" and (args.from_folders or args.from_manifest):
        _create_from_images(args, out)
    elif args.verb == "create":
        if args.study is None:
            raise UsageError("campaign create needs --study NAME, --from-folders DIR_A DIR_B or --from-manifest "
                             "PAIRS_CSV")
        if args.labels or args.skip_unmatched:
            raise UsageError("--labels and --skip-unmatched go with --from-folders or --from-manifest")
        if not Path(args.results).is_file():
            raise UsageError(f"no results file at {args.results}; run the study first or pass --results")
        cells = parse_cells(args.cells) if args.cells is not None else None
        campaign.check_rate(args.checks)  # before the results file is opened (and migrated)
        definition = campaign.create(ResultsStore(args.results), args.name, args.study, cells, args.per_cell,
                                     args.only_visible, args.seed, args.checks)
        for c in definition["cells"]:
            skipped = f", {c['skipped_invisible']} below visibility skipped" if definition["only_visible"] else ""
            print(f"  {c['question']}:{c['sampler']}:{c['steps']}: {c['pairs']} of {c['available']} pairs{skipped}",
                  file=out)
        print(f"campaign {args.name}: {sum(c['pairs'] for c in definition['cells'])} pairs and "
              f"{definition['n_checks']} attention checks from study "
              f"{args.study}; serve it with: python app.py --campaign {args.name} --results {args.results}", file=out)
    elif args.verb == "export":
        campaign.definition_of(store, args.name)
        target = check_writable(args.out, "bundle", "--out")
        if target.is_dir():
            raise UsageError(f"--out {target} is a folder; name a file such as {target}/bundle.zip")
        done = campaign.export_bundle(store, args.name, target)
        print(f"wrote {done['path']}: {done['pairs']} pairs, {done['images']} images", file=out)
    else:
        print(campaign_table(args.name, campaign.stats(store, args.name)), file=out)


def text_table(header, rows, right=()):
    """Rows under a header, every column as wide as its widest entry and two spaces between columns, so no value
    ever runs into the next (`final-zero@align_your_steps  dpmpp_2m`); columns named in `right` align right."""
    rows = [[str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(values):
        cells = [v.rjust(w) if h in right else v.ljust(w) for h, v, w in zip(header, values, widths)]
        return "  ".join(cells).rstrip()
    head = line([str(h) for h in header])
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def study_table(cells):
    """A study's verdict per cell as the terminal prints it."""
    from .workflows.report import fmt_number as _fmt
    rows = []
    for c in cells:
        ci = f"[{_fmt(c['ci_low'], 2)}, {_fmt(c['ci_high'], 2)}]" if not math.isnan(c["ci_low"]) else ""
        diff = f"{c['mean_diff']:+.4f} [{c['diff_ci_low']:+.4f}, {c['diff_ci_high']:+.4f}]" \
            if not math.isnan(c["diff_ci_low"]) else _fmt(c["mean_diff"], 4)
        rows.append([c["question"], c["sampler"], c["steps"], c["n"], _fmt(c["a_closer_rate"], 2), ci,
                     _fmt(c["p_holm"], 3), diff, f"{c['lpips_ab']:.4f}", f"{c['visible_share']:.0%}", c["verdict"]])
    return text_table(["question", "sampler", "steps", "n", "A closer", "95% CI", "p_holm", "mean diff [95% CI]",
                       "LPIPS(A,B)", "visible", "verdict"], rows,
                      right=("steps", "n", "A closer", "p_holm", "LPIPS(A,B)", "visible"))


def top_address(row):
    """'40% (2 votes)': how much of a cell's votes came from its heaviest address; '—' where none is known."""
    share = row["top_address_share"]
    return "—" if math.isnan(share) else f"{share:.0%} ({row['top_address_votes']})"


def campaign_table(name, rows):
    """A campaign's stats as plain tables: every vote, then without the sessions their attention checks flagged."""
    from .workflows.campaign import ALL_CELLS, VOTERS, cell_name

    def fmt(x, d=3):
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"
    counted = [r for r in rows if r["voters"] == "all" and r["question"] != ALL_CELLS]
    lines = [f"campaign {name}: {sum(r['votes'] for r in counted)} votes over {sum(r['pairs'] for r in counted)} "
             f"pairs from {rows[0]['sessions']} sessions; {rows[0]['flagged']} flagged by their attention checks (a "
             "side picked on most checks)"]
    header = ["cell", "votes", "A", "B", "tie", "bad", "A win rate [95% CI]", "p", "side-corr.", "left rate",
              "side p", "top address", "w/o top: A", "B", "p ", "votes say", "LPIPS says", "agreement"]
    for voters in VOTERS:
        table = [[cell_name(r), r["votes"], r["a"], r["b"], r["tie"], r["both_bad"],
                  f"{fmt(r['a_win_rate'])} [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]", fmt(r["p_value"], 4),
                  fmt(r["a_win_rate_corrected"]), fmt(r["left_rate"]), fmt(r["left_p"], 4), top_address(r),
                  r["a_wo_top"], r["b_wo_top"], fmt(r["p_value_wo_top"], 4), r["votes_verdict"],
                  r["lpips_verdict"], r["agreement"]] for r in rows if r["voters"] == voters]
        lines += ["", f"votes: {voters}", text_table(header, table, right=(
            "votes", "A", "B", "tie", "bad", "p", "side-corr.", "left rate", "side p", "top address", "w/o top: A",
            "p "))]
    lines.append("side-corr.: A's win rate averaged over A shown left and A shown right (a side preference cancels); "
                 "left rate: how often the left image won, side p its sign test (small: voters favour a side); "
                 "top address: the largest share of the votes cast from one address (hosted votes keep a salted "
                 "hash of it; '—' where no vote has one), then A, B and p without that address's votes")
    return "\n".join(lines)


def _create_from_images(args, out):
    """campaign create --from-folders / --from-manifest: every file checked and every pair measured before the
    results file is opened for writing."""
    from tqdm import tqdm

    from .core.metrics import LPIPS
    from .workflows import image_campaign
    if args.study or args.cells or args.per_cell != 40:
        raise UsageError("--study, --cells and --per-cell pick a study's pairs; a campaign of image files takes every "
                         "pair it is given")
    if args.from_folders and args.from_manifest:
        raise UsageError("give --from-folders or --from-manifest, not both")
    if args.skip_unmatched and not args.from_folders:
        raise UsageError("--skip-unmatched goes with --from-folders")
    image_campaign.check_rate(args.checks)
    unmatched = []
    if args.from_folders:
        sources, unmatched = image_campaign.pairs_from_folders(*args.from_folders, skip_unmatched=args.skip_unmatched)
        default = [Path(d).resolve().name for d in args.from_folders]
        kind = "folders"
    else:
        sources, default, kind = image_campaign.pairs_from_manifest(args.from_manifest), ["A", "B"], "manifest"
    labels = image_campaign.check_labels([x.strip() for x in args.labels.split(",")] if args.labels else default)
    image_campaign.check_name(args.name)
    check_writable(args.results, "results file", "--results")
    held = _readable_store(args.results)
    if held is not None and held.campaign(args.name) is not None:
        raise UsageError(f"a campaign named {args.name!r} exists in {args.results}; choose another name")
    # Every pair measured (LPIPS, FLIP, …) before the results file is opened: a file that fails writes nothing.
    # On a terminal each step has a bar with pairs done, elapsed < ETA, and the rate (s/pair, or pairs/s).
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} pairs [{elapsed}<{remaining}, {rate_fmt}]"

    def bar(desc, total):
        return tqdm(total=total, desc=desc, unit="pair", file=sys.stderr, disable=None, bar_format=bar_format,
                    smoothing=0.1)

    def advance(shown):
        def step(done, total):
            shown.total = total
            shown.update(done - shown.n)
        return step
    with bar("measuring pairs", len(sources)) as shown:
        measured = image_campaign.measure_all(sources, LPIPS(args.lpips_weights), advance(shown))
    with bar("storing pairs", len(measured)) as shown:
        definition = image_campaign.create(ResultsStore(args.results), args.name, measured, labels, kind,
                                           args.only_visible, args.seed, args.checks, unmatched, advance(shown))
    for path in unmatched:
        print(f"  left out (no file of the same name in the other folder): {path}", file=out)
    for c in definition["cells"]:
        skipped = f", {c['skipped_invisible']} below visibility skipped" if definition["only_visible"] else ""
        print(f"  {c['question']}: {c['pairs']} of {c['available']} pairs{skipped}", file=out)
    print(f"campaign {args.name}: {sum(c['pairs'] for c in definition['cells'])} pairs of image files "
          f"({labels[0]} as A, {labels[1]} as B) and {definition['n_checks']} attention checks; serve it with: "
          f"python app.py --campaign {args.name} --results {args.results}", file=out)


def cmd_inspect(args, out):
    from .core.image_files import check_pair, load
    from .core.metrics import LPIPS
    from .workflows.inspect_pair import measure, text_report, write_outputs
    from .workflows.pair_view import page_assets
    if args.out:
        target = check_writable(args.out, "output folder", "--out")
        if target.exists() and not target.is_dir():
            raise UsageError(f"--out {target} is a file; name a folder")
    a, b = load(args.a), load(args.b)
    check_pair(a, b)  # both files refused or accepted before LPIPS is loaded
    remade = _remake(args, a, b) if args.remake else None  # a file this tool cannot remake is refused first
    metric = LPIPS(args.lpips_weights)
    shown = sys.stderr.isatty()  # progress on a terminal only: stderr stays empty for scripts
    if shown:
        print(f"measuring {a.size} (LPIPS, FLIP, PSNR, SSIM) …", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = measure(metric, a, b)
    if shown:
        print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(text_report(result), file=out)
    if args.out:
        paths = write_outputs(args.out, result, page_assets())
        print("wrote " + ", ".join(str(p) for p in paths), file=out)
    if remade:
        _write_remake(args, remade, out)


def _remake(args, a, b):
    """(model, the remade pair: core.remake.remake_pair) of two loaded files on --remake's model."""
    from sampler_lib.models.interface import sampling_of

    from .core.remake import remake_pair
    model = load_model_or_fail(args.remake)
    pair = remake_pair(a.meta, b.meta, args.remake, model.prompts())
    for cfg in (pair["a"], pair["b"]):
        schedule(cfg, sampling_of(model))  # a config this model cannot run is refused before anything is written
    model.condition(pair["prompt"], pair["a"].guidance_scale)
    model.condition(pair["prompt"], pair["b"].guidance_scale)
    return model, pair


def _compact(cfg):
    """A config as the JSON `sweep --a/--b` takes: what a sweep's base sets, and every field off its default."""
    import json
    default = SamplerConfig()
    return json.dumps({k: v for k, v in cfg.to_dict().items()
                       if k in ("sampler", "schedule", "steps", "guidance_scale", "convention")
                       or v != getattr(default, k)})


def _write_remake(args, remade, out):
    """Print the remade pair and the sweep that runs it; with --out, sample it beside inspect.html."""
    import io
    import json
    import shlex

    from .core.pairs import run_pair
    from .files import write_atomic
    model, pair = remade
    print(f"\nremade here on {args.remake} (seed {pair['seed']}, prompt {pair['prompt']!r}):", file=out)
    for side in ("a", "b"):
        print(f"{side.upper()} = {_compact(pair[side])}", file=out)
    for side, notes in pair["unmapped"].items():
        if notes:
            print(f"not carried from {side}: {'; '.join(notes)}", file=out)
    print("run it as a sweep: python -m comparisons sweep " + " ".join(shlex.quote(x) for x in (
        "--model", args.remake, "--seeds", str(pair["seed"]), "--prompt", pair["prompt"],
        "--a", _compact(pair["a"]), "--b", _compact(pair["b"]))), file=out)
    if not args.out:
        return
    run = run_pair(model, pair["a"], pair["b"], pair["prompt"], pair["seed"])
    folder = Path(args.out)
    paths = []
    for side, arm in (("A", run.a), ("B", run.b)):
        data = io.BytesIO()
        arm.image.save(data, format="PNG")
        write_atomic(folder / f"remade-{side}.png", data.getvalue())
        paths.append(folder / f"remade-{side}.png")
    record = {"model": args.remake, "seed": pair["seed"], "prompt": pair["prompt"],
              "a": pair["a"].to_dict(), "b": pair["b"].to_dict(), "not_carried": pair["unmapped"]}
    write_atomic(folder / "remake.json", json.dumps(record, indent=1))
    paths.append(folder / "remake.json")
    print("wrote " + ", ".join(str(p) for p in paths), file=out)


def sweep_configs(args):
    """(pairing label, config A, config B) from the sweep arguments, validated before any work."""
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {args.steps})")
    base = SamplerConfig.from_dict({"sampler": args.sampler, "steps": args.steps,
                                    "guidance_scale": args.guidance, "convention": args.convention})
    if args.pairing and (args.a or args.b):
        raise UsageError("give either --pairing or --a/--b, not both")
    if args.pairing:
        return (args.pairing, *make_pair(args.pairing, base))
    if not (args.a and args.b):
        raise UsageError(f"give --pairing ({', '.join(PAIRINGS)}) or both --a and --b")
    return CUSTOM, SamplerConfig.from_json(args.a, base), SamplerConfig.from_json(args.b, base)


def _readable_store(path):
    """The results file opened read-only when it exists at this version's schema, else None (the writable open
    then refuses a foreign file before touching it, and upgrades an older one)."""
    try:
        return ResultsStore(path, readonly=True) if Path(path).is_file() else None
    except StoreError:
        return None


def _existing_store(path):
    if not Path(path).is_file():
        raise UsageError(f"no results file at {path}; run a sweep first or pass --results")
    return ResultsStore(path, readonly=True)


def cmd_sweep(args, out):
    from tqdm import tqdm

    from sampler_lib.models.interface import sampling_of

    from .analysis.stats import mean_interval
    from .workflows.lab import Lab
    pairing, cfg_a, cfg_b = sweep_configs(args)
    seeds = parse_seeds(args.seeds)
    model = load_model_or_fail(args.model)
    for cfg in (cfg_a, cfg_b):
        model.condition(args.prompt, cfg.guidance_scale)  # bad prompt words fail before any file is made
        schedule(cfg, sampling_of(model))  # so does a schedule that cannot be built
    check_writable(args.results, "results file", "--results")
    lab = Lab(args.results, lpips_weights=args.lpips_weights, load=lambda name: model)
    lab.lpips()
    rows = []
    for seed in tqdm(seeds, desc=f"{pairing} pairs", unit="pair", file=sys.stderr):
        rows.append(lab.compare(args.prompt, seed, cfg_a, cfg_b, pairing=pairing, model=args.model,
                                reference=args.reference)["metrics"])
    print(f"\n{pairing}: {len(rows)} pairs, {args.prompt!r}, {cfg_a.sampler} {cfg_a.steps} steps, "
          f"model {args.model}, results {args.results}", file=out)
    print(f"A = {cfg_a.to_json()}\nB = {cfg_b.to_json()}", file=out)
    keys = ["lpips", "psnr", "ssim", "max_abs_diff"] + (["lpips_a_ref", "lpips_b_ref"] if args.reference else [])
    table = []
    for key in keys:
        mean, lo, hi = mean_interval([r.get(key) for r in rows])
        table.append([key, f"{mean:.4g}", "" if math.isnan(lo) else f"[{lo:.4g}, {hi:.4g}]"])
    print(text_table(["metric", "mean", "95% CI"], table, right=("mean", "95% CI")), file=out)
    if args.reference:
        closer = sum(r["lpips_a_ref"] < r["lpips_b_ref"] for r in rows)
        print(f"A closer to the 200-step reference in {closer} of {len(rows)} pairs", file=out)


def load_model_or_fail(name):
    from sampler_lib.models import load_model
    try:
        return load_model(name)
    except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load model {name!r} ({first}); use --model embedded, embedded-flow "
                         "or a diffusers id or folder (SD 1.x/2.x, SDXL, SD3/SD3.5, Flux.1) that is available "
                         "offline") from exc


class PhaseBars:
    """One progress bar per phase of a study, each timed by its own phase: a bar opens when its phase first reports
    (a phase starts with amount 0), and its clock runs only while its phase works, so its elapsed time, rate and ETA
    are that phase's own (the arms' ETA does not count the references computed before them, nor the measuring
    between chunks)."""

    def __init__(self, totals, file=None, clock=None):
        self.totals = {phase: (total, desc, unit) for phase, (total, desc, unit) in totals.items() if total}
        self.file, self.clock = file or sys.stderr, clock or time.time
        self.bars, self.spent, self.active, self.since = {}, {}, None, None

    def seconds(self, phase):
        """The time `phase` has worked so far."""
        running = self.clock() - self.since if phase == self.active else 0.0
        return self.spent.get(phase, 0.0) + running

    def __call__(self, phase, amount):
        from tqdm import tqdm
        if phase not in self.totals:
            return
        if phase != self.active:
            now = self.clock()
            if self.active is not None:
                self.spent[self.active] = self.seconds(self.active)
            self.active, self.since = phase, now
            if phase not in self.bars:
                total, desc, unit = self.totals[phase]
                bar = tqdm(total=total, desc=f"{desc:<10}", unit=unit, position=len(self.bars), file=self.file,
                           smoothing=0, dynamic_ncols=True, mininterval=0.5)
                bar._time = lambda: self.seconds(phase)  # the phase's own clock, for elapsed, rate and ETA
                bar.start_t = bar.last_print_t = self.seconds(phase)
                self.bars[phase] = bar
        if amount:
            self.bars[phase].update(amount)

    def close(self):
        for bar in self.bars.values():
            bar.close()


def _run_study(args, ray, store, model, metric, spec):
    """The study's missing samples, here or on the Ray cluster: a bar of shards on Ray; here, what is cached, then one
    bar per phase that has work (PhaseBars): references and arms in item-steps (samples x steps), the pairs measured
    (LPIPS, FLIP) and the rows stored, each with its own phase's rate and ETA."""
    from tqdm import tqdm

    from .core.engine import compiled
    from .workflows.study import run_study
    if ray is not None:
        from .workflows.distributed import run_study_ray
        bar = tqdm(desc=f"study {spec.name} on Ray", unit="shard", file=sys.stderr)

        def shards(done, total, running, workers):
            bar.total, bar.n = total, done
            bar.set_postfix_str(f"{running} of {workers} workers running")

        try:
            return run_study_ray(ray, store, spec, args.batch, args.lpips_weights, args.ray_workers,
                                 args.ray_gpus_per_worker, progress=shards, compile_network=args.compile,
                                 compile_mode=args.compile_mode)
        finally:
            bar.close()
    bars = [PhaseBars({})]

    def opened(c):
        """Before any work: say what is stored and cached, and which phases have work."""
        if c.rows_done == c.rows_total:
            print(f"study {printable(spec.name)}: all {c.rows_total} rows are stored; nothing to sample",
                  file=sys.stderr)
            return
        print(f"study {printable(spec.name)}: {c.rows_done} of {c.rows_total} rows stored; to sample: references "
              f"{c.references_cached} of {c.references} cached, arm outputs {c.arms_cached} of {c.arms} cached",
              file=sys.stderr)
        bars[0] = PhaseBars({"references": (c.reference_work, "references", " item-steps"),
                             "arms": (c.arm_work, "arms", " item-steps"),
                             "measuring": (c.pairs_to_measure, "measuring", " pairs"),
                             "rows": (c.rows_total - c.rows_done, "storing", " rows")})

    try:
        with compiled(model, mode=args.compile_mode) if args.compile else contextlib.nullcontext():
            return run_study(store, model, metric, spec, batch=args.batch, progress=lambda *a: bars[0](*a),
                             on_census=opened)
    finally:
        bars[0].close()


def _choose_reference(store, model, metric, spec):
    """--reference-steps auto: the ladder climbed (a bar in item-steps while rungs are computed), the choice said."""
    from tqdm import tqdm

    from .workflows.study import choose_reference_steps
    if not spec.reference_ladder:
        return spec, None
    bar = tqdm(desc="reference ladder", unit=" item-steps", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    try:
        spec, ladder = choose_reference_steps(store, model, metric, spec, progress=bar.update)
    finally:
        bar.close()
    print(printable(ladder.sentence()), file=sys.stderr, flush=True)
    return spec, ladder


def _reference_cost(run, ladder, seconds, on_ray=False):
    """The line that says what the references cost: item-steps computed (the ladder's and the study's) and their share
    of the study's time, from the start of the ladder to the stored rows (Ray's shards are not split by phase)."""
    if on_ray:
        return f"references: not split from the arms on Ray (its shards run every phase); study {seconds:.1f} s"
    work = run.reference_work + (ladder.work if ladder else 0)
    spent = run.reference_seconds + (ladder.seconds if ladder else 0.0)
    split = f"ladder {ladder.work} + study {run.reference_work}, " if ladder else ""
    if not work:
        return f"references: none computed (all cached), study {seconds:.1f} s"
    return (f"references: {work} item-steps ({split}samples x steps) in {spent:.1f} s of {seconds:.1f} s "
            f"({100 * spent / seconds:.0f}%)")


def cmd_study(args, out):
    import datetime

    from .analysis.cells import cell_stats
    from .core.metrics import LPIPS
    from .workflows.report import precision_floor, reference_uncertainty, write_outputs
    from .workflows.study import fill_flip
    # Everything is checked before the results file or the output folder exists.
    check_writable(args.out, "output folder", "--out")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; name a folder")
    check_writable(args.results, "results file", "--results")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1 (got {args.batch})")
    args.compile = args.compile or args.compile_mode is not None
    if args.visible_lpips is not None:
        raise UsageError("--visible-lpips no longer decides visibility: FLIP does; use --visible-flip (default "
                         f"{FLIP_VISIBLE:g})")
    if not (math.isfinite(args.visible_flip) and 0 < args.visible_flip <= 1):
        raise UsageError(f"--visible-flip must be above 0 and at most 1 (got {args.visible_flip})")
    try:
        grid_axes = parse_axes(args.grid)
    except ConfigError as exc:
        raise UsageError(f"--grid: {exc}") from exc
    model = load_model_or_fail(args.model)
    spec = study_spec(model, name=args.name or Path(args.out).absolute().name, model_name=args.model,
                      questions=args.questions, questions_file=args.questions_file, samplers=args.samplers,
                      steps=args.steps, seeds=args.seeds, prompts=args.prompts, guidance=args.guidance,
                      reference=args.reference, precision=args.precision, reference_check=args.reference_check,
                      schedules=args.schedules, reference_steps=args.reference_steps,
                      reference_ladder=args.reference_ladder, reference_tolerance=args.reference_tolerance)
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UsageError(f"--ray-workers must be >= 1 (got {args.ray_workers})")
    if (args.ray_workers or args.ray_gpus_per_worker) and not args.ray:
        raise UsageError("--ray-workers and --ray-gpus-per-worker go with --ray")
    metric = LPIPS(args.lpips_weights)
    ray = None
    if args.ray:
        from .workflows.distributed import connect
        ray = connect(args.ray)  # an unreachable cluster fails here, before the results file exists
    started_all = time.perf_counter()
    try:
        store = ResultsStore(args.results)
        spec, ladder = _choose_reference(store, model, metric, spec)
        run = _run_study(args, ray, store, model, metric, spec)
    finally:
        if ray is not None:
            ray.shutdown()
    study = store.study(spec.name)
    rows = store.study_rows(study["study_id"])
    unmeasured = sum(r.get("flip_max") is None for r in rows)
    if unmeasured:
        print(f"measuring FLIP of {unmeasured} rows stored before FLIP…", file=sys.stderr, flush=True)
    rows = fill_flip(store, rows)
    cells = cell_stats(spec, rows, args.visible_flip)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    print(f"writing the report of {len(rows)} rows (reference uncertainty, precision floor, summary.csv, rows.csv, "
          f"report.html, grid PNGs) to {args.out}…", file=sys.stderr, flush=True)
    cost = _reference_cost(run, ladder, time.perf_counter() - started_all, on_ray=bool(args.ray))
    uncertainty = {**reference_uncertainty(store, spec.model, spec, metric), "ladder": ladder, "cost": cost}
    paths = write_outputs(args.out, store, spec, cells, rows, uncertainty,
                          precision_floor(store, spec, rows, metric), args.app_url, created, grid_axes)
    print(f"report written in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(f"\nstudy {spec.name}: {len(rows)} rows ({run.rows_written} new, {run.samples_run} samples run in "
          f"{run.seconds:.1f} s), model {spec.model}, reference {spec.reference.sampler} {spec.reference.steps} "
          f"steps, {spec.precision}", file=out)
    print(study_table(cells), file=out)
    if ladder is not None:
        print(ladder.sentence(), file=out)
    print(cost, file=out)
    print("wrote " + ", ".join(str(p) for p in paths) + f"; results {args.results}", file=out)


def cmd_export(args, out):
    from .results.export import export_csv
    target = check_writable(args.out, "export folder", "--out")
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {target} is a file; name a folder")
    paths = export_csv(_existing_store(args.results), target)
    print("wrote " + ", ".join(str(p) for p in paths), file=out)


def cmd_stats(args, out):
    from .analysis.stats import by_question_tally
    rows = by_question_tally(_existing_store(args.results).vote_tally())
    if not rows:
        print("no votes yet", file=out)
        return
    for r in rows:
        print(f"{r['pairing']}: {r['decisive']} decisive votes (A {r['a_wins']}, B {r['b_wins']}), "
              f"{r['ties']} ties, {r['both_bad']} both bad", file=out)
        print(f"  A = {r['config_a']}\n  B = {r['config_b']}", file=out)
        if r["decisive"]:
            print(f"  A win rate {r['a_win_rate']:.3f}, Wilson 95% [{r['ci_low']:.3f}, {r['ci_high']:.3f}], "
                  f"sign test p = {r['p_value']:.4g}", file=out)
            print(f"  left side chosen {r['left_rate']:.3f} (position bias p = {r['position_p_value']:.4g}); "
                  f"votes still needed for 80% power: {r['votes_still_needed']}", file=out)


class Printable:
    """A text stream whose writes pass through errors.printable: cell names, file names and metadata come from
    files, and a terminal must show their control characters, not obey them."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        return self.stream.write(printable(text))

    def flush(self):
        self.stream.flush()


def main(argv=None, out=sys.stdout):
    try:
        args = _parser().parse_args(argv)
        {"study": cmd_study, "sweep": cmd_sweep, "export": cmd_export, "stats": cmd_stats,
         "campaign": cmd_campaign, "inspect": cmd_inspect}[args.command](args, Printable(out))
    except (UsageError, ConfigError, StoreError, ImageError, ValueError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the system refused: said in words, not as [Errno n]
        what = f" {exc.filename}" if exc.filename else ""
        print(printable(f"error: cannot use{what}: {(exc.strerror or str(exc)).lower()}; choose another path"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every pair recorded so far is complete (rerun the same command to resume a study)",
              file=sys.stderr)
        return 130
    return 0
