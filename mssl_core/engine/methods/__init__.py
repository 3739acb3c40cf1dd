"""Few-shot methods, one file each, registered by name behind the contract in `base.py`."""

from mssl_core.engine.methods import (  # noqa: F401  (importing registers each method)
    label_spreading,
    logreg,
    maml,
    masked_softkmeans,
    matching,
    memory,
    propagation,
    protonet,
    siamese,
    softkmeans,
)
from mssl_core.engine.methods.base import METHODS, Method, make_method

__all__ = ["METHODS", "Method", "make_method"]
