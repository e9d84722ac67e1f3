"""Where every stage reads and writes: the one place that names the pipeline's files.

``dvc.yaml`` lists the same paths (it must: DVC tracks them); ``tests/test_dvc_yaml.py`` checks
that the two agree. Per-replicate outputs live in ``<arm>/<seed>/`` folders, where an arm is a
framework at a tuning level: ``keras`` (stock) or ``keras-tuned``.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
VALIDATED = Path("data/params.ok")  # written by stages/validate.py once params.yaml passed
MODELS = Path("models")
INIT = MODELS / "init"
LOGS = Path("dvclive")
EVAL = Path("eval")
REPORTS = Path("reports")
# The timing stage's sittings, appended by each run (a persistent output: DVC never removes it)
SITTINGS = Path("timing/sittings.json")
ONNX = Path("onnx")  # the ONNX exports (stages/export), one folder per arm and seed

# Files inside a model folder
ARCHITECTURE_FILE = "architecture.json"
RUN_FILE = "run.json"  # how the model was trained and must be fed (RunInfo in schemas.py)
# Files inside an evaluation folder
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npy"
PER_CLASS_FILE = "per_class.json"
CONFUSION_FILE = "confusion.csv"
ONNX_METRICS_FILE = "onnx.json"  # the export on ONNX Runtime (OnnxMetrics)
# Files inside an export folder: the model, or why the framework has no route
ONNX_FILE = "model.onnx"
NO_ROUTE_FILE = "no-route.txt"
# The report's numeric summary, the top-level metrics of `dvc metrics show` / `dvc exp show`
SUMMARY_METRICS = REPORTS / "metrics.json"
# Each conclusion's verdict word, per pair and metric (stages/report/conclusions.py)
VERDICTS = REPORTS / "verdicts.json"
# The reproduction verdict (stages/reproduce): not an output of the report stage, so .dvcignore
# keeps it out of the `reports` output's hash and `dvc repro` stays as it is.
REPRODUCTION = REPORTS / "reproduction.md"


def init_weights(seed: int) -> Path:
    return INIT / f"{seed}.npz"


def arm_name(framework: str, tuning: str = "stock") -> str:
    """The folder name of a framework at a tuning level: ``keras`` (stock), ``keras-tuned``."""
    return framework if tuning == "stock" else f"{framework}-{tuning}"


def model_dir(framework: str, seed: int, tuning: str = "stock") -> Path:
    return MODELS / arm_name(framework, tuning) / str(seed)


def logs_dir(framework: str, seed: int, tuning: str = "stock") -> Path:
    return LOGS / arm_name(framework, tuning) / str(seed)


def eval_dir(framework: str, seed: int, tuning: str = "stock") -> Path:
    return EVAL / arm_name(framework, tuning) / str(seed)


def onnx_dir(framework: str, seed: int, tuning: str = "stock") -> Path:
    return ONNX / arm_name(framework, tuning) / str(seed)


def replicate(framework: str, seed: int) -> str:
    """The DVC matrix suffix of a (framework, seed) stage, e.g. ``1-keras`` (dvc.yaml's matrix puts
    the seed first, so that DVC runs the frameworks alternately)."""
    return f"{seed}-{framework}"


def stage(kind: str, framework: str, seed: int, tuning: str = "stock") -> str:
    """The DVC stage that writes a replicate: ``train@1-keras`` (stock), ``train-tuned@1-keras``."""
    return f"{kind}{'' if tuning == 'stock' else '-' + tuning}@{replicate(framework, seed)}"


def replicate_outputs(kind: str, framework: str, seed: int, tuning: str = "stock") -> tuple[list[Path], list[Path]]:
    """The outputs of a replicate's ``train``, ``evaluate`` or ``export`` stage as dvc.yaml lists
    them: those DVC caches, and those kept in git (``cache: false``)."""
    if kind == "train":
        return [model_dir(framework, seed, tuning)], [logs_dir(framework, seed, tuning)]
    if kind == "export":
        return [onnx_dir(framework, seed, tuning)], [eval_dir(framework, seed, tuning) / ONNX_METRICS_FILE]
    folder = eval_dir(framework, seed, tuning)
    return [folder / PREDICTIONS_FILE], [folder / name for name in (METRICS_FILE, PER_CLASS_FILE, CONFUSION_FILE)]


def stage_outputs(address: str) -> tuple[list[Path], list[Path]]:
    """The outputs of the DVC stage ``address`` (``validate``, ``init@1``, ``train-tuned@1-keras``...)
    as dvc.yaml lists them: those DVC caches, and those kept in git (``cache: false``). DVC removes
    all of them before it runs the stage."""
    kind, _, replicate_name = address.partition("@")
    if kind in ("train", "train-tuned", "evaluate", "evaluate-tuned", "export", "export-tuned"):
        seed, _, framework = replicate_name.partition("-")
        return replicate_outputs(kind.removesuffix("-tuned"), framework, int(seed),
                                 "tuned" if kind.endswith("-tuned") else "stock")
    fixed = {"validate": ([], [VALIDATED]), "download": ([RAW], []), "preprocess": ([PREPARED], []),
             "report": ([], [REPORTS]), "timing": ([], [SITTINGS])}
    if kind == "init":
        return [init_weights(int(replicate_name))], []
    return fixed[kind]


def restore_commands(address: str) -> str:
    """The commands that bring back the outputs of ``address`` as ``dvc.lock`` last recorded them."""
    cached, in_git = stage_outputs(address)
    commands = ([f"`dvc checkout {address}`"] if cached else []) + \
        ([f"`git checkout -- {' '.join(map(str, in_git))}`"] if in_git else [])
    return " and ".join(commands)


def restore_hint(kind: str, framework: str, seed: int, tuning: str = "stock") -> str:
    """How to get back the outputs that ``dvc repro`` removed before the stage refused to run."""
    cached, in_git = replicate_outputs(kind, framework, seed, tuning)
    return (f"under `dvc repro` the previous outputs of {stage(kind, framework, seed, tuning)} were removed before "
            f"it ran: `dvc checkout {' '.join(map(str, cached))}` and "
            f"`git checkout -- {' '.join(map(str, in_git))}` bring them back")
