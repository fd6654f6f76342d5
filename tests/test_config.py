"""capt.config: what a config dataclass's fields take, checked by pydantic, and one line naming
each wrong value by its full path (with the nearest known key for an unknown one)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from capt.config import (CHECKED, AutoOnOff, ConfigError, Count, Flag, Fraction, NonNegativeInt, Positive, build_config,
                         with_config)
from capt.errors import CaptError


@with_config(CHECKED)
@dataclass(frozen=True)
class Inner:
    epochs: Count = 3
    lr: Positive = 0.1
    share: Fraction = 0.5
    meteor: AutoOnOff = "auto"
    preload: Flag = False

    def __post_init__(self):
        if self.epochs == 7:
            raise ConfigError("epochs 7 does not fit lr here")


@with_config(CHECKED)
@dataclass(frozen=True)
class Outer:
    dataset: str
    seeds: list[NonNegativeInt] = field(default_factory=list)
    train: Inner = field(default_factory=Inner)


def _error(values, where="section") -> str:
    with pytest.raises(CaptError) as e:
        build_config(Outer, values, where)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_values_that_fit_are_built_into_the_dataclasses_as_given():
    built = build_config(Outer, {"dataset": "x", "seeds": [1, 2], "train": {"epochs": 2, "lr": 1}}, "section")
    assert built == Outer("x", [1, 2], Inner(epochs=2, lr=1.0))
    assert isinstance(built.train.lr, float)                 # an int is the float it is


@pytest.mark.parametrize("values, message", [
    ({"dataset": "x", "train": {"epochs": 2.5}}, "section.train.epochs: must be an integer, got 2.5"),
    ({"dataset": "x", "train": {"epochs": 2.0}}, "section.train.epochs: must be an integer, got 2.0"),
    ({"dataset": "x", "train": {"epochs": True}}, "section.train.epochs: must be an integer, got true"),
    ({"dataset": "x", "train": {"epochs": "3"}}, 'section.train.epochs: must be an integer, got "3"'),
    ({"dataset": "x", "train": {"lr": "1e-3"}}, 'section.train.lr: must be a number, got "1e-3"'),
    ({"dataset": "x", "train": {"lr": 0}}, "section.train.lr: must be > 0, got 0"),
    ({"dataset": "x", "train": {"share": 1.5}}, "section.train.share: must be <= 1, got 1.5"),
    ({"dataset": "x", "train": {"preload": 1}}, "section.train.preload: must be true or false, got 1"),
    ({"dataset": "x", "train": {"meteor": "maybe"}},
     "section.train.meteor: must be one of 'auto', 'on' or 'off', got \"maybe\""),
    ({"dataset": "x", "seeds": [0, -1]}, "section.seeds[1]: must be >= 0, got -1"),
    ({"dataset": "x", "seeds": 3}, "section.seeds: must be a list, got 3"),
    ({"dataset": "x", "train": "fast"}, 'section.train: must be a mapping, got "fast"'),
    ({"train": {}}, "section.dataset: missing"),
    ({"dataset": "x", "train": {"epochs": 7}}, "section.train: epochs 7 does not fit lr here"),
])
def test_each_wrong_value_is_named_by_its_full_path_and_what_it_must_be(values, message):
    assert _error(values) == f"params.yaml: {message}"


def test_yaml_1_1_on_and_off_read_as_booleans_mean_on_and_off():
    assert build_config(Inner, {"meteor": True}, "evaluate").meteor == "on"
    assert build_config(Inner, {"meteor": False}, "evaluate").meteor == "off"


@pytest.mark.parametrize("values, hint", [
    ({"dataset": "x", "epochs": 8}, "section.epochs: unknown key; did you mean section.train.epochs?"),   # misplaced
    ({"dataset": "x", "train": {"epoch": 8}}, "section.train.epoch: unknown key; did you mean section.train.epochs?"),
    ({"dataset": "x", "train": {"prelaod": True}},
     "section.train.prelaod: unknown key; did you mean section.train.preload?"),
    ({"dataset": "x", "dataest": "y"}, "section.dataest: unknown key; did you mean section.dataset?"),
    ({"dataset": "x", "train": {"zzz": 1}},
     "section.train.zzz: unknown key (known here: epochs, lr, share, meteor, preload)"),
])
def test_an_unknown_key_is_an_error_naming_the_nearest_known_one(values, hint):
    assert _error(values) == f"params.yaml: {hint}"


def test_every_wrong_value_is_in_the_one_line():
    message = _error({"dataset": "x", "train": {"lr": -1, "epochs": 0}})
    assert message == ("params.yaml: section.train.epochs: must be >= 1, got 0; "
                       "section.train.lr: must be > 0, got -1")


def test_a_value_of_a_plain_type_and_a_source_spelled_as_the_user_wrote_it():
    assert build_config(list[str], ["a", "b"], "study.test_sets") == ["a", "b"]
    with pytest.raises(CaptError, match=r'^params.yaml: study.test_sets: must be a list, got "shapes"$'):
        build_config(list[str], "shapes", "study.test_sets")
    with pytest.raises(CaptError, match=r"^--max-len: must be >= 1, got 0$"):
        build_config(Inner, {"epochs": 0}, "", source=None, spell=lambda p: "--max-len" if p == "epochs" else p)


def test_a_config_built_directly_with_a_misfit_raises_a_capt_error():
    with pytest.raises(CaptError, match="epochs 7 does not fit"):
        Inner(epochs=7)


def test_a_union_member_is_not_a_key_and_a_mappings_own_keys_stay_in_the_hint():
    from capt.train.distill import DistillConfig
    from stages.download import RemoteConfig

    with pytest.raises(CaptError) as e:
        build_config(RemoteConfig, {"urls": {"a.zip": 5}}, "download.coco")
    assert str(e.value) == "params.yaml: download.coco.urls.a.zip: must be a string or a list, got 5"
    with pytest.raises(CaptError) as e:
        build_config(dict[str, DistillConfig], {"t5": {"beta": 0.3, "w_dec": 1, "temprature": 5}}, "distill")
    assert str(e.value) == "params.yaml: distill.t5.temprature: unknown key; did you mean distill.t5.temperature?"
