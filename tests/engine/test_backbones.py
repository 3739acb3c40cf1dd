"""The fast inference path for MobileNetV2 (onnxruntime) gives the features of the PyTorch
reference path, and so the same predictions."""

import numpy as np
import torch

from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.methods import make_method


def test_onnxruntime_features_match_pytorch_within_tolerance(monkeypatch):
    backbone = make_backbone("mobilenetv2").eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 224, 224, generator=generator)
    assert backbone._onnx_session() is not None  # onnxruntime is a requirement
    fast = backbone.frozen_features(images)
    monkeypatch.setenv("MSSL_INFERENCE", "torch")
    reference = backbone.frozen_features(images)
    assert fast.shape == reference.shape == (12, 1280)
    assert torch.allclose(fast, reference, atol=1e-4, rtol=1e-4)
    # ... and the same predictions: a prototypical task on the two sets of features
    labels = torch.arange(3).repeat(2)
    predicted = [
        make_method("protonet").fit(f[:6], labels).predict_proba(f[6:]).argmax(1).numpy()
        for f in (fast, reference)
    ]
    assert np.array_equal(*predicted)


def test_the_mobilenet_head_starts_by_keeping_imagenet_distances():
    from mssl_core.engine.backbones import GeometryKeepingHead

    head = GeometryKeepingHead(1280, 256)
    features = torch.randn(40, 1280).abs()  # like pooled ReLU features: positive
    unit = torch.nn.functional.normalize(features, dim=1)
    with torch.no_grad():
        before, after = torch.pdist(unit), torch.pdist(head(features))
    ratio = after / before
    assert head.penalty() == 0
    assert 0.75 < ratio.min() and ratio.max() < 1.25  # Johnson-Lindenstrauss at 256 dimensions
    with torch.no_grad():
        head.correction.weight.add_(0.01)
    assert head.penalty() > 0
    again = GeometryKeepingHead(1280, 256)
    again.load_state_dict(head.state_dict())
    assert torch.equal(again(features), head(features))
