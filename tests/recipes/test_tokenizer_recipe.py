"""`t5lab tokenizer train` through the real entry point."""

from __future__ import annotations

from t5lab.cli import main
from t5lab.data.tokenizer import Tokenizer


def test_trains_a_t5_style_tokenizer_from_files(tmp_path, capsys):
    words = ["river", "stone", "bridge", "lantern", "harbour", "meadow", "thunder", "whisper"]
    lines = [" ".join(words[(i * 3 + j) % len(words)] for j in range(6)) for i in range(300)]
    (tmp_path / "a.txt").write_text("\n".join(lines[:150]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(lines[150:]) + "\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(tmp_path / "*.txt"), "--vocab-size", "25", "--out", str(out)]) == 0
    assert "25 pieces + 100 sentinels = 125 ids" in capsys.readouterr().out
    tok = Tokenizer.from_file(out)
    assert tok.vocab_size == 125 and tok.decode(tok.encode("river stone bridge")) == "river stone bridge"
    assert tok.encode("x <extra_id_0>", add_eos=False)[-1] == tok.sentinel_id(0) == 124


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert main(["tokenizer", "train", "--out", str(tmp_path / "tok")]) == 1
    assert main(["tokenizer", "train", "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path / "tok")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--data" in err[0] and "none.txt" in err[1]
