"""Model presets: what is known about the released Qwen3-Embedding models before any request."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelPreset", "PRESETS", "find_preset"]


@dataclass(frozen=True)
class ModelPreset:
    """Static facts about a Qwen3-Embedding model."""

    name: str
    native_dim: int
    min_dim: int
    context_length: int
    num_layers: int

    @property
    def dim_range(self) -> tuple[int, int]:
        """Inclusive range of Matryoshka (``dimensions``) widths."""
        return (self.min_dim, self.native_dim)


#: Presets keyed by the Hugging Face repository name.
PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("Qwen/Qwen3-Embedding-0.6B", 1024, 32, 32768, 28),
        ModelPreset("Qwen/Qwen3-Embedding-4B", 2560, 32, 32768, 36),
        ModelPreset("Qwen/Qwen3-Embedding-8B", 4096, 32, 32768, 36),
    )
}


def find_preset(model: str) -> ModelPreset | None:
    """Find the preset for a model name, served name or local path.

    Matches the repository name exactly, or the last path component (``Qwen3-Embedding-4B``,
    ``/models/Qwen3-Embedding-4B``, ``Qwen3-Embedding-4B-GGUF`` do not all match: only names whose
    last component *equals* the released name, case-insensitively, so a fine-tune under another
    name is treated as unknown and its width learned from the server).
    """
    if model in PRESETS:
        return PRESETS[model]
    tail = model.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].lower()
    for preset in PRESETS.values():
        if preset.name.rsplit("/", 1)[-1].lower() == tail:
            return preset
    return None
