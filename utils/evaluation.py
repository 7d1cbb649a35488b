"""Evaluating a run on a labelled set (MVTec layout): what IoU_test.py and benchmarks/bench_quality.py call.

    report = evaluate("saved_models/<run>", "data/demo", decision="both")
    print(report.text)                       # readable tables; report.evaluations["calibrated"].metrics, ...

Images stream from disk in batches through one Inspector (the same path from image to verdict as test.py and
main.py). With ``decision="both"`` the network runs once per batch; the second rule is applied to the same
anomaly maps by a second Inspector's ``decide``.

Memory stays nearly flat in the number of images: what grows is one per_image.csv row per image and rule, kept
as a small dict (under 1 KiB). Everything else is bounded:

* pixel AUROC and AUPRO come from :class:`utils.metrics.PixelScores`, fed one anomaly map at a time: three
  histograms whose bins follow the float32 representation of the map values, so maps of any range (1 − SSIM,
  L2, logits) are binned at 0.05 % of their values' magnitude, in 24 MiB whatever the set's size. Pixels in
  one bin count as tied; both metrics stay within about 1e-5 of their full-map values;
* the overlay grid keeps only the 4 worst defective and 4 worst good images per decision (their photos in the
  run's colour mode: 8 × H × W × channels × 4 bytes, 2 MiB for 256 px grayscale photos);
* a batch in flight holds batch_size decoded images, inputs, reconstructions, maps and masks.

Results go to RUN/results/<dataset>/ (``decision="both"``: RUN/results/<dataset>/<decision>/ per rule, plus
comparison.csv): metrics.json (keys: METRIC_KEYS), per_image.csv, roc.png, pro.png, score_histogram.png and
worst_overlays.png. Pixel metrics, box and mask IoUs compare the Inspector's map and the rule's defect mask
(every pixel it calls defective) with the ground-truth mask at the mask's own pixels, in every preprocessing mode
(stretch: the map and mask stretched back onto the photo after the decision; metrics.json: ``"resolution":
"source"``). A mask whose size differs from its image's is refused, naming both sizes.
"""
from __future__ import annotations

import csv
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import data as data_module
from utils import metrics as metrics_module
from utils import plots
from utils.metrics import FPR_LIMIT, PixelScores
from utils.run import DEFAULT_RUNS_DIR, write_json

log = logging.getLogger(__name__)

DECISION_CHOICES = ("calibrated", "seed", "both")
RULES_FOR_CHOICE = {"calibrated": ("calibrated",), "seed": ("seed",), "both": ("seed", "calibrated")}
METRIC_KEYS = ("n_images", "image_auroc", "pixel_auroc", "aupro", "iou_bbox_mean", "iou_mask_mean", "accuracy",
               "balanced_accuracy", "tpr", "tnr", "f1", "threshold", "min_area", "decision", "per_defect", "resolution")
CSV_COLUMNS = ("path", "defect", "label", "verdict", "score", "max_blob_area", "iou_bbox", "iou_bbox_regions",
               "iou_mask")
RESULT_FILES = ("metrics.json", "per_image.csv", "roc.png", "pro.png", "score_histogram.png", "worst_overlays.png")
WORST_PER_KIND = 4  # overlay grid: this many worst defective and worst good images


# ---------------------------------------------------------------- per-decision bookkeeping


@dataclass
class DecisionRecord:
    """Everything kept for one decision rule while the set streams by: rows, and the worst images (bounded)."""

    decision: str
    rows: list[dict] = field(default_factory=list)
    worst_defective: list = field(default_factory=list)  # min-heap of (−score, −order, overlay item)
    worst_good: list = field(default_factory=list)  # min-heap of (score, −order, overlay item)
    thresholds: set = field(default_factory=set)
    min_areas: set = field(default_factory=set)

    def add(self, row: dict, outcome, image: np.ndarray, ground_truth_boxes: list, order: int) -> None:
        """Record one image's row; keep it for the overlay grid if it is among the worst of its kind."""
        self.rows.append(row)
        if len(self.thresholds) < 2:  # two values already mean "per image": no need to keep every one
            self.thresholds.add(float(outcome.threshold))
        if len(self.min_areas) < 2:
            self.min_areas.add(int(outcome.min_area))
        defective = row["label"] == "NOK"
        # The worst defective images score lowest (nearest to passing); the worst good ones score highest.
        heap, priority = (self.worst_defective, -row["score"]) if defective else (self.worst_good, row["score"])
        entry_key = (priority, -order)  # order is unique, so entries never compare their overlay dicts
        if len(heap) < WORST_PER_KIND:
            heapq.heappush(heap, (*entry_key, overlay_item(row, outcome, image, ground_truth_boxes)))
        elif entry_key > heap[0][:2]:
            heapq.heapreplace(heap, (*entry_key, overlay_item(row, outcome, image, ground_truth_boxes)))


def overlay_item(row: dict, outcome, image: np.ndarray, ground_truth_boxes: list) -> dict:
    """One cell of the overlay grid: the input, the rule's blob boxes (large ones, else the largest), gt boxes."""
    large = [blob.bbox for blob in outcome.blobs if blob.area >= outcome.min_area]
    kind = {("NOK", "OK"): "FN", ("OK", "NOK"): "FP", ("NOK", "NOK"): "TP", ("OK", "OK"): "TN"}
    caption = f"{kind[row['label'], row['verdict']]} {row['defect']}/{Path(row['path']).name}\nscore {row['score']:.4g}"
    # A copy, so that keeping this image does not keep its whole batch array alive.
    return {"image": np.array(image, copy=True), "predicted_boxes": large or [blob.bbox for blob in outcome.blobs[:1]],
            "ground_truth_boxes": ground_truth_boxes, "caption": caption}


def image_row(item: data_module.TestItem, outcome, ground_truth: np.ndarray | None) -> dict:
    """The per_image.csv row of one image under one rule (IoUs None for good images or without a mask)."""
    row = {"path": str(item.path), "defect": item.defect, "label": "NOK" if item.is_defective else "OK",
           "verdict": outcome.verdict, "score": float(outcome.score), "max_blob_area": float(outcome.max_blob_area),
           "iou_bbox": None, "iou_bbox_regions": None, "iou_mask": None}
    if item.is_defective and ground_truth is not None and ground_truth.any():
        predicted = outcome.defect_mask
        row["iou_bbox"] = metrics_module.largest_blob_box_iou(predicted, ground_truth)
        row["iou_bbox_regions"] = metrics_module.region_box_iou(predicted, ground_truth)
        row["iou_mask"] = metrics_module.mask_iou(predicted, ground_truth)
    return row


# ---------------------------------------------------------------- streaming the set through the Inspector


@dataclass
class StreamState:
    """What the loop accumulates: one record per rule, the shared pixel histograms and the skipped files."""

    records: dict[str, DecisionRecord]
    pixels: PixelScores = field(default_factory=PixelScores)
    skipped: list[str] = field(default_factory=list)
    missing_masks: int = 0
    order: itertools.count = field(default_factory=itertools.count)


def read_item(item: data_module.TestItem, preprocessing, state: StreamState) -> tuple | None:
    """(decoded image, ground-truth mask at the photo's own pixels or None when unknown), or None when unreadable
    (a mask whose size differs from its image's is unreadable too: the message names both sizes)."""
    try:
        image = data_module.decode_image(item.path)
        if item.is_defective and item.mask_path is None:
            state.missing_masks += 1
            return image, None
        # A good image has no mask file: decode_mask(None) is None, which mask_for makes all good.
        return image, preprocessing.mask_for(data_module.decode_mask(item.mask_path), image.shape)
    except ValueError as error:  # decode_image (also behind decode_mask) names the file in its message
        log.warning("Skipping: %s", error)
        state.skipped.append(f"{item.path}: {error}")
        return None


def process_batch(batch: list[data_module.TestItem], inspectors: dict, state: StreamState) -> None:
    """Inspect one batch with the first Inspector; apply the other rule (if any) to the same anomaly maps."""
    primary, *others = inspectors
    preprocessing = inspectors[primary].preprocessing
    loaded = [(item, *read) for item in batch if (read := read_item(item, preprocessing, state)) is not None]
    if not loaded:
        return
    results = inspectors[primary].inspect([image for _, image, _ in loaded])
    for (item, _, ground_truth), result in zip(loaded, results):
        if ground_truth is not None:
            state.pixels.add(result.anomaly_map, ground_truth)
        boxes = [] if ground_truth is None else [box for _, box in metrics_module.component_boxes(ground_truth)]
        order = next(state.order)
        for decision in (primary, *others):
            outcome = result if decision == primary else inspectors[decision].redecide(result)
            state.records[decision].add(image_row(item, outcome, ground_truth), outcome, result.input, boxes, order)


def stream(items: list[data_module.TestItem], inspectors: dict, *, batch_size: int) -> StreamState:
    """Run every item through the Inspectors, batch by batch, with a progress bar."""
    state = StreamState(records={decision: DecisionRecord(decision) for decision in inspectors})
    with tqdm(total=len(items), desc="evaluating", unit="image", leave=False) as progress:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            process_batch(batch, inspectors, state)
            progress.update(len(batch))
    if not any(record.rows for record in state.records.values()):
        raise ValueError(f"None of the {len(items)} test images could be read (see the warnings above).")
    return state


# ---------------------------------------------------------------- metrics


def mean_of(rows: list[dict], key: str) -> float | None:
    """Mean of the non-null values of `key` (None when there are none)."""
    values = [row[key] for row in rows if row[key] is not None]
    return float(np.mean(values)) if values else None


def per_defect_table(rows: list[dict]) -> dict[str, dict]:
    """Per defect type (including "good"): images, how many were flagged NOK, the image AUROC of that type
    against the good images (None for "good" itself, or without good images), and the mean IoUs."""
    table = {}
    good = [row for row in rows if row["label"] == "OK"]
    for defect in sorted({row["defect"] for row in rows}):
        subset = [row for row in rows if row["defect"] == defect]
        against_good = good + subset if subset and subset[0]["label"] != "OK" else []
        table[defect] = {"count": len(subset), "detected": sum(row["verdict"] == "NOK" for row in subset),
                         "image_auroc": (metrics_module.image_auroc([row["label"] for row in against_good],
                                                                    [row["score"] for row in against_good])
                                         if against_good else None),
                         "iou_bbox_mean": mean_of(subset, "iou_bbox"),
                         "iou_bbox_regions_mean": mean_of(subset, "iou_bbox_regions"),
                         "iou_mask_mean": mean_of(subset, "iou_mask")}
    return table


def decision_metrics(record: DecisionRecord, pixel_auroc: float | None, aupro: float | None, *,
                     resolution: str) -> dict:
    """metrics.json for one rule; threshold / min area are None when the rule sets them per image. `resolution`:
    where maps and masks were compared: "source", the photo's own pixels (runs before photo-resolution outputs
    said "model" for stretch)."""
    rows = record.rows
    labels, verdicts = [row["label"] for row in rows], [row["verdict"] for row in rows]
    classification = metrics_module.classification_metrics(labels, verdicts)
    values = {
        "n_images": len(rows),
        "image_auroc": metrics_module.image_auroc(labels, [row["score"] for row in rows]),
        "pixel_auroc": pixel_auroc, "aupro": aupro,
        "iou_bbox_mean": mean_of(rows, "iou_bbox"), "iou_mask_mean": mean_of(rows, "iou_mask"),
        **{key: classification[key] for key in ("accuracy", "balanced_accuracy", "tpr", "tnr", "f1")},
        "threshold": next(iter(record.thresholds)) if len(record.thresholds) == 1 else None,
        "min_area": next(iter(record.min_areas)) if len(record.min_areas) == 1 else None,
        "decision": record.decision,
        "per_defect": per_defect_table(rows),
        "resolution": resolution,
    }
    return {key: values[key] for key in METRIC_KEYS}


def null_notes(state: StreamState, metrics: dict) -> list[str]:
    """One sentence per metric family that is null, saying why."""
    notes, labels = [], {row["label"] for row in next(iter(state.records.values())).rows}
    if labels == {"OK"}:
        notes.append("image AUROC, TPR, balanced accuracy, pixel AUROC, AUPRO and the IoUs are null: the set "
                     "holds only good images (an ROC curve needs defective images too); accuracy is the share of "
                     "good images passed.")
    elif labels == {"NOK"}:
        notes.append("image AUROC, TNR and balanced accuracy are null: the set holds no good image.")
    if state.pixels.region_count == 0 and "NOK" in labels:
        notes.append("pixel AUROC, AUPRO and the IoUs are null: no ground-truth masks found "
                     "(expected ground_truth/<defect>/<name>_mask.png beside test/).")
    elif state.missing_masks:
        notes.append(f"{state.missing_masks} defective image(s) have no mask: left out of pixel AUROC, AUPRO "
                     "and the IoU means.")
    if metrics["threshold"] is None:
        notes.append(f"threshold is null: the {metrics['decision']} rule sets it per image.")
    return notes


# ---------------------------------------------------------------- writing results


def write_csv(path: Path, rows: list[dict]) -> None:
    """per_image.csv: one row per readable image; empty cells where an IoU is undefined."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_COLUMNS})


def write_plots(folder: Path, record: DecisionRecord, curve, threshold: float | None) -> None:
    """roc.png (both classes needed), pro.png (masks needed), score_histogram.png, worst_overlays.png."""
    labels = [int(row["label"] == "NOK") for row in record.rows]
    scores = [row["score"] for row in record.rows]
    if len(set(labels)) == 2:
        plots.save_roc_curve(labels, scores, folder / "roc.png")
    if curve is not None:
        plots.save_pro_curve(*curve, folder / "pro.png", fpr_limit=FPR_LIMIT)
    plots.save_score_histogram(labels, scores, threshold, folder / "score_histogram.png")
    worst = [item for _, _, item in sorted(record.worst_defective, reverse=True)]
    worst += [item for _, _, item in sorted(record.worst_good, reverse=True)]
    plots.save_overlay_grid(worst, folder / "worst_overlays.png", columns=WORST_PER_KIND,
                            title=f"{record.decision} rule: lowest-scored defective (top), highest-scored good "
                                  "(bottom); predicted red, ground truth green")


def write_results(folder: Path, record: DecisionRecord, metrics: dict, curve) -> None:
    """Every file of one rule's results folder; files an earlier evaluation left there are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        (folder / name).unlink(missing_ok=True)  # a stale roc.png must not outlive a set without defects
    write_json(folder / "metrics.json", metrics)
    write_csv(folder / "per_image.csv", record.rows)
    # The score line: NOK ⇔ score ≥ threshold (calibrated rule) or ≥ min area (seed rule: score = contour area).
    score_threshold = metrics["min_area"] if record.decision == "seed" else metrics["threshold"]
    write_plots(folder, record, curve, score_threshold)


def write_comparison(path: Path, evaluations: dict[str, "Evaluation"]) -> None:
    """comparison.csv: one line per metric, one column per rule."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", *evaluations])
        for key in (key for key in METRIC_KEYS if key != "per_defect"):
            writer.writerow([key, *("" if result.metrics[key] is None else result.metrics[key]
                                    for result in evaluations.values())])


# ---------------------------------------------------------------- readable tables


SUMMARY_LINES = (("images", "n_images"), ("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"),
                 (f"AUPRO (FPR ≤ {FPR_LIMIT:g})", "aupro"), ("box IoU, largest blob", "iou_bbox_mean"),
                 ("box IoU, per region", "iou_bbox_regions_mean"), ("mask IoU", "iou_mask_mean"),
                 ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                 ("TPR (defective found)", "tpr"), ("TNR (good passed)", "tnr"), ("F1", "f1"),
                 ("threshold", "threshold"), ("min area (px)", "min_area"))


def formatted(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_table(evaluations: dict[str, "Evaluation"]) -> list[str]:
    """Metric rows × one column per rule."""
    lines = [f"{'metric':<24}" + "".join(f"{name:>12}" for name in evaluations)]
    for title, key in SUMMARY_LINES:
        cells = [result.summary_value(key) for result in evaluations.values()]
        lines.append(f"{title:<24}" + "".join(f"{formatted(cell):>12}" for cell in cells))
    return lines


def per_defect_lines(evaluation: "Evaluation") -> list[str]:
    lines = [f"per defect type, {evaluation.decision} rule:",
             f"  {'defect':<18}{'images':>7}{'NOK':>6}{'AUROC':>9}{'box IoU':>9}{'regions':>9}{'mask IoU':>9}"]
    for defect, entry in evaluation.metrics["per_defect"].items():
        lines.append(f"  {defect:<18}{entry['count']:>7}{entry['detected']:>6}"
                     + "".join(f"{formatted(entry[key]):>9}" for key in
                               ("image_auroc", "iou_bbox_mean", "iou_bbox_regions_mean", "iou_mask_mean")))
    return lines


# ---------------------------------------------------------------- the public entry point


@dataclass
class Evaluation:
    """One rule's results: metrics.json content, the per-image rows and the folder they were written to."""

    decision: str
    metrics: dict
    rows: list[dict]
    folder: Path

    def summary_value(self, key: str):
        if key == "iou_bbox_regions_mean":  # shown on stdout and per defect, not a metrics.json key
            return mean_of(self.rows, "iou_bbox_regions")
        return self.metrics[key]


@dataclass
class EvaluationReport:
    """What :func:`evaluate` returns: the results per rule, the skipped files, notes, the printable text, and why
    results files could not be written (empty when all were)."""

    evaluations: dict[str, Evaluation]
    skipped: list[str]
    notes: list[str]
    text: str
    write_errors: list[str] = field(default_factory=list)


def dataset_name(data: str | Path) -> str:
    """The data folder's name, or its parent's when `data` is a test/ folder."""
    path = Path(data).resolve()
    return path.parent.name if path.name == "test" else path.name


def build_inspectors(model: str | Path | None, rules: tuple[str, ...], *, batch_size: int, runs_dir) -> dict:
    """One Inspector per rule, all sharing one loaded run; only the first one ever runs the network."""
    from utils.inspector import Inspector
    from utils.run import load_run

    run = load_run(model, runs_dir=runs_dir)
    return {rule: Inspector(run, decision=rule, batch_size=batch_size) for rule in rules}


def evaluate(model: str | Path | None, data: str | Path, *, decision: str = "calibrated", batch_size: int = 8,
             runs_dir: str | Path = DEFAULT_RUNS_DIR) -> EvaluationReport:
    """Evaluate run `model` (None: the newest in `runs_dir`) on the labelled set `data` and write the results.

    Args:
        model: run folder, or None for the newest run.
        data: MVTec-layout root (holding test/, optionally ground_truth/) or its test/ folder.
        decision: "calibrated", "seed" or "both" (both rules on the same anomaly maps, side by side).
        batch_size: images per batch through the network (>= 1).
    """
    if decision not in DECISION_CHOICES:
        raise ValueError(f"decision must be one of {DECISION_CHOICES}; got {decision!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1; got {batch_size!r}")
    items = data_module.find_test_items(data)
    inspectors = build_inspectors(model, RULES_FOR_CHOICE[decision], batch_size=batch_size, runs_dir=runs_dir)
    state = stream(items, inspectors, batch_size=batch_size)
    folder = next(iter(inspectors.values())).run.path / "results" / dataset_name(data)
    curve, pixel_auroc = state.pixels.pro_curve(), state.pixels.auroc()
    aupro = state.pixels.aupro(fpr_limit=FPR_LIMIT)
    evaluations, notes, write_errors = {}, [], []
    for rule, record in state.records.items():
        metrics = decision_metrics(record, pixel_auroc, aupro, resolution="source")
        rule_folder = folder / rule if decision == "both" else folder
        write_errors += kept_going(write_results, rule_folder, record, metrics, curve)
        evaluations[rule] = Evaluation(rule, metrics, record.rows, rule_folder)
        notes += [note for note in null_notes(state, metrics) if note not in notes]
    if decision == "both":
        write_errors += kept_going(write_comparison, folder / "comparison.csv", evaluations)
    run_name = next(iter(inspectors.values())).run.path.name
    text = report_text(run_name, folder, evaluations, state, notes)
    return EvaluationReport(evaluations, state.skipped, notes, text, write_errors)


def kept_going(write, *arguments) -> list[str]:
    """Run a results writer; an OSError (disk full, folder gone) becomes a message, so the metrics computed over
    the whole set still reach the caller and its report instead of being lost with a traceback."""
    try:
        write(*arguments)
    except OSError as error:
        log.error("Could not write results: %s", error)
        return [str(error)]
    return []


def report_text(run_name: str, folder: Path, evaluations: dict, state: StreamState, notes: list[str]) -> str:
    """The stdout report: header, metric table, per-defect tables, skipped files, notes, where results went."""
    lines = [f"run {run_name}, data {folder.name}: {next(iter(evaluations.values())).metrics['n_images']} images "
             f"evaluated, {len(state.skipped)} skipped", ""]
    lines += summary_table(evaluations)
    for evaluation in evaluations.values():
        lines += ["", *per_defect_lines(evaluation)]
    if state.skipped:
        lines += ["", f"skipped {len(state.skipped)} unreadable file(s):", *(f"  {entry}" for entry in state.skipped)]
    if notes:
        lines += ["", *(f"note: {note}" for note in notes)]
    lines += ["", f"results: {folder}"]
    return "\n".join(lines)


def synthetic_pairs(inspector, *, seed: int) -> tuple[list, list]:
    """The run's readable held-out good images as the decisions see them, then each again with one defect painted
    on (seeded by `seed` and its index): (images, labels, True = painted).

    The defect is painted at the model's scale, as training paints them: where the preprocessing shrinks the photo
    (keep-aspect, tiles with --scale below 1), on the photo shrunk so, both versions then brought back to the
    photo's size alike (a stroke a pixel wide at the photo's own pixels would vanish on the way in)."""
    clean, damaged = [], []
    for index, path in enumerate(inspector.run.config.get("validation_files", [])):
        try:
            view = inspector.preprocessing.view(data_module.decode_image(path))
        except ValueError as error:
            log.warning("Skipping: %s", error)
            continue
        good, painted = painted_at_model_scale(view, inspector.preprocessing.model_scale(view.shape),
                                               seed=(seed, index))
        clean.append(good)
        damaged.append(painted)
    if not clean:
        raise ValueError(f"Run {str(inspector.run.path)!r} has no readable validation images for a synthetic check.")
    return clean + damaged, [False] * len(clean) + [True] * len(damaged)


def painted_at_model_scale(view: np.ndarray, factor: float, *, seed: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(clean, damaged) H×W×C float32 views: one synthetic defect (utils.defects.add_synthetic_defects) painted on
    `view` shrunk by `factor` when below 1, both versions then resized back to the view's size (bilinear)."""
    import cv2
    import tensorflow as tf

    from utils.defects import add_synthetic_defects

    height, width, channels = view.shape
    small = view
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = cv2.resize(view, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], channels)
    painted = add_synthetic_defects(tf.constant(small), probability=1.0, seed=tf.constant(seed))[0].numpy()
    if small is view:
        return view, painted

    def back(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, channels)

    return back(small), back(painted)


def synthetic_check(model: str | Path, *, seed: int = 0, batch_size: int = 8) -> dict:
    """Image AUROC on the run's own held-out good images, each also shown with a synthetic defect painted on.

    A tuning signal that needs no test split: the validation images were never trained on, and the painter
    (utils/defects.py) marks what a defect is. It flatters models trained on the same painter, so it ranks ideas;
    the test split is for reporting. Returns {"synthetic_auroc", "n_images"}."""
    from utils.inspector import Inspector
    from utils.run import load_run

    run = load_run(model)
    inspector = Inspector(run, decision="calibrated" if run.calibration else "seed", batch_size=batch_size)
    images, labels = synthetic_pairs(inspector, seed=seed)
    scores = [result.score for result in inspector.inspect(images)]
    return {"synthetic_auroc": metrics_module.image_auroc(labels, scores), "n_images": len(scores)}
