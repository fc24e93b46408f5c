"""The X/Y/Z grid's layout (comparisons/workflows/xyz.py) and the CLI's --grid: axes, fixed values, references,
refusals, PNGs."""
import io
import json

import pytest

from comparisons.errors import ConfigError
from comparisons.workflows.xyz import MAX_CELLS, grid_items, grid_pngs, parse_axes, png_name, xyz
from tests.conftest import run_cli


def rows(seeds=(0, 1), steps=(3, 6), samplers=("heun", "euler")):
    """Study rows as the store gives them: one question (final-zero), each row a pair of arms."""
    out = []
    for sampler in samplers:
        for n in steps:
            for seed in seeds:
                cfg = {"sampler": sampler, "steps": n}
                out.append({"question": "final-zero", "sampler": sampler, "steps": n, "prompt": "p", "seed": seed,
                            "pair_id": f"{sampler}-{n}-{seed}", "image_a": f"a-{sampler}-{n}-{seed}.png",
                            "image_b": f"b-{sampler}-{n}-{seed}.png", "ref_key": f"ref-{seed}",
                            "config_a": json.dumps(cfg), "config_b": json.dumps({**cfg, "final_zero": False})})
    return out


def test_axes_fixed_values_and_references():
    items = grid_items(rows(), {"ref-0": "r0.png", "ref-1": "r1.png"})
    grid = xyz(items, "steps", "arm", "sampler")
    assert grid["x_values"] == [3, 6] and grid["y_values"] == ["final-zero A", "final-zero B"]
    assert [z for z, _ in grid["panels"]] == ["heun", "euler"]
    assert grid["fixed"] == {"schedule": "karras", "seed": 0, "prompt": "p"}
    cell = grid["panels"][1][1][1][0]  # euler, arm B, 3 steps
    assert cell["image"] == "b-euler-3-0.png" and cell["reference"] == "r0.png" and cell["side"] == "B"
    # Seeds as columns: the reference changes with the column, so the panel gets a reference row.
    by_seed = xyz(items, "seed", "steps", fixed={"sampler": "euler", "arm": "final-zero B"})
    assert [[c["image"] for c in row] for row in by_seed["panels"][0][1]] == [
        ["b-euler-3-0.png", "b-euler-3-1.png"], ["b-euler-6-0.png", "b-euler-6-1.png"]]
    from comparisons.workflows.xyz import references
    assert references(by_seed, by_seed["panels"][0][1]) == ("row", ["r0.png", "r1.png"])


@pytest.mark.parametrize("axes, message", [
    (("steps", "steps"), "two or three different ones"),
    (("steps", "colour"), "two or three different ones of sampler, schedule, steps, arm, seed"),
])
def test_bad_axes_are_refused(axes, message):
    with pytest.raises(ConfigError, match=message) as err:
        xyz(grid_items(rows(), {}), *axes)
    assert err.value.field == "grid-axes"


def test_a_fixed_value_the_study_lacks_and_a_grid_too_big_are_refused():
    items = grid_items(rows(), {})
    with pytest.raises(ConfigError, match="no sampler 'lms'; it has heun, euler"):
        xyz(items, "steps", "seed", fixed={"sampler": "lms"})
    big = grid_items(rows(seeds=range(MAX_CELLS // 2 + 1)), {})
    with pytest.raises(ConfigError, match=f"more than {MAX_CELLS}"):
        xyz(big, "seed", "arm", "steps")


def test_pngs_have_a_cell_per_image(tmp_path):
    from PIL import Image
    for r in rows(seeds=(0,), samplers=("heun",)):
        for key in ("image_a", "image_b"):
            Image.new("RGB", (32, 32), (len(r[key]) * 5, 0, 0)).save(tmp_path / r[key])
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "r0.png")
    grid = xyz(grid_items(rows(seeds=(0,), samplers=("heun",)), {"ref-0": "r0.png"}), "steps", "arm")
    pngs = grid_pngs(grid, tmp_path)
    assert list(pngs) == ["all"] and png_name(grid, "all") == "grid-steps-arm.png"
    image = Image.open(io.BytesIO(pngs["all"]))
    from comparisons.workflows.xyz import panel_layout
    layout = panel_layout(grid, 0)
    label_w = layout["images"][0][1]
    # A reference column and two step columns; two arms (the label column as wide as its longest label).
    assert image.size == layout["size"] and image.width == label_w + 3 * 100 and len(layout["images"]) == 2 * 3
    _, x, y = layout["images"][0]
    assert image.getpixel((x + 10, y + 10)) == (0, 0, 255)  # the reference first in each row


def test_cli_refuses_bad_grid_axes_before_anything_is_written(tmp_path):
    code, out, err = run_cli(["study", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "r.db"),
                              "--grid", "steps", "--seeds", "0"])
    assert code == 2 and "--grid: grid axes must be two or three different ones" in " ".join(err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.db").exists()
    assert parse_axes("seed, steps ,arm") == ("seed", "steps", "arm")
