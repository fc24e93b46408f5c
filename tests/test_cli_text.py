"""What the CLI prints from files is shown, never obeyed: control characters in names and metadata come out as
escapes (a hostile PNG must not clear the terminal, retitle it or hide text with a right-to-left override)."""
import io

from comparisons.cli import main as cli_main
from comparisons.errors import printable
from tests.image_fixtures import picture, save_a1111

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\u202egnp.evil"


def test_printable_escapes_controls_and_keeps_text():
    assert printable("plain text, é ✓\n\tnext") == "plain text, é ✓\n\tnext"
    assert printable(HOSTILE) == "\\x1b[2J\\x1b]0;pwned\\x07\\u202egnp.evil"
    assert printable("\x9b31m\x7f\r") == "\\x9b31m\\x7f\\x0d"


def test_inspect_prints_hostile_file_names_and_metadata_as_escapes(tmp_path, capsys):
    a = save_a1111(tmp_path / f"a{HOSTILE}.png", picture(64, 1), sampler=f"Euler{HOSTILE}")
    b = save_a1111(tmp_path / "b.png", picture(64, 1, shift=2), sampler="DPM++ 2M")
    out = io.StringIO()
    assert cli_main(["inspect", str(a), str(b), "--out", str(tmp_path / "out")], out=out) == 0
    text = out.getvalue()
    assert "Euler\\x1b[2J\\x1b]0;pwned\\x07\\u202egnp.evil" in text, text  # the differing sampler, escaped
    assert not any(c in text for c in "\x1b\x07\u202e"), text


def test_an_error_naming_a_hostile_file_is_one_escaped_line(tmp_path, capsys):
    missing = tmp_path / f"gone{HOSTILE}.png"
    assert cli_main(["inspect", str(missing), str(missing)], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\\x1b[2J" in err and "\x1b" not in err, err
