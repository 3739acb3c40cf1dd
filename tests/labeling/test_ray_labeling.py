"""The bulk path on a Ray cluster (a private local one): the same CSV as on one machine."""

import pytest

from mssl_core.cli import main

pytestmark = pytest.mark.slow

pytest.importorskip("ray.data")


def test_label_on_a_local_ray_cluster_writes_the_same_csv(shape_folders, tiny_models, tmp_path, capsys):
    support, unlabeled, truth = shape_folders
    args = ["label", "--support", str(support), "--unlabeled", str(unlabeled), "--models", str(tiny_models)]
    assert main([*args, "--out", str(tmp_path / "local.csv"), "--no-cache"]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "ray.csv"), "--ray", "local"]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 could not be read" in err
    local = (tmp_path / "local.csv").read_text().splitlines()
    on_ray = (tmp_path / "ray.csv").read_text().splitlines()
    assert len(on_ray) == len(truth) + 2  # header, every image, the broken file
    assert on_ray == local
