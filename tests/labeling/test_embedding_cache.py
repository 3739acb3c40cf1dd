import numpy as np

from mssl_core.labeling.embedding_cache import EmbeddingCache


def test_vectors_are_kept_per_model_and_found_again_by_a_new_connection(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    vectors = {sha: np.full(4, value, np.float32) for sha, value in (("a", 0.5), ("b", -2.0))}
    cache.put_many("m1", vectors)
    found = cache.get_many("m1", ["a", "b", "c"])
    assert set(found) == {"a", "b"} and np.array_equal(found["b"], vectors["b"])
    assert cache.get_many("m2", ["a"]) == {}  # another model never reuses these vectors
    reopened = EmbeddingCache(tmp_path / "cache.sqlite")
    assert set(reopened.get_many("m1", ["a", "b"])) == {"a", "b"}
    reopened.delete_hashes(["a"])
    assert set(cache.get_many("m1", ["a", "b"])) == {"b"}


def test_lookups_of_more_hashes_than_sqlite_takes_at_once(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    cache.put_many("m", {f"{i:05d}": np.full(2, i, np.float32) for i in range(1_234)})
    found = cache.get_many("m", [f"{i:05d}" for i in range(1_300)])
    assert len(found) == 1_234 and found["01233"][0] == 1_233
