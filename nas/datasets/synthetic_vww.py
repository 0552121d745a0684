"""A labelled SYNTHETIC stand-in for Visual Wake Words, so a notebook runs with no download.

    make_synthetic_vww("data/vww_synthetic", per_class=500, resolution=96, seed=0)

``person/`` holds rendered human figures (head, torso, arms and legs at random poses, sizes,
colours and positions; sometimes several); ``non_person/`` holds the same kinds of textured
backgrounds and distractor shapes (boxes, discs, poles, blobs) with no figure. Both classes share
every background and distractor recipe, so only the figure tells them apart. It is a smoke test
for the pipeline: accuracy on it says nothing about accuracy on VWW.

Each image is drawn from a generator seeded by (seed, class, index), written to a temporary name
and renamed: the same seed gives the same files, and a killed run resumes where it stopped.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nas.datasets.vww import CLASSES
from tinyengine_tf.errors import DatasetError

README = ("SYNTHETIC stand-in for Visual Wake Words made by `tinyengine-tf data vww-synthetic`: "
          "rendered figures (person/) and no figure (non_person/) on textured backgrounds. "
          "It is NOT the VWW dataset; accuracy on it is not VWW accuracy.\n")
SUPERSAMPLE = 2     # draw at twice the size, then downsample: anti-aliased edges


def _colour(rng, lo=0, hi=256):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _background(rng, size: int):
    from PIL import Image, ImageFilter
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    if kind == 0:       # gradient
        t = (xx * math.cos(rng.uniform(0, 6.3)) + yy * math.sin(rng.uniform(0, 6.3)))[..., None]
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
    elif kind == 1:     # stripes
        f = rng.uniform(3, 15)
        t = (0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))))[..., None]
    elif kind == 2:     # checkerboard
        n = int(rng.integers(3, 12))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2)[..., None]
    else:               # smooth noise
        t = rng.uniform(size=(size // 8 + 1, size // 8 + 1))
        t = np.array(Image.fromarray((t * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                     float)[..., None] / 255
    img = a * (1 - t) + b * t + rng.normal(0, rng.uniform(2, 25), (size, size, 3))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def _distractor(draw, rng, size: int):
    kind = int(rng.integers(4))
    c = _colour(rng)
    x, y = rng.uniform(0, size, 2)
    s = rng.uniform(0.05, 0.35) * size
    if kind == 0:
        draw.rectangle([x, y, x + s, y + s * rng.uniform(0.3, 2)], fill=c)
    elif kind == 1:
        draw.ellipse([x, y, x + s, y + s * rng.uniform(0.5, 1.5)], fill=c)
    elif kind == 2:     # a pole or a line: straight limbs alone must not mean "person"
        draw.line([x, y, x + rng.uniform(-s, s), y + rng.uniform(-2 * s, 2 * s)], fill=c,
                  width=max(1, int(s * rng.uniform(0.05, 0.2))))
    else:
        pts = [(x + rng.uniform(-s, s), y + rng.uniform(-s, s)) for _ in range(int(rng.integers(3, 7)))]
        draw.polygon(pts, fill=c)


def _figure(draw, rng, size: int):
    """A person: head, torso, two arms and two legs with elbows and knees, one colour each part."""
    h = rng.uniform(0.3, 0.9) * size                       # standing height
    cx = rng.uniform(0.15, 0.85) * size
    top = rng.uniform(0, max(size - h, 1))
    skin, shirt, trousers = _colour(rng, 40, 256), _colour(rng), _colour(rng)
    limb = max(2, int(h * rng.uniform(0.06, 0.1)))
    head_r = h * 0.075
    neck = (cx, top + 2 * head_r)
    hip = (cx + rng.uniform(-0.03, 0.03) * h, top + 0.55 * h)
    draw.line([neck, hip], fill=shirt, width=int(limb * 1.8))            # torso
    shoulder = (cx, top + 2 * head_r + 0.05 * h)
    for side in (-1, 1):
        a1 = math.radians(rng.uniform(10, 170)) * side
        a2 = a1 + math.radians(rng.uniform(-60, 60))
        elbow = (shoulder[0] + math.sin(a1) * 0.17 * h, shoulder[1] + math.cos(a1) * 0.17 * h)
        hand = (elbow[0] + math.sin(a2) * 0.16 * h, elbow[1] + math.cos(a2) * 0.16 * h)
        draw.line([shoulder, elbow, hand], fill=shirt, width=limb, joint="curve")
        l1 = math.radians(rng.uniform(0, 35)) * side
        l2 = l1 + math.radians(rng.uniform(-25, 25))
        knee = (hip[0] + math.sin(l1) * 0.23 * h, hip[1] + math.cos(l1) * 0.23 * h)
        foot = (knee[0] + math.sin(l2) * 0.22 * h, knee[1] + math.cos(l2) * 0.22 * h)
        draw.line([hip, knee, foot], fill=trousers, width=int(limb * 1.2), joint="curve")
    draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=skin)


def render(label: int, rng, resolution: int = 96):
    """One PIL image of class ``label`` (1 = person)."""
    from PIL import Image, ImageDraw
    size = resolution * SUPERSAMPLE
    im = _background(rng, size)
    draw = ImageDraw.Draw(im)
    layers = ["d"] * int(rng.integers(0, 5)) + ["p"] * (int(rng.integers(1, 3)) if label else 0)
    for layer in [layers[i] for i in rng.permutation(len(layers))]:
        (_figure if layer == "p" else _distractor)(draw, rng, size)
    return im.resize((resolution, resolution), Image.LANCZOS)


def _complete(path: Path) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # missing, truncated or garbage: draw it again
        return False


def make_synthetic_vww(out, per_class: int = 500, resolution: int = 96, seed: int = 0, *,
                       progress: bool = True) -> Path:
    """Write ``out/{person,non_person}/NNNNN.jpg`` and a README saying the set is synthetic."""
    from tqdm import tqdm

    if per_class < 1 or resolution < 8:
        raise DatasetError(f"per_class must be >= 1 and resolution >= 8 (got {per_class}, {resolution})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a directory; choose another output path")
    jobs = [(label, i) for i in range(per_class) for label in (1, 0)]
    for cls in CLASSES:
        (out / cls).mkdir(parents=True, exist_ok=True)
    for label, i in tqdm(jobs, desc="vww-synthetic", unit="img", disable=not progress):
        path = out / CLASSES[label] / f"{i:05d}.jpg"
        if _complete(path):
            continue
        im = render(label, np.random.default_rng([seed, label, i]), resolution)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        im.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, path)
    (out / "README.txt").write_text(README)
    return out
