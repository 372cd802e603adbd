"""Exact retrieval over the on-disk corpus matrix: Matryoshka prefixes re-normalised, top-k merged
chunk by chunk (ties go to the lower corpus index), timed per width."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from qwen_sglang._vectors import normalize_rows

__all__ = ["F32", "exact_search", "prefix_unit", "top_k"]

F32 = npt.NDArray[np.float32]


def prefix_unit(rows: F32) -> F32:
    """A re-normalised copy (Matryoshka prefixes are views of the corpus matrix)."""
    return normalize_rows(np.array(rows, dtype=np.float32))


def top_k(
    scores: F32, offset: int, best_s: F32, best_i: npt.NDArray[np.int64], k: int
) -> tuple[F32, npt.NDArray[np.int64]]:
    """Merge a chunk's scores into the running top-k (ties go to the lower corpus index)."""
    kk = min(k, scores.shape[1])
    part = _best_columns(scores, kk) if kk < scores.shape[1] else np.argsort(-scores, axis=1)
    chunk_s = np.take_along_axis(scores, part, axis=1)
    all_s = np.concatenate([best_s, chunk_s], axis=1)
    all_i = np.concatenate([best_i, part.astype(np.int64) + offset], axis=1)
    order = np.lexsort((all_i, -all_s), axis=1)[:, :k]
    return np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_i, order, axis=1)


def _best_columns(scores: F32, kk: int) -> npt.NDArray[np.intp]:
    """The ``kk`` best columns of each row, in no order; among scores equal to the ``kk``-th best,
    the lowest columns (``argpartition`` alone picks any of them)."""
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
    tied = (scores == kth).sum(axis=1) > (np.take_along_axis(scores, part, axis=1) == kth).sum(axis=1)
    for row in np.nonzero(tied)[0]:  # a tie across the cut: rare, fixed row by row
        above = np.nonzero(scores[row] > kth[row])[0]
        equal = np.nonzero(scores[row] == kth[row])[0][: kk - len(above)]
        part[row] = np.concatenate([above, equal])
    return part


def exact_search(
    matrix: np.memmap[Any, Any], qvecs: dict[str, F32], widths: list[int], k: int
) -> tuple[dict[tuple[str, int], npt.NDArray[np.int64]], dict[int, float]]:
    """Exact top-k for every (instruction, width), reading the corpus once in bounded chunks."""
    n, native = matrix.shape
    n_q = next(iter(qvecs.values())).shape[0]
    rows_per_chunk = max(256, min(65536, (64 << 20) // (4 * max(native, n_q))))
    queries = {(label, w): prefix_unit(np.ascontiguousarray(q[:, :w])) for label, q in qvecs.items() for w in widths}
    best: dict[tuple[str, int], tuple[F32, npt.NDArray[np.int64]]] = {
        key: (np.empty((n_q, 0), np.float32), np.empty((n_q, 0), np.int64)) for key in queries
    }
    seconds = dict.fromkeys(widths, 0.0)
    warm = np.ones((8, 8), np.float32)
    _ = warm @ warm.T  # load the BLAS kernels before anything is timed
    for a in range(0, n, rows_per_chunk):
        chunk = np.asarray(matrix[a : a + rows_per_chunk], dtype=np.float32)
        for w in widths:
            start = time.perf_counter()
            docs = prefix_unit(np.ascontiguousarray(chunk[:, :w]))
            for label in qvecs:
                scores = queries[(label, w)] @ docs.T
                best[(label, w)] = top_k(scores, a, *best[(label, w)], k)
            seconds[w] += time.perf_counter() - start
    return {key: idx for key, (_, idx) in best.items()}, seconds
