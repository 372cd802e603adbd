"""Vector helpers shared by the client, the local backend and eval (numpy only)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["normalize_rows"]

A = TypeVar("A", bound=NDArray[np.floating])


def normalize_rows(rows: A) -> A:
    """Scale each row of ``rows`` to unit L2 length, in place; all-zero rows stay zero.

    The one re-normalisation of the package: answers rounded to bf16 by SGLang, Matryoshka
    prefixes (truncate, then normalise, as SGLang does) and the weighted mean of a long text's
    windows all go through it.
    """
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows
