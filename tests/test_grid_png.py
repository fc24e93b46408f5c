"""Issue #32: the grid PNG's labels are whole (A and B rows never read the same) and a panel draws only its rows
and columns that have an image."""
import io
import json

from PIL import Image

from comparisons.workflows.xyz import LABEL_MAX_PX, _font, grid_html, grid_items, grid_pngs, panel_layout, wrap_text
from comparisons.workflows.xyz import xyz as make_grid

QUESTIONS = ("sigma-min-vs-model@linear_quadratic", "final-zero@align_your_steps")


def rows(questions=QUESTIONS, steps=(3, 6)):
    """Study rows as a --schedules study gives them: question@schedule, both arms under that schedule."""
    out = []
    for question in questions:
        schedule = question.split("@")[1]
        for n in steps:
            cfg = {"sampler": "euler", "steps": n, "schedule": schedule}
            out.append({"question": question, "sampler": "euler", "steps": n, "prompt": "p", "seed": 0,
                        "pair_id": f"{question}-{n}", "image_a": f"a-{schedule}-{n}.png",
                        "image_b": f"b-{schedule}-{n}.png", "ref_key": "ref-0", "config_a": json.dumps(cfg),
                        "config_b": json.dumps({**cfg, "final_zero": False})})
    return out


def _images(tmp_path, rows_):
    for r in rows_:
        for key in ("image_a", "image_b"):
            Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / r[key])
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "r0.png")


def test_empty_rows_and_columns_are_dropped_per_panel(tmp_path):
    _images(tmp_path, rows())
    items = grid_items(rows(), {"ref-0": "r0.png"})
    grid = make_grid(items, "steps", "arm", "schedule")
    # Each schedule's panel holds its own question's two arms: 2 rows, not 4 with two of them empty.
    assert [z for z, _ in grid["panels"]] == ["linear_quadratic", "align_your_steps"]
    for (zv, cells), (xs, ys) in zip(grid["panels"], grid["panel_axes"]):
        assert len(cells) == len(ys) == 2 and all(c is not None for row in cells for c in row)
        assert all(zv in y for y in ys) and xs == [3, 6]
    for index in range(2):
        layout = panel_layout(grid, index)
        assert layout["rows"] == 2 and len(layout["images"]) == 2 * 3  # two arms × (reference + two step counts)
        assert [t["text"] for t in layout["texts"] if t["kind"] == "row"] == [
            f"arm {q} {side}" for q in [QUESTIONS[index]] for side in "AB"]
    page = grid_html(grid, lambda path: "data:,")
    assert page.count("<tr><th>arm ") == 4 and "grid-empty" not in page
    # A column with no image in a panel goes too: steps 6 only under one schedule.
    partial = [r for r in rows() if not (r["steps"] == 6 and "linear" in r["question"])]
    grid = make_grid(grid_items(partial, {"ref-0": "r0.png"}), "steps", "arm", "schedule")
    assert grid["panel_axes"][0][0] == [3] and grid["panel_axes"][1][0] == [3, 6]
    assert [len(row) for row in grid["panels"][0][1]] == [1, 1]


def test_png_labels_are_whole_and_fit_their_column(tmp_path):
    # One schedule, so every arm is in the one panel (the schedule is fixed when it is no axis).
    questions = ("sigma-min-vs-model@linear_quadratic", "final-zero@linear_quadratic",
                 "a_very_long_custom_question_name_from_a_questions_file@linear_quadratic")
    _images(tmp_path, rows(questions))
    grid = make_grid(grid_items(rows(questions), {"ref-0": "r0.png"}), "steps", "arm")
    font = _font()
    layout = panel_layout(grid, 0, font)
    labels = [t for t in layout["texts"] if t["kind"] == "row"]
    assert len(labels) == 2 * len(questions)  # steps as columns: the reference is a column, not a row
    first_image_x = min(x for _, x, _ in layout["images"])
    for t in layout["texts"]:
        assert "".join(t["lines"]) == t["text"]  # whole: nothing cut
        for line in t["lines"]:
            assert font.getlength(line.rstrip()) <= t["width"] + 0.5, (t["text"], line)
        assert t["x"] + t["width"] <= layout["size"][0]
        if t["kind"] == "row":
            assert t["x"] + t["width"] <= first_image_x  # a label never runs under an image
    texts = [t["text"] for t in labels]
    assert len(set(texts)) == len(texts)  # A and B rows read differently
    short = [t for t in labels if "very_long" not in t["text"]]
    assert all(len(t["lines"]) == 1 for t in short)  # the column widened to fit them
    longest = [t for t in labels if "very_long" in t["text"]]
    assert all(len(t["lines"]) >= 2 for t in longest) and first_image_x <= LABEL_MAX_PX
    # The PNG draws that layout: dark text in each row label's box, left of the images.
    image = Image.open(io.BytesIO(grid_pngs(grid, tmp_path)["all"])).convert("L")
    assert image.size == layout["size"]
    for t in labels:
        box = image.crop((t["x"], t["y"], t["x"] + t["width"], t["y"] + len(t["lines"]) * layout["line_h"]))
        assert box.getextrema()[0] < 100, t["text"]


def test_wrap_text_breaks_at_separators_and_inside_a_word_only_when_it_must():
    font = _font()
    assert wrap_text("arm final-zero A", 1000, font) == ["arm final-zero A"]
    lines = wrap_text("arm final-zero@align_your_steps B", 90, font)
    assert len(lines) > 1 and "".join(lines) == "arm final-zero@align_your_steps B"
    assert all(font.getlength(line.rstrip()) <= 90 for line in lines)
    word = "x" * 80
    pieces = wrap_text(word, 50, font)
    assert "".join(pieces) == word and len(pieces) > 1 and all(font.getlength(w) <= 50 for w in pieces)
