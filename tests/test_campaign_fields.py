"""What a campaign of image files and the CSV export state about each pair: cells named by the settings A and B
differ in (never by per-node seeds or prompts), the model from the loader, sampler and steps of multi-pass files,
the resolved settings and each arm's sigmas in pairs.csv and votes.csv, every column escaped for spreadsheets, and
a pair whose A and B are the same file refused, said in one line."""
import csv
import json
import shutil

import pytest
from PIL import PngImagePlugin

from comparisons.core.config import NO_SEED, ImageArm, SamplerConfig, schedule
from comparisons.core.image_meta import metadata
from comparisons.errors import CampaignError
from comparisons.results.export import FORMULA_START, RESOLVED_COLUMNS, export_csv, votes_frame
from comparisons.results.store import ResultsStore
from comparisons.workflows import image_campaign
from comparisons.workflows.image_campaign import campaign_cell, create, measure_all, pairs_from_folders
from sampler_lib import round_sigmas
from tests.conftest import run_cli
from tests.image_fixtures import comfyui_graph, picture

BASE, REFINER = "sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"


def save_graph(path, image, graph):
    """A PNG as ComfyUI's SaveImage writes it: the API graph that ran as the `prompt` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    image.save(path, format="PNG", pnginfo=info)
    return path


def refiner_graph(scheduler, seed, prompt, size=32):
    """SDXL base + refiner as ComfyUI's example runs it: two KSamplerAdvanced passes, 20 of 25 steps on the base
    (noise added, leftover noise returned) then steps 20-25 on the refiner (no noise added), each pass with its own
    checkpoint, text encoders, seed widget and prompt text."""
    def encode(text, clip):
        return {"inputs": {"text": text, "clip": [clip, 1]}, "class_type": "CLIPTextEncode"}

    def advanced(model, pos, neg, latent, noise, node_seed, start, end, leftover):
        return {"inputs": {"add_noise": noise, "noise_seed": node_seed, "steps": 25, "cfg": 8.0,
                           "sampler_name": "euler", "scheduler": scheduler, "start_at_step": start, "end_at_step": end,
                           "return_with_leftover_noise": leftover, "model": [model, 0], "positive": [pos, 0],
                           "negative": [neg, 0], "latent_image": [latent, 0]}, "class_type": "KSamplerAdvanced"}

    return {
        "4": {"inputs": {"ckpt_name": BASE}, "class_type": "CheckpointLoaderSimple"},
        "12": {"inputs": {"ckpt_name": REFINER}, "class_type": "CheckpointLoaderSimple"},
        "5": {"inputs": {"width": size, "height": size, "batch_size": 1}, "class_type": "EmptyLatentImage"},
        "6": encode(prompt, "4"), "7": encode("text, watermark", "4"),
        "15": encode(prompt + ", detailed", "12"), "16": encode("text, watermark", "12"),
        "10": advanced("4", "6", "7", "5", "enable", seed, 0, 20, "enable"),
        "11": advanced("12", "15", "16", "10", "disable", seed + 7, 20, 10000, "disable"),
        "17": {"inputs": {"samples": ["11", 0], "vae": ["12", 2]}, "class_type": "VAEDecode"},
        "19": {"inputs": {"filename_prefix": "ComfyUI", "images": ["17", 0]}, "class_type": "SaveImage"},
    }


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def folder_campaign(root, lpips_metric, save, name="c", checks=0.0):
    """Folders `karras` and `beta` of files written by `save(path, image, side, i)`, made into campaign `name`."""
    for side in ("karras", "beta"):
        (root / side).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            save(root / side / f"{i:05d}.png", picture(32, i, shift=0 if side == "karras" else 1), side, i)
    sources, _ = pairs_from_folders(root / "karras", root / "beta")
    store = ResultsStore(root / "r" / "r.db")
    definition = create(store, name, measure_all(sources, lpips_metric), ("karras", "beta"), "folders", checks=checks)
    return store, definition


def vote_all(store, name):
    for k, p in enumerate(store.campaign_pairs(name)):
        store.record_vote(p["pair_id"], "AB"[k % 2], "A", f"s{k}", campaign=name)


# ---- cells ---------------------------------------------------------------------------------------------------


def test_cells_are_named_by_the_settings_that_differ_never_by_seeds_or_prompts():
    a = {"sampler": "euler", "scheduler": "karras", "steps": 20, "seed": 1, "prompt": "x", "negative_prompt": "y"}
    labels = ("k", "b")
    assert campaign_cell(a, {**a, "scheduler": "beta"}, labels) == "scheduler: karras vs beta"
    # A seed or a prompt that differs (within the pair, or from pair to pair) names nothing: one cell.
    assert campaign_cell(a, {**a, "scheduler": "beta", "seed": 2, "prompt": "z", "negative_prompt": "w"},
                         labels) == "scheduler: karras vs beta"
    assert campaign_cell({**a, "seed": 5}, {**a, "seed": 6}, labels) == "k vs b"
    # Metadata read before the fields summed up the passes: per-node keys fold where every node agrees; per-node
    # seeds and prompts never name a cell, and a '#10 seed' key never reaches a name.
    old_a = {"#10 sampler": "euler", "#11 sampler": "euler", "#10 seed": 3, "#11 seed": 4, "#10 prompt": "p",
             "#11 scheduler": "karras", "#10 scheduler": "karras"}
    old_b = {**old_a, "#10 seed": 8, "#11 seed": 9, "#10 prompt": "q", "#11 scheduler": "beta", "#10 scheduler": "beta"}
    assert campaign_cell(old_a, old_b, labels) == "scheduler: karras vs beta"
    assert "#" not in campaign_cell(old_a, {**old_a, "#10 seed": 99, "#10 scheduler": "beta"}, labels)


def test_a_setting_an_earlier_pass_changes_is_named_by_its_place_in_execution_order():
    """The fields sum up a base + refiner file by its last pass: a base pass run on another scheduler still names
    the cell ('pass 1 scheduler'), by position, never by node id; what the fields already say is not repeated."""
    def file(base_scheduler, refiner_scheduler, seed, node):
        graph = refiner_graph(refiner_scheduler, seed, f"a fox {seed}")
        graph["10"]["inputs"]["scheduler"] = base_scheduler
        graph[node] = graph.pop("10")  # another file numbers its nodes otherwise
        graph["11"]["inputs"]["latent_image"] = [node, 0]
        meta = metadata({"prompt": json.dumps(graph)})
        return meta["fields"], meta.get("passes", [])

    (fa, pa), (fb, pb) = file("karras", "normal", 1, "10"), file("beta", "normal", 2, "30")
    assert fa["scheduler"] == fb["scheduler"] == "normal" and len(pa) == len(pb) == 2
    assert campaign_cell(fa, fb, ("k", "b"), pa, pb) == "pass 1 scheduler: karras vs beta"
    (fa, pa), (fb, pb) = file("karras", "karras", 1, "10"), file("beta", "beta", 5, "10")
    assert campaign_cell(fa, fb, ("k", "b"), pa, pb) == "scheduler: karras vs beta"
    one = [{"sampler": "euler", "steps": 20}]
    assert campaign_cell({}, {}, ("k", "b"), one, one * 2) == "passes: 1 vs 2"


def test_two_pairs_differing_only_in_scheduler_share_one_cell_and_votes_csv_states_the_model(tmp_path,
                                                                                               lpips_metric):
    """Seeds and prompts differ from pair to pair, and within the first pair between A and B: still one cell."""
    def save(path, image, side, i):
        graph = comfyui_graph(prompt=f"a lighthouse {i}{'!' if side == 'beta' and i == 0 else ''}",
                              scheduler=side, seed=100 + i + (50 if side == "beta" and i == 0 else 0), size=32)
        return save_graph(path, image, graph)

    store, definition = folder_campaign(tmp_path, lpips_metric, save, checks=0.5)
    assert [(c["question"], c["pairs"]) for c in definition["cells"]] == [("scheduler: karras vs beta", 2)]
    assert definition["model"] == BASE and definition["n_checks"] == 1
    pairs = store.campaign_pairs("c")
    assert {p["question"] for p in pairs} == {"scheduler: karras vs beta"} and {p["model"] for p in pairs} == {BASE}
    assert sorted(p["seed"] for p in pairs if not p["is_check"]) == [NO_SEED, 101]  # pair 0's seeds differ
    vote_all(store, "c")
    pairs_csv, votes_csv = export_csv(store, tmp_path / "csv")
    for rows in (csv_rows(pairs_csv), csv_rows(votes_csv)):
        real = [r for r in rows if r["pairing"] != "attention-check"]
        assert {r["model"] for r in real} == {BASE} and {r["sampler"] for r in real} == {"euler"}
        assert {r["scheduler"] for r in real} == {"karras / beta"} and {r["steps"] for r in real} == {"20"}
        assert {r["cfg"] for r in real} == {"8.0"} and {r["size"] for r in real} == {"32x32"}
        assert {r["denoise"] for r in real} == {"1.0"} and {r["guidance"] for r in real} == {""}
        # Image files made elsewhere state no sigmas: the columns are there and empty.
        assert {r["sigmas_a"] for r in rows} == {r["sigmas_b"] for r in rows} == {""}


def test_files_naming_different_checkpoints_state_both(tmp_path, lpips_metric):
    def save(path, image, side, i):
        return save_graph(path, image, comfyui_graph(ckpt=f"{side}.safetensors", seed=i, size=32))

    store, definition = folder_campaign(tmp_path, lpips_metric, save)
    assert [c["question"] for c in definition["cells"]] == ["model: karras.safetensors vs beta.safetensors"]
    assert definition["model"] == "karras.safetensors / beta.safetensors"
    vote_all(store, "c")
    votes = csv_rows(export_csv(store, tmp_path / "csv")[1])
    assert {r["model"] for r in votes} == {"karras.safetensors / beta.safetensors"}


def test_refiner_workflows_fill_sampler_steps_and_model_and_share_one_cell(tmp_path, lpips_metric):
    """Base + refiner, per-node seeds and prompts different in every file: one cell named by the scheduler, the
    sampler and the steps run filled in, the model naming both checkpoints, the passes per side in the CSVs."""
    def save(path, image, side, i):
        return save_graph(path, image, refiner_graph(side, seed=10 * i + len(side), prompt=f"a fox {side} {i}"))

    store, definition = folder_campaign(tmp_path, lpips_metric, save)
    assert [(c["question"], c["pairs"]) for c in definition["cells"]] == [("scheduler: karras vs beta", 2)]
    vote_all(store, "c")
    pairs_csv, votes_csv = export_csv(store, tmp_path / "csv")
    for rows in (csv_rows(pairs_csv), csv_rows(votes_csv)):
        assert len(rows) == 2
        for r in rows:
            assert r["sampler"] == "euler" and r["steps"] == "25" and r["scheduler"] == "karras / beta"
            assert BASE.split(".")[0] in r["model"] and REFINER.split(".")[0] in r["model"], r["model"]
            assert "not stated" not in r["model"]
            for side in ("a", "b"):
                passes = json.loads(r[f"{side}_passes"])
                assert len(passes) == 2 and [p.get("steps_run") for p in passes] == [20, 5]


# ---- sigmas --------------------------------------------------------------------------------------------------


def test_sigmas_of_a_sampled_pair_are_the_resolved_schedules_in_both_csvs(tmp_path, lpips_metric):
    """The schedule each arm's sampler ran, after the final-zero and sigma_min rules and the discretization mode,
    as JSON lists that read back to the same floats."""
    from comparisons.workflows.lab import Lab
    lab = Lab(tmp_path / "r.db")
    lab._lpips = lpips_metric
    cfg_a = SamplerConfig(sampler="euler", steps=3, final_zero=False, sigma_min_rule="penultimate_steps")
    cfg_b = SamplerConfig(sampler="euler", steps=3, quantize="paper")
    pair_id = lab.compare("a red circle", 5, cfg_a, cfg_b)["pair_id"]
    lab.store.record_vote(pair_id, "A", "B", "s1")
    model = lab.model("embedded")
    grid = model.denoiser("off").sigmas
    expected = {"sigmas_a": schedule(cfg_a, grid).tolist(),
                "sigmas_b": round_sigmas(model.denoiser("paper"), schedule(cfg_b, grid)).tolist()}
    assert expected["sigmas_a"][-1] != 0 and expected["sigmas_b"][-1] == 0  # the rules did act
    assert expected["sigmas_b"] != schedule(cfg_b, grid).tolist()  # paper mode rounds to the training sigmas
    pairs_csv, votes_csv = export_csv(lab.store, tmp_path / "csv")
    for rows in (csv_rows(pairs_csv), csv_rows(votes_csv)):
        (row,) = rows
        for column, values in expected.items():
            assert json.loads(row[column]) == values and len(values) == 4
        assert row["sampler"] == "euler" and row["steps"] == "3" and row["scheduler"] == "karras"
        assert row["model"] == "embedded" and row["cfg"] == "3.0"


def test_a_pair_stored_with_no_sigmas_or_odd_ones_still_exports(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    img = store.save_image(picture(8, 0), {})
    pid = store.record_pair(pairing="custom", model="embedded", prompt="p", seed=1, config_a=SamplerConfig(),
                            config_b=SamplerConfig(steps=3), image_a=img, image_b=img, metrics={}, sigmas_a=[],
                            sigmas_b=[14.614641189575195, 0.1, 0], lockstep=False, seconds=0.0)
    store.record_vote(pid, "tie", "A", "s")
    frame = votes_frame(store.votes())
    assert list(frame["sigmas_a"]) == [""] and list(frame["sigmas_b"]) == ["[14.614641189575195, 0.1, 0.0]"]


# ---- CSV escaping --------------------------------------------------------------------------------------------


def _image_side(sign, fname):
    fields = {k: f"{sign}{k.upper()}(1)" for k in RESOLVED_COLUMNS}
    fields.update(sampler=f'{sign}HYPERLINK("http://example.invalid/x", "click")', steps=f"{sign}1+2",
                  prompt=f"{sign}cmd|' /C calc'!A0", seed=3)
    return {"file": fname, "format": "comfyui", "fields": fields, "raw": {}, "note": f"{sign}note",
            "passes": [{"sampler": f"{sign}x", "steps": 4}]}


@pytest.mark.parametrize("salt", [None, "pepper"])
def test_every_column_of_both_csvs_is_escaped_the_metadata_ones_included(tmp_path, salt):
    """Formula-leading text in every text field a pair, a vote, a file's metadata or a manifest can carry: no cell of
    pairs.csv or votes.csv starts a formula (a number like -0.5 is a number, not a formula)."""
    store = ResultsStore(tmp_path / "r.db")
    img = store.save_image(picture(8, 0), {})
    meta = {"A": _image_side("=", "=a.png"), "B": _image_side("@", "+b.png"), "columns": {"rater": "-1+1"}}
    image_pair = store.record_pair(pairing="=cell", model="=model", prompt="+prompt", seed=NO_SEED,
                                   config_a=ImageArm("=karras", "@camp"), config_b=ImageArm("-beta", "@camp"),
                                   image_a=img, image_b=img, metrics={"lpips": -0.0}, sigmas_a=[], sigmas_b=[],
                                   lockstep=False, seconds=0.0, image_meta=meta)
    sampled = store.record_pair(pairing="=HYPERLINK(1)", model="@model", prompt="=1+1", seed=1,
                                config_a=SamplerConfig(), config_b=SamplerConfig(steps=3), image_a=img, image_b=img,
                                metrics={}, sigmas_a=[1.5, 0.0], sigmas_b=[1.5, 0.5, 0.0], lockstep=False,
                                seconds=0.0)
    store.record_vote(image_pair, "A", "B", "=session", note="=note")
    store.record_vote(sampled, "B", "A", "+session", note="\t=tab\r=cr")
    paths = export_csv(store, tmp_path / "csv", salt=salt)
    seen = set()
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 3  # a header and two rows: no line break split a row
        for row in rows[1:]:
            for value in row:
                seen.add(value)
                if value[:1] in ("\t", "\n", "\r") or value.lstrip().startswith(FORMULA_START):
                    float(value)  # only a number may start so
    # The metadata-derived columns were filled (and escaped), not left empty.
    for expected in ("'=HYPERLINK(\"http://example.invalid/x\", \"click\") / @HYPERLINK(\"http://example.invalid/x\", "
                     "\"click\")", "'=1+2 / @1+2", "'=MODEL(1) / @MODEL(1)", "'=a.png", "'+b.png", "'=karras",
                     "'-beta", "'=cell", "'+prompt", "'=1+1"):
        assert expected in seen, expected
    assert any(v.startswith("'=note") for v in seen) and any(v.startswith("'\t=tab") for v in seen)
    assert any(v.startswith("'[") or v.startswith("[{") for v in seen)  # the passes' JSON, starting with [
    assert "'=session" in seen if salt is None else not any("session" in v for v in seen)


# ---- the same file as A and B --------------------------------------------------------------------------------


def _two_folders(root, same_name="00001"):
    for side in ("a", "b"):
        (root / side).mkdir(parents=True)
        for i in range(3):
            save_graph(root / side / f"{i:05d}.png", picture(32, i, shift=0 if side == "a" else 1),
                       comfyui_graph(scheduler={"a": "karras", "b": "beta"}[side], seed=i, size=32))
    shutil.copyfile(root / "a" / f"{same_name}.png", root / "b" / f"{same_name}.png")  # the same bytes as B
    return root / "a", root / "b"


def test_the_same_file_as_a_and_b_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    dir_a, dir_b = _two_folders(tmp_path)
    code, _, err = run_cli(["campaign", "create", "c", "--from-folders", str(dir_a), str(dir_b),
                            "--results", str(tmp_path / "r" / "r.db")])
    assert code == 2 and len(err) == 1, err
    assert "pair 00001.png: A and B are the same file (same bytes" in err[0] and "refused, not counted" in err[0]
    assert not (tmp_path / "r").exists()
    # A manifest naming one file twice, or a copy of it: the same, every such pair named.
    (tmp_path / "m.csv").write_text("a,b\na/00000.png,a/00000.png\na/00001.png,b/00001.png\na/00002.png,b/00002.png\n")
    code, _, err = run_cli(["campaign", "create", "m", "--from-manifest", str(tmp_path / "m.csv"),
                            "--results", str(tmp_path / "r" / "r.db")])
    assert code == 2 and "pair 00000.png: A and B are the same file" in err[0], err
    assert "2 such pairs in all: 00000.png, 00001.png" in err[0] and not (tmp_path / "r").exists()


def test_create_refuses_measured_pairs_of_the_same_bytes(tmp_path, lpips_metric):
    """A caller of create() that skipped measure_all's check is refused there as well."""
    dir_a, dir_b = _two_folders(tmp_path, same_name="00002")
    sources, _ = pairs_from_folders(dir_a, dir_b)
    with pytest.raises(CampaignError, match="pair 00002.png: A and B are the same file"):
        measure_all(sources, lpips_metric)
    measured = measure_all(sources[:2], lpips_metric)
    src, m = measured[0]
    same = [(src, {**m, "sha": (m["sha"][0], m["sha"][0])})]
    with pytest.raises(CampaignError, match="pair 00000.png: A and B are the same file"):
        create(ResultsStore(tmp_path / "r.db"), "c", same, ("a", "b"), "folders")
    assert ResultsStore(tmp_path / "r.db").campaigns() == []
    assert image_campaign.same_file_message([src]).startswith("pair 00000.png: A and B are the same file")
