"""What every stage shares: reading its own params section into a typed config, logging, and
turning user mistakes (CaptError) into one clear line instead of a traceback."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
import functools
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from capt.config import CHECKED, NonNegativeInt, build_config, with_config
from capt.errors import CaptError
from capt.files import write_atomic, write_json  # noqa: F401 - every stage writes its outputs with these

PARAMS = Path("params.yaml")
T = TypeVar("T")


# What this process has read of params.yaml: keys -> the value then (stage_main compares them when
# the stage ends: DVC records params.yaml as it is *after* a stage, so a value edited while the
# stage ran would otherwise be written into dvc.lock beside outputs made with the old one).
_READ: dict[tuple[str, ...], Any] = {}


def read_params(*keys: str, path: Path = PARAMS) -> Any:
    """The params.yaml value at ``keys`` (e.g. ``read_params("download", "shapes")``)."""
    value = _params_value(keys, path)
    if path == PARAMS:
        _READ.setdefault(keys, copy.deepcopy(value))
    return value


def _params_value(keys: tuple[str, ...], path: Path, params: Any = None) -> Any:
    value = _load_params(path) if params is None else params
    for i, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise CaptError(f"{path}: no section {'.'.join(keys[: i + 1])!r}")
        value = value[key]
    return value


def _load_params(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run stages from the repository root") from None
    except yaml.YAMLError as e:
        raise CaptError(f"{path}: malformed YAML ({e})".replace("\n", " ")) from None


def check_params_unchanged() -> None:
    """CaptError naming every param this stage read that params.yaml no longer holds as it was
    when read: its outputs were made with the old values, and DVC must not record the new ones
    beside them (a failed stage leaves dvc.lock as it was, so `dvc status` shows it changed)."""
    if not _READ:
        return
    try:
        params = _load_params(PARAMS)           # once, whatever the number of keys read
    except CaptError:
        params = _GONE
    changed = []
    for keys, then in _READ.items():
        try:
            now = _GONE if params is _GONE else _params_value(keys, PARAMS, params)
        except CaptError:
            now = _GONE
        if now != then:
            changed.append(".".join(keys))
    if changed:
        raise CaptError(f"{PARAMS}: {', '.join(changed)} changed while this stage ran; its outputs were made with "
                        "the values it read at its start: run it again")


_GONE = object()     # a param no longer in params.yaml (or the file unreadable): a change too


def make_config(kind: type[T], values: Any, section: str) -> T:
    """``values`` (the params.yaml section ``section``) checked and built into ``kind``, a config
    dataclass or any type pydantic knows (capt.config): a wrong type, a value out of range or an
    unknown key is one line naming the param's full path,
    ``params.yaml: distill.student_t20.temperature: must be > 0, got -1``."""
    return build_config(kind, values, section, str(PARAMS))


def read_config(kind: type[T], *keys: str) -> T:
    """The params.yaml value at ``keys`` checked and built into ``kind`` (:func:`make_config`):
    ``read_config(EvaluateConfig, "evaluate")``, ``read_config(list[str], "study", "test_sets")``."""
    return make_config(kind, read_params(*keys), ".".join(keys))


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage command: log to stderr; a CaptError exits 1 with one line; a param the
    stage read that changed in params.yaml before it finished is such an error
    (:func:`check_params_unchanged`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        # Past a file-size limit (ulimit -f) the OS kills a writer with SIGXFSZ; ignored, the write
        # fails with EFBIG instead, and capt.files names the file and keeps its previous content.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        start = time.perf_counter()
        _READ.clear()                  # what this run reads (a test may run several stages in one process)
        try:
            fn(*args, **kwargs)
            check_params_unchanged()
        except CaptError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        record_stage_cost(time.perf_counter() - start)

    return wrapper


STAGE_COSTS = "CAPT_STAGE_COSTS"    # env: a JSON-lines file each finished stage appends its cost to


def record_stage_cost(seconds: float) -> None:
    """Where ``$CAPT_STAGE_COSTS`` names a file (the rehearsal sets it), append this stage's
    command, wall seconds and peak resident memory (this process, and its largest child: the
    loader workers) to it: what benchmarks/project_coco.py scales to the real datasets."""
    import json
    import os
    import resource

    path = os.environ.get(STAGE_COSTS)
    if not path:
        return
    module = Path(sys.argv[0]).with_suffix("")
    record = {"command": " ".join([f"{module.parent.name}.{module.name}", *sys.argv[1:]]),
              "seconds": round(seconds, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),   # KiB on Linux
              "peak_rss_child_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# The BLIP folder models/blip/, in every study beside study.models: capt.eval.study.BLIP_MODEL, spelled
# out here rather than imported because every stage imports this module, and capt.eval.study would
# bring capt.eval and transformers into each one's imports and dvc.yaml deps (tests/test_report.py
# checks that the two agree).
BLIP_MODEL = "blip"


@with_config(CHECKED)
@dataclass(frozen=True)
class StudyConfig:
    """The ``study`` section: which models and test sets the figures and the report show."""

    models: list[str]                                       # the Show-Attend-Tell models (BLIP comes too)
    test_sets: list[str]                                    # prepared datasets every model is evaluated on
    replicate_seeds: list[NonNegativeInt] = field(default_factory=list)   # the students trained again with these


def study_models() -> list[str]:
    """Every model the figures and the report show: the Show-Attend-Tell models, then BLIP."""
    return [*read_config(StudyConfig, "study").models, BLIP_MODEL]
