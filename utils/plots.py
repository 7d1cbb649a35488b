"""Pictures of results: PNG plots of evaluation and training, and the one renderer of an inspected part.

`result_pictures` turns an InspectionResult into the pictures people look at (uint8 RGB arrays): the line
publishes them over MQTT (``P/image/<kind>``) and test.py saves them in the run folder, so the dashboard and
the run folder always show the same pixels. The heat map is scaled by the result's ``display_range``, which
the anomaly map defines (utils/anomaly_maps.py), never by one map's range.

Every plot draws on its own ``matplotlib.figure.Figure`` (Agg canvas, no pyplot), so nothing touches
global matplotlib state or needs a display, writes one PNG at a fixed size and lets the figure go.
Parent folders are created as needed; each function returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 100  # figure sizes below are in inches, so pixel size = inches × 100
PREDICTED_COLOR = "red"
GROUND_TRUTH_COLOR = "lime"
# Keras logs these alongside the metrics; they are settings, not results worth a curve.
NOT_METRICS = ("learning_rate", "lr")
RESULT_PICTURE_KINDS = ("input", "reconstruction", "residual", "defect")  # also the MQTT P/image/<kind> names
HEAT_MAP_COLORS = "inferno"  # the heat-map picture and the panel's colour bar must use the same colours
DEFECT_RGB = (255, 0, 0)  # the defect picture's tint and boxes
DEFECT_TINT_WEIGHT = 0.5  # how much of the defect colour is mixed into a defective pixel


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    figure.clear()  # releases the artists now rather than at garbage collection
    return path


def _binary_labels_and_scores(labels: Sequence, scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels and scores must be 1-D of one length, got {labels.shape} and {scores.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if unknown:
        raise ValueError(f"labels must be 0 (good) or 1 (defective), got {unknown[:5]}")
    return labels, scores


def save_roc_curve(labels: Sequence, scores: Sequence[float], path: str | Path) -> Path:
    """Image-level ROC curve (defective = positive) with its AUROC in the legend; 600×500 px.

    Raises ValueError when only one class is present (no ROC curve exists then).
    """
    from sklearn.metrics import roc_auc_score, roc_curve  # here: the line uses this module without it

    labels, scores = _binary_labels_and_scores(labels, scores)
    if labels.min() == labels.max():
        raise ValueError(f"an ROC curve needs good and defective images, got only label {labels[0]}")
    fpr, tpr, _ = roc_curve(labels, scores)
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, color="tab:blue", label=f"AUROC = {roc_auc_score(labels, scores):.3f}")
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (good images flagged NOK)",
             ylabel="true-positive rate (defective images flagged NOK)", title="Image-level ROC")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def save_pro_curve(fpr: np.ndarray, pro: np.ndarray, path: str | Path, *, fpr_limit: float = 0.3) -> Path:
    """Per-region overlap curve (e.g. ``PixelScores.pro_curve()``), area up to ``fpr_limit`` shaded; 600×500 px."""
    from utils.metrics import integrate_pro_curve  # here: it loads scikit-learn too

    score = integrate_pro_curve(fpr, pro, fpr_limit=fpr_limit)  # also validates the curve
    fpr, pro = np.asarray(fpr, np.float64), np.asarray(pro, np.float64)
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    axes.plot(fpr, pro, color="tab:blue", label=f"AUPRO (FPR ≤ {fpr_limit:g}) = {score:.3f}")
    inside = fpr <= fpr_limit
    axes.fill_between(fpr[inside], pro[inside], color="tab:blue", alpha=0.2)
    axes.axvline(fpr_limit, color="gray", linestyle="--", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (pixels)",
             ylabel="per-region overlap", title="Per-region overlap (PRO) curve")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def save_score_histogram(
    labels: Sequence, scores: Sequence[float], threshold: float | None, path: str | Path
) -> Path:
    """Histograms of image scores, good vs defective, on shared bins, threshold as a line; 700×450 px."""
    labels, scores = _binary_labels_and_scores(labels, scores)
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite or None, got {threshold!r}")
    edges = np.histogram_bin_edges(scores if threshold is None else np.append(scores, threshold), bins=30)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for label, name, color in ((0, "good", "tab:green"), (1, "defective", "tab:red")):
        subset = scores[labels == label]
        axes.hist(subset, bins=edges, alpha=0.6, color=color, label=f"{name} ({subset.size})")
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4g}")
    axes.set(xlabel="anomaly score", ylabel="images", title="Image scores")
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def _draw_boxes(axes, boxes: Sequence[Sequence[float]], color: str) -> None:
    for x0, y0, x1, y1 in boxes:
        # Pixel centres sit on integers, so a pixel's outer edge is at -0.5.
        axes.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                 fill=False, edgecolor=color, linewidth=1.5))


def save_overlay_grid(
    items: Sequence[Mapping], path: str | Path, *, title: str = "", columns: int = 4
) -> Path:
    """Grid of images with predicted boxes in red and ground-truth boxes in green; 3×3 inches per cell.

    Args:
        items: dicts with ``image`` (H×W×C float in [0, 1], C = 1 or 3, or H×W), ``predicted_boxes`` and
            ``ground_truth_boxes`` (lists of ``[x0, y0, x1, y1]``, may be empty or missing) and an optional
            ``caption`` (str, e.g. file name and verdict).
        title: figure title.
        columns: cells per row, >= 1.
    """
    if not items:
        raise ValueError("items must hold at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns!r}")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows + (0.4 if title else 0)))
    for index, item in enumerate(items):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(to_rgb8(item["image"]), interpolation="nearest")
        _draw_boxes(axes, item.get("ground_truth_boxes", ()), GROUND_TRUTH_COLOR)
        _draw_boxes(axes, item.get("predicted_boxes", ()), PREDICTED_COLOR)
        axes.set_title(str(item.get("caption", "")), fontsize=8)
        axes.set_axis_off()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _curve_figure(history: Mapping[str, Sequence[float]], names: list[str]) -> Figure:
    """One subplot per name, each with the training and (where logged) validation curve; 7×4 in per row."""
    figure = Figure(figsize=(7, 4 * len(names)))
    for row, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, row + 1)
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                values = np.asarray(history[key], dtype=np.float64)
                axes.plot(np.arange(1, values.size + 1), values, style, marker=".", label=key)
        axes.set(xlabel="epoch", ylabel=name, title=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    figure.tight_layout()
    return figure


def save_training_curves(
    history: Mapping[str, Sequence[float]], path_loss: str | Path, path_metric: str | Path
) -> list[Path]:
    """Loss curve (``loss`` and ``val_loss``) and one metric subplot per other logged quantity.

    Args:
        history: Keras ``History.history``-style dict, key -> per-epoch values; ``val_<name>`` keys are
            drawn dashed beside ``<name>``. ``learning_rate``/``lr`` are skipped.
        path_loss: PNG for the loss (700×400 px).
        path_metric: PNG for the metrics (700×400 px per metric); not written when only the loss is logged.

    Returns:
        The paths written.
    """
    if "loss" not in history:
        raise ValueError(f"history must contain 'loss', got keys {sorted(history)}")
    metric_names = [key for key in history
                    if key != "loss" and not key.startswith("val_") and key not in NOT_METRICS]
    written = [_save(_curve_figure(history, ["loss"]), path_loss)]
    if metric_names:
        written.append(_save(_curve_figure(history, metric_names), path_metric))
    return written


# ---------------------------------------------------------------- pictures of an inspected part


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """An H×W, H×W×1 or H×W×3 image in [0, 1], or a bool mask → uint8 H×W×3 RGB (outside clipped, NaN black)."""
    image = np.asarray(image, dtype=np.float32)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must be H×W, H×W×1 or H×W×3, got shape {image.shape}")
    pixels = np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels
    return np.repeat(pixels.reshape(pixels.shape[:2])[:, :, None], 3, axis=2)


def heat_map(anomaly_map: np.ndarray, display_range: Sequence[float]) -> np.ndarray:
    """An H×W anomaly map → uint8 H×W×3 RGB in HEAT_MAP_COLORS: `low` and below dark, `high` and above full colour.

    `display_range` is (low, high), finite with low < high: each anomaly map has its own (utils/anomaly_maps.py).
    NaN counts as `low`.
    """
    low, high = (float(value) for value in display_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"display_range must be finite (low, high) with low < high, got {tuple(display_range)!r}")
    values = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float64), nan=low)
    if values.ndim != 2:
        raise ValueError(f"anomaly map must be H×W, got shape {values.shape}")
    levels = ((np.clip(values, low, high) - low) * (255.0 / (high - low)) + 0.5).astype(np.uint8)
    colors = (colormaps[HEAT_MAP_COLORS](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    return colors[levels]


def defect_overlay(picture: np.ndarray, defect_mask: np.ndarray, blobs: Sequence) -> np.ndarray:
    """A copy of a uint8 RGB picture with the defect mask tinted DEFECT_RGB and a 1 px box around every blob.

    Every blob is boxed, small ones too: P/result lists them all, and the picture shows what the record says.
    """
    overlay = picture.copy()
    mask = np.asarray(defect_mask, dtype=bool)
    tinted = (1.0 - DEFECT_TINT_WEIGHT) * overlay[mask] + DEFECT_TINT_WEIGHT * np.array(DEFECT_RGB)
    overlay[mask] = tinted.astype(np.uint8)
    for blob in blobs:
        x0, y0, x1, y1 = (int(value) for value in blob.bbox)
        cv2.rectangle(overlay, (x0, y0), (x1 - 1, y1 - 1), DEFECT_RGB, 1)  # bbox ends are exclusive
    return overlay


def result_pictures(result) -> dict[str, np.ndarray]:
    """The pictures of one InspectionResult, uint8 H×W×3 RGB at model resolution, keyed by RESULT_PICTURE_KINDS.

    input and reconstruction as the model saw and gave them; residual, the anomaly map as a heat map scaled by
    ``result.display_range``; defect, the input with the defect mask tinted red and a red box around each blob.
    """
    input_picture = to_rgb8(result.input)
    return {"input": input_picture, "reconstruction": to_rgb8(result.reconstruction),
            "residual": heat_map(result.anomaly_map, result.display_range),
            "defect": defect_overlay(input_picture, result.defect_mask, result.blobs)}


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 H×W×3 RGB picture as a PNG file's bytes (OpenCV writes BGR, hence the swap)."""
    encoded, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not encoded:
        raise ValueError(f"could not encode a picture of shape {picture.shape} as PNG")
    return data.tobytes()


def _code_mosaic(code: np.ndarray) -> np.ndarray:
    """An encoder output (h×w×k feature maps, or a flat vector) tiled into one 2-D picture normalised to [0, 1]."""
    code = np.asarray(code, np.float32)
    if code.ndim == 1:
        side = int(np.ceil(np.sqrt(code.size)))
        code = np.pad(code, (0, side * side - code.size)).reshape(side, side, 1)
    height, width, channels = code.shape
    columns = int(np.ceil(np.sqrt(channels)))
    rows = int(np.ceil(channels / columns))
    mosaic = np.zeros((rows * (height + 1), columns * (width + 1)), np.float32)
    for index in range(channels):
        row, column = divmod(index, columns)
        mosaic[row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = \
            code[:, :, index]
    low, high = float(mosaic.min()), float(mosaic.max())
    return (mosaic - low) / (high - low) if high > low else mosaic * 0.0


def save_inspection_images(result, folder: str | Path, *, code: np.ndarray | None = None,
                           noisy: np.ndarray | None = None, title: str = "") -> list[Path]:
    """Everything test.py shows about one inspected image: one PNG per picture, and panel.png with all of them.

    `result` is a utils.inspector.InspectionResult; `code` the encoder output for the image; `noisy` the
    denoising-style noisy input (only for runs trained with --noise). Files, in panel order: input, noisy,
    reconstruction, code, residual, defect (the binary mask), overlay (result_pictures' "defect" picture), panel.
    """
    folder = Path(folder)
    pictures = result_pictures(result)
    views = {"input": pictures["input"]}
    if noisy is not None:
        views["noisy"] = to_rgb8(noisy)
    views["reconstruction"] = pictures["reconstruction"]
    if code is not None:
        views["code"] = to_rgb8(_code_mosaic(code))
    # The file names predate the MQTT kinds: here defect.png is the bare mask and overlay.png the defect picture.
    views.update(residual=pictures["residual"], defect=to_rgb8(result.defect_mask), overlay=pictures["defect"])
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, picture in views.items():
        written.append(folder / f"{name}.png")
        written[-1].write_bytes(png_bytes(picture))
    written.append(_save_panel(result, views, folder / "panel.png", title=title))
    return written


def _save_panel(result, views: Mapping[str, np.ndarray], path: Path, *, title: str) -> Path:
    """The pictures side by side with their names, the heat map's colour bar, verdict and score in the title."""
    figure = Figure(figsize=(2.6 * len(views) + 0.6, 3.2))
    for index, (name, picture) in enumerate(views.items()):
        axes = figure.add_subplot(1, len(views), index + 1)
        axes.imshow(picture, interpolation="nearest")
        axes.set_title(name)
        axes.set_axis_off()
        if name == "residual":
            scale = ScalarMappable(Normalize(*result.display_range), cmap=HEAT_MAP_COLORS)
            figure.colorbar(scale, ax=axes, label=f"{result.map_name} anomaly map", fraction=0.046, pad=0.04)
    figure.suptitle(f"{title}  {result.verdict}: score {result.score:.4g} (threshold {result.threshold:.4g}, "
                    f"largest blob {result.max_blob_area:.0f} px, min {result.min_area} px, {result.rule} rule)")
    figure.tight_layout()
    return _save(figure, path)
