"""What a config dataclass may hold, checked by pydantic when a stage builds one from params.yaml
(``build_config``; ``capt caption`` builds its options the same way).

The configs stay plain frozen dataclasses, each field's type saying what it takes: ``Count`` for
sizes, epochs and beams (an integer >= 1: 2.5 is refused, not run as 2, and ``true`` is no 1),
``Positive`` for learning rates and temperatures, ``Fraction`` for shares in (0, 1], a Literal for
a choice among names. ``@with_config(CHECKED)`` makes a key the dataclass does not have an error
(a misplaced ``teacher.epochs`` is not silently ignored) instead of pydantic's default of dropping
it. Checks that involve several fields stay in ``__post_init__`` and raise ``ConfigError``, which
pydantic reports at the dataclass's own path. Code that builds a config from its own values
(``PretrainConfig.train_config``, tests) passes them straight to the dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from typing import Annotated, Any, Callable, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError, with_config

from capt.errors import CaptError

__all__ = ["AutoOnOff", "CHECKED", "ConfigError", "Count", "Device", "Flag", "Fraction", "Int", "NonNegative", "NonNegativeInt", "OnOff",
           "Positive", "Probability", "Real", "UnitInterval", "build_config", "with_config"]

CHECKED = ConfigDict(extra="forbid")     # with_config(CHECKED): an unknown key is an error, not ignored

Int = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Ge(1)]              # sizes, epochs, beams, patience: at least 1
NonNegativeInt = Annotated[int, Strict(), Ge(0)]     # seeds, worker counts, 0-or-more image counts
Real = Annotated[float, Strict()]                    # an int is taken as the float it is; a string or a bool is not
Positive = Annotated[float, Strict(), Gt(0)]         # learning rates, temperatures
NonNegative = Annotated[float, Strict(), Ge(0)]      # loss weights, tolerances
Fraction = Annotated[float, Strict(), Gt(0), Le(1)]  # a share of something: (0, 1]
UnitInterval = Annotated[float, Strict(), Ge(0), Le(1)]  # a weight in [0, 1]
Probability = Annotated[float, Strict(), Ge(0), Lt(1)]   # dropout: [0, 1)
Flag = Annotated[bool, Strict()]
Device = Literal["auto", "cpu", "cuda"]              # auto: a GPU where there is one


def _yaml11_on_off(value: Any) -> Any:
    # YAML 1.1 readers (PyYAML) read a bare on/off as a boolean; a YAML 1.2 writer (DVC's
    # `exp run -S`) leaves them bare. Both spellings mean the same here.
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


OnOff = Annotated[Literal["on", "off"], BeforeValidator(_yaml11_on_off)]
AutoOnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml11_on_off)]


class ConfigError(CaptError, ValueError):
    """A config whose fields are each fine but do not fit together (raised in ``__post_init__``):
    a ValueError, so that pydantic reports it at the config's path; a CaptError, so that one line
    reaches the user when code builds the config directly."""


def build_config(kind: Any, values: Any, where: str, source: str | None = "params.yaml",
                 spell: Callable[[str], str] = str) -> Any:
    """``values`` checked and built into ``kind`` (a config dataclass, or any type pydantic knows:
    ``list[str]``, ``Count``); otherwise CaptError naming ``source`` and each wrong value's full
    path from ``where`` (``params.yaml: distill.student_t20.temperature: must be > 0, got -1``),
    with the nearest known key for a key ``kind`` does not have. ``spell`` writes a path as the user
    wrote it (``capt caption``: ``image_size`` -> ``--image-size``)."""
    try:
        return TypeAdapter(kind).validate_python(values)
    except ValidationError as e:
        problems: dict[str, list[str]] = {}        # path -> what is wrong there (a union: one per member)
        for error in e.errors(include_url=False):
            loc = _key_parts(error["loc"], values)
            path = spell(_path(where, loc))
            if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):   # a mapping's / a dataclass's
                what = f"unknown key{_nearest_key(kind, [str(p) for p in loc], where)}"
            else:
                what = _what_is_wrong(error)
            problems.setdefault(path, []).append(what)
        message = "; ".join(f"{path}: {_either(whats)}" for path, whats in problems.items())
        raise CaptError(message if source is None else f"{source}: {message}") from None


def _key_parts(loc: tuple, values: Any) -> list:
    """The parts of pydantic's location that are keys (or list positions) of ``values``: it also
    names the member of a union or a validator a value went through (``str``, ``function-before``)."""
    parts, node = [], values
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and "[" not in part and not part.startswith("function-"):
            parts.append(part)                     # a key there, or one missing there
            node = node.get(part)
        elif isinstance(node, (list, tuple)) and isinstance(part, int):
            parts.append(part)
            node = node[part] if -len(node) <= part < len(node) else None
    return parts


def _path(where: str, loc: list) -> str:
    path = where
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def _either(whats: list[str]) -> str:
    """One value's problems: a union's members' "must be a string, got 5" and "must be a list, got
    5" read "must be a string or a list, got 5"."""
    whats = list(dict.fromkeys(whats))
    gots = {w.rpartition(", got ")[2] for w in whats}
    if len(whats) > 1 and len(gots) == 1 and all(w.startswith("must be ") and ", got " in w for w in whats):
        return "must be " + " or ".join(w[len("must be "):].rpartition(", got ")[0] for w in whats) + f", got {gots.pop()}"
    return "; ".join(whats)


def _what_is_wrong(error: dict) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), _show(error.get("input"))
    if kind == "missing":
        return "missing"
    if kind == "value_error":                      # a ConfigError of __post_init__: its own words
        return str(ctx["error"])
    bounds = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
              "less_than_equal": ("<=", "le")}
    if kind in bounds:
        sign, key = bounds[kind]
        bound = ctx[key]                           # pydantic gives a float field's bound 0 as 0.0
        return f"must be {sign} {_show(int(bound) if float(bound).is_integer() else bound)}, got {got}"
    if kind in ("too_short", "too_long"):
        n = ctx["min_length"] if kind == "too_short" else ctx["max_length"]
        return f"must have {'at least' if kind == 'too_short' else 'at most'} {n} item(s), got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {got}"
    wanted = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
              "list": "a list", "dict": "a mapping", "tuple": "a list", "dataclass": "a mapping"}
    for prefix, what in wanted.items():
        if kind.startswith(prefix):
            return f"must be {what}, got {got}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {got}"


def _show(value: Any) -> str:
    """A value as params.yaml would spell it (true, null, "abc")."""
    return json.dumps(value, default=str)


def _nearest_key(kind: Any, loc: list[str], where: str) -> str:
    """'; did you mean <path>?' for the known key nearest an unknown one at ``loc``: the same name
    elsewhere in the section (a misplaced key) or, failing that, the closest spelling."""
    known = list(_key_paths(kind))
    if not known:
        return ""
    key, parent = loc[-1], tuple(loc[:-1])
    siblings = [p for p in known if _matches(p[:-1], parent)]
    same_name = sorted((p for p in known if p[-1] == key and not _matches(p[:-1], parent)), key=len)
    close = difflib.get_close_matches(key, [p[-1] for p in siblings], n=1, cutoff=0.6)
    if same_name:
        best = same_name[0]
    elif close:
        best = parent + (close[0],)
    else:
        close_any = difflib.get_close_matches(key, [p[-1] for p in known], n=1, cutoff=0.75)
        if not close_any:
            return f" (known here: {', '.join(p[-1] for p in siblings)})" if siblings else ""
        best = next(p for p in known if p[-1] == close_any[0])
    # a mapping's own keys (distill.<variant>) are "*" in the known paths: the unknown key's, where it has one
    best = tuple(loc[i] if part == "*" and i < len(parent) else part for i, part in enumerate(best))
    return f"; did you mean {_path(where, list(best))}?"


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path))


def _key_paths(kind: Any, prefix: tuple[str, ...] = ()) -> typing.Iterator[tuple[str, ...]]:
    """Every key path of a config dataclass, nested configs included; a mapping's keys are "*"
    (``dict[str, DistillConfig]``: ``("*", "temperature")``)."""
    if typing.get_origin(kind) is dict:
        yield from _key_paths(typing.get_args(kind)[1], prefix + ("*",))
        return
    kind = _config_class(kind)
    if kind is None:
        return
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(kind):
        yield prefix + (f.name,)
        yield from _key_paths(hints[f.name], prefix + (f.name,))


def _config_class(kind: Any) -> type | None:
    """The dataclass a field's type names, through Optional and Annotated; else None."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return kind
    for arg in typing.get_args(kind):
        found = _config_class(arg)
        if found is not None:
            return found
    return None
