import numpy as np
import pytest

from mssl_core.engine.data import characters, real
from mssl_core.engine.data.paths import FASHION_MNIST_DIR, npm_modules_dir


def test_rendering_is_reproducible_and_varies_between_samples():
    stroke = [np.array([[100.0, 500.0], [500.0, 520.0], [900.0, 480.0]])]
    a = characters.render_character(stroke, np.random.default_rng(1))
    b = characters.render_character(stroke, np.random.default_rng(1))
    c = characters.render_character(stroke, np.random.default_rng(2))
    assert a.shape == (28, 28) and a.dtype == np.uint8 and a.max() > 200
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_scikit_learn_digits_are_a_class_pool():
    images, labels = real.load_sklearn_digits()
    assert images.shape == (1797, 8, 8) and images.max() == 255
    assert real.as_class_pool(images, labels, 150).shape == (10, 150, 8, 8)


@pytest.mark.skipif(not (npm_modules_dir() / "mnist").exists(), reason="run scripts/setup.sh")
def test_mnist_from_npm():
    images, labels = real.load_mnist()
    assert images.shape[1:] == (28, 28) and len(images) == len(labels) >= 9000
    assert sorted(set(labels.tolist())) == list(range(10))


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="needs dataset-fashion-mnist")
def test_fashion_mnist_from_debian():
    images, labels = real.load_fashion_mnist()
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


def test_photo_tasks_are_augmented_regions_of_photos_outside_every_benchmark_domain():
    from mssl_core.engine.data import photo_tasks

    names = {p.name for p in photo_tasks.photo_paths()}
    assert {"china.jpg", "flower.jpg"} <= names  # scikit-learn's, always installed
    # a test domain (textures), a development domain (microscopy), a look-alike of a test domain
    assert not names & {
        "brick.png",
        "grass.png",
        "gravel.png",
        "ihc.png",
        "retina.jpg",
        "cell.png",
        "horse.png",
    }
    pool = photo_tasks.photo_task_pool(regions_per_photo=2, views=4, size=32, seed=0)
    assert pool.shape == (2 * len(names), 4, 32, 32, 3) and pool.dtype == np.uint8
    assert not np.array_equal(pool[0, 0], pool[0, 1])  # views of one region differ
    # views of one region are closer to each other than to another photo's region
    first, other = pool[0].astype(float), pool[-1].astype(float)
    within = np.abs(first[0] - first[1:]).mean()
    across = np.abs(first[0] - other).mean()
    assert within < across
    assert np.array_equal(pool, photo_tasks.photo_task_pool(regions_per_photo=2, views=4, size=32, seed=0))
