"""The simulated reviewer (`python -m mssl_core simulate`): its accounting, and that it walks the
batch in the Review page's own order through the app's own adapt step."""

import numpy as np
import pytest

from mssl_core.benchmarks import simulate as simulate_module
from mssl_core.benchmarks.simulate import actions_to_reach, read_truth, simulate_review, write_curve
from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.engine.methods import make_method
from mssl_core.project.pseudo_label import UNDECIDED, adapt_batch
from tests.conftest import gaussian_task

pytestmark = pytest.mark.slow


def _task(spread: float = 0.5, seed: int = 0):
    model = Model("tiny-softkmeans", make_backbone("conv4"), make_method("softkmeans"), {}, "tiny")
    _, support, labels, batch, truth = gaussian_task(
        ways=3, shots=3, unlabeled_per_class=8, seed=seed, spread=spread
    )
    return model, ["a", "b", "c"], support, labels, batch, truth.numpy()


@pytest.mark.parametrize("order", ["app", "least-confident", "random"])
def test_the_curve_starts_at_the_pseudo_labels_accuracy_and_ends_at_every_label_right(order):
    model, classes, support, labels, batch, truth = _task()
    before = adapt_batch(model, classes, support, labels, batch, np.full(len(batch), UNDECIDED))
    start_accuracy = float((before.probabilities.argmax(1) == truth).mean())
    assert start_accuracy < 1  # else the test could not tell the reviewer's work from the model's

    curve = simulate_review(model, classes, support, labels, batch, truth, order=order)
    assert [p.actions for p in curve] == list(range(len(batch) + 1))
    assert curve[0].batch_accuracy == pytest.approx(start_accuracy)
    assert curve[0].actual_errors_remaining == round((1 - start_accuracy) * len(batch))
    assert curve[0].expected_errors_remaining == pytest.approx(float((1 - before.confidence).sum()), rel=1e-5)
    assert curve[-1].batch_accuracy == 1 and curve[-1].reviewed == len(batch)
    assert curve[-1].actual_errors_remaining == 0 and curve[-1].expected_errors_remaining == 0
    assert actions_to_reach(curve, 1.0) <= len(batch)


def test_max_actions_stops_early_and_the_csv_has_the_issue_columns(tmp_path):
    model, classes, support, labels, batch, truth = _task()
    curve = simulate_review(model, classes, support, labels, batch, truth, max_actions=3)
    assert len(curve) == 4 and curve[-1].reviewed == 3
    write_curve(curve, tmp_path / "curve.csv")
    header, *rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert header == "actions,reviewed,batch_accuracy,expected_errors_remaining,actual_errors_remaining"
    assert len(rows) == 4


def test_the_simulator_takes_the_image_the_review_page_would_show(monkeypatch):
    """Both call `review.review_order` with the same inputs; the first image it ranks is the
    one reviewed next."""
    model, classes, support, labels, batch, truth = _task()
    seen = []
    original = simulate_module.review_order

    def spy(probabilities, order, rng):
        ranked = original(probabilities, order, rng)
        seen.append(probabilities[ranked[0]].max())
        return ranked

    monkeypatch.setattr(simulate_module, "review_order", spy)
    curve = simulate_review(model, classes, support, labels, batch, truth, max_actions=4)
    assert len(seen) == 4 and curve[-1].reviewed == 4
    # the app's order: the least confident of the images not yet reviewed, each time
    assert seen[0] == pytest.approx(
        float(
            adapt_batch(model, classes, support, labels, batch, np.full(len(batch), UNDECIDED)).confidence.min()
        )
    )


def test_the_review_page_orders_through_the_same_function():
    source = (REPO_ROOT / "views" / "review.py").read_text()
    assert "from mssl_core.project.review import" in source and "review_order(" in source


def test_truth_naming_a_class_with_no_labeled_images_is_refused_with_its_line(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("file,label\na.png,cat\nb.png,dog\n")
    with pytest.raises(ValueError, match=r"line 3: label 'dog'"):
        read_truth(truth, ["cat", "cow"])
    assert read_truth(truth, ["cat", "dog"]) == {"a.png": 0, "b.png": 1}


def test_simulate_command_on_folders(shape_folders, tiny_models, tmp_path, capsys):
    from mssl_core.cli import main

    support, unlabeled, truth = shape_folders
    (tmp_path / "truth.csv").write_text("file,label\n" + "".join(f"{f},{t}\n" for f, t in truth.items()))
    out = tmp_path / "curve.csv"
    folders = ["--support", str(support), "--unlabeled", str(unlabeled), "--truth", str(tmp_path / "truth.csv")]
    code = main(["simulate", *folders, "--out", str(out), "--no-cache", "--models", str(tiny_models)])
    printed = capsys.readouterr().out
    assert code == 0 and "99% correct:" in printed
    assert len(out.read_text().splitlines()) == 1 + len(truth) + 1  # header, before any action, one per image
