import numpy as np
import pytest

from mssl_core.engine.data.characters import split_classes
from mssl_core.engine.data.episodes import EpisodeSampler, EpisodeSpec


def test_character_splits_are_disjoint_and_cover_every_class():
    splits = split_classes(9574)
    train, val, test = (set(splits[k].tolist()) for k in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(9574))
    assert len(train) > len(test) > len(val) > 500


def test_split_is_fixed_by_its_seed():
    assert np.array_equal(split_classes(1000)["test"], split_classes(1000)["test"])


def test_episode_counts_and_labels():
    spec = EpisodeSpec(ways=5, shots=2, unlabeled=3, distractors=4, queries=6)
    episode = EpisodeSampler(20, 12, spec, seed=1).sample()
    assert len(episode.support) == 5 * 2 and len(episode.query) == 5 * 6
    assert len(episode.unlabeled) == (5 + 4) * 3
    assert sorted(set(episode.support_labels)) == list(range(5))
    assert (episode.unlabeled_labels == -1).sum() == 4 * 3
    assert np.bincount(episode.query_labels).tolist() == [6] * 5


def test_support_unlabeled_query_and_distractors_do_not_overlap():
    spec = EpisodeSpec(ways=5, shots=1, unlabeled=4, distractors=3, queries=5)
    sampler = EpisodeSampler(30, 10, spec, seed=2)
    for _ in range(20):
        e = sampler.sample()
        all_indices = np.concatenate([e.support, e.unlabeled, e.query])
        assert len(set(all_indices.tolist())) == len(all_indices)
        task_classes = set((np.concatenate([e.support, e.query]) // 10).tolist())
        distractor_classes = set((e.unlabeled[e.unlabeled_labels == -1] // 10).tolist())
        assert len(task_classes) == 5 and len(distractor_classes) == 3
        assert not task_classes & distractor_classes
        # every support image is labelled with the class it was drawn from
        for index, label in zip(e.support, e.support_labels, strict=True):
            assert index // 10 == e.classes[label]


def test_same_seed_same_episodes():
    spec = EpisodeSpec(3, 1, 2, 1, 2)
    a = EpisodeSampler(10, 6, spec, seed=5).sample()
    b = EpisodeSampler(10, 6, spec, seed=5).sample()
    assert np.array_equal(a.query, b.query) and np.array_equal(a.unlabeled, b.unlabeled)


def test_sampler_refuses_impossible_episodes():
    with pytest.raises(ValueError, match="images per class"):
        EpisodeSampler(10, 5, EpisodeSpec(3, 5, 5, 0, 5))
    with pytest.raises(ValueError, match="classes asked"):
        EpisodeSampler(4, 50, EpisodeSpec(3, 1, 1, 2, 1))
