"""Quality, speed and storage against ``dimensions``: the figure of docs/dimensions.md.

    # from a results.json that `qwen-sglang eval` wrote
    python bench/dimensions.py docs/img/eval-demo/results.json --out docs/img/eval-demo/quality-speed.png
    # or run the eval first (same options as `qwen-sglang eval`, after --)
    python bench/dimensions.py --run --out-dir /tmp/ev -- --demo-data --base-url http://127.0.0.1:30000/v1

Left: nDCG@10 per width and query instruction. Right: what a width costs: float32 storage per
million vectors (exact search time grows with it, linearly in the width) and the measured latency
of one query request. The eval's exact-search times are left out: on a small corpus they are
noise (BLAS warm-up, microseconds), and scaling noise to a million vectors would mislead.
The recommended width (smallest within the eval's tolerance of the best) is marked on both.
Needs matplotlib (``pip install 'qwen-sglang[eval]'``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def chart(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    widths = sorted({r["dimensions"] for r in rows})
    rec = results["recommended"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), dpi=120)

    for label in results["instructions"]:
        mine = sorted((r for r in rows if r["instruction"] == label), key=lambda r: r["dimensions"])
        left.plot([r["dimensions"] for r in mine], [r["ndcg"] for r in mine], marker="o", label=f"instruction: {label}")
    left.scatter([rec["dimensions"]], [rec["ndcg"]], s=220, facecolors="none", edgecolors="crimson", linewidths=2)
    left.set_ylabel(f"nDCG@{results['k']}")
    left.set_title("quality")
    left.legend(loc="lower right")

    per_width = {r["dimensions"]: r for r in rows if r["instruction"] == rec["instruction"]}
    xs = [w for w in widths if w in per_width]
    right.plot(
        xs,
        [per_width[w]["float32_mb_per_million"] / 1024 for w in xs],
        marker="s",
        color="#4d4d4d",
        label="float32 storage, GB per 1M vectors",
    )
    right.set_ylabel("GB per million vectors")
    twin = right.twinx()
    twin.plot(
        xs,
        [per_width[w]["query_ms_p50"] for w in xs],
        marker="^",
        color="#7fb2e5",
        linestyle="--",
        label="one query request p50, ms",
    )
    twin.set_ylabel("milliseconds")
    twin.set_ylim(bottom=0)  # latency barely moves with the width: show it at scale
    right.axvline(rec["dimensions"], color="crimson", alpha=0.5)
    right.set_title("cost")
    lines = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(
        lines[0] + more[0], lines[1] + more[1], loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, ncol=2
    )

    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("dimensions (Matryoshka width)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"{results['dataset']}: {results['model']}, {results['n_corpus']} passages, "
        f"{results['n_scored_queries']} queries; recommended {rec['dimensions']} dims"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", help="a results.json written by qwen-sglang eval")
    parser.add_argument("--run", action="store_true", help="run qwen-sglang eval first (its options after --)")
    parser.add_argument("--out-dir", default="eval-out", help="with --run: where eval writes")
    parser.add_argument("--out", default=None, help="the figure (default: quality-speed.png beside results.json)")
    args, eval_args = parser.parse_known_args()
    if args.run:
        eval_args = [a for a in eval_args if a != "--"]
        cmd = [sys.executable, "-m", "qwen_sglang", "eval", *eval_args, "--out", args.out_dir]
        subprocess.run(cmd, check=True)
        results_path = Path(args.out_dir) / "results.json"
    elif args.results:
        results_path = Path(args.results)
    else:
        parser.error("give a results.json, or --run with eval options")
    out = Path(args.out) if args.out else results_path.with_name("quality-speed.png")
    print(chart(json.loads(results_path.read_text(encoding="utf-8")), out))


if __name__ == "__main__":
    main()
