import numpy as np
from PIL import Image

from mssl_core.backbones import make_backbone
from mssl_core.embedding_cache import EmbeddingCache, embed_cached


def test_each_image_is_embedded_once_across_calls(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    backbone = make_backbone("conv4").eval()
    images = {h: Image.new("L", (28, 28), v) for h, v in (("a", 0), ("b", 120), ("c", 255))}
    loads = []

    def load(sha):
        loads.append(sha)
        return images[sha]

    first = embed_cached(backbone, "m1", ["a", "b", "a"], load, cache)
    assert sorted(loads) == ["a", "b"] and first.shape == (3, 64)
    assert np.allclose(first[0], first[2])
    second = embed_cached(backbone, "m1", ["b", "c"], load, cache)
    assert sorted(loads) == ["a", "b", "c"]
    assert np.allclose(second[0], first[1])
    # another model fingerprint never reuses these vectors
    embed_cached(backbone, "m2", ["a"], load, cache)
    assert loads.count("a") == 2
    # and a new process (new connection) finds them on disk
    assert set(EmbeddingCache(tmp_path / "cache.sqlite").get_many("m1", ["a", "b", "c"])) == {"a", "b", "c"}
