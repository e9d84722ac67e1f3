"""A trained replicate read back for inference: what ``evaluate`` and ``export`` both load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.common import paths, schemas
from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError
from stages.common.schemas import RunInfo

if TYPE_CHECKING:  # the protocol only: stages/common imports no backend code at run time
    from stages.backends.base import Backend, Model


def load_trained(backend: Backend, folder: Path, rerun: str) -> tuple[Model, ArchitectureSpec, RunInfo, Path]:
    """The model in ``folder`` with its spec and run info; ``StageError`` naming the file otherwise
    (also for NaN or infinite weights, which training never saves)."""
    try:
        spec = ArchitectureSpec.from_json((folder / paths.ARCHITECTURE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise StageError(f"{error.filename}: missing; run `{rerun}`") from None
    except (ValueError, KeyError, TypeError) as error:
        raise StageError(f"{folder / paths.ARCHITECTURE_FILE}: corrupt ({error}); run `{rerun}`") from None
    info = schemas.load(RunInfo, folder / paths.RUN_FILE, rerun)
    path = folder / backend.MODEL_FILE
    model = backend.load_model(path, spec)
    counts = [int(weight.size - np.count_nonzero(np.isfinite(weight))) for weight in backend.get_weights(model)]
    if any(counts):
        raise StageError(f"{path}: {sum(counts)} NaN or infinite weight values (in {sum(map(bool, counts))} of its "
                         f"{len(counts)} arrays); expected finite weights; retrain it: `{rerun}`")
    return model, spec, info, path
