"""TinyNAS stage 2, the evaluator: a KerasTuner tuner whose trial trains the proposed network with
quantization-aware training and scores the C that TinyEngine generates for it.

One trial (``run_trial``): nas.build_model (tf_keras) -> optional float warm-up -> tfmot QAT ->
int8 .tflite -> tinyengine_tf.convert(..., sram=, flash=) (the compiler decides the fit, not the
estimate) -> the generated C run on the int8-quantized validation set; its accuracy is the
objective, because that is what ships. The trial directory keeps model.tflite, the C project
(c/, with its memory report against TFLite Micro), the QAT weights and result.json. A trial that
fails for a reason of its own (does not fit after conversion, a NaN loss, a converter error)
is FAILED with the reason in failure.txt; the search goes on.

Distributed mode is KerasTuner's own (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT; a tuner id containing "chief" serves the oracle). Workers report each epoch
and send a heartbeat every lease/4 seconds while they train, so the oracle can tell a dead worker
from a slow one; a worker told to wait (IDLE) sleeps between asks instead of spinning.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # tfmot quantizes tf_keras models only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner  # noqa: E402
from keras_tuner.src.distribute import utils as dist_utils  # noqa: E402
from keras_tuner.src.engine import trial as trial_module  # noqa: E402

from nas.datasets.quantize import quantize  # noqa: E402
from nas.stage2_oracle import arch_from_values  # noqa: E402

IDLE_SLEEP_SECONDS = 1.0


class TrialFailed(keras_tuner.errors.FailedTrialError):
    """A trial that cannot succeed (recorded as FAILED with its reason, never retried)."""


class TinyNASTuner(keras_tuner.Tuner):
    """Runs TinyNASOracle's trials: QAT training, int8 export, TinyEngine compile, C accuracy.

    search(x_train, y_train, x_val, y_val) with float inputs already at the space's input shape
    (images are resized to a trial's resolution when they differ) and int labels.
    """

    def __init__(self, oracle, *, sram: int, flash: int, epochs: int = 10, warmup_epochs: int = 0,
                 batch_size: int = 32, learning_rate: float = 2e-3, recalibrate_batches: int = 50,
                 directory=None,
                 project_name: str = "stage2", overwrite: bool = False, verbose: int = 1,
                 save_c_project: bool = True, **kwargs):
        super().__init__(oracle, hypermodel=None, directory=directory, project_name=project_name,
                         overwrite=overwrite, **kwargs)
        self.sram, self.flash = int(sram), int(flash)
        self.epochs, self.warmup_epochs = int(epochs), int(warmup_epochs)
        self.batch_size, self.learning_rate = int(batch_size), float(learning_rate)
        self.recalibrate_batches = int(recalibrate_batches)
        self.verbose = int(verbose)
        self.save_c_project = bool(save_c_project)
        self.lease_seconds = float(getattr(oracle, "lease_seconds", 120.0))
        self._resized: dict = {}
        self._bar = None

    # -- the search loop ------------------------------------------------------------------------
    def search(self, *fit_args, **fit_kwargs):
        if dist_utils.is_chief_oracle():
            from nas.stage2_chief import serve
            self.oracle.prepare(progress=self.verbose > 0)
            self.save()
            serve(self.oracle, verbose=self.verbose)
            return
        if not self._is_worker():
            self.oracle.prepare(progress=self.verbose > 0)
        self.oracle.verbose = 0   # one line per trial instead of KerasTuner's tables
        self.save()               # from now on a restart resumes, even one during the first trial
        self.on_search_begin()
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == trial_module.TrialStatus.STOPPED:
                break
            if trial.status == trial_module.TrialStatus.IDLE:
                time.sleep(IDLE_SLEEP_SECONDS)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
            self.on_trial_end(trial)
        self.on_search_end()

    def on_search_begin(self):
        if self.verbose and not self._is_worker():
            from tqdm.auto import tqdm
            done = sum(t.status in ("COMPLETED", "FAILED") for t in self.oracle.trials.values())
            self._bar = tqdm(total=self.oracle.max_trials, initial=done, desc="TinyNAS stage 2",
                             unit="trial", dynamic_ncols=True)

    def on_search_end(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self._bar is not None:
            self._bar.update(1)

    def _say(self, text: str):
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    # -- one trial ---------------------------------------------------------------------------
    def run_trial(self, trial, x_train, y_train, x_val, y_val, **kwargs):
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        (trial_dir / "failure.txt").unlink(missing_ok=True)
        arch = arch_from_values(trial.hyperparameters.values)
        t0 = time.time()
        try:
            with _Heartbeat(self.oracle, trial.trial_id, self.lease_seconds / 4, self._is_worker()):
                result = self._evaluate(trial, arch, trial_dir, x_train, y_train, x_val, y_val)
        except TrialFailed as exc:
            _write_atomic(trial_dir / "failure.txt", str(exc))
            self._say(f"trial {trial.trial_id} {arch.short()}: FAILED: {exc}")
            raise
        except Exception as exc:
            _write_atomic(trial_dir / "failure.txt", f"{type(exc).__name__}: {exc}")
            raise
        result["seconds"] = time.time() - t0
        _write_atomic(trial_dir / "result.json", json.dumps({"arch": arch.to_dict(), **result}, indent=1))
        self._say(f"trial {trial.trial_id} {arch.short()}: C accuracy {result['accuracy']:.4f}, "
                  f"SRAM {int(result['peak_sram']):,} B, Flash {int(result['flash']):,} B, "
                  f"{result['macs'] / 1e6:.2f}M MACs ({result['seconds']:.0f} s)")
        return result

    def _data_at(self, x, shape):
        """Inputs at a trial's input shape (resized once per resolution)."""
        if tuple(x.shape[1:]) == tuple(shape):
            return x
        key = (id(x), tuple(shape))
        if key not in self._resized:
            if x.shape[-1] != shape[-1]:
                raise TrialFailed(f"the data has {x.shape[-1]} channels, the network takes {shape[-1]}")
            import tensorflow as tf
            self._resized[key] = tf.image.resize(x, shape[:2]).numpy().astype(np.float32)
        return self._resized[key]

    def _evaluate(self, trial, arch, trial_dir, x_train, y_train, x_val, y_val) -> dict:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        from converters.keras_to_tflite import keras_to_tflite
        from nas.build import build_model
        from nas.cost import estimate
        from tinyengine_tf.api import compile_tflite
        from tinyengine_tf.errors import DoesNotFitError, TinyEngineError

        xt = self._data_at(x_train, arch.input_shape)
        xv = self._data_at(x_val, arch.input_shape)
        keras.backend.clear_session()
        tf.random.set_seed(int(trial.trial_id) if str(trial.trial_id).isdigit() else 0)
        model = build_model(arch)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        report = _epoch_report(self.oracle, trial.trial_id)
        if self.warmup_epochs:
            model.compile(keras.optimizers.Adam(self.learning_rate), loss, metrics=["accuracy"])
            model.fit(xt, y_train, batch_size=self.batch_size, epochs=self.warmup_epochs, verbose=0,
                      callbacks=[report])
            report.check()
        qat = tfmot.quantization.keras.quantize_model(model)
        qat.compile(keras.optimizers.Adam(self.learning_rate), loss, metrics=["accuracy"])
        report.offset = self.warmup_epochs
        # No validation_data: the score is the C's accuracy, and a second traced graph costs time.
        hist = qat.fit(xt, y_train, batch_size=self.batch_size, epochs=self.epochs, verbose=0,
                       callbacks=[report])
        report.check()
        train_acc = float(hist.history.get("accuracy", [float("nan")])[-1])
        self._recalibrate(qat, xt)
        try:
            tflite = keras_to_tflite(qat)
        except TinyEngineError as exc:
            raise TrialFailed(f"the TFLite converter refused the QAT model: {exc}") from None
        try:
            cm = compile_tflite(tflite, name="model", sram=self.sram, flash=self.flash)
        except DoesNotFitError as exc:
            raise TrialFailed(f"does not fit after conversion: {exc}") from None
        # Float inputs quantized exactly as TFLM's QUANTIZE would: the accuracy of a float-input
        # deployment too.
        xq = quantize(xv, cm.input_details[0])
        logits = np.asarray(cm.run(xq))
        acc = float(np.mean(np.argmax(logits.reshape(len(xq), -1), axis=1) == np.asarray(y_val)))
        _write_atomic_bytes(trial_dir / "model.tflite", tflite)
        qat.save_weights(str(trial_dir / "qat.weights.h5"))
        if self.save_c_project:
            cm.save(trial_dir / "c")
        est = estimate(arch, qat=True)
        return {"accuracy": acc, "train_accuracy": train_acc, "peak_sram": float(cm.peak_sram),
                "flash": float(cm.flash), "macs": float(est.macs),
                "estimated_peak_sram": float(est.peak_sram), "estimated_flash": float(est.flash)}


    def _recalibrate(self, model, x):
        """MCUNet recalibrates BatchNorm statistics before evaluating a network: forward passes
        in training mode (no gradient step) let the moving means/variances and the fake-quant
        ranges catch up with the final weights, which a short training leaves far behind."""
        n = len(x)
        for i in range(self.recalibrate_batches):
            lo = (i * self.batch_size) % max(1, n - self.batch_size + 1)
            model(x[lo:lo + self.batch_size], training=True)


@functools.lru_cache(maxsize=None)
def _epoch_report_class():
    """The callback class, defined once: tf_keras is imported only when a trial trains."""
    import tf_keras as keras

    class EpochReport(keras.callbacks.Callback):
        """Reports each epoch to the oracle (which renews the trial's lease) and stops on NaN."""

        def __init__(self, oracle, trial_id):
            super().__init__()
            self.oracle, self.trial_id = oracle, trial_id
            self.offset = 0
            self.bad = None

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if not all(np.isfinite(v) for v in logs.values()):
                self.bad = f"loss is not finite at epoch {epoch + 1 + self.offset} ({logs})"
                self.model.stop_training = True
                return
            self.oracle.update_trial(self.trial_id, {f"epoch_{k}": v for k, v in logs.items()},
                                     step=epoch + self.offset)

        def check(self):
            if self.bad:
                raise TrialFailed(self.bad)

    return EpochReport


def _epoch_report(oracle, trial_id):
    return _epoch_report_class()(oracle, trial_id)


class _Heartbeat:
    """While a worker trains, renew its trial's lease every `every` seconds from a thread."""

    def __init__(self, oracle, trial_id, every: float, enabled: bool):
        self.oracle, self.trial_id, self.every, self.enabled = oracle, trial_id, max(0.5, every), enabled
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name="tinynas-heartbeat")
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                self.oracle.update_trial(self.trial_id, {"heartbeat": 1.0})
            except Exception:   # the chief is restarting: the next beat or report gets through
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _write_atomic(path: Path, text: str):
    _write_atomic_bytes(path, text.encode())


def _write_atomic_bytes(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["TinyNASTuner", "TrialFailed"]
