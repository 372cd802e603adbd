"""The one progress-bar factory (tqdm, imported only when a bar is shown)."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(*, total: float | None, unit: str, desc: str, **options: Any) -> Any:
    """A tqdm bar (``tqdm.auto``: a widget in notebooks, text elsewhere) that adapts to the
    terminal's width. Callers create one only when progress is to be shown."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, **options)
