"""generate_world: write the whole miniature world (WIT, dumps, released files, images, truth)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..io.shards import atomic_path, file_digest, write_text_atomic
from . import lexicon as lx
from .dump_writer import write_dumps
from .files import ProgressFn, commons_path, write_file
from .released_writer import write_released
from .scenes import build_scenes
from .wit_writer import map_file, write_wit
from .world import World, WorldConfig, build_entities, with_files

WORLD_JSON = "world.json"
SHA256SUMS = "SHA256SUMS"
IMAGES_DIR = "wikipedia/commons"


@dataclass(frozen=True)
class WorldSummary:
    """What generate_world wrote: counts and paths (relative to `out`)."""

    out: Path
    entities: int
    scenes: int
    languages: tuple[str, ...]
    dump_languages: tuple[str, ...]
    wit_rows: dict[str, int]
    mmir_rows: dict[str, int]
    ei_rows: int
    dump_counts: dict[str, dict[str, int]]
    images: int
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def world_json(self) -> Path:
        """Path of the ground truth."""
        return self.out / WORLD_JSON

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def generate_world(config: WorldConfig, out: Path, progress: ProgressFn | None = None) -> WorldSummary:
    """Generate the world of `config` into `out` (a new folder, or one a previous run wrote)."""
    start = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    entities, ambiguous = build_entities(config)
    entities = with_files(entities)
    world = World(config, entities, build_scenes(config, entities), ambiguous)
    wit = write_wit(world, out, progress)
    dumps = write_dumps(world, out, progress)
    released = write_released(world, out, progress)
    images = write_images(world, out, progress) if config.images else 0
    files = wit["files"] + released["files"] + dumps["files"]
    write_world_json(world, out / WORLD_JSON, files)
    files.append(WORLD_JSON)
    sums = "".join(f"{file_digest(out / rel, 'sha256')}  {rel}\n" for rel in sorted(files))
    write_text_atomic(out / SHA256SUMS, sums)
    for name in (WORLD_JSON, SHA256SUMS):
        (out / name).chmod(0o644)  # atomic writes start private; the world is meant to be served
    return WorldSummary(out, len(entities), len(world.scenes), config.languages, config.dump_langs,
                        wit["rows"], released["mmir_rows"], released["ei_rows"], dumps["counts"], images,
                        [*files, SHA256SUMS], round(time.perf_counter() - start, 3))


def _prepare_out(out: Path) -> None:
    """Refuse a non-empty folder that is not a synth world; clear a previous world's files."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise ConfigError(f"synth: {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not (out / SHA256SUMS).exists():
        raise ConfigError(f"synth: {out} is not empty and holds no synth world ({SHA256SUMS} missing); "
                          "choose an empty or new folder")
    for line in (out / SHA256SUMS).read_text(encoding="utf-8").splitlines():
        rel = line.partition("  ")[2]
        if rel and ".." not in Path(rel).parts:
            (out / rel).unlink(missing_ok=True)
            for parent in Path(rel).parents[:-1]:  # drop folders the old world leaves empty
                with contextlib.suppress(OSError):
                    (out / parent).rmdir()
    shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / IMAGES_DIR).parent.rmdir()
    (out / SHA256SUMS).unlink()


def write_images(world: World, out: Path, progress: ProgressFn | None = None) -> int:
    """Draw every image the WIT rows point to at its Commons path; returns how many."""
    from . import draw

    size = world.config.image_size
    total = len(world.entities) + len(world.scenes)
    count = 0
    for e in world.entities:
        write_file(out / commons_path(e.file), draw.entity_image(e.visual, size))
        count += 1
        if (mf := map_file(e)) is not None:
            write_file(out / commons_path(mf), draw.locator_map(mf, size))
            count += 1
        if progress and e.index % 100 == 99:
            progress("Images", 100, total)
    visuals = [e.visual for e in world.entities]
    for scene in world.scenes:
        write_file(out / commons_path(scene.file), draw.scene_image(scene, [visuals[i] for i in scene.entities], size))
        count += 1
        if progress and scene.index % 100 == 99:
            progress("Images", 100, total)
    return count


def _entity_json(world: World, e, qid: list[str]) -> dict:
    sources = {}
    for code in world.page_languages(e):
        prop = e.image_prop.get(code, "none")
        sources[code] = prop if prop != "none" else ("wit_main_image" if e.main_row[code] else None)
    return {
        "qid": e.qid, "index": e.index, "kind": lx.KINDS[e.kind][0], "names": e.names, "titles": e.titles,
        "alias": e.alias, "file": e.file, "image_url": world.entity_urls[e.index], "image_source": sources,
        "visual": {"shape": lx.SHAPES[e.visual.shape][0], "colour": lx.COLOURS[e.visual.colour][0],
                   "pattern": lx.PATTERNS[e.visual.pattern], "accent": e.visual.accent},
        "split": e.split, "wit_main_row": e.main_row,
    }


def _scene_json(world: World, scene, qid: list[str]) -> dict:
    captions = []
    for c in scene.captions:
        captions.append({"language": c.language, "text": c.text, "masked_text": c.masked,
                         "mask_entities": [qid[i] for i in c.order],
                         "mentions": [[m.start, m.end, qid[m.entity], m.surface] for m in c.mentions]})
    return {"index": scene.index, "file": scene.file, "image_url": world.scene_urls[scene.index],
            "entities": [qid[i] for i in scene.entities], "relation": scene.relation, "setting": scene.setting,
            "split": scene.split, "larger": scene.larger, "captions": captions}


def write_world_json(world: World, path: Path, files: list[str]) -> None:
    """Stream the ground truth to JSON: config, entities, scenes, ambiguous names, files."""
    qid = [e.qid for e in world.entities]
    head = {"format": "wit-retrieval-synth-world", "version": 1, "config": world.config.to_dict(),
            "files": sorted(files),
            "ambiguous": {code: {name: [qid[i] for i in members] for name, members in sorted(names.items())}
                          for code, names in world.ambiguous.items()}}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1])
        for key, items, render in (("entities", world.entities, _entity_json), ("scenes", world.scenes, _scene_json)):
            f.write(f',"{key}":[\n')
            for k, item in enumerate(items):
                f.write(("" if k == 0 else ",\n") + json.dumps(render(world, item, qid), ensure_ascii=False, separators=(",", ":")))
            f.write("\n]")
        f.write("}\n")
