import numpy as np
import pytest
import torch
from conftest import SHAPES, draw_shape

from mssl_core.engine.backbones import embed_images, make_backbone
from mssl_core.labeling.bulk import embed_files
from mssl_core.labeling.embedding_cache import EmbeddingCache
from mssl_core.labeling.images import decode_image


@pytest.fixture
def batch_folder(tmp_path):
    """23 shape images (two of them identical copies) and three files that are not images."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(21):
        draw_shape(SHAPES[i % 3], rng).save(folder / f"{i:02d}.png")
    (folder / "21.png").write_bytes((folder / "03.png").read_bytes())
    (folder / "22.png").write_bytes((folder / "07.png").read_bytes())
    (folder / "05a.png").write_bytes(b"")
    (folder / "10a.txt").write_text("a note, not a scan")
    whole = (folder / "15.png").read_bytes()
    (folder / "15a.png").write_bytes(whole[: len(whole) // 2])
    return folder


def test_streamed_embeddings_equal_embedding_everything_at_once_and_name_each_bad_file(batch_folder):
    backbone = make_backbone("conv4").eval()
    paths = sorted(batch_folder.iterdir())
    logged = []
    embedded = embed_files(backbone, "m", paths, log=logged.append, batch_size=4)
    bad = {"05a.png": "empty", "10a.txt": "text file", "15a.png": "truncated"}
    for path, error in zip(paths, embedded.errors, strict=True):
        assert (bad[path.name] in error) if path.name in bad else error == ""
    assert len(logged) == 3 and all(any(name in line for name in bad) for line in logged)
    readable = [p for p, e in zip(paths, embedded.errors, strict=True) if not e]
    reference = embed_images(backbone, [decode_image(p) for p in readable]).numpy()
    assert embedded.embeddings.shape == reference.shape == (23, 64)
    assert np.allclose(embedded.embeddings, reference, atol=1e-5)


def test_a_second_run_embeds_nothing_again(batch_folder, tmp_path, monkeypatch):
    backbone = make_backbone("conv4").eval()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    paths = sorted(batch_folder.iterdir())
    embedded_images = []
    original = backbone.embed

    def counting(batch):
        embedded_images.append(len(batch))
        return original(batch)

    monkeypatch.setattr(backbone, "embed", counting)
    first = embed_files(backbone, "m", paths, cache, log=lambda _: None, batch_size=4)
    assert sum(embedded_images) == 21  # 23 readable images, two of them copies of others
    second = embed_files(backbone, "m", paths, EmbeddingCache(tmp_path / "cache.sqlite"), log=lambda _: None)
    assert sum(embedded_images) == 21 and np.array_equal(first.embeddings, second.embeddings)
    assert second.errors == first.errors


def test_an_empty_batch_gives_no_embeddings():
    backbone = make_backbone("conv4").eval()
    embedded = embed_files(backbone, "m", [])
    assert embedded.embeddings.shape == (0, 64) and embedded.errors == []
    assert torch.from_numpy(embedded.embeddings).shape == (0, 64)
