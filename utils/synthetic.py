"""The built-in demo data set: photos of machined metal parts, some with painted defects, in MVTec AD layout.

Used when `train.py` runs without `--data`. Everything is drawn with numpy + OpenCV and is deterministic:
the same seed and parameters give byte-identical PNG files, and every image has its own random generator
derived from (seed, folder, index), so an image never depends on how many others were generated before it.

Scene: a hex nut, a washer or a flanged plate with four bolt holes lies on a brushed-steel table. Each photo
varies the part kind, pose (any rotation, a few percent of translation and scale), light (direction,
elevation, brightness gradient, specular highlight), the machining texture (turned rings or brushed streaks)
and sensor noise. This module renders the parts (`render_part` → a `PartRender`) and writes the set; the
defects are painted on the part afterwards by `utils.defects.paint_defect` (scratch, dent, rust, crack,
missing material): the ground-truth mask is the set of pixels a defect painted, and every pixel outside it is
identical to the defect-free photo of the same part.

Layout written by `generate_demo_set`::

    root/train/good/000.png …               defect-free training photos
    root/test/good/000.png …                defect-free test photos
    root/test/<defect>/000.png …            one folder per entry of DEFECT_TYPES, counts split evenly
    root/ground_truth/<defect>/000_mask.png uint8 0/255, same size as its photo
    root/demo.json                          the parameters, so `ensure_demo_set` knows when to regenerate

``python -m utils.synthetic [root] [--size 256] [--seed 0] [--force]`` writes one (``--help`` lists all).
"""
from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python utils/synthetic.py): put the project root on sys.path, not utils/
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse
import json
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.defects import DEFECT_TYPES, PartRender, float_to_uint8, paint_defect, smooth_random_field

PART_KINDS = ("hex_nut", "washer", "flange")
GENERATOR_VERSION = 1  # bump whenever the pictures change, so existing demo sets get regenerated
MINIMUM_SIZE = 32
_PROGRESS_ABOVE = 36  # show a progress bar only when generating more images than this


@dataclass(frozen=True)
class _Light:
    direction: tuple[float, float]  # towards the light, image coordinates
    elevation: float  # radians above the table
    gradient: float  # relative brightness change across the image along `direction`
    exposure: float  # overall brightness factor
    specular: float  # strength of the specular highlight


@dataclass(frozen=True)
class _Pose:
    center_x: float
    center_y: float
    radius: float  # part radius in pixels (shape coordinates are in units of this radius)
    angle: float  # rotation in radians


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def generate_demo_set(
    root: str | Path,
    *,
    size: int = 256,
    n_train_good: int = 200,
    n_test_good: int = 40,
    n_defective: int = 60,
    seed: int = 0,
) -> Path:
    """Write the demo set to `root` (replacing an earlier demo set there) and return `root` as a Path.

    size: photo width and height in pixels (≥ 32). n_defective is split evenly over DEFECT_TYPES, the first
    types getting one more when it does not divide. Images are written to a temporary sibling folder that
    is renamed to `root` only when complete, so an interrupted run never leaves half a set behind. A
    non-empty `root` without demo.json is refused (ValueError) rather than deleted.
    """
    parameters = _validated_parameters(size, n_train_good, n_test_good, n_defective, seed)
    root = Path(root)
    _refuse_foreign_folder(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-partial-", dir=root.parent))
    try:
        _write_images(staging, parameters)
        (staging / "demo.json").write_text(json.dumps(parameters, indent=2) + "\n")
        _replace_folder(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left over when something failed
    return root


def ensure_demo_set(
    root: str | Path = Path("data/demo"),
    *,
    size: int = 256,
    n_train_good: int = 200,
    n_test_good: int = 40,
    n_defective: int = 60,
    seed: int = 0,
) -> Path:
    """Return `root`, generating the demo set first when it is missing, incomplete or was made with other
    parameters (or by an older generator) than those asked for. Arguments as in `generate_demo_set`."""
    parameters = _validated_parameters(size, n_train_good, n_test_good, n_defective, seed)
    root = Path(root)
    if _recorded_parameters(root) == parameters and _is_complete(root, parameters):
        return root
    return generate_demo_set(
        root, size=size, n_train_good=n_train_good, n_test_good=n_test_good, n_defective=n_defective, seed=seed
    )


def render_sample(label: str, index: int, *, seed: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo stored as `<label>/<index>` of the demo set with this seed and size.

    label: "train/good", "test/good" or "test/<defect>". Returns (image H×W×3 uint8 RGB, mask H×W bool or
    None for defect-free photos).
    """
    defect = label.split("/")[-1]
    if label not in ("train/good", "test/good") and not (label.startswith("test/") and defect in DEFECT_TYPES):
        raise ValueError(f"label must be train/good, test/good or test/<one of {DEFECT_TYPES}>, got {label!r}")
    image_seed = (seed, zlib.crc32(label.encode()), index)
    part = render_part(image_seed, size)
    if defect == "good":
        return part.image, None
    return paint_defect(part, defect, np.random.default_rng(image_seed + (1,)))


def render_part(seed: int | Sequence[int], size: int, *, kind: str | None = None) -> PartRender:
    """Render one defect-free photo, size×size, fully determined by `seed` (anything numpy's default_rng
    accepts). kind: one of PART_KINDS, or None to let the seed choose."""
    if kind is not None and kind not in PART_KINDS:
        raise ValueError(f"kind must be one of {PART_KINDS} or None, got {kind!r}")
    _check_size(size)
    rng = np.random.default_rng(seed)
    chosen_kind = PART_KINDS[rng.integers(len(PART_KINDS))]
    kind = kind or chosen_kind
    light = _random_light(rng)
    pose = _random_pose(rng, size)
    signed_distance, height, albedo, turned = _PART_SHAPES[kind](_part_coordinates(size, pose), rng, pose)
    part_alpha = np.clip(0.5 - signed_distance * pose.radius, 0.0, 1.0).astype(np.float32)
    illumination = _illumination(size, light)
    background = _table(rng, size, light, part_alpha) * illumination[..., None]
    part = _shade_part(rng, height, albedo, turned, pose, light, kind) * illumination[..., None]
    scene = background * (1 - part_alpha[..., None]) + part * part_alpha[..., None]
    blur = max(0.4, 0.5 * size / 256)  # lens blur, before the sensor adds its noise
    noise = rng.normal(0.0, rng.uniform(0.006, 0.014), scene.shape).astype(np.float32)
    return PartRender(
        image=float_to_uint8(cv2.GaussianBlur(scene, (0, 0), blur) + noise),
        background=float_to_uint8(cv2.GaussianBlur(background, (0, 0), blur) + noise),
        part_alpha=part_alpha,
        light_direction=light.direction,
        kind=kind,
    )


# ----------------------------------------------------------------------------------------------------------
# Writing the set
# ----------------------------------------------------------------------------------------------------------


def _validated_parameters(size, n_train_good, n_test_good, n_defective, seed) -> dict:
    _check_size(size)
    for name, value, least in (("n_train_good", n_train_good, 1), ("n_test_good", n_test_good, 0),
                               ("n_defective", n_defective, 0), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")
    return {
        "generator_version": GENERATOR_VERSION,
        "size": int(size),
        "n_train_good": int(n_train_good),
        "n_test_good": int(n_test_good),
        "n_defective": int(n_defective),
        "seed": int(seed),
        "defect_types": list(DEFECT_TYPES),
    }


def _check_size(size) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < MINIMUM_SIZE:
        raise ValueError(f"size must be an integer ≥ {MINIMUM_SIZE}, got {size!r}")


def _folder_counts(parameters: dict) -> dict[str, int]:
    """Number of photos per label folder, e.g. {"train/good": 200, "test/good": 40, "test/scratch": 12…}."""
    counts = {"train/good": parameters["n_train_good"], "test/good": parameters["n_test_good"]}
    per_type, remainder = divmod(parameters["n_defective"], len(DEFECT_TYPES))
    for position, defect in enumerate(DEFECT_TYPES):
        counts[f"test/{defect}"] = per_type + (1 if position < remainder else 0)
    return {label: count for label, count in counts.items() if count > 0}


def _write_images(root: Path, parameters: dict) -> None:
    jobs = [(label, index) for label, count in _folder_counts(parameters).items() for index in range(count)]
    digits = max(3, len(str(max(parameters["n_train_good"], parameters["n_test_good"], parameters["n_defective"]))))
    for label, index in tqdm(jobs, desc="demo set", unit="image", disable=len(jobs) <= _PROGRESS_ABOVE):
        image, mask = render_sample(label, index, seed=parameters["seed"], size=parameters["size"])
        name = f"{index:0{digits}d}"
        _write_png(root / label / f"{name}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if mask is not None:
            _write_png(root / "ground_truth" / label.split("/")[-1] / f"{name}_mask.png", mask.astype(np.uint8) * 255)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


def _refuse_foreign_folder(root: Path) -> None:
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / "demo.json").exists())):
        raise ValueError(f"{root} exists and is not a demo set (no demo.json): refusing to replace it")


def _replace_folder(staging: Path, root: Path) -> None:
    """Swap the finished `staging` folder in at `root`; each rename is atomic on one file system."""
    retired = staging.with_name(staging.name + "-old")
    if root.exists():
        root.rename(retired)
    staging.rename(root)
    shutil.rmtree(retired, ignore_errors=True)


def _recorded_parameters(root: Path) -> dict | None:
    try:
        return json.loads((root / "demo.json").read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, parameters: dict) -> bool:
    """Cheap check that no photo or mask was deleted since generation (counts only, no decoding)."""
    for label, count in _folder_counts(parameters).items():
        if len(list((root / label).glob("*.png"))) != count:
            return False
        defect = label.split("/")[-1]
        if defect != "good" and len(list((root / "ground_truth" / defect).glob("*_mask.png"))) != count:
            return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Scene: pose, light, textures
# ----------------------------------------------------------------------------------------------------------


def _random_light(rng: np.random.Generator) -> _Light:
    azimuth = rng.uniform(0, 2 * np.pi)
    return _Light(
        direction=(float(np.cos(azimuth)), float(np.sin(azimuth))),
        elevation=rng.uniform(np.radians(35), np.radians(65)),
        gradient=rng.uniform(0.1, 0.4),
        exposure=rng.uniform(0.85, 1.12),
        specular=rng.uniform(0.06, 0.22),
    )


def _random_pose(rng: np.random.Generator, size: int) -> _Pose:
    shift_x, shift_y = rng.uniform(-0.05, 0.05, 2) * size
    return _Pose(
        center_x=size / 2 + shift_x,
        center_y=size / 2 + shift_y,
        radius=0.34 * size * rng.uniform(0.94, 1.06),
        angle=rng.uniform(0, 2 * np.pi),
    )


def _part_coordinates(size: int, pose: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): each pixel's position in the part's own frame, in units of the part radius."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = x - pose.center_x, y - pose.center_y
    cosine, sine = np.cos(pose.angle), np.sin(pose.angle)
    return (dx * cosine + dy * sine) / pose.radius, (-dx * sine + dy * cosine) / pose.radius


def _illumination(size: int, light: _Light) -> np.ndarray:
    """Brightness factor per pixel: brighter towards the light, scaled by exposure."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    along_light = x * light.direction[0] + y * light.direction[1]
    return (light.exposure * (1 + light.gradient * along_light)).astype(np.float32)


def _brushed_streaks(rng: np.random.Generator, size: int, angle: float, length: float) -> np.ndarray:
    """Unit-variance noise smeared along `angle` over `length` pixels: the look of brushed metal."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    half = max(1, int(length) // 2)
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    cv2.line(kernel, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1.0, 1)
    streaks = cv2.filter2D(noise, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    grain = cv2.GaussianBlur(noise, (0, 0), 0.7)
    texture = 0.8 * streaks / (streaks.std() + 1e-6) + 0.2 * grain / (grain.std() + 1e-6)
    return texture / (texture.std() + 1e-6)


def _turned_rings(rng: np.random.Generator, radius_pixels: np.ndarray) -> np.ndarray:
    """Unit-variance concentric rings, as left by a lathe, indexed by distance from the part centre."""
    count = int(radius_pixels.max()) + 2
    rings = np.convolve(rng.standard_normal(count), [0.25, 0.5, 0.25], mode="same")
    rings /= rings.std() + 1e-6
    return np.interp(radius_pixels, np.arange(count), rings).astype(np.float32)


def _table(rng: np.random.Generator, size: int, light: _Light, part_alpha: np.ndarray) -> np.ndarray:
    """Brushed-steel table (H×W×3 float), darkened by the part's cast shadow and contact occlusion."""
    base = rng.uniform(0.28, 0.42)
    texture = _brushed_streaks(rng, size, rng.uniform(0, np.pi), size * rng.uniform(0.15, 0.3))
    gray = base * (1 + rng.uniform(0.04, 0.08) * texture) * (0.9 + 0.2 * smooth_random_field(rng, size, 3))
    offset = -np.array(light.direction) * size * 0.05 / np.tan(light.elevation)
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    shadow = cv2.warpAffine(part_alpha, shift, (size, size), borderMode=cv2.BORDER_CONSTANT)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.02 * size)
    occlusion = cv2.GaussianBlur(part_alpha, (0, 0), 0.06 * size)
    gray = gray * (1 - rng.uniform(0.25, 0.4) * shadow) * (1 - 0.15 * occlusion)
    tint = np.float32([0.98, 1.0, 1.03]) * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    return (gray[..., None] * tint).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Parts: each returns (signed distance to the outline, negative inside, in part radii;
#                      height in pixels; albedo texture; mask of lathe-turned surface)
# ----------------------------------------------------------------------------------------------------------


def _ramp(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """0 on the outline rising to 1 at `width` inside: a bevelled edge."""
    return np.clip(-signed_distance / width, 0.0, 1.0)


def _hex_nut(coordinates, rng: np.random.Generator, pose: _Pose):
    u, v = coordinates
    radius = np.hypot(u, v)
    apothem = np.cos(np.pi / 6) * rng.uniform(0.98, 1.02)  # hexagon of circumradius ≈ 1
    hexagon = np.max([np.abs(u * np.cos(a) + v * np.sin(a)) for a in np.arange(3) * np.pi / 3], axis=0) - apothem
    bore = rng.uniform(0.34, 0.38)
    signed_distance = np.maximum(hexagon, bore - radius)
    face_radius = rng.uniform(0.84, 0.9)  # the corners outside this circle are chamfered
    chamfer = np.clip((1.0 - radius) / (1.0 - face_radius), 0, 1)
    height = 0.09 * pose.radius * np.minimum(_ramp(signed_distance, 0.06), chamfer)
    thread = (radius < bore + 0.08).astype(np.float32)  # the first thread turns, seen inside the bore
    stripes = 0.5 + 0.5 * np.cos(radius * pose.radius * 2.1)
    albedo = 1 - thread * (0.35 + 0.2 * stripes)
    return signed_distance, height, albedo, np.ones_like(u, dtype=bool)


def _washer(coordinates, rng: np.random.Generator, pose: _Pose):
    u, v = coordinates
    radius = np.hypot(u, v)
    inner = rng.uniform(0.46, 0.54)
    signed_distance = np.maximum(radius - 1.0, inner - radius)
    height = 0.07 * pose.radius * np.sqrt(_ramp(signed_distance, 0.12))  # rounded, stamped edges
    albedo = 1 - 0.06 * np.exp(-(((radius - (1 + inner) / 2) / 0.1) ** 2))  # faint wear ring mid-face
    return signed_distance, height, albedo, np.ones_like(u, dtype=bool)


def _flange(coordinates, rng: np.random.Generator, pose: _Pose):
    u, v = coordinates
    radius = np.hypot(u, v)
    half, corner = 0.8, rng.uniform(0.18, 0.26)
    qu, qv = np.abs(u) - (half - corner), np.abs(v) - (half - corner)
    plate = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0) - corner
    bolt_offset, bolt_radius = rng.uniform(0.52, 0.57), rng.uniform(0.09, 0.11)
    bolt_holes = np.hypot(np.abs(u) - bolt_offset, np.abs(v) - bolt_offset) - bolt_radius
    boss, bore = rng.uniform(0.36, 0.42), rng.uniform(0.15, 0.19)
    signed_distance = np.maximum.reduce([plate, -bolt_holes, bore - radius])
    on_boss = radius < boss
    height = 0.05 * pose.radius * (_ramp(signed_distance, 0.05) + 0.8 * _ramp(radius - boss, 0.04))
    return signed_distance, height, np.ones_like(u), on_boss


_PART_SHAPES: dict[str, Callable] = {"hex_nut": _hex_nut, "washer": _washer, "flange": _flange}


def _shade_part(rng, height, albedo, turned, pose: _Pose, light: _Light, kind: str) -> np.ndarray:
    """Lit part colour (H×W×3 float): textured albedo × Lambert shading of the height map + highlight."""
    size = height.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    radius_pixels = np.hypot(x - pose.center_x, y - pose.center_y)
    brush_angle = pose.angle + rng.uniform(0, np.pi)
    rings = _turned_rings(rng, radius_pixels)
    streaks = _brushed_streaks(rng, size, brush_angle, size * rng.uniform(0.2, 0.4))
    texture = np.where(turned, rings, streaks)
    gray = rng.uniform(0.5, 0.64) * albedo * (1 + rng.uniform(0.03, 0.06) * texture)
    shading = _lambert(cv2.GaussianBlur(height.astype(np.float32), (0, 0), 0.8), light)
    angle_to_light = np.arctan2(y - pose.center_y, x - pose.center_x) - np.arctan2(*light.direction[::-1])
    exponent = rng.uniform(3, 10)
    turned_highlight = np.cos(angle_to_light) ** (2 * np.round(exponent))  # radial streak of a lathe finish
    along_brush = (x - pose.center_x) * np.cos(brush_angle) + (y - pose.center_y) * np.sin(brush_angle)
    band_center = rng.uniform(-0.3, 0.3) * pose.radius
    brushed_highlight = np.exp(-(((along_brush - band_center) / (0.35 * pose.radius)) ** 2))
    highlight = light.specular * np.where(turned, turned_highlight, brushed_highlight)
    tints = {"hex_nut": (0.97, 0.99, 1.03), "washer": (1.02, 1.0, 0.95), "flange": (1.0, 1.0, 1.01)}
    tint = np.float32(tints[kind]) * rng.uniform(0.99, 1.01, 3).astype(np.float32)
    return ((gray * shading + highlight)[..., None] * tint).astype(np.float32)


def _lambert(height: np.ndarray, light: _Light) -> np.ndarray:
    """Diffuse shading factor of a height map (pixels), 1 on flat ground, >1 on slopes facing the light."""
    slope_y, slope_x = np.gradient(height)
    flat = np.sin(light.elevation)
    towards = np.cos(light.elevation)
    lit = (-slope_x * light.direction[0] * towards - slope_y * light.direction[1] * towards + flat)
    lit /= np.sqrt(slope_x**2 + slope_y**2 + 1)
    return 0.3 + 0.7 * np.clip(lit, 0, None) / flat


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the AiVision demo set (MVTec AD layout).")
    parser.add_argument("root", nargs="?", default="data/demo", help="output folder (default data/demo)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-train-good", type=int, default=200)
    parser.add_argument("--n-test-good", type=int, default=40)
    parser.add_argument("--n-defective", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even when the set is up to date")
    arguments = parser.parse_args(argv)
    make = generate_demo_set if arguments.force else ensure_demo_set
    print(make(arguments.root, size=arguments.size, n_train_good=arguments.n_train_good,
               n_test_good=arguments.n_test_good, n_defective=arguments.n_defective, seed=arguments.seed))


if __name__ == "__main__":
    main()
