"""The build commands end to end: build ei, build mmir (--wit FILES...), stats, build export, errors."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.test_build_inputs import wit_row, write_dumps, write_wit
from wit_retrieval.build.stats import read_stats
from wit_retrieval.cli import app


def test_build_commands(tmp_path):
    write_dumps(tmp_path / "dumps", "en", [(1, 0, "Paris", False), (2, 0, "Berlin", False)],
                [(1, "page_image_free", "Paris.jpg"), (2, "page_image", "Berlin.jpg")])
    train = write_wit(tmp_path / "wit" / "wit_v1.train.all-00000-of-00001.tsv.gz",
                      [wit_row("en", "Trip", "t1.jpg", "From Paris to Berlin by night train")])
    test = write_wit(tmp_path / "wit" / "wit_v1.test.all-00000-of-00001.tsv.gz",
                     [wit_row("en", "Trip", "t2.jpg", "Paris in the rain at night")])
    root = tmp_path / "root"
    runner = CliRunner()
    result = runner.invoke(app, ["build", "mmir", "--out", str(root), "--wit", str(train)])
    assert result.exit_code == 1 and "build ei" in result.output  # entities first
    result = runner.invoke(app, ["build", "ei", "--dumps", str(tmp_path / "dumps"), "--out", str(root)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["build", "mmir", "--out", str(root), "--workers", "1", "--train-shards", "1",
                                 "--wit", str(train), str(test)])
    assert result.exit_code == 0, result.output
    stats = read_stats(root)
    assert stats["mmir"]["splits"]["train"]["by_query_type"] == {"multi": 1}
    assert stats["mmir"]["splits"]["test"]["queries"] == 1
    result = runner.invoke(app, ["stats", str(root)])
    assert result.exit_code == 0 and "queries per language" in result.output
    result = runner.invoke(app, ["build", "export", str(root), "--train-shards", "2"])
    assert result.exit_code == 0, result.output
    assert (root / "exports" / "mmir_dataset_train-00001-of-00002.tsv.gz").exists()
    result = runner.invoke(app, ["build", "mmir", "--out", str(root), "--wit", str(tmp_path / "wit" / "x.tsv")])
    assert result.exit_code == 1 and "not found" in result.output
