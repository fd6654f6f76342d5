"""Caption metrics: BLEU equals nltk by hand, the one normaliser is applied, CIDEr/ROUGE/METEOR
behave, METEOR's Java process never hangs or leaks, the human ceiling, COCO results files.

Only one real METEOR run (about 15 s of JVM start-up) happens in this file; the other METEOR
checks use a fake `java` on PATH or a patched `shutil.which`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu

from capt.errors import CaptError
from capt.eval import metrics as M
from capt.eval.metrics import ceiling_bleu4, score_captions, write_coco_results

# nltk warns when a hand-computed sentence has no matching 4-gram; the values are still checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")

W = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25, 0.25, 0.25, 0.25)}

# Raw captions with case and punctuation, in a scrambled id order.
REFS = {
    30: ["A big yellow star in the corner.", "a yellow star sits in the corner"],
    10: ["A small red circle above a blue square.", "A red circle is above the blue square"],
    20: ["Two green triangles, side by side!", "two green triangles next to each other",
         "The man's two green triangles"],
}
HYPS = {
    10: "a red circle above a blue square",
    20: "Two green triangles, side-by-side.",
    30: "a yellow star in a corner",
}

# The same, tokenised by hand (lowercase, apostrophe dropped, punctuation -> space).
REF_TOKENS = [
    [["a", "small", "red", "circle", "above", "a", "blue", "square"],
     ["a", "red", "circle", "is", "above", "the", "blue", "square"]],
    [["two", "green", "triangles", "side", "by", "side"],
     ["two", "green", "triangles", "next", "to", "each", "other"],
     ["the", "mans", "two", "green", "triangles"]],
    [["a", "big", "yellow", "star", "in", "the", "corner"],
     ["a", "yellow", "star", "sits", "in", "the", "corner"]],
]
HYP_TOKENS = [
    ["a", "red", "circle", "above", "a", "blue", "square"],
    ["two", "green", "triangles", "side", "by", "side"],
    ["a", "yellow", "star", "in", "a", "corner"],
]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- BLEU / normaliser


def test_bleu_equals_nltk_corpus_bleu_on_hand_tokens():
    got = score_captions(REFS, HYPS, meteor=False)
    for n in (1, 2, 3, 4):
        want = corpus_bleu(REF_TOKENS, HYP_TOKENS, weights=W[n])
        assert got[f"bleu{n}"] == pytest.approx(want, abs=1e-12, rel=0)
    # A corpus score, not a mean of sentence scores (they differ on this example).
    mean_sentence = np.mean([corpus_bleu([r], [h], weights=W[4]) for r, h in zip(REF_TOKENS, HYP_TOKENS)])
    assert abs(got["bleu4"] - mean_sentence) > 1e-6
    assert 0.3 < got["bleu4"] < 1.0
    assert set(got) >= {"bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l"}
    assert "meteor" not in got
    assert all(isinstance(v, float) for v in got.values())


def test_hypothesis_equal_to_its_references_scores_one():
    refs = {1: ["a red circle above a blue square"] * 3,
            2: ["two green triangles next to each other"] * 2}
    hyps = {i: r[0] for i, r in refs.items()}
    got = score_captions(refs, hyps, meteor=False)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"):
        assert got[key] == pytest.approx(1.0, abs=1e-12), key


def test_normaliser_applied_to_references_and_hypotheses():
    refs_raw = {1: ["A Red circle."], 2: ["The man's BIG, blue square!"]}
    refs_clean = {1: ["a red circle"], 2: ["the mans big blue square"]}
    hyps_raw = {1: "A Red circle.", 2: "the MAN'S big blue-square"}
    hyps_clean = {1: "a red circle", 2: "the mans big blue square"}
    clean = score_captions(refs_clean, hyps_clean, meteor=False)
    assert score_captions(refs_raw, hyps_raw, meteor=False) == clean
    assert score_captions(refs_clean, hyps_raw, meteor=False) == clean
    assert score_captions(refs_raw, hyps_clean, meteor=False) == clean
    assert clean["bleu1"] == pytest.approx(1.0) and clean["rouge_l"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- input errors


def test_id_mismatch_names_counts_on_each_side():
    refs = {1: ["a red circle"], 2: ["a blue square"], 3: ["a green cross"]}
    hyps = {2: "a blue square", 3: "a green cross", 4: "x", 5: "y"}
    with pytest.raises(CaptError) as e:
        score_captions(refs, hyps, meteor=False)
    msg = _one_line(e)
    assert "1 of 3" in msg and "2 of 4" in msg
    assert "[1]" in msg and "[4, 5]" in msg


def test_image_without_references_is_an_error():
    with pytest.raises(CaptError) as e:
        score_captions({1: ["a red circle"], 7: []}, {1: "a red circle", 7: "a cat"}, meteor=False)
    assert "7" in _one_line(e)
    with pytest.raises(CaptError):
        score_captions({1: ["", "  ."]}, {1: "a cat"}, meteor=False)  # only blank references
    with pytest.raises(CaptError):
        score_captions({}, {}, meteor=False)
    with pytest.raises(CaptError):  # a string, not a list of strings
        score_captions({1: "a red circle"}, {1: "a red circle"}, meteor=False)
    with pytest.raises(CaptError):  # a token list, not one caption string
        score_captions({1: ["a red circle"]}, {1: ["a", "red", "circle"]}, meteor=False)


# --------------------------------------------------------------------------- CIDEr


def test_cider_positive_and_rewards_a_matching_caption():
    got = score_captions(REFS, HYPS, meteor=False)["cider"]
    assert got > 0.0
    good = {**HYPS, 10: REFS[10][1]}
    bad = {**HYPS, 10: "a dog eating pizza on a sofa"}
    s_good = score_captions(REFS, good, meteor=False)["cider"]
    s_bad = score_captions(REFS, bad, meteor=False)["cider"]
    assert s_good > s_bad
    # One image: every n-gram is in every "document", so the idf and CIDEr are 0.
    one = score_captions({10: REFS[10]}, {10: REFS[10][0]}, meteor=False)
    assert one["cider"] == 0.0 and one["bleu4"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- METEOR


def _java_children() -> list:
    psutil = pytest.importorskip("psutil")
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


@pytest.fixture(scope="module")
def meteor_scores():
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: METEOR cannot run here")
    return score_captions(REFS, HYPS, meteor=None)  # auto mode; the only real JVM run


def test_meteor_present_with_java(meteor_scores):
    assert "meteor" in meteor_scores
    assert 0.0 < meteor_scores["meteor"] <= 1.0
    # The other metrics do not depend on METEOR being on.
    off = score_captions(REFS, HYPS, meteor=False)
    assert {k: v for k, v in meteor_scores.items() if k != "meteor"} == off
    assert _java_children() == []  # the JVM was killed and reaped


def test_meteor_false_omits_key_and_logs(caplog):
    with caplog.at_level(logging.INFO, logger="capt.eval.metrics"):
        got = score_captions(REFS, HYPS, meteor=False)
    assert "meteor" not in got
    assert any("METEOR skipped" in r.getMessage() for r in caplog.records)


def test_without_java_auto_skips_and_required_raises(monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with caplog.at_level(logging.INFO, logger="capt.eval.metrics"):
        got = score_captions(REFS, HYPS)
    assert "meteor" not in got
    assert any("METEOR skipped" in r.getMessage() and "Java" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=True)
    assert "Java" in _one_line(e)


def _fake_java(tmp_path, monkeypatch, body: str):
    d = tmp_path / "bin"
    d.mkdir()
    java = d / "java"
    java.write_text("#!/bin/sh\n" + body + "\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("java") == str(java)


def test_meteor_failing_java_is_one_line_error(tmp_path, monkeypatch):
    _fake_java(tmp_path, monkeypatch, "echo 'Error: Unable to access jarfile' >&2\nexit 1")
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS)
    assert "Unable to access jarfile" in _one_line(e)
    assert _java_children() == []


def test_meteor_stalled_java_is_killed_not_hung(tmp_path, monkeypatch):
    # A wrapper that never answers and has a child of its own: both must die.
    _fake_java(tmp_path, monkeypatch, "sleep 300\necho never")
    monkeypatch.setattr(M, "METEOR_STARTUP_TIMEOUT_S", 1.0)
    monkeypatch.setattr(M, "METEOR_PER_IMAGE_TIMEOUT_S", 0.0)
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=True)
    assert "killed" in _one_line(e)
    assert _java_children() == []


# --------------------------------------------------------------------------- ceiling


def test_ceiling_is_deterministic_and_seeded():
    refs = {i: [f"a {c} circle above a {d} square" for c, d in
                [("red", "blue"), ("green", "blue"), ("red", "red"), ("big red", "small blue")]]
            for i in range(12)}
    assert ceiling_bleu4(refs, seed=3) == ceiling_bleu4(refs, seed=3)
    assert ceiling_bleu4(refs) == ceiling_bleu4(refs, seed=0)
    values = {ceiling_bleu4(refs, seed=s) for s in range(6)}
    assert len(values) > 1
    assert all(0.0 < v < 1.0 for v in values)


def test_ceiling_equals_hand_computation():
    refs = {
        5: ["A red circle above a blue square.", "a red circle above the blue square",
            "one red circle above a blue square"],
        9: ["Two green triangles, side by side", "two green triangles side by side on the left"],
        11: ["a lonely cross"],  # one reference: skipped
    }
    toks = {
        5: [["a", "red", "circle", "above", "a", "blue", "square"],
            ["a", "red", "circle", "above", "the", "blue", "square"],
            ["one", "red", "circle", "above", "a", "blue", "square"]],
        9: [["two", "green", "triangles", "side", "by", "side"],
            ["two", "green", "triangles", "side", "by", "side", "on", "the", "left"]],
    }
    for seed in (0, 1, 2):
        hyps, others = [], []
        for image_id in (5, 9):
            held = int(np.random.default_rng([seed, image_id]).integers(len(toks[image_id])))
            hyps.append(toks[image_id][held])
            others.append(toks[image_id][:held] + toks[image_id][held + 1:])
        want = corpus_bleu(others, hyps, weights=W[4])
        assert want > 0.1
        assert ceiling_bleu4(refs, seed=seed) == pytest.approx(want, abs=1e-12, rel=0)
    # The one-reference image does not change the value.
    assert ceiling_bleu4(refs, seed=1) == ceiling_bleu4({k: refs[k] for k in (5, 9)}, seed=1)


def test_ceiling_identical_references_is_one_and_needs_two():
    refs = {1: ["a red circle above a blue square"] * 5, 2: ["Two green triangles side by side."] * 2}
    assert ceiling_bleu4(refs, seed=7) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(CaptError) as e:
        ceiling_bleu4({1: ["a red circle"], 2: [], 3: ["a blue square", ""]})
    _one_line(e)


# --------------------------------------------------------------------------- COCO results


def test_write_coco_results_round_trip(tmp_path):
    hyps = {42: "a red circle", 3: "Two green triangles, side by side.", np.int64(17): "a man's hat"}
    path = tmp_path / "out" / "results.json"
    write_coco_results(hyps, path)
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text)
    assert rows == [
        {"image_id": 3, "caption": "Two green triangles, side by side."},
        {"image_id": 17, "caption": "a man's hat"},
        {"image_id": 42, "caption": "a red circle"},
    ]
    assert all(type(r["image_id"]) is int for r in rows)
    assert '\n  {\n    "image_id": 3,' in text  # indent=2
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp left
    write_coco_results({1: "x"}, path)  # overwrite in place
    assert json.loads(path.read_text()) == [{"image_id": 1, "caption": "x"}]


def test_sentence_bleu4_for_figure_labels():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from capt.eval.metrics import sentence_bleu4

    refs = ["A red circle above a blue square.", "a red circle"]
    assert sentence_bleu4(refs, "a red circle above a blue square") == pytest.approx(1.0)
    partial = sentence_bleu4(refs, "A red square!")          # no 4-gram matches: smoothed, not 0
    by_hand = sentence_bleu([r.lower().rstrip(".").split() for r in refs], ["a", "red", "square"],
                            smoothing_function=SmoothingFunction().method1)
    assert 0 < partial < 1 and partial == pytest.approx(by_hand)
