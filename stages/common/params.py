"""Typed, validated access to ``params.yaml``: one frozen dataclass per section.

Every stage calls ``load_params()`` before doing any work. The whole file is validated (types,
ranges, allowed values, missing and unknown keys, at every level), and all problems are
reported at once, one line each, as ``params.yaml: <key>: <problem>``. ``params.yaml`` is the
single source of the defaults: every key of a section is required there, so the defaults and
their explanatory comments cannot drift apart from code.

``frameworks:`` lists the backends to compare (names from ``stages/common/frameworks.py``); each
has a section of the same name holding optional overrides of any ``train:`` key, which
``effective_train(params, framework)`` merges. ``replicates:`` lists the training seeds: every
framework is trained and evaluated once per seed, on the same data split (``seed``).

Run ``python -m stages.common.params`` to validate ``params.yaml`` without running anything.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.common import frameworks, yamlfile
from stages.common.failures import StageError
from stages.common.fields import Rules, build, checked, limits, optional_field

PARAMS_FILE = Path("params.yaml")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class FileSpec:
    """One IDX file of a custom dataset: its name on the mirror and the sha256 of its content."""

    # A plain file name: no path separator and no leading dot, so that it names a file in the
    # mirror and data/raw/, never the folder itself (``..gz`` -> ``..``), its parent or a hidden file.
    name: str = checked(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.gz$")
    sha256: str = checked(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class CustomFiles:
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec


@dataclass(frozen=True, kw_only=True)
class CustomDataset:
    files: CustomFiles
    class_names: tuple[str, ...] = checked(min_items=2)


@dataclass(frozen=True, kw_only=True)
class DataParams:
    dataset: Literal["mnist", "fashion-mnist", "custom"]
    mirrors: tuple[str, ...]
    timeout_s: float = checked(minimum=0, exclusive_min=True)
    retries: int = checked(minimum=0, maximum=10)
    retry_backoff_s: float = checked(minimum=0)
    custom: CustomDataset | None = None


@dataclass(frozen=True, kw_only=True)
class PreprocessParams:
    val_fraction: float = checked(minimum=0, maximum=0.5, exclusive_min=True)
    max_train: int | None = optional_field(minimum=10)
    max_test: int | None = optional_field(minimum=1)
    normalize: Literal["standardize", "scale", "none"]


@dataclass(frozen=True, kw_only=True)
class ConvBlock:
    filters: int = checked(minimum=1, maximum=1024)
    kernel_size: int = checked(minimum=1, maximum=11)
    convs: int = checked(minimum=1, maximum=4)
    batch_norm: bool
    pool: int = checked(minimum=1, maximum=4)
    dropout: float = checked(minimum=0, maximum=1, exclusive_max=True)


# Where a conv block's max-pool sits (stages/common/architecture.py): after the activation, or
# right after the block's last conv, so its batch norm and activation see the pooled map.
BlockOrder = Literal["conv-norm-act-pool", "conv-pool-norm-act"]


@dataclass(frozen=True, kw_only=True)
class ModelParams:
    conv_blocks: tuple[ConvBlock, ...] = checked(min_items=1, max_items=8)
    padding: Literal["same", "valid"]
    block_order: BlockOrder
    activation: Literal["relu", "gelu", "tanh", "sigmoid"]
    dense: tuple[int, ...] = checked(min_items=0, max_items=8, items=limits(minimum=1, maximum=4096))
    dense_dropout: float = checked(minimum=0, maximum=1, exclusive_max=True)


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    enabled: bool
    max_shift: float = checked(minimum=0, maximum=0.5)
    max_rotation_deg: float = checked(minimum=0, maximum=180)


# How a framework runs (docs/fairness.md): `stock` is its public API with its defaults, as its own
# getting-started guide writes it; `tuned` adds the switches its own documentation recommends
# (each backend's SWITCHES and TUNED). Set per arm by the train and evaluate stages, never in
# params.yaml: the `train` and `train-tuned` stages of dvc.yaml run the two levels.
Tuning = Literal["stock", "tuned"]
TUNING_LEVELS: tuple[str, ...] = ("stock", "tuned")


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    epochs: int = checked(minimum=1, maximum=1000)
    batch_size: int = checked(minimum=1, maximum=65536)
    optimizer: Literal["adam", "adamw", "sgd"]
    learning_rate: float = checked(minimum=0, maximum=10, exclusive_min=True)
    momentum: float = checked(minimum=0, maximum=1, exclusive_max=True)
    weight_decay: float = checked(minimum=0, maximum=1)
    schedule: Literal["constant", "cosine", "onecycle"]
    warmup_fraction: float = checked(minimum=0, maximum=1, exclusive_max=True)
    label_smoothing: float = checked(minimum=0, maximum=1, exclusive_max=True)
    input_scale: float = checked(minimum=0, exclusive_min=True)
    augment: AugmentParams
    threads: int = checked(minimum=1, maximum=256)
    device: Literal["auto", "cpu", "cuda"]
    # Set by the stage for its arm (not read from params.yaml): the level, and the backend's
    # switches that level turns on (empty for stock).
    tuning: Tuning = "stock"
    switches: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ReplicateParams:
    seeds: tuple[int, ...] = checked(min_items=1)
    tuned_seeds: tuple[int, ...] = checked(min_items=0)  # the seeds (of `seeds`) that also run the tuned level
    init: Literal["shared", "framework"]


@dataclass(frozen=True, kw_only=True)
class EvaluateParams:
    batch_size: int = checked(minimum=1, maximum=65536)
    throughput_repeats: int = checked(minimum=1, maximum=1000)
    latency_samples: int = checked(minimum=1, maximum=100000)
    latency_warmup: int = checked(minimum=0, maximum=10000)


@dataclass(frozen=True, kw_only=True)
class EquivalenceParams:
    """Margins within which two arms count as equivalent (TOST), per compared quantity."""

    accuracy_pp: float = checked(minimum=0, maximum=100, exclusive_min=True)  # test accuracy, percentage points
    test_loss: float = checked(minimum=0, exclusive_min=True)  # cross-entropy
    macro_f1: float = checked(minimum=0, maximum=1, exclusive_min=True)
    speed_ratio: float = checked(minimum=1, maximum=100, exclusive_min=True)  # times, throughputs: 1/r to r


@dataclass(frozen=True, kw_only=True)
class ReportParams:
    misclassified: int = checked(minimum=0, maximum=100)
    disagreements: int = checked(minimum=0, maximum=100)
    dpi: int = checked(minimum=50, maximum=600)
    target_val_accuracy: float = checked(minimum=0, maximum=1, exclusive_min=True)  # time to accuracy
    equivalence: EquivalenceParams


@dataclass(frozen=True, kw_only=True)
class TimingParams:
    """Stage ``timing``: rounds of fresh processes, one per arm (docs/method.md, speed verdicts)."""

    rounds: int = checked(minimum=2, maximum=100)  # per sitting; >= 2 for an interval over rounds
    warmup_steps: int = checked(minimum=1, maximum=10000)  # untimed steps first (compilation, allocation)
    steps: int = checked(minimum=2, maximum=100000)  # timed steps: their median is the steady step time
    inference_images: int = checked(minimum=1, maximum=10**7)  # test images per timed inference pass
    inference_repeats: int = checked(minimum=1, maximum=1000)  # timed passes after one untimed pass
    latency_samples: int = checked(minimum=1, maximum=100000)  # single-image calls timed, after
    latency_warmup: int = checked(minimum=0, maximum=10000)  # untimed single-image calls
    contention: bool  # also time the steady step with a spinning process holding one core (stock arms)
    busy_cores: float = checked(minimum=0, maximum=1024, exclusive_min=True)  # other processes' CPU above
    # this many cores over a timed window contaminates it
    retries: int = checked(minimum=0, maximum=10)  # repeats of a contaminated arm before it is dropped


@dataclass(frozen=True, kw_only=True)
class Params:
    seed: int = checked(minimum=0, maximum=2**32 - 1)
    frameworks: tuple[str, ...] = checked(min_items=1)
    replicates: ReplicateParams
    data: DataParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    report: ReportParams
    timing: TimingParams
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # framework -> its section


# Fields whose value may be left out of params.yaml (all others are required), and fields of a
# section that params.yaml must not set (the stage sets them).
RULES = Rules(optional=frozenset({("DataParams", "custom"), ("Params", "overrides")}),
              refused=frozenset({("TrainParams", "tuning"), ("TrainParams", "switches")}),
              refused_reason="set by the stage for each arm, not in params.yaml (the tuning level is dvc.yaml's "
                             "`train` (stock) or `train-tuned` stage; replicates.tuned_seeds picks its seeds)")


def _cross_checks(params: Params, problems: list[str]) -> None:
    data = params.data
    if data.dataset == "custom" and data.custom is None:
        problems.append("data.custom: required when data.dataset is 'custom'")
    if data.dataset == "custom" and not data.mirrors:
        problems.append("data.mirrors: a custom dataset needs at least one mirror")
    if data.custom is not None and data.custom.files is not None:
        _duplicate_file_names(data.custom.files, problems)
    for index, mirror in enumerate(data.mirrors):
        if not isinstance(mirror, str) or not mirror:
            problems.append(f"data.mirrors[{index}]: expected a non-empty string")
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", mirror) and not re.match(r"^(https?|file)://", mirror):
            problems.append(f"data.mirrors[{index}]: unsupported scheme in {mirror!r}; expected http://, https://, "
                            "file:// or a local directory")


def _duplicate_file_names(files: CustomFiles, problems: list[str]) -> None:
    """Each custom file is fetched to its own ``data/raw/<name>``: two files of one name would be
    one download checked against two checksums (a mismatch that blames the mirror)."""
    first: dict[str, str] = {}
    for item in dataclasses.fields(files):
        spec = getattr(files, item.name)
        if spec is None or not isinstance(spec.name, str):
            continue
        earlier = first.setdefault(spec.name, item.name)
        if earlier != item.name:
            problems.append(f"data.custom.files.{item.name}.name: {spec.name!r} is also {earlier}'s name; each "
                            "file needs its own name on the mirror")


def _replicate_checks(params: Params, present: set[str], problems: list[str]) -> None:
    known = frameworks.names()
    for index, name in enumerate(params.frameworks):
        if name not in known:
            problems.append(f"frameworks[{index}]: unknown framework {name!r}; expected one of {', '.join(known)}")
        elif name not in present:
            problems.append(f"{name}: missing (expected a mapping of train: overrides, {{}} for none)")
    names = [name for name in params.frameworks if isinstance(name, str)]
    if len(set(names)) != len(names):
        problems.append(f"frameworks: each framework once, got {list(params.frameworks)}")
    if params.replicates is None:
        return
    seeds = [seed for seed in params.replicates.seeds if isinstance(seed, int)]
    for index, seed in enumerate(seeds):
        if not 0 <= seed < 2**31:
            problems.append(f"replicates.seeds[{index}]: expected a value from 0 to {2**31 - 1}, got {seed}")
    if len(set(seeds)) != len(seeds):
        problems.append(f"replicates.seeds: each seed once, got {list(params.replicates.seeds)}")
    tuned = list(params.replicates.tuned_seeds)
    for index, seed in enumerate(tuned):
        if seed not in seeds:
            problems.append(f"replicates.tuned_seeds[{index}]: {seed} is not one of replicates.seeds {seeds}; the "
                            "tuned level is compared with the stock level on the same seeds")
    if len(set(tuned)) != len(tuned):
        problems.append(f"replicates.tuned_seeds: each seed once, got {tuned}")


def validate(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; raise StageError listing every problem."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    present: set[str] = set()
    if isinstance(raw, dict):  # framework sections are named after the registry's frameworks
        raw = dict(raw)
        if "overrides" in raw:
            problems.append("overrides: unknown key; framework overrides go in a section named after the framework")
            raw.pop("overrides")
        for framework in frameworks.names():
            if framework in raw:
                present.add(framework)
                section = raw.pop(framework)
                if not isinstance(section, dict):
                    problems.append(f"{framework}: expected a mapping of train: overrides, got {section!r}")
                    continue
                sections[framework] = build(TrainParams, section, framework, problems, RULES, partial=True)
    params = build(Params, raw, "", problems, RULES)
    if params is not None:  # checks across keys, also when other keys had problems: report all at once
        if params.data is not None and not any(problem.startswith("data.") for problem in problems):
            _cross_checks(params, problems)
        _replicate_checks(params, present, problems)
    if problems or params is None:
        raise StageError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(f"  {source}: {p}" for p in problems))
    return dataclasses.replace(params, overrides=sections)


def parse_section(cls: type, raw: Any, key: str) -> Any:
    """Validate one section (e.g. ``ModelParams`` from a ``model:`` mapping) on its own."""
    problems: list[str] = []
    section = build(cls, raw, key, problems, RULES)
    if problems:
        raise StageError("\n".join(problems))
    return section


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the params file; raise StageError naming the file on any problem (it is
    read as DVC writes it: see ``stages/common/yamlfile.py``)."""
    path = Path(path)
    return validate(yamlfile.read(path), str(path))


def effective_train(params: Params, framework: str, tuning: str = "stock",
                    switches: tuple[str, ...] = ()) -> TrainParams:
    """The shared ``train`` recipe with the framework's own overrides applied, at a tuning level
    (``switches``: the backend's switches that level turns on)."""
    if framework not in params.frameworks:
        raise StageError(f"framework {framework!r} is not in params.yaml's frameworks: "
                         f"{', '.join(params.frameworks)}")
    if tuning not in TUNING_LEVELS:
        raise StageError(f"unknown tuning level {tuning!r}; expected one of {', '.join(TUNING_LEVELS)}")
    overrides = dict(params.overrides.get(framework, {}))
    return dataclasses.replace(params.train, **overrides, tuning=tuning,  # type: ignore[arg-type]
                               switches=tuple(switches) if tuning == "tuned" else ())


def as_dict(value: Any) -> Any:
    """Plain-Python copy of a params dataclass (for metadata files and reports)."""
    if dataclasses.is_dataclass(value):
        return {item.name: as_dict(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [as_dict(item) for item in value]
    if isinstance(value, dict):
        return {key: as_dict(item) for key, item in value.items()}
    return value


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PARAMS_FILE
    load_params(path)
    print(f"{path}: ok")


if __name__ == "__main__":
    from stages.common.errors import run_stage

    run_stage(main, "params")
