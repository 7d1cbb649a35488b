"""Choosing the threshold and minimum blob area that turn residual maps into OK / NOK.

Three methods, each writing calibration.json in the run folder:

* ``validation`` (always, from good images only; MVTec AD's procedure): on the held-out validation images of
  training, for a given min area, the threshold is the lowest at which no validation image has a blob of that
  area or more. The default min area is the original method's 85 px at 256 × 256, scaled with the image area
  (about 0.13 % of the image), and at least 4 px.
* ``finetune`` (optional, after Adnene Boumessouer's method): with a few labelled good and defective images,
  search (min area, threshold) pairs for the best balanced accuracy. These images must never be the ones used
  later to report results; the calibration records which were used.
* ``synthetic`` (``--threshold-from synthetic``; from good images only): at the same min area, the threshold
  with the best balanced accuracy between the held-out good images and the same images with painted defects
  (SYNTHETIC_SEEDS rounds, utils.evaluation.synthetic_pairs). It trades a few false alarms for many more
  defects found where the good images' highest score sits far above the typical defect's (see the README's
  "How good is it").
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from utils import data as data_module
from utils.blobs import SEED_MIN_AREA, blob_score, threshold_above  # SEED_MIN_AREA: the original 85 px at 256²
from utils.run import CALIBRATION_FILE, Run, load_run, write_json

log = logging.getLogger(__name__)

FINETUNE_AREA_FRACTIONS = np.geomspace(1e-4, 2e-2, 16)  # min areas searched, as fractions of the image area
THRESHOLD_SOURCES = ("validation", "synthetic")  # train.py --threshold-from; finetune takes --finetune DIR
SYNTHETIC_SEEDS = (0, 1, 2)  # rounds of painted defects on the held-out images for the synthetic method


def default_min_area(size: int) -> int:
    """85 px at 256², scaled with the image area, at least 4 px."""
    return max(4, round(SEED_MIN_AREA * (size / 256) ** 2))


def default_min_area_for(preprocessing) -> int:
    """The default min area at the step's decision resolution. Stretch and keep-aspect: 85 px per 256² of model
    input. Tiles: the same per tile, in the photo's own pixels (divided by scale²), so verdicts do not change
    with the photo's size."""
    if preprocessing.mode == "tiles":
        return max(4, round(default_min_area(preprocessing.tile) / preprocessing.scale ** 2))
    return default_min_area(preprocessing.size)


def anomaly_maps_for_files(inspector, files: Sequence[Path], *, description: str) -> tuple[list, list]:
    """Anomaly maps of readable `files` through the Inspector; unreadable ones are skipped with a warning."""
    kept, maps = [], []
    for start in tqdm(range(0, len(files), inspector.batch_size), desc=description, unit="batch", leave=False):
        images, chunk_files = [], []
        for path in files[start:start + inspector.batch_size]:
            try:
                images.append(data_module.decode_image(path))
                chunk_files.append(path)
            except ValueError as error:
                log.warning("Skipping: %s", error)
        if images:
            maps.extend(inspector.maps_for(images)[2])
            kept.extend(chunk_files)
    if not kept:
        raise ValueError(f"No readable image among the {len(files)} given for {description}.")
    return kept, maps


def best_balanced_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) maximising balanced accuracy for the rule NOK ⇔ score ≥ threshold."""
    candidates = np.unique(scores)
    positives, negatives = max(1, labels.sum()), max(1, (~labels).sum())
    best = (float(candidates[-1]) + 1e-6, 0.0)
    for threshold in candidates:
        flagged = scores >= threshold
        balanced = 0.5 * ((flagged & labels).sum() / positives + (~flagged & ~labels).sum() / negatives)
        if balanced > best[1]:
            best = (float(threshold), float(balanced))
    return best


def finetune(maps, labels: np.ndarray) -> dict:
    """Search min areas (0.01 %–2 % of the median map's area) and thresholds for the best balanced accuracy."""
    best: dict = {"balanced_accuracy": -1.0}
    image_area = float(np.median([np.asarray(anomaly_map).size for anomaly_map in maps]))
    areas = sorted({max(1, round(fraction * image_area)) for fraction in FINETUNE_AREA_FRACTIONS})
    for min_area in tqdm(areas, desc="fine-tuning", unit="area", leave=False):
        scores = np.array([blob_score(residual_map, min_area) for residual_map in maps])
        threshold, balanced = best_balanced_threshold(scores, labels)
        if balanced > best["balanced_accuracy"]:
            best = {"threshold": threshold, "min_area": int(min_area), "balanced_accuracy": balanced}
    return best


def calibrate(run: Run | str | Path, *, min_area: int | None = None, finetune_dir: str | Path | None = None,
              threshold_from: str | None = None, batch_size: int = 8) -> dict:
    """Calibrate a run and write its calibration.json; returns what was written. The validation method always
    runs; `finetune_dir`, or `threshold_from` "synthetic" (default: the run's own config.json `threshold_from`),
    then sets the threshold (see the module docstring)."""
    from utils.inspector import Inspector

    if threshold_from is not None and threshold_from not in THRESHOLD_SOURCES:
        raise ValueError(f"--threshold-from must be one of {', '.join(THRESHOLD_SOURCES)}; got {threshold_from!r}")
    if threshold_from == "synthetic" and finetune_dir is not None:
        raise ValueError("choose one of --finetune DIR and --threshold-from synthetic: both set the threshold")
    run = run if isinstance(run, Run) else load_run(run)
    if threshold_from is None:
        threshold_from = "validation" if finetune_dir is not None else run.config.get("threshold_from", "validation")
    inspector = Inspector(run, decision="seed", batch_size=batch_size)  # the seed rule needs no calibration
    min_area = default_min_area_for(run.preprocessing) if min_area is None else int(min_area)
    validation_files = [Path(path) for path in run.config.get("validation_files", [])]
    if not validation_files:
        raise ValueError(f"Run {str(run.path)!r} has no validation images to calibrate on "
                         "(trained with --validation-split 0?).")
    used, maps = anomaly_maps_for_files(inspector, validation_files, description="calibrating")
    highest_score = max(blob_score(residual_map, min_area) for residual_map in maps)
    calibration = {
        "method": "validation",
        "threshold": threshold_above(highest_score),  # MVTec: lowest threshold flagging no validation image
        "min_area": min_area,
        "min_area_unit": "model px" if run.preprocessing.decision_resolution == "model" else "source px",
        "anomaly_map": run.anomaly_map.name, **run.anomaly_map.settings,
        "validation_images": [str(path) for path in used],
        "validation_max_score": float(highest_score),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if finetune_dir is not None:
        calibration.update(finetune_on(inspector, Path(finetune_dir)))
    if threshold_from == "synthetic":
        calibration.update(synthetic_on(inspector, min_area))
    write_json(run.path / CALIBRATION_FILE, calibration)
    run.calibration = calibration
    return calibration


def finetune_on(inspector, folder: Path) -> dict:
    """Fine-tune on the labelled images of `folder` (MVTec test layout: good/ and <defect>/ sub-folders)."""
    items = data_module.find_test_items(folder)
    labels_by_path = {item.path: item.is_defective for item in items}
    used, maps = anomaly_maps_for_files(inspector, [item.path for item in items], description="fine-tuning")
    labels = np.array([labels_by_path[path] for path in used])
    if labels.all() or not labels.any():
        raise ValueError(f"--finetune needs both good and defective images; {str(folder)!r} has only one kind.")
    best = finetune(maps, labels)
    return {"method": "finetune", "threshold": best["threshold"], "min_area": best["min_area"],
            "finetune_balanced_accuracy": best["balanced_accuracy"],
            "finetune_images": [str(path) for path in used]}


def synthetic_on(inspector, min_area: int) -> dict:
    """The synthetic method: the threshold for the best balanced accuracy, at `min_area`, between the run's
    held-out good images and the same images with a painted defect, SYNTHETIC_SEEDS rounds of them."""
    from utils.evaluation import synthetic_pairs

    scores, labels = [], []
    for seed in tqdm(SYNTHETIC_SEEDS, desc="synthetic calibration", unit="round", leave=False):
        images, painted = synthetic_pairs(inspector, seed=seed)
        for start in range(0, len(images), inspector.batch_size):
            maps = inspector.maps_for(images[start:start + inspector.batch_size])[2]
            scores += [blob_score(residual_map, min_area) for residual_map in maps]
        labels += painted
    threshold, balanced = best_balanced_threshold(np.array(scores), np.array(labels))
    return {"method": "synthetic", "threshold": threshold, "synthetic_balanced_accuracy": balanced,
            "synthetic_images": len(scores)}
