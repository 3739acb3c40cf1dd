"""2-D maps of embeddings for plots: t-SNE where it is fast enough, PCA beyond that."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

TSNE_MAX_POINTS = 1500  # t-SNE takes seconds up to about here on 2 cores; PCA is instant


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the method used ('pca' or 'tsne')."""
    if method == "auto":
        method = "tsne" if 10 < len(embeddings) <= TSNE_MAX_POINTS else "pca"
    if len(embeddings) < 3:
        return np.zeros((len(embeddings), 2)), "pca"
    if method == "tsne":
        perplexity = min(30.0, (len(embeddings) - 1) / 3)
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(embeddings), "tsne"
    return PCA(2, random_state=seed).fit_transform(embeddings), "pca"
