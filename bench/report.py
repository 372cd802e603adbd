"""Charts for docs/benchmarks.md from the JSON the benchmarks write (``--json``).

    python bench/report.py --throughput bench/results/gpu-h100-throughput.json "H100, real SGLang" \
        --throughput bench/results/cpu-throughput.json "CPU, local backend" \
        --ingest bench/results/cpu-ingest.json --out docs/img/benchmarks

Writes ``throughput.png`` (each client's vectors/s as a share of the raw load generator, one
panel per run) and ``ingest.png`` (wall time and peak RSS per contender). Needs matplotlib
(``pip install 'qwen-sglang[eval]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OURS = "#1f6fb4"
PEER = "#b0b0b0"
RAW = "#4d4d4d"


def _colour(name: str) -> str:
    if name.startswith("raw"):
        return RAW
    return OURS if name.startswith(("ours", "qwen-sglang", "from_documents + Qwen")) else PEER


def throughput_chart(runs: list[tuple[dict[str, Any], str]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 3.8), dpi=120, squeeze=False)
    for ax, (data, label) in zip(axes[0], runs, strict=True):
        rows = data["rows"]
        names = [r["client"] for r in rows]
        ratios = [r["vs_raw"] for r in rows]
        bars = ax.barh(names[::-1], ratios[::-1], color=[_colour(n) for n in names[::-1]])
        for bar, r in zip(bars, rows[::-1], strict=True):
            ax.text(
                bar.get_width() + 0.01,
                bar.get_y() + bar.get_height() / 2,
                f"{r['vs_raw']:.2f}  ({r['vectors_s']:.0f}/s)",
                va="center",
                fontsize=8,
            )
        ax.axvline(0.9, color="crimson", linestyle="--", linewidth=1)
        ax.text(0.9, -0.9, " 0.9 target", color="crimson", fontsize=8)
        ax.set_xlim(0, max(1.25, max(ratios) + 0.3))
        ax.set_xlabel("vectors/s as a share of the raw load generator")
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def ingest_chart(data: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["rows"] if "error" not in r]
    names = [r["contender"].replace(" + ", "\n+ ") for r in rows]
    colours = [_colour(r["contender"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=120)
    left.barh(names[::-1], [r["wall_s"] for r in rows][::-1], color=colours[::-1])
    left.set_xlabel("wall time, s (lower is better)")
    right.barh(names[::-1], [r["peak_rss_mb"] for r in rows][::-1], color=colours[::-1])
    right.axvline(1536, color="crimson", linestyle="--", linewidth=1)
    right.text(1536, -0.9, " 1.5 GB target", color="crimson", fontsize=8)
    right.set_xlabel("peak RSS of the ingesting process, MB")
    right.set_yticks([])
    fig.suptitle(f"{data['meta']['n']:,} documents, {data['meta']['width']}-d vectors into Chroma", fontsize=10)
    fig.tight_layout()
    path = out / "ingest.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput", nargs=2, action="append", default=[], metavar=("JSON", "LABEL"))
    parser.add_argument("--ingest", type=Path, default=None, metavar="JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/img/benchmarks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.throughput:
        runs = [(json.loads(Path(p).read_text()), label) for p, label in args.throughput]
        written.append(throughput_chart(runs, args.out))
    if args.ingest:
        written.append(ingest_chart(json.loads(args.ingest.read_text()), args.out))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
