"""The MCUNet search space (MobileNetV2-style MBConv blocks) and its architectures.

An architecture fixes the input resolution, the width multiplier, the number of classes, the depth of
each of the six stages and, for every block, its depthwise kernel size and expand ratio. It is a
small frozen dataclass (hashable, JSON round-trips exactly), so search code can deduplicate and
store candidates as plain data.

Layout (shared/docs/tinynas.md):
    stem        3x3 conv, stride 2, C(32w), BN + ReLU6
    first block MBConv kernel 3, expand 1, C(16w), stride 1
    stage i     depth d_i blocks, width C(base_i * w); its first block has stride s_i, the others 1
                base = [24, 40, 80, 96, 192, 320], s = [2, 2, 2, 1, 2, 1]
                d_i in {2, 3, 4} for the first five stages, 1 for the last
    block       [1x1 expand conv + BN + ReLU6 if e > 1] -> kxk depthwise (stride) + BN + ReLU6
                -> 1x1 project conv + BN (no activation) [-> + input if stride 1 and Cin == Cout]
    head        global average pool -> dense classifier (logits; no 1280 conv, as the released
                MCUNet models)

C(v) = make_divisible(v): channels are rounded to a multiple of 8 exactly like MobileNet's
``_make_divisible(v, divisor=8, min_value=8)``: round to the nearest multiple of 8 (halves up),
never below 8, and if that lost more than 10% of v, add 8. The product base * width is first rounded
to 6 decimals so binary float noise (24 * 0.3 = 7.1999...) cannot move a channel count.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
STAGE_WIDTHS = (24, 40, 80, 96, 192, 320)
STAGE_STRIDES = (2, 2, 2, 1, 2, 1)
STAGE_DEPTHS = ((2, 3, 4),) * 5 + ((1,),)
MAX_STAGE_DEPTH = 4   # a space may also allow shallower stages (stage_depths=), down to 1 block
KERNEL_SIZES = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
RESOLUTIONS = tuple(range(48, 225, 16))
WIDTHS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, at least `min_value`,
    and never more than 10% below v."""
    v = round(v, 6)
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


@dataclass(frozen=True)
class Block:
    """One MBConv block as the builders see it (derived from an Arch, never stored)."""
    cin: int
    cout: int
    kernel: int
    expand: int
    stride: int

    @property
    def mid(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class Arch:
    """A sub-network of the MCUNet space. kernels/expands list the searchable blocks (all blocks of
    the six stages, in order; the fixed first block is not listed), len == sum(depths)."""
    resolution: int
    width: float
    depths: tuple
    kernels: tuple
    expands: tuple
    num_classes: int = 1000
    in_width: int = 0        # input width when it differs from the resolution (0: square)
    in_channels: int = 3     # 3 for RGB images, 1 for spectrograms / MFCCs

    def __post_init__(self):
        # Accept lists (e.g. from JSON) but store tuples so the arch stays hashable.
        for name in ("depths", "kernels", "expands"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "num_classes", int(self.num_classes))
        in_width = int(self.in_width)
        object.__setattr__(self, "in_width", 0 if in_width == self.resolution else in_width)
        object.__setattr__(self, "in_channels", int(self.in_channels))
        self.validate()

    def validate(self):
        if len(self.depths) != len(STAGE_WIDTHS):
            raise ValueError(f"depths must have {len(STAGE_WIDTHS)} entries, got {list(self.depths)}")
        for i, d in enumerate(self.depths):
            if not 1 <= d <= MAX_STAGE_DEPTH:
                raise ValueError(f"stage {i} depth {d} is not in 1..{MAX_STAGE_DEPTH}")
        n = sum(self.depths)
        if len(self.kernels) != n or len(self.expands) != n:
            raise ValueError(f"kernels and expands need {n} entries (sum of depths), got "
                             f"{len(self.kernels)} and {len(self.expands)}")
        if any(k not in KERNEL_SIZES for k in self.kernels):
            raise ValueError(f"kernel sizes must be in {KERNEL_SIZES}: {list(self.kernels)}")
        if any(e not in EXPAND_RATIOS for e in self.expands):
            raise ValueError(f"expand ratios must be in {EXPAND_RATIOS}: {list(self.expands)}")
        if self.resolution < 8 or self.width <= 0 or self.num_classes < 1:
            raise ValueError("resolution >= 8, width > 0 and num_classes >= 1 are required")
        if self.in_width < 0 or self.in_channels < 1:
            raise ValueError("in_width >= 1 (0: square) and in_channels >= 1 are required")

    @property
    def input_shape(self) -> tuple:
        """(height, width, channels) of the float input the built model takes."""
        return (self.resolution, self.in_width or self.resolution, self.in_channels)

    # -- derived structure -------------------------------------------------------------------
    @property
    def stem_channels(self) -> int:
        return make_divisible(STEM_CHANNELS * self.width)

    def stage_channels(self) -> list:
        return [make_divisible(c * self.width) for c in STAGE_WIDTHS]

    def blocks(self) -> list:
        """Every MBConv block, the fixed first one included, with its channels and stride."""
        cin = self.stem_channels
        first = make_divisible(FIRST_BLOCK_CHANNELS * self.width)
        out = [Block(cin, first, 3, 1, 1)]
        cin = first
        j = 0
        for cout, stride, depth in zip(self.stage_channels(), STAGE_STRIDES, self.depths):
            for i in range(depth):
                out.append(Block(cin, cout, self.kernels[j], self.expands[j], stride if i == 0 else 1))
                cin = cout
                j += 1
        return out

    @property
    def last_channels(self) -> int:
        return self.stage_channels()[-1]

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text) -> "Arch":
        d = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
        return cls(**d)

    def short(self) -> str:
        """A compact human-readable name, e.g. r96-w0.5-d23432-k357...-e346... (r49x10c1-... for a
        non-square or single-channel input)."""
        r = str(self.resolution) if not self.in_width else f"{self.resolution}x{self.in_width}"
        c = "" if self.in_channels == 3 else f"c{self.in_channels}"
        return (f"r{r}{c}-w{self.width:g}-d{''.join(map(str, self.depths))}-"
                f"k{''.join(map(str, self.kernels))}-e{''.join(map(str, self.expands))}")


def _rng(rng):
    """A random.Random from a seed, an existing Random, or a numpy Generator (seeded from it)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, (int,)):
        return random.Random(rng)
    if hasattr(rng, "integers"):  # numpy Generator: derive a seed so numpy callers work too
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    raise TypeError(f"rng must be a seed, a random.Random or a numpy Generator, not {type(rng).__name__}")


class MCUNetSpace:
    """The MCUNet search space over resolutions x widths (108 configurations by default).

    input_shape=(H, W, C) adapts it to other inputs (49x10x1 MFCCs, 120x160 frames): the channels
    are C, a resolution R means an input R rows high and round(R * W / H) columns wide, and the
    resolutions default to (H,) alone (the data's own size: a spectrogram cannot be resized).
    """

    def __init__(self, resolutions=None, widths=WIDTHS, num_classes: int = 1000,
                 kernel_sizes=KERNEL_SIZES, expand_ratios=EXPAND_RATIOS, input_shape=None,
                 stage_depths=STAGE_DEPTHS):
        if input_shape is not None:
            input_shape = tuple(int(v) for v in input_shape)
            if len(input_shape) != 3 or min(input_shape) < 1:
                raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
        self.input_shape = input_shape
        if resolutions is None:
            resolutions = RESOLUTIONS if input_shape is None else (input_shape[0],)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.widths = tuple(round(float(w), 6) for w in widths)
        self.num_classes = int(num_classes)
        self.stage_depths = tuple(tuple(int(d) for d in allowed) for allowed in stage_depths)
        if len(self.stage_depths) != len(STAGE_WIDTHS) or not all(
                allowed and all(1 <= d <= MAX_STAGE_DEPTH for d in allowed) for allowed in self.stage_depths):
            raise ValueError(f"stage_depths needs {len(STAGE_WIDTHS)} non-empty sets of depths in "
                             f"1..{MAX_STAGE_DEPTH}, got {stage_depths}")
        self.kernel_sizes = tuple(kernel_sizes)
        self.expand_ratios = tuple(expand_ratios)
        if not set(self.kernel_sizes) <= set(KERNEL_SIZES) or not set(self.expand_ratios) <= set(EXPAND_RATIOS):
            raise ValueError(f"kernel sizes must be within {KERNEL_SIZES}, expand ratios within {EXPAND_RATIOS}")

    def __repr__(self):
        return (f"MCUNetSpace(resolutions={list(self.resolutions)}, widths={list(self.widths)}, "
                f"num_classes={self.num_classes})")

    def input_shape_at(self, resolution: int) -> tuple:
        """(height, width, channels) of the input at a resolution of this space."""
        if self.input_shape is None:
            return (int(resolution), int(resolution), 3)
        h, w, c = self.input_shape
        return (int(resolution), max(1, round(resolution * w / h)), c)

    def arch(self, resolution, width, depths, kernels, expands) -> Arch:
        """An Arch of this space (its classes and input shape) from the searchable choices."""
        _, in_w, in_c = self.input_shape_at(resolution)
        return Arch(resolution, width, tuple(depths), tuple(kernels), tuple(expands), self.num_classes,
                    in_w, in_c)

    def configurations(self) -> list:
        return [(r, w) for r in self.resolutions for w in self.widths]

    def sample(self, resolution: int | None = None, width: float | None = None, rng=None) -> Arch:
        """A uniformly random sub-network; resolution/width drawn from the space when not given."""
        r = _rng(rng)
        resolution = r.choice(self.resolutions) if resolution is None else resolution
        width = r.choice(self.widths) if width is None else round(float(width), 6)
        depths = tuple(r.choice(allowed) for allowed in self.stage_depths)
        n = sum(depths)
        kernels = tuple(r.choice(self.kernel_sizes) for _ in range(n))
        expands = tuple(r.choice(self.expand_ratios) for _ in range(n))
        return self.arch(resolution, width, depths, kernels, expands)

    def _stage_slices(self, arch: Arch) -> list:
        out, j = [], 0
        for d in arch.depths:
            out.append((j, j + d))
            j += d
        return out

    def mutate(self, arch: Arch, prob: float = 0.1, rng=None, resolution: bool = False) -> Arch:
        """Each stage depth and each block's kernel and expand ratio is resampled with probability
        `prob` (blocks added by a deeper stage are drawn fresh). The resolution is resampled too when
        resolution=True; the width never changes (it defines the search space)."""
        r = _rng(rng)
        res = arch.resolution
        if resolution and r.random() < prob:
            res = r.choice(self.resolutions)
        depths, kernels, expands = [], [], []
        for (lo, hi), allowed in zip(self._stage_slices(arch), self.stage_depths):
            d = hi - lo
            if r.random() < prob:
                d = r.choice(allowed)
            depths.append(d)
            for i in range(d):
                k = arch.kernels[lo + i] if i < hi - lo else r.choice(self.kernel_sizes)
                e = arch.expands[lo + i] if i < hi - lo else r.choice(self.expand_ratios)
                if r.random() < prob:
                    k = r.choice(self.kernel_sizes)
                if r.random() < prob:
                    e = r.choice(self.expand_ratios)
                kernels.append(k)
                expands.append(e)
        return self._child(arch, res, depths, kernels, expands)

    def _child(self, parent: Arch, res, depths, kernels, expands) -> Arch:
        """A child keeps its parent's classes, and its input shape unless the resolution moved."""
        if res == parent.resolution:
            in_w, in_c = parent.in_width, parent.in_channels
        else:
            _, in_w, in_c = self.input_shape_at(res)
        return Arch(res, parent.width, tuple(depths), tuple(kernels), tuple(expands),
                    parent.num_classes, in_w, in_c)

    def crossover(self, a: Arch, b: Arch, rng=None) -> Arch:
        """Uniform crossover: each stage depth, block kernel and block expand ratio comes from a
        or b with equal odds (a block only one parent has comes from that parent)."""
        if (a.width, a.num_classes) != (b.width, b.num_classes):
            raise ValueError("crossover needs parents from the same space (same width and classes)")
        r = _rng(rng)
        res = a.resolution if r.random() < 0.5 else b.resolution
        sa, sb = self._stage_slices(a), self._stage_slices(b)
        depths, kernels, expands = [], [], []
        for (alo, ahi), (blo, bhi) in zip(sa, sb):
            d = ahi - alo if r.random() < 0.5 else bhi - blo
            depths.append(d)
            for i in range(d):
                # the parents that have block i of this stage
                src = [(p, lo) for p, lo, hi in ((a, alo, ahi), (b, blo, bhi)) if i < hi - lo]
                pk, lk = src[0] if len(src) == 1 or r.random() < 0.5 else src[1]
                pe, le = src[0] if len(src) == 1 or r.random() < 0.5 else src[1]
                kernels.append(pk.kernels[lk + i])
                expands.append(pe.expands[le + i])
        return self._child(a if res == a.resolution else b, res, depths, kernels, expands)
