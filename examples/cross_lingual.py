"""Cross-lingual retrieval: Chinese questions find English passages, English questions find Chinese ones.

    python examples/cross_lingual.py [--model /path/to/Qwen3-Embedding-0.6B] [--backend local|sglang]

Qwen3-Embedding maps texts of 100+ languages into one space, so a question does not need to be
in the language of the passage that answers it. The script embeds the shipped corpus (English
and Chinese passages) once, then searches **only the other language's passages** for each
question, with Qwen3's query instruction on, and reports whether the passage that answers it is
in the top 3.

Where no model hub is reachable and Qwen3 is not cached, the demo's stated fallback,
all-MiniLM-L6-v2, is served instead: it is English-only, so its cross-lingual hits are mostly
misses. That is the point of the comparison: run it with Qwen3 (``--model``) to see the claim.
"""

from __future__ import annotations

import argparse

import numpy as np

from qwen_sglang import EmbeddingClient
from qwen_sglang.cli.demo import demo_server, load_corpus

#: (question, language of the question, id of the passage that answers it)
QUESTIONS = [
    ("埃菲尔铁塔是为哪一年的世界博览会建造的？", "zh", "eiffel"),
    ("谁最早登上了月球？", "zh", "moon-landing"),
    ("哪种动物有三颗心脏和蓝色的血液？", "zh", "octopus"),
    ("青霉素是谁发现的？", "zh", "antibiotics"),
    ("莎士比亚写过哪些戏剧？", "zh", "shakespeare"),
    ("Who improved papermaking in the Eastern Han dynasty?", "en", "zh-paper"),
    ("Which festival is celebrated with mooncakes under the full moon?", "en", "zh-mid-autumn"),
    ("Which Chinese probe first landed on the far side of the Moon?", "en", "zh-moon-landing"),
    ("Which Tang poets were called the immortal and the sage of poetry?", "en", "zh-tang-poetry"),
    ("Who discovered artemisinin for treating malaria?", "en", "zh-tu-youyou"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description="Cross-lingual retrieval over the shipped corpus")
    parser.add_argument("--model", default=None, help="embedding model directory or hub id (Qwen3 to see the claim)")
    parser.add_argument("--backend", choices=["auto", "sglang", "local"], default="auto")
    parser.add_argument("-k", type=int, default=3, help="a hit is the answer within the top k")
    args = parser.parse_args()
    corpus = load_corpus()
    langs = np.array([r["lang"] for r in corpus])
    ids = [r["id"] for r in corpus]

    # both languages, even with the English-only fallback model: its misses are the point
    with demo_server(args.model, args.backend) as demo:
        instruction = demo.instruction
        client = EmbeddingClient(server=demo.server, query_instruction=demo.instruction)
        docs = client.embed([r["text"] for r in corpus]).vectors  # float32, unit length
        queries = client.embed([q for q, _, _ in QUESTIONS], kind="query").vectors
        print(f"Embedded {len(corpus)} passages; query instruction: {instruction or 'none (fallback model)'}\n")

        hits = 0
        for (question, lang, answer), qvec in zip(QUESTIONS, queries, strict=True):
            other = np.flatnonzero(langs != lang)  # search only the other language's passages
            scores = docs[other] @ qvec
            top = other[np.argsort(-scores)[: args.k]]
            found = answer in {ids[i] for i in top}
            hits += found
            arrow = "zh -> en" if lang == "zh" else "en -> zh"
            print(f"[{arrow}] {question}")
            for rank, i in enumerate(top, 1):
                mark = "  <- answer" if ids[i] == answer else ""
                print(f"    {rank}. {ids[i]} ({corpus[i]['title']}){mark}")
        print(f"\nAnswer in the top {args.k} of the other language's passages: {hits}/{len(QUESTIONS)}")
        if instruction is None:
            print("(all-MiniLM-L6-v2 is English-only: expect misses. Qwen3-Embedding is multilingual: --model.)")


if __name__ == "__main__":
    main()
