"""Baseline: multinomial logistic regression on the backbone's features, support set only."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController
from torch import Tensor

from mssl_core.engine.contract import Baseline
from mssl_core.engine.methods.base import register

# NumPy's OpenBLAS threads and PyTorch's OpenMP threads wait-spin against each other on a few
# cores: fitting 500 labeled images took 0.59 s with two BLAS threads, 0.06 s with one.
_BLAS = ThreadpoolController()  # made once: finding the loaded libraries takes milliseconds


@register
class LogisticRegressionBaseline(Baseline):
    """Supervised linear classifier; not meta-trained."""

    name = "logreg"
    description = "Baseline: a linear classifier trained on the labeled examples only."

    def __init__(self, c: float = 1.0, seed: int = 0):
        self.c, self.seed = c, seed

    @_BLAS.wrap(limits=1, user_api="blas")
    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None):
        labels = support_labels.numpy()
        self.n_classes = int(labels.max()) + 1
        self.scaler = StandardScaler().fit(support.numpy())
        self.single_class = len(np.unique(labels)) < 2
        if not self.single_class:
            model = LogisticRegression(C=self.c, max_iter=1000, random_state=self.seed)
            self.model = model.fit(self.scaler.transform(support.numpy()), labels)
        return self

    @_BLAS.wrap(limits=1, user_api="blas")
    def predict_proba(self, x: Tensor) -> Tensor:
        if self.single_class:
            return torch.ones(len(x), 1)
        proba = np.zeros((len(x), self.n_classes))
        proba[:, self.model.classes_] = self.model.predict_proba(self.scaler.transform(x.numpy()))
        return torch.from_numpy(proba).float()
