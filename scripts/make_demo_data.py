"""Writes the bundled demo (mssl_core/assets/demo/): a few labeled and a batch of unlabeled Fashion-MNIST
images, from Debian's dataset-fashion-mnist, with a fixed seed. The output is shipped; to remake it:
`python scripts/make_demo_data.py`."""

import numpy as np
from PIL import Image

from mssl_core.engine.data.paths import ASSETS_DIR
from mssl_core.engine.data.real import FASHION_MNIST_CLASSES, load_fashion_mnist

DEMO = ASSETS_DIR / "demo"
CLASSES = {1: "trouser", 5: "sandal", 7: "sneaker", 8: "bag", 3: "dress"}
LABELED_PER_CLASS, UNLABELED_PER_CLASS = 5, 60


def main() -> None:
    images, labels = load_fashion_mnist()
    rng = np.random.default_rng(4)
    truth = []
    for index, name in CLASSES.items():
        assert FASHION_MNIST_CLASSES[index] == name
        chosen = rng.permutation(np.flatnonzero(labels == index))
        for i, row in enumerate(chosen[:LABELED_PER_CLASS]):
            path = DEMO / "labeled" / name / f"{name}-{i + 1}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[row]).save(path)
        for row in chosen[LABELED_PER_CLASS : LABELED_PER_CLASS + UNLABELED_PER_CLASS]:
            truth.append((f"item-{row:05d}.png", name, row))
    (DEMO / "unlabeled").mkdir(parents=True, exist_ok=True)
    for file, _, row in truth:
        Image.fromarray(images[row]).save(DEMO / "unlabeled" / file)
    # The true labels let a demo show measured accuracy; the app never reads them to predict.
    lines = ["file,label"] + [f"{file},{name}" for file, name, _ in sorted(truth)]
    (DEMO / "unlabeled_truth.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
