"""A seeded zoo of small random Keras models, and their full-int8 .tflite conversions.

Every model is planned from a seeded RNG as plain data first (so test ids, names and the cache
key exist without TensorFlow), then built with Keras 3 (`keras`) or Keras 2 (`tf_keras`). The
name of each model lists what it contains, e.g.
``m07_tfk_conv3x3s2same_bn_relu6_dw5x5m2s1same_gap_dense_softmax``.

``zoo_tflite(cache_dir)`` converts the whole zoo in this process (TensorFlow imported once) and
caches the .tflite bytes on disk under a key that covers this file, the converter and the
TensorFlow/Keras versions, so a re-run does not import TensorFlow at all.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOO_SEED = 20240611
CALIBRATION_SAMPLES = 16


@dataclass
class ZooModel:
    name: str
    family: str
    backend: str                 # "keras" (Keras 3) or "tf_keras" (Keras 2)
    input_shapes: list           # per input, without the batch axis
    cfg: dict                    # everything build() needs; plain data
    seed: int
    features: list = field(default_factory=list)
    data_range: tuple = (-1.0, 1.0)

    def build(self):
        kl = _backend(self.backend)
        kl.utils.set_random_seed(self.seed)
        model = FAMILIES[self.family][1](kl, self.cfg, self.input_shapes)
        _randomize_weights(model, np.random.default_rng(self.seed))
        return model

    def representative_data(self):
        rng = np.random.default_rng(self.seed + 1)
        lo, hi = self.data_range
        arrays = [rng.uniform(lo, hi, (CALIBRATION_SAMPLES, *s)).astype(np.float32)
                  for s in self.input_shapes]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)


def _backend(name):
    if name == "tf_keras":
        import tf_keras
        return tf_keras
    import keras
    return keras


def _randomize_weights(model, rng):
    """Non-trivial biases and BatchNorm statistics, so folding and bias paths are exercised."""
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        new = []
        for name, w in zip(names, weights):
            if name == "bias" or name == "beta" or name == "moving_mean":
                w = rng.normal(0.0, 0.2, w.shape)
            elif name == "gamma":
                w = rng.uniform(0.5, 1.5, w.shape)
            elif name == "moving_variance":
                w = rng.uniform(0.5, 2.0, w.shape)
            new.append(np.asarray(w, dtype=np.float32))
        layer.set_weights(new)


# -- shared pieces of the builders ---------------------------------------------------------------
def _act(kl, x, act):
    """An activation as its own layer: 'relu', 'relu6', 'hard_swish', 'sigmoid' or None."""
    if act is None:
        return x
    if act == "relu":
        return kl.layers.ReLU()(x)
    if act == "relu6":
        return kl.layers.ReLU(max_value=6.0)(x)
    return kl.layers.Activation(act)(x)


def _conv(kl, x, c):
    """A Conv2D from its plan: filters, kernel, stride, padding, dilation, activation, bn, act_layer."""
    fused = None if c.get("bn") or c.get("act_layer") else c.get("act")
    x = kl.layers.Conv2D(c["filters"], c["k"], strides=c.get("s", 1), padding=c.get("pad", "same"),
                         dilation_rate=c.get("d", 1), activation=fused)(x)
    if c.get("bn"):
        x = kl.layers.BatchNormalization()(x)
    if fused is None:
        x = _act(kl, x, c.get("act"))
    return x


def _head(kl, x, head, classes, softmax):
    if head == "gap_dense":
        x = kl.layers.GlobalAveragePooling2D()(x)
        x = kl.layers.Dense(classes)(x)
    elif head == "flatten_dense":
        x = kl.layers.Flatten()(x)
        x = kl.layers.Dense(classes)(x)
    elif head == "gap":
        x = kl.layers.GlobalAveragePooling2D()(x)
    if softmax:
        x = kl.layers.Softmax()(x)
    return x


def _conv_plan(rng, acts=("relu", "relu6", None)):
    k = int(rng.integers(1, 8))
    s = int(rng.integers(1, 3))
    d = 2 if s == 1 and k > 1 and rng.random() < 0.3 else 1
    return {"filters": int(rng.integers(3, 13)), "k": k, "s": s, "d": d,
            "pad": str(rng.choice(["same", "valid"])), "act": acts[int(rng.integers(len(acts)))],
            "bn": bool(rng.random() < 0.4), "act_layer": bool(rng.random() < 0.3)}


def _conv_tag(c):
    tag = f"conv{c['k']}x{c['k']}s{c['s']}{c['pad']}"
    if c.get("d", 1) > 1:
        tag += f"d{c['d']}"
    parts = [tag] + (["bn"] if c.get("bn") else [])
    if c.get("act"):
        parts.append(c["act"] + ("layer" if c.get("act_layer") or c.get("bn") else ""))
    return "_".join(parts)


def _valid_size(h, c):
    """Spatial size after a conv from its plan (None if it would vanish)."""
    eff = (c["k"] - 1) * c.get("d", 1) + 1
    out = -(-h // c.get("s", 1)) if c.get("pad", "same") == "same" else (h - eff) // c.get("s", 1) + 1
    return out if out >= 1 else None


def _head_plan(rng, heads=("gap_dense", "flatten_dense", "none")):
    head = str(rng.choice(heads))
    return {"head": head, "classes": int(rng.integers(2, 11)),
            "softmax": head != "none" and bool(rng.random() < 0.6)}


def _head_tags(c):
    tags = {"gap_dense": ["gap", "dense"], "flatten_dense": ["flatten", "dense"], "gap": ["gap"],
            "none": []}[c["head"]]
    return tags + (["softmax"] if c["softmax"] else [])


# -- families: plan(rng, hw, ch) -> (cfg, tags), build(kl, cfg, input_shapes) -> model ------------
def plan_conv_chain(rng, hw, ch):
    layers, h = [], hw
    for _ in range(int(rng.integers(1, 4))):
        c = _conv_plan(rng)
        nh = _valid_size(h, c)
        if nh is None:
            c["pad"] = "same"
            nh = _valid_size(h, c)
        layers.append(c)
        h = nh
    cfg = {"convs": layers, **_head_plan(rng)}
    return cfg, [_conv_tag(c) for c in layers] + _head_tags(cfg)


def build_conv_chain(kl, cfg, shapes):
    inp = kl.Input(shapes[0])
    x = inp
    for c in cfg["convs"]:
        x = _conv(kl, x, c)
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_mobilenet(rng, hw, ch):
    stem = {"filters": int(rng.integers(4, 13)), "k": 3, "s": int(rng.integers(1, 3)),
            "pad": "same", "act": "relu6", "bn": True}
    blocks = []
    for _ in range(int(rng.integers(1, 3))):
        blocks.append({"k": int(rng.choice([3, 5])), "m": int(rng.integers(1, 3)),
                       "s": int(rng.integers(1, 3)),
                       "pad": "same" if rng.random() < 0.6 else "valid", "d": 1,
                       "act": str(rng.choice(["relu", "relu6"])),
                       "out": int(rng.integers(4, 13)), "residual": bool(rng.random() < 0.5)})
        if blocks[-1]["s"] == 1 and rng.random() < 0.25:
            blocks[-1]["d"] = 2
        if blocks[-1]["pad"] == "valid":
            blocks[-1]["residual"] = False  # a VALID depthwise shrinks the map: nothing to add to
    cfg = {"stem": stem, "blocks": blocks, **_head_plan(rng, ("gap_dense",))}
    tags = [_conv_tag(stem)]
    for b in blocks:
        tag = f"dw{b['k']}x{b['k']}m{b['m']}s{b['s']}{b['pad']}" + (f"d{b['d']}" if b["d"] > 1 else "")
        tags += [tag, "bn", b["act"] + "layer", "pw1x1"] + (["add"] if b["residual"] else [])
    return cfg, tags + _head_tags(cfg)


def build_mobilenet(kl, cfg, shapes):
    L = kl.layers
    inp = kl.Input(shapes[0])
    x = _conv(kl, inp, cfg["stem"])
    for b in cfg["blocks"]:
        if int(x.shape[1]) < b["k"] * b["d"] and b["pad"] == "valid":
            b = {**b, "pad": "same"}
        y = L.DepthwiseConv2D(b["k"], strides=b["s"], padding=b["pad"], depth_multiplier=b["m"],
                              dilation_rate=b["d"])(x)
        y = L.BatchNormalization()(y)
        y = _act(kl, y, b["act"])
        out = int(x.shape[-1]) if b["residual"] else b["out"]
        y = L.Conv2D(out, 1)(y)
        y = L.BatchNormalization()(y)
        if b["residual"]:
            if tuple(y.shape[1:]) != tuple(x.shape[1:]):
                x = L.Conv2D(out, 1, strides=b["s"], padding="same")(x)  # projection shortcut
            y = L.Add()([x, y])
        x = y
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_residual(rng, hw, ch):
    f = int(rng.integers(4, 13))
    convs = [{"filters": f, "k": int(rng.choice([1, 3, 5])), "s": 1, "pad": "same",
              "act": "relu", "bn": bool(rng.random() < 0.5)} for _ in range(2)]
    convs[1]["act"] = None
    cfg = {"stem": {"filters": f, "k": 3, "s": int(rng.integers(1, 3)), "pad": "same",
                    "act": "relu"},
           "convs": convs, "post": str(rng.choice(["relu", "relu6", "none"])),
           "twice": bool(rng.random() < 0.4), **_head_plan(rng)}
    tags = [_conv_tag(cfg["stem"])] + [_conv_tag(c) for c in convs] + ["add"]
    tags += ([cfg["post"] + "layer"] if cfg["post"] != "none" else []) + (["x2"] if cfg["twice"] else [])
    return cfg, tags + _head_tags(cfg)


def build_residual(kl, cfg, shapes):
    inp = kl.Input(shapes[0])
    x = _conv(kl, inp, cfg["stem"])
    for _ in range(2 if cfg["twice"] else 1):
        y = x
        for c in cfg["convs"]:
            y = _conv(kl, y, c)
        x = kl.layers.Add()([x, y])
        x = _act(kl, x, None if cfg["post"] == "none" else cfg["post"])
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_multiply(rng, hw, ch):
    f = int(rng.integers(4, 13))
    cfg = {"stem": {"filters": f, "k": int(rng.choice([1, 3])), "s": int(rng.integers(1, 3)),
                    "pad": "same", "act": "relu6", "bn": bool(rng.random() < 0.5)},
           "kind": str(rng.choice(["se", "gate"])), "gate_act": str(rng.choice(["sigmoid", "relu6"])),
           **_head_plan(rng, ("gap_dense", "flatten_dense"))}
    tags = [_conv_tag(cfg["stem"])]
    if cfg["kind"] == "se":
        tags += ["se", "gap", "dense_relu", "dense_sigmoid", "reshape", "mul_broadcast"]
    else:
        tags += ["conv1x1" + cfg["gate_act"], "mul"]
    return cfg, tags + _head_tags(cfg)


def build_multiply(kl, cfg, shapes):
    L = kl.layers
    inp = kl.Input(shapes[0])
    x = _conv(kl, inp, cfg["stem"])
    c = int(x.shape[-1])
    if cfg["kind"] == "se":
        s = L.GlobalAveragePooling2D()(x)
        s = L.Dense(max(2, c // 2), activation="relu")(s)
        s = L.Dense(c, activation="sigmoid")(s)
        s = L.Reshape((1, 1, c))(s)
    else:
        s = L.Conv2D(c, 1, activation=cfg["gate_act"])(x)
    x = L.Multiply()([x, s])
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_pooling(rng, hw, ch):
    pools = []
    h = hw
    for _ in range(int(rng.integers(1, 3))):
        # a second pooling layer is of the other kind
        kind = str(rng.choice(["avg", "max"])) if not pools else \
            {"avg": "max", "max": "avg"}[pools[0]["kind"]]
        p = {"kind": kind, "size": int(rng.integers(2, 4)),
             "s": int(rng.integers(1, 3)), "pad": str(rng.choice(["same", "valid"]))}
        if p["pad"] == "valid" and h < p["size"]:
            p["pad"] = "same"
        h = -(-h // p["s"]) if p["pad"] == "same" else (h - p["size"]) // p["s"] + 1
        pools.append(p)
    cfg = {"stem": {"filters": int(rng.integers(3, 13)), "k": int(rng.choice([1, 3])), "s": 1,
                    "pad": "same", "act": str(rng.choice(["relu", "relu6"]))},
           "pools": pools, **_head_plan(rng, ("flatten_dense", "gap_dense", "none"))}
    tags = [_conv_tag(cfg["stem"])] + [f"{p['kind']}pool{p['size']}s{p['s']}{p['pad']}" for p in pools]
    return cfg, tags + _head_tags(cfg)


def build_pooling(kl, cfg, shapes):
    L = kl.layers
    inp = kl.Input(shapes[0])
    x = _conv(kl, inp, cfg["stem"])
    for p in cfg["pools"]:
        cls = L.AveragePooling2D if p["kind"] == "avg" else L.MaxPooling2D
        x = cls(p["size"], strides=p["s"], padding=p["pad"])(x)
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_pad_concat(rng, hw, ch):
    pad = [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(2)]
    if not any(v for row in pad for v in row):
        pad[0][0] = 1
    cfg = {"pad": pad,
           "conv": {"filters": int(rng.integers(3, 10)), "k": int(rng.choice([3, 5])),
                    "s": int(rng.integers(1, 3)),
                    "pad": "valid", "act": "relu"},
           "branches": [int(rng.choice([1, 3])) for _ in range(int(rng.integers(2, 4)))],
           "concat_input": bool(rng.random() < 0.3), **_head_plan(rng)}
    tags = ["zeropad" + "".join(str(v) for row in pad for v in row), _conv_tag(cfg["conv"])]
    tags += [f"branch{k}x{k}" for k in cfg["branches"]] + ["concat"]
    return cfg, tags + _head_tags(cfg)


def build_pad_concat(kl, cfg, shapes):
    L = kl.layers
    inp = kl.Input(shapes[0])
    x = L.ZeroPadding2D(tuple(tuple(r) for r in cfg["pad"]))(inp)
    conv = dict(cfg["conv"])
    if min(int(x.shape[1]), int(x.shape[2])) < conv["k"]:
        conv["pad"] = "same"
    x = _conv(kl, x, conv)
    parts = [L.Conv2D(int(3 + i), k, padding="same", activation="relu6")(x)
             for i, k in enumerate(cfg["branches"])]
    if cfg["concat_input"]:
        parts.append(x)
    x = L.Concatenate(axis=-1)(parts)
    return kl.Model(inp, _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


def plan_activations(rng, hw, ch, backend="keras"):
    # tf_keras has no hard_swish activation; Keras 3 models always get one.
    acts = ["relu", "relu6", "sigmoid"] + (["hard_swish"] * 2 if backend == "keras" else [])
    convs = []
    for i in range(int(rng.integers(1, 3))):
        act = "hard_swish" if backend == "keras" and i == 0 else acts[int(rng.integers(len(acts)))]
        convs.append({"filters": int(rng.integers(3, 11)), "k": int(rng.choice([1, 3])),
                      "s": int(rng.integers(1, 3)), "pad": "same",
                      "act": act, "act_layer": bool(rng.random() < 0.5)})
    cfg = {"convs": convs, **_head_plan(rng, ("flatten_dense", "gap_dense"))}
    return cfg, [_conv_tag(c) for c in convs] + _head_tags(cfg)


def plan_reshape_dense(rng, hw, ch):
    cfg = {"stem": {"filters": int(rng.integers(2, 7)), "k": 3, "s": 2, "pad": "same",
                    "act": "relu"},
           "hidden": [int(rng.integers(4, 17)) for _ in range(int(rng.integers(1, 3)))],
           "hidden_act": str(rng.choice(["relu", "relu6", "sigmoid"])),
           "classes": int(rng.integers(2, 11)), "softmax": bool(rng.random() < 0.7),
           "reshape_conv": bool(rng.random() < 0.5)}
    tags = [_conv_tag(cfg["stem"])] + (["reshape_hw_c", "conv1x1"] if cfg["reshape_conv"] else [])
    tags += ["reshape_flat"] + [f"dense{n}{cfg['hidden_act']}" for n in cfg["hidden"]] + ["dense"]
    return cfg, tags + (["softmax"] if cfg["softmax"] else [])


def build_reshape_dense(kl, cfg, shapes):
    L = kl.layers
    inp = kl.Input(shapes[0])
    x = _conv(kl, inp, cfg["stem"])
    h, w, c = (int(v) for v in x.shape[1:])
    if cfg["reshape_conv"]:
        # fold width into channels, as a keyword-spotting model does with a spectrogram
        x = L.Reshape((h, 1, w * c))(x)
        x = L.Conv2D(6, 1, activation="relu")(x)
    x = L.Reshape((-1,))(x)
    for n in cfg["hidden"]:
        x = L.Dense(n, activation=cfg["hidden_act"])(x)
    x = L.Dense(cfg["classes"])(x)
    if cfg["softmax"]:
        x = L.Softmax()(x)
    return kl.Model(inp, x)


def plan_two_inputs(rng, hw, ch):
    cfg = {"merge": str(rng.choice(["add", "concat", "mul"])),
           "filters": int(rng.integers(3, 9)), "ch2": int(rng.integers(1, 5)),
           **_head_plan(rng, ("gap_dense", "flatten_dense"))}
    return cfg, ["two_inputs", "conv3x3", "conv1x1", cfg["merge"]] + _head_tags(cfg)


def build_two_inputs(kl, cfg, shapes):
    L = kl.layers
    a, b = kl.Input(shapes[0]), kl.Input(shapes[1])
    x = L.Conv2D(cfg["filters"], 3, padding="same", activation="relu")(a)
    y = L.Conv2D(cfg["filters"], 1, activation="relu6")(b)
    merge = {"add": L.Add, "concat": L.Concatenate, "mul": L.Multiply}[cfg["merge"]]
    x = merge()([x, y])
    return kl.Model([a, b], _head(kl, x, cfg["head"], cfg["classes"], cfg["softmax"]))


FAMILIES = {
    "conv_chain": (plan_conv_chain, build_conv_chain),
    "mobilenet": (plan_mobilenet, build_mobilenet),
    "residual": (plan_residual, build_residual),
    "multiply": (plan_multiply, build_multiply),
    "pooling": (plan_pooling, build_pooling),
    "pad_concat": (plan_pad_concat, build_pad_concat),
    "activations": (plan_activations, build_conv_chain),
    "reshape_dense": (plan_reshape_dense, build_reshape_dense),
    "two_inputs": (plan_two_inputs, build_two_inputs),
}
# How many models of each family; every fifth model (and at least one per family) uses tf_keras.
COUNTS = {"conv_chain": 12, "mobilenet": 8, "residual": 6, "multiply": 6, "pooling": 6,
          "pad_concat": 6, "activations": 6, "reshape_dense": 4, "two_inputs": 2}


def zoo(seed: int = ZOO_SEED) -> list:
    """The zoo's model plans, deterministic for a seed; no TensorFlow needed."""
    rng = np.random.default_rng(seed)
    models = []
    for family, count in COUNTS.items():
        for j in range(count):
            index = len(models)
            backend = "tf_keras" if j % 4 == 1 else "keras"
            hw = int(rng.integers(8, 33))
            ch = int(rng.choice([1, 3, 4]))
            plan = FAMILIES[family][0]
            cfg, tags = plan(rng, hw, ch, backend) if family == "activations" else plan(rng, hw, ch)
            shapes = [(hw, hw, ch)]
            if family == "two_inputs":
                shapes.append((hw, hw, cfg["ch2"]))
            lo = float(rng.choice([-1.0, 0.0, -3.0]))
            name = f"m{index:02d}_{'tfk' if backend == 'tf_keras' else 'k3'}_{hw}x{hw}x{ch}_" + "_".join(tags)
            models.append(ZooModel(name=name, family=family, backend=backend, input_shapes=shapes,
                                   cfg=cfg, seed=seed + 1000 * index, features=tags,
                                   data_range=(lo, lo + 2.0 if lo < 0 else 1.0)))
    return models


# -- conversion with an on-disk cache ------------------------------------------------------------
def cache_key(seed: int = ZOO_SEED) -> str:
    h = hashlib.sha256(str(seed).encode())
    for path in (Path(__file__), ROOT / "converters" / "keras_to_tflite.py"):
        h.update(path.read_bytes())
    for dist in ("tensorflow", "keras", "tf_keras"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(dist.encode())
    return h.hexdigest()[:20]


def default_cache_dir(seed: int = ZOO_SEED) -> Path:
    return Path(tempfile.gettempdir()) / f"tinyengine-keras-zoo-{cache_key(seed)}"


def zoo_tflite(models=None, cache_dir=None, progress=None) -> dict:
    """name -> int8 .tflite bytes for every zoo model, converted at most once per cache key.

    A model whose conversion fails maps to the exception instead, so one bad model does not
    hide the others.
    """
    from converters.keras_to_tflite import keras_to_tflite
    models = zoo() if models is None else models
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for m in models:
        path = cache / f"{m.name}.tflite"
        if path.is_file():
            out[m.name] = path.read_bytes()
            continue
        try:
            data = keras_to_tflite(m.build(), m.representative_data())
        except Exception as exc:  # reported by the test of that one model
            out[m.name] = exc
            continue
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        out[m.name] = data
        if progress is not None:
            progress(m.name)
    return out
