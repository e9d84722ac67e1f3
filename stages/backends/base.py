"""The contract between the framework-neutral stages and a framework backend.

``Backend`` is what ``stages/train/``, ``stages/evaluate/`` and the tests call; each module
named in ``stages/common/frameworks.py`` implements it as plain module-level functions, and
mypy checks that (``stages/backends/conformance.py``). The helpers below are shared by the
backends so that they draw batch orders and detect divergence identically.

Conventions every backend keeps:
- Images are NHWC float32 arrays as ``data/prepared`` stores them; ``settings.input_scale``
  multiplies them inside the backend.
- ``get_weights``/``set_weights`` use one canonical layout (conv kernels (kh, kw, in, out),
  dense kernels (in, out), then the bias; batch norm gamma, beta, running mean, running
  variance), so weights move between frameworks and ``stages/init.py`` can write them.
- ``fit`` runs at ``settings.tuning`` (``stock``: the framework's public API with its defaults,
  as its getting-started guide writes it; ``tuned``: plus ``settings.switches``, each one of the
  backend's ``SWITCHES``, which only the framework's own documentation may recommend), visits the
  training images in ``batch_indices``' order for its seed, calls ``on_epoch_end`` once per
  epoch (its ``learning_rate`` read back from the optimizer, not from the table), and raises
  ``NonFiniteLoss`` on divergence.
- ``load_model`` loads only through the framework's safe loader.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split
from stages.common.semantics import SEMANTIC_CHOICES as SEMANTIC_CHOICES  # re-exported for backends

Model = Any  # a framework's own model object; only its backend looks inside


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float  # the optimizer's rate at the epoch's last step
    train_seconds: float  # optimisation only
    seconds: float  # optimisation and validation


EpochCallback = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step, as the backend ran it (for tests and diagnostics)."""

    epoch: int  # 1-based
    batch: int  # 1-based within the epoch
    rows: np.ndarray  # indices of the training images in this batch
    learning_rate: float  # read back from the optimizer: the rate this step used
    loss: float  # mean training loss over the epoch's batches so far (what Keras reports per batch)


StepCallback = Callable[[StepRecord], None]


class Backend(Protocol):
    """What a framework backend module provides (all functions; no state across calls)."""

    MODEL_FILE: str  # file name of a saved model inside models/<framework>/<seed>/
    DESCRIPTION: str  # how the backend trains and infers, stock and tuned (printed in the report)
    SWITCHES: dict[str, str]  # every tuned switch: name -> what it does (the doc that recommends it)
    TUNED: tuple[str, ...]  # the switches the tuned level turns on
    SEMANTICS: dict[str, str]  # SEMANTIC_CHOICES key -> this backend's convention (at both levels)

    def environment(self) -> dict[str, str]:
        """Versions and build of the framework (package versions, kernel libraries, devices)."""
        ...

    def configure(self, settings: TrainParams, seed: int) -> str:
        """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
        ...

    def build_model(self, spec: ArchitectureSpec, seed: int) -> Model:
        """The spec's layers, initialised with Glorot-uniform kernels and zero biases, drawn for
        ``seed`` (the seed given to ``configure``: a framework with a global generator draws from
        the one ``configure`` seeded; JAX, which has none, keys its draw with ``seed`` itself)."""
        ...

    def count_parameters(self, model: Model) -> int: ...

    def get_weights(self, model: Model) -> list[np.ndarray]:
        """Every weight in the canonical layout (see the module docstring)."""
        ...

    def set_weights(self, model: Model, weights: Sequence[np.ndarray]) -> None: ...

    def fit(self, model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray,
            seed: int, on_epoch_end: EpochCallback, background: float = 0.0,
            on_step_end: StepCallback | None = None) -> None:
        """Train ``model`` in place with one learning rate per step from ``learning_rates``;
        ``background`` is the input value of a blank pixel (augmentation's fill). ``on_step_end``,
        if given, is called after every optimizer step (costs a device sync per step)."""
        ...

    def augment(self, images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
        """NHWC float32 images augmented as ``fit`` augments a training batch (``settings.augment``'s
        bounds, uncovered pixels filled with ``background``), drawn from a generator seeded with
        ``seed``; the framework's global random state is left as it was. (What training sees: the
        trainer contract checks it on images.)"""
        ...

    def batch_norm_constants(self, model: Model) -> list[tuple[float, float]]:
        """(decay, epsilon) of each of ``model``'s batch-norm layers, read from the framework's own
        layer objects and given in the architecture's convention (decay: the share of the running
        statistic kept per step). The equivalence suite checks them against the architecture's."""
        ...

    def for_inference(self, model: Model, switches: tuple[str, ...]) -> Model:
        """``model`` ready for ``predict`` as the framework's users run it (stock: no
        ``switches``), or with the given tuned ``switches``; same weights, same outputs."""
        ...

    def predict(self, model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
        """Class probabilities (float32, N x classes), batch by batch."""
        ...

    def save_model(self, model: Model, path: Path) -> None:
        """Write the model so that identical weights give identical bytes."""
        ...

    def export(self, model: Model, spec: ArchitectureSpec, path: Path) -> None:
        """Write ``model``'s inference graph to ``path`` as an ONNX file, through the framework's own
        documented exporter (docs/onnx.md): one input, NHWC float32 images with a free batch
        dimension; one output, the logits (what ``predict`` turns into probabilities). ``NoExportRoute``
        (saying why) where the framework has no working route on these package versions."""
        ...

    def load_model(self, path: Path, spec: ArchitectureSpec) -> Model:
        """Load with the framework's safe loader; ``StageError`` naming ``path`` if it does not fit ``spec``."""
        ...


class NoExportRoute(StageError):
    """The framework has no working ONNX export on these package versions (the message says why)."""


class NonFiniteLoss(StageError):
    """The training loss became NaN or infinite."""


def check_finite(loss: float, epoch: int, batch: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"training loss became {loss} at epoch {epoch}, batch {batch}; no model or metrics "
                            "were written. Lower train.learning_rate or check the inputs (preprocess.normalize)")


def check_finite_weights(all_finite: bool, epoch: int) -> None:
    """Catch divergence that the loss hides (TensorFlow's ReLU maps NaN to 0, so a model whose
    weights are NaN can still report a finite loss)."""
    if not all_finite:
        raise NonFiniteLoss(f"weights became NaN or infinite during epoch {epoch}; no model or metrics were "
                            "written. Lower train.learning_rate or check the inputs (preprocess.normalize)")


def configure_machine(backend: Backend, settings: TrainParams, seed: int, restore_hint: str) -> str:
    """``backend.configure``, first thing in a stage (before any data is read): a machine that
    cannot run the settings (``train.device: cuda`` without a GPU) can only be found out here,
    after ``dvc repro`` removed the stage's outputs, so its error says how to get them back."""
    try:
        return backend.configure(settings, seed)
    except StageError as error:
        raise StageError(f"{error}; {restore_hint}") from None


def interactive() -> bool:
    """Show per-batch progress bars only on a terminal, never in CI or DVC logs."""
    return sys.stderr.isatty()


def epoch_order(count: int, generator: np.random.Generator) -> np.ndarray:
    """The order in which an epoch visits the training images; every backend draws it alike."""
    return generator.permutation(count)


def batch_indices(count: int, batch_size: int, generator: np.random.Generator) -> list[np.ndarray]:
    """An epoch's order cut into batches (the last one may be smaller)."""
    order = epoch_order(count, generator)
    return [order[start:start + batch_size] for start in range(0, count, batch_size)]
