"""gpu_check.sh step 7: exact search in torch on the device equals faiss's exact search on the CPU.

Same ids in the same order (our tie order) and scores within fp32 rounding, on random unit vectors
with a block of duplicated vectors (exact ties); prints the result and both speeds as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from wit_retrieval.index import IndexConfig, build_index, load_index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
    x[1000:1200] = x[0]  # 201 identical vectors: a tie group straddling every cut
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"{i * 2654435761 % 2**48:016x}" for i in range(args.vectors)]
    q = np.concatenate([x[:1], x[rng.choice(args.vectors, args.queries - 1)] + 0.05]).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        build_index(x, ids, IndexConfig(kind="exact")).save(tmp)
        cpu, dev = load_index(tmp), load_index(tmp, device=args.device)
        timings, results = {}, {}
        for name, index in (("faiss_cpu", cpu), (f"torch_{args.device}", dev)):
            index.search(q[:10], args.k)  # warm-up (CUDA context, kernels)
            started = time.perf_counter()
            results[name] = index.search(q, args.k)
            timings[name] = args.queries / (time.perf_counter() - started)
    (s1, i1), (s2, i2) = results.values()
    same_ids = sum(a == b for a, b in zip(i1, i2))
    # where the ids differ, the two score lists must still agree: neighbours whose scores differ by less
    # than fp32 rounding of a 512-term dot product (the two kernels sum in different orders) swap places
    differing = [n for n, (a, b) in enumerate(zip(i1, i2)) if a != b]
    near_ties = all(np.allclose(s1[n], s2[n], atol=1e-5) for n in differing)
    print(json.dumps({"vectors": args.vectors, "dim": args.dim, "queries": args.queries, "k": args.k,
                      "queries_with_identical_ids": same_ids, "differences_are_near_ties_within_1e-5": near_ties,
                      "tie_group_query_identical": i1[0] == i2[0], "max_abs_score_diff": float(np.abs(s1 - s2).max()),
                      "queries_per_s": {k: round(v, 1) for k, v in timings.items()}}))


if __name__ == "__main__":
    main()
