"""Embedding a folder of any size at the speed of the network.

Worker threads read, hash, decode and preprocess the next batches while the network embeds the
current one (Pillow and onnxruntime release the GIL). Embeddings already in the cache (same
model, same file content) are neither decoded nor computed again. Only the embeddings are kept:
memory grows by one embedding per image, not one decoded picture.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mssl_core.engine.backbones import Backbone
from mssl_core.labeling.embedding_cache import CacheError, EmbeddingCache
from mssl_core.labeling.images import ImageError, decode_image

logger = logging.getLogger(__name__)

BATCH = 64  # images per network call: large enough for full speed, small enough to stream
AHEAD = 2  # batches prepared ahead of the network
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


@dataclass
class EmbeddedFiles:
    """Per file: '' or the reason it could not be read; embeddings of the readable ones, in order."""

    paths: list[Path]
    errors: list[str]
    embeddings: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)  # read+decode (summed over threads), embed


@dataclass
class _Prepared:
    hashes: list[str | None]  # None: unreadable
    errors: list[str]
    cached: dict[str, np.ndarray]
    batch: torch.Tensor | None  # preprocessed images not in the cache, in `missing` order
    missing: list[str]
    decode_seconds: float


class _Preparer:
    """Reads, hashes, looks up and decodes one batch of files (runs in a worker thread)."""

    def __init__(self, backbone: Backbone, model_key: str, cache: EmbeddingCache | None):
        self.backbone, self.model_key, self.cache = backbone, model_key, cache
        self.cache_failure = ""
        self.cache_lock = threading.Lock()  # one SQLite connection, many threads

    def __call__(self, paths: Sequence[Path]) -> _Prepared:
        started = time.perf_counter()
        contents, hashes, errors = [], [], []
        for path in paths:
            try:
                content = Path(path).read_bytes()
            except OSError as error:
                content, problem = None, f"cannot be read: {error.strerror or error}"
            else:
                problem = "" if content else "the file is empty (0 bytes)"
            contents.append(content if not problem else None)
            hashes.append(hashlib.sha256(content).hexdigest() if not problem else None)
            errors.append(problem)
        cached = {}
        if self.cache is not None:
            with self.cache_lock:
                cached = self.cache.get_many(self.model_key, [h for h in hashes if h])
        images, missing = [], []
        for i, (content, sha) in enumerate(zip(contents, hashes, strict=True)):
            if sha is None or sha in cached or sha in missing:
                continue
            try:
                images.append(decode_image(content))
                missing.append(sha)
            except ImageError as error:
                hashes[i], errors[i] = None, str(error)
        batch = self.backbone.preprocess(images) if images else None
        return _Prepared(hashes, errors, cached, batch, missing, time.perf_counter() - started)

    def store(self, vectors: dict[str, np.ndarray]) -> None:
        """Cache new embeddings; if the cache cannot be written (disk full), remember why and go
        on without it: it only saves time, nothing the user decided lives there."""
        if self.cache is not None:
            with self.cache_lock:
                try:
                    self.cache.put_many(self.model_key, vectors)
                except CacheError as error:
                    self.cache_failure, self.cache = str(error), None


@functools.cache
def _keep_large_blocks_out_of_the_heap() -> None:
    """glibc raises its mmap threshold each time a large block is freed; from then on decoded
    images land in heap arenas, which fragment across threads: measured +140 KB of resident
    memory per image, 2.5 GB after 10,000 photos. A fixed threshold (128 KiB, glibc's own
    starting value) returns large blocks to the system when freed: flat at about 1.3 GB."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def embed_files(
    backbone: Backbone,
    model_key: str,
    paths: Sequence[Path],
    cache: EmbeddingCache | None = None,
    log: Callable[[str], None] = logger.warning,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = BATCH,
    workers: int = 2,
) -> EmbeddedFiles:
    """Embeddings of every readable file in `paths`; unreadable ones are logged by name and
    reported in `errors`, and the rest goes on."""
    _keep_large_blocks_out_of_the_heap()
    prepare = _Preparer(backbone, model_key, cache)
    errors: list[str] = []
    known: dict[str, np.ndarray] = {}  # content hash -> embedding, for this run
    readable: list[str] = []  # content hash of each readable file, in order
    seconds = {"decode": 0.0, "embed": 0.0}
    pending: deque[tuple[Sequence[Path], Future[_Prepared]]] = deque()
    batches = _batches(paths, batch_size)
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for _ in range(AHEAD + workers):
            if (chunk := next(batches, None)) is not None:
                pending.append((chunk, pool.submit(prepare, chunk)))
        while pending:
            chunk, future = pending.popleft()
            prepared = future.result()
            if (following := next(batches, None)) is not None:
                pending.append((following, pool.submit(prepare, following)))
            seconds["decode"] += prepared.decode_seconds
            known.update(prepared.cached)
            # a copy of an image in a batch prepared before the first copy was embedded
            needed = [i for i, sha in enumerate(prepared.missing) if sha not in known]
            if needed:
                started = time.perf_counter()
                fresh = backbone.embed(prepared.batch[needed]).numpy()
                seconds["embed"] += time.perf_counter() - started
                computed = {prepared.missing[i]: vector for i, vector in zip(needed, fresh, strict=True)}
                prepare.store(computed)
                known.update(computed)
            for path, problem in zip(chunk, prepared.errors, strict=True):
                if problem:
                    log(f"{path}: {problem}")
            errors.extend(prepared.errors)
            readable.extend(sha for sha in prepared.hashes if sha is not None)
            done += len(chunk)
            if progress:
                progress(done, len(paths))
    if prepare.cache_failure:
        log(prepare.cache_failure)
    if not readable:
        return EmbeddedFiles(list(paths), errors, np.zeros((0, backbone.embedding_dim), np.float32), seconds)
    embeddings = np.stack([known[sha] for sha in readable]).astype(np.float32, copy=False)
    return EmbeddedFiles(list(paths), errors, embeddings, seconds)
