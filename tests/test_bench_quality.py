"""benchmarks/bench_quality.py keeps one row per model, shape, epochs and recipe: a rerun replaces its old row."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "bench_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py")
bench_quality = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_quality)


def row(size, tile=None, epochs=6, image_auroc=0.5):
    return {"model": "resnetCAE", "recipe": {"recipe": "restore-segment", "tile": tile}, "size": size,
            "epochs": epochs, "image_auroc": image_auroc}


def test_a_rerun_replaces_its_row_and_a_tile_row_is_known_by_its_tile_not_the_unused_size(tmp_path):
    path = tmp_path / "quality.json"
    old_tiles, stretched, other_epochs = row(128, tile=64), row(64), row(64, epochs=60)
    path.write_text(json.dumps([old_tiles, stretched, other_epochs]))
    new_tiles, new_stretched = row(None, tile=64, image_auroc=0.7), row(64, image_auroc=0.8)
    merged = bench_quality.merged_rows(path, [new_tiles, new_stretched])
    assert merged == [other_epochs, new_tiles, new_stretched]
    assert bench_quality.merged_rows(path, [row(96)]) == [old_tiles, stretched, other_epochs, row(96)]
