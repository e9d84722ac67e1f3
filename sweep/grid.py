"""The grid: a YAML file of ``dvc exp run -S`` overrides, expanded with DVC's own sweep code.

```yaml
name: lr                                   # optional: prefix of the experiment names (default: sweep)
params:                                    # one grid: the product of these sweeps
  - train.learning_rate=0.001,0.003,0.01   # DVC/Hydra choice sweep (same as choice(0.001,0.003,0.01))
  - train.batch_size=range(64,257,64)      # range sweep: 64, 128, 192, 256
  - train.optimizer=adamw                  # a plain override applies to every point
grids:                                     # optional: more grids, each a list like `params`
  - [train.epochs=10, train.schedule=constant,cosine]
```

The points are the union of the grids' products, without duplicates. Each point's experiment
name is the prefix and a hash of its sorted overrides, so the same point always has the same
name and a rerun recognises experiments that already finished.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_PARAMS_FILE = "params.yaml"
GRID_KEYS = ("name", "params", "grids")


class GridError(ValueError):
    """The grid file or an override is invalid (one line, naming the problem)."""


@dataclass(frozen=True)
class Point:
    name: str
    overrides: tuple[str, ...]  # sorted `dvc exp run -S` arguments

    def label(self) -> str:
        return " ".join(self.overrides) or "(base params)"


def load(path: Path | None, extra: list[str] | None = None) -> tuple[str, list[list[str]]]:
    """Read a grid file; return the name prefix and the grids. ``extra`` (-S options) is one more grid."""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise GridError(f"{path}: cannot read the grid file: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise GridError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from error
        if not isinstance(raw, dict):
            raise GridError(f"{path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
        unknown = sorted(set(raw) - set(GRID_KEYS))
        if unknown:
            raise GridError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(GRID_KEYS)}")
    prefix = raw.get("name", "sweep")
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", prefix):
        raise GridError(f"{path}: name: expected up to 41 letters, digits, '_', '.', '-', got {prefix!r}")
    grids = []
    if raw.get("params") is not None:
        grids.append(_overrides(raw["params"], f"{path}: params"))
    for index, grid in enumerate(raw.get("grids") or []):
        grids.append(_overrides(grid, f"{path}: grids[{index}]"))
    if extra:
        grids.append(_overrides(extra, "-S"))
    if not grids:
        raise GridError(f"{path or 'command line'}: no grid: give `params:` or `grids:` in the file, or -S options")
    return prefix, grids


def _overrides(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and "=" in item for item in value):
        raise GridError(f"{where}: expected a list of `key=value` strings (dvc exp run -S syntax), got {value!r}")
    for item in value:  # Hydra's parser takes `=5` and `+=5`, a key of nothing
        if not setting_key(item):
            raise GridError(f"{where}: {item!r} names no key; expected key=value, e.g. train.epochs=5")
    return list(value)


def setting_key(override: str) -> str:
    """The key an override sets, without its ``file:`` part and Hydra's ``+``/``++``/``~`` prefixes."""
    name = override.partition("=")[0]
    if ":" in name:
        name = name.partition(":")[2]
    return name.lstrip("+~").strip()


def expand(overrides: list[str]) -> list[tuple[str, ...]]:
    """All points of one grid, with DVC's own parser and sweeper (as ``dvc exp run --queue -S``)."""
    from dvc.exceptions import DvcException
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    try:
        sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    except DvcException as error:
        raise GridError(f"{' '.join(overrides)}: {error}") from error
    except Exception as error:  # hydra's parser errors: OverrideParseException and friends
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GridError(f"invalid override in {' '.join(overrides)}: {message}") from error
    points = []
    for sweep in sweeps:
        arguments = [override if path == DEFAULT_PARAMS_FILE else f"{path}:{override}"
                     for path, path_overrides in sweep.items() for override in path_overrides]
        points.append(tuple(sorted(arguments)))
    return points


def experiment_name(prefix: str, overrides: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join(sorted(overrides)).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:10]}"


def points(prefix: str, grids: list[list[str]]) -> list[Point]:
    """The union of the grids' points, in order, without duplicates."""
    seen: dict[tuple[str, ...], Point] = {}
    for grid in grids:
        for overrides in expand(grid):
            if overrides not in seen:
                seen[overrides] = Point(experiment_name(prefix, overrides), overrides)
    return list(seen.values())


def override_keys(all_points: list[Point]) -> list[str]:
    """``[file:]key`` of every overridden param (Hydra's ``+``/``++``/``~`` prefixes removed)."""
    keys = set()
    for point in all_points:
        for override in point.overrides:
            file = override.partition(":")[0] if ":" in override.partition("=")[0] else ""
            key = setting_key(override)
            keys.add(f"{file}:{key}" if file else key)
    return sorted(keys)
