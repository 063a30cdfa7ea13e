"""Training at scale, side by side (writes benchmarks/results/train.md).

- memory: peak RSS of `wit-retrieval train` (the whole process, streamed data, 200 steps) on a
  synthetic world and on one with 10x its queries and images; goal <= 1.15x;
- loader: samples/s of our streaming loader alone (decode, preprocess, collate, same workers)
  against a bare `webdataset` pipeline over the same shards doing the same decode and preprocess
  (entity images looked up in the same store); goal >= 0.9x;
- step: samples/s of our inject step against a plain open_clip CLIP contrastive step (same
  model, random init, same target images), with the images ours encodes per sample.

Usage: python benchmarks/bench_train.py [--only step] [--model ViT-B-32] [--step-batch 8] [--step-pairs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def _world(base: Path, entities: int, scenes: int):
    from tests.test_models_world import make_world, write_store

    world = make_world(base, entities=entities, scenes={"train": scenes, "val": 8}, size=64)
    write_store(world.store, world.root.images)
    return world


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def memory(tmp: Path, small: int, steps: int) -> dict:
    """Peak RSS (KiB) of training `steps` steps on 1x and 10x worlds (prepared beforehand)."""
    out = {}
    for name, factor in (("1x", 1), ("10x", 10)):
        world = _world(tmp / name, 4 * factor, small * factor)
        common = ["baselines/inject-mini.toml", "--data", str(world.root.root),
                  "--set", "model.base=open_clip:wit-tiny-vit:random"]
        subprocess.run([sys.executable, "-m", "wit_retrieval", "prepare", *common], check=True, env=_env(),
                       cwd=REPO, stdout=subprocess.DEVNULL)
        command = [sys.executable, "-c", RSS, sys.executable, "-m", "wit_retrieval", "train", *common,
                   "--out", str(tmp / f"run-{name}"), "--set", f"optim.steps={steps}",
                   "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0"]
        started = time.perf_counter()
        done = subprocess.run(command, check=True, env=_env(), cwd=REPO, capture_output=True, text=True)
        out[name] = {"queries": small * factor, "peak_rss_mib": round(int(done.stdout.strip().splitlines()[-1])
                                                                       / 1024, 1),
                     "seconds": round(time.perf_counter() - started, 1)}
    out["ratio"] = round(out["10x"]["peak_rss_mib"] / out["1x"]["peak_rss_mib"], 3)
    return out


def loader(tmp: Path, scenes: int, workers: int, batch: int, repeats: int) -> dict:
    """samples/s of our StreamFeed and of a bare webdataset pipeline, best of `repeats`, interleaved."""
    import torch
    import webdataset as wds

    from wit_retrieval.models.encoders import create_open_clip
    from wit_retrieval.models.train_shards import EntityImages, PrepareInputs, ensure_prepared, read_prepared
    from wit_retrieval.models.train_stream import StreamFeed, StreamPlan

    world = _world(tmp / "loader", 24, scenes)
    folder = ensure_prepared(PrepareInputs(str(world.root.root), "train"), world.store, progress=False)
    manifest = read_prepared(folder)
    _, preprocess, _, _ = create_open_clip("wit-tiny-vit", "random")  # the small preprocess: overhead shows most
    plan = StreamPlan(tuple(s["samples"] for s in manifest["shards"]), 0, 1, 0, max(1, workers), batch, 1000)
    quota = plan.quota(0) * max(1, workers)

    def ours() -> float:
        feed = StreamFeed(folder, plan, preprocess, 0, workers=workers, pin=False)
        started = time.perf_counter()
        for _ in range(quota):
            feed.next()
        return quota * batch / (time.perf_counter() - started)

    def bare() -> float:
        images = EntityImages(folder)

        def decode_batch(samples):
            """The same work as ours: each distinct image of the batch decoded and preprocessed once."""
            import io

            from PIL import Image

            cache: dict = {}

            def image(key, data):
                if key not in cache:
                    cache[key] = preprocess(Image.open(io.BytesIO(data)).convert("RGB"))
                return cache[key]

            targets, entities, texts = [], [], []
            for sample in samples:
                meta = json.loads(sample["json"])
                targets.append(image(meta["target"], sample["img"]))
                entities.append([image(i, images.get(i)) for i in meta["entities"] if i])
                texts.append(meta["masked_text"])
            return torch.stack(targets), entities, texts

        urls = [str(folder / s["file"]) for s in manifest["shards"]]
        dataset = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False)
                   .shuffle(1000).batched(batch, collation_fn=list, partial=False).map(decode_batch))
        started, count = time.perf_counter(), 0
        for targets, _, _ in wds.WebLoader(dataset, batch_size=None, num_workers=workers):
            count += len(targets)
        return count / (time.perf_counter() - started)

    results = {"ours": [], "webdataset": []}
    for _ in range(repeats):
        results["ours"].append(ours())
        results["webdataset"].append(bare())
    best = {k: round(max(v), 1) for k, v in results.items()}
    return {"samples": sum(plan.shards), "workers": workers, "batch": batch, "samples_per_s": best,
            "ratio": round(best["ours"] / best["webdataset"], 3)}


def step(tmp: Path, model: str, batch: int, pairs: int, device: str, threads: int) -> dict:
    """samples/s of our inject optimizer step against open_clip's plain ClipLoss step (same model and targets).

    Ours is `train_step` with baselines/inject-mini.toml's settings (ViT-B-32 instead of its tiny
    model; the memory loader, so that decoding stays out of both sides: the loader check times it).
    Single steps alternate (ours, plain; then plain, ours), each timed on the wall clock and in
    process CPU time: on a shared machine a whole side can otherwise land on a busier minute.
    """
    import torch

    from tests.test_models_world import make_world
    from wit_retrieval.models.train import prepare
    from wit_retrieval.models.train_config import load_train_config
    from wit_retrieval.models.train_step import optimizer_step

    world = make_world(tmp / "step", entities=16, scenes={"train": batch * 4, "val": 8}, size=64)
    config = load_train_config(REPO / "baselines" / "inject-mini.toml", {
        "model.base": f"open_clip:{model}:random", "data.root": str(world.root.root), "data.loader": "memory",
        "optim.steps": 10_000, "optim.batch_size": batch, "run.out": str(tmp / "step-run"), "run.eval_every": 0,
        "run.checkpoint_every": 0, "run.threads": threads})
    trainer = prepare(config, world.store, device=device)  # sets torch's threads for both sides (run.threads)
    probe = [trainer.feed.next() for _ in range(4)]
    images_per_sample = sum(b.pixels.shape[0] for b in probe) / (4 * batch)
    clip = trainer.built.model.clip
    samples = trainer.feed.samples[:batch]
    pixels = trainer.feed.loader.pixels([s.target for s in samples]).to(device)
    tokens = trainer.built.tokenizer([s.masked_text for s in samples]).to(device)
    plain = _plain_clip_step(clip, pixels, tokens, device)
    feed_s = _feed_cost(trainer, device)
    # both sides start from inputs already on the device, as open_clip's loop gets them from its
    # DataLoader (pinned, copied ahead); our memory loader's batch assembly and copy is timed apart
    resident = [replace(b, pixels=b.pixels.to(device)) for b in probe]

    def ours() -> None:
        optimizer_step(trainer, [resident[trainer.step % len(resident)]], trainer.world)
        trainer.step += 1

    sides = {"ours": ours, "open_clip": plain}
    timed = _interleaved(sides, pairs, device)
    # our image batch for the towers: the probe batches' average number of images
    ours_pixels = torch.cat([b.pixels for b in probe])[:round(images_per_sample * batch)].to(device)
    towers = _tower_costs(trainer, pixels, tokens, ours_pixels, device)
    wall = {k: sum(w for w, _ in v) for k, v in timed.items()}
    cpu = {k: sum(c for _, c in v) for k, v in timed.items()}
    step_s = cpu if device == "cpu" else wall  # the clock the towers were timed on
    pair_ratios = sorted(p[0] / o[0] for o, p in zip(timed["ours"], timed["open_clip"]))
    return {"model": model, "device": device, "batch": batch, "threads": torch.get_num_threads(),
            "precision": "bf16" if device.startswith("cuda") else "fp32", "pairs": pairs,
            "samples_per_s": {k: round(pairs * batch / v, 3) for k, v in wall.items()},
            "ratio": round(wall["open_clip"] / wall["ours"], 3),
            "pair_ratios": {"min": round(pair_ratios[0], 3), "median": round(pair_ratios[len(pair_ratios) // 2], 3),
                            "max": round(pair_ratios[-1], 3)},
            "cpu_s_per_step": {k: round(v / pairs, 3) for k, v in cpu.items()},
            "cpu_ratio": round(cpu["open_clip"] / cpu["ours"], 3),
            "images_encoded_per_sample": {"ours": round(images_per_sample, 2), "open_clip": 1.0},
            "memory_loader_batch_and_copy_s": round(feed_s, 4),
            "towers": {**towers, "ours_rest_s": round(step_s["ours"] / pairs - towers["ours_towers_s"], 3),
                       "open_clip_rest_s": round(step_s["open_clip"] / pairs - towers["open_clip_towers_s"], 3)}}


def _feed_cost(trainer, device: str) -> float:
    """Wall seconds per batch of the memory loader (cached tensors and query tokens stacked) and its copy
    to the device."""
    def run() -> None:
        trainer.feed.next().pixels.to(device)

    return sum(_timed(run, device)[0] for _ in range(3)) / 3


def _plain_clip_step(clip, pixels, tokens, device: str):
    """open_clip's training step (train_one_epoch without accumulation): ClipLoss, AdamW, clamp the scale."""
    import math

    import torch
    from open_clip.loss import ClipLoss

    from wit_retrieval.models.train import autocast

    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-4, fused=True)
    loss_fn = ClipLoss()

    def run() -> None:
        with autocast(device, "auto"):
            image = clip.encode_image(pixels, normalize=True)
            text = clip.encode_text(tokens, normalize=True)
            loss = loss_fn(image.float(), text.float(), clip.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))

    return run


def _timed(run, device: str) -> tuple[float, float]:
    """(wall s, process CPU s) of one call, synchronised on CUDA."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved(sides: dict, pairs: int, device: str) -> dict[str, list[tuple[float, float]]]:
    """One warm-up call of each side (allocator, image cache, optimizer state), then `pairs` alternating pairs."""
    names = list(sides)
    for name in names:
        _timed(sides[name], device)
    out: dict[str, list] = {name: [] for name in names}
    for n in range(pairs):
        for name in (names if n % 2 == 0 else names[::-1]):
            out[name].append(_timed(sides[name], device))
    return out


def _tower_costs(trainer, targets, tokens, batch_pixels, device: str) -> dict:
    """Seconds (CPU; wall on CUDA) of forward + backward of each tower as each side runs it: the image
    tower on the plain step's images and on one of our batches (targets and entity images), the text
    tower on the captions (open_clip's encode_text, all 77 positions) and on our injected queries
    (the inject head's path, padding after the last end of text cut off). What the steps cost
    before any loss, fusion head or optimizer, and so the ratio the towers alone allow."""
    import torch

    from wit_retrieval.models.inject import tokenize_with_slots
    from wit_retrieval.models.train import autocast

    clip, head = trainer.built.model.clip, trainer.built.model.head("inject")
    texts = [s.masked_text for s in trainer.feed.samples[:len(targets)]]
    query_tokens, slots = tokenize_with_slots(trainer.built.tokenizer, texts)
    width = clip.text_projection.shape[1]
    entity = torch.zeros(len(texts), 3, width, device=device)
    valid = torch.zeros(len(texts), 3, dtype=torch.bool, device=device)  # the text path's cost alone

    def tower(encode, *inputs):
        def run():
            with autocast(device, "auto"):  # as both steps run them (bf16 on CUDA)
                out = encode(*inputs)
            out.float().sum().backward()
            clip.zero_grad(set_to_none=True)
        return run

    sides = {"plain_images": tower(clip.encode_image, targets), "our_images": tower(clip.encode_image, batch_pixels),
             "plain_texts": tower(clip.encode_text, tokens),
             "our_texts": tower(lambda *a: head(clip, *a), query_tokens.to(device), slots.to(device), entity, valid)}
    timed = _interleaved(sides, 3, device)
    clock = 0 if device.startswith("cuda") else 1  # process CPU time is meaningless for GPU work
    cost = {k: sum(t[clock] for t in v) / len(v) for k, v in timed.items()}
    plain, ours = cost["plain_images"] + cost["plain_texts"], cost["our_images"] + cost["our_texts"]
    return {"images": {"open_clip": len(targets), "ours": len(batch_pixels)},
            "image_tower_s": {"open_clip": round(cost["plain_images"], 3), "ours": round(cost["our_images"], 3)},
            "text_tower_s": {"open_clip": round(cost["plain_texts"], 3), "ours": round(cost["our_texts"], 3)},
            "open_clip_towers_s": round(plain, 3), "ours_towers_s": round(ours, 3),
            "bound_ratio": round(plain / ours, 3),
            # what the images alone allow: our text tower as costly as open_clip's
            "bound_ratio_same_text": round(plain / (cost["our_images"] + cost["plain_texts"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--small", type=int, default=300, help="training queries of the 1x world")
    parser.add_argument("--loader-scenes", type=int, default=800)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--step-pairs", type=int, default=6, help="alternating (ours, plain) step pairs timed")
    parser.add_argument("--step-threads", type=int, default=1,
                        help="torch threads of both sides (run.threads; 1 as in baselines/inject-mini.toml)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="memory,loader,step")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    results = {}
    if "memory" in args.only:
        results["memory"] = memory(tmp, args.small, args.steps)
        print(json.dumps(results["memory"]), flush=True)
    if "loader" in args.only:
        results["loader"] = loader(tmp, args.loader_scenes, args.workers, 32, args.repeats)
        print(json.dumps(results["loader"]), flush=True)
    if "step" in args.only:
        results["step"] = step(tmp, args.model, args.step_batch, args.step_pairs, args.device,
                                args.step_threads)
        print(json.dumps(results["step"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
