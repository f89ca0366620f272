"""The cleaning job: `python -m retrieval.data clean` hands over to retrieval.pipelines.clean."""

from retrieval.data import formats
from retrieval.data.__main__ import main as data_main


def test_clean_command_writes_a_cleaned_csv(tmp_path, capsys, gldv2_set):
    gldv2_set(tmp_path, {1: 4, 2: 4, 3: 4})
    out = tmp_path / "cleaned.csv"
    argv = ["clean", "--root", str(tmp_path), "--csv", "gldv2/train.csv", "--out", str(out)]
    assert (
        data_main([*argv, "--backbone", "resnet18", "--weights", "none", "--image-size", "32"]) == 0
    )
    assert "kept" in capsys.readouterr().out
    cleaned = formats.read_gldv2_train(out, tmp_path / "gldv2" / "train")
    assert 0 < len(cleaned.ids) <= 12
