"""Caption metrics: corpus BLEU-1..4 (nltk and coco-caption), CIDEr-D, ROUGE-L, METEOR, and a
leave-one-out human ceiling with the model scored on the same folds.

Tokenisation dominates BLEU, so one tokenizer, chosen per call (``tokenizer``), applies to every
reference and hypothesis of every metric here, the ceiling included:

- ``simple`` (the default): the project's one normaliser, :func:`capt.text.normalize_caption`
  (lowercase, clitics split and hyphenated words kept as PTB does, punctuation dropped), the
  tokens the models are trained on; on captions the same tokens as ``ptb``.
- ``ptb``: coco-caption's tokenisation, what published COCO numbers use: the Stanford
  ``PTBTokenizer`` (the jar bundled with pycocoevalcap, run through Java, ``-preserveLines
  -lowerCase``), then coco-caption's punctuation tokens dropped (its ``PUNCTUATIONS`` list, kept
  as is: ``"A man's dog, running."`` -> ``a man 's dog running``; its quirk of keeping the
  lowercased bracket tokens ``-lrb-``/``-rrb-`` is kept too, so the numbers stay comparable). It
  needs Java: without it, CaptError.

Metrics (the names of the returned dict):

- ``bleu1``..``bleu4``: nltk ``corpus_bleu`` on token lists, no smoothing, uniform weights,
  every reference of each image: the seed study's metric, kept under its names.
- ``bleu1_coco``..``bleu4_coco``: coco-caption's ``Bleu(4)`` (pycocoevalcap) on the same tokens,
  what COCO papers and leaderboards report. Its corpus BLEU differs from nltk's: a hypothesis
  shorter than n tokens adds no n-gram to the denominator (nltk counts it as one unmatched
  n-gram), a zero match count gives a tiny positive score instead of 0 (1e-15 smoothing), and on
  a single image the brevity penalty uses the mean reference length (nltk: the closest).
- ``cider``: CIDEr-D from pycocoevalcap. Its idf comes from the references of the scored set,
  so on a single image it is 0 by construction.
- ``rouge_l``: ROUGE-L from pycocoevalcap.
- ``meteor``: METEOR 1.5 from pycocoevalcap, a bundled jar run through Java. Where Java (or the
  jar and its paraphrase table) is missing it is skipped with a log line, unless it was asked
  for. The Java process is always killed and reaped, and a watchdog kills it if it stalls.
- ``ceiling_bleu4``, ``bleu4_loo``, ``ceiling_folds`` (``human_ceiling=True``): humans and the
  model scored on the same references (:func:`leave_one_out_bleu4`). Fold k takes reference k
  of each image as a human caption and that image's other references as the references of both
  the human and the model; nltk corpus BLEU-4 per fold, averaged over the folds. The number of
  folds K is the fewest (non-blank) references any scored image has (COCO: 5): an image with
  more keeps its references after the K-th in every fold's reference set, and an image with
  fewer than two is left out of both numbers. ``bleu4_loo / ceiling_bleu4`` is the model's
  share of the human ceiling; ``bleu4`` (all n references) is higher than ``bleu4_loo`` and is
  not comparable with the ceiling.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb_module

from capt.errors import CaptError
from capt.files import write_atomic
from capt.eval.per_image import ImageScores, bleu_statistics, sort_key
from capt.text import normalize_caption

__all__ = ["score_captions", "score_captions_per_image", "ceiling_bleu4", "leave_one_out_bleu4", "LeaveOneOut", "tokenize_captions", "image_scores",
           "TOKENIZERS", "Tokenizer", "write_coco_results", "meteor_available", "ptb_tokenizer_available"]

log = logging.getLogger(__name__)

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    f"bleu{n}": tuple(1.0 / n for _ in range(n)) for n in (1, 2, 3, 4)
}

Tokenizer = Literal["simple", "ptb"]   # capt.text.normalize_caption | coco-caption's PTBTokenizer
TOKENIZERS = get_args(Tokenizer)

# PTBTokenizer: JVM start-up is under a second; tokenising runs at thousands of captions a second.
PTB_STARTUP_TIMEOUT_S = 120.0
PTB_PER_CAPTION_TIMEOUT_S = 0.01

# METEOR: Java start-up (loading the paraphrase table) takes ~15 s on a busy 2-core machine;
# scoring takes about a millisecond per image. The watchdog allows far more than that.
METEOR_STARTUP_TIMEOUT_S = 300.0
METEOR_PER_IMAGE_TIMEOUT_S = 0.05

_EXAMPLES = 3


# --------------------------------------------------------------------------- tokenizers


def _java_missing() -> str | None:
    """None when a `java` is on PATH, otherwise why not (METEOR and the PTB tokenizer need it)."""
    return "Java is not installed (no `java` on PATH)" if shutil.which("java") is None else None


def _ptb_jar() -> Path:
    return Path(os.path.dirname(os.path.abspath(_ptb_module.__file__))) / _ptb_module.STANFORD_CORENLP_3_4_1_JAR


def ptb_tokenizer_available() -> str | None:
    """None when coco-caption's PTB tokenizer can run here, otherwise the reason it cannot."""
    why = _java_missing()
    if why is not None:
        return why
    if not _ptb_jar().is_file():
        return f"the Stanford CoreNLP jar is missing from pycocoevalcap ({_ptb_jar()})"
    return None


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise CaptError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    if tokenizer == "ptb":
        why_not = ptb_tokenizer_available()
        if why_not is not None:
            raise CaptError(f"the ptb tokenizer (coco-caption's PTBTokenizer) cannot run: {why_not}; "
                            "install Java or use the simple tokenizer")


def _ptb_tokenize(captions: list[str]) -> list[list[str]]:
    """coco-caption's ``PTBTokenizer.tokenize``, without its hazards.

    The same jar, class, flags and punctuation list as pycocoevalcap, so the tokens are the
    same; but the input file goes to a temporary folder (pycocoevalcap writes it next to the
    jar, in site-packages), every Unicode line break inside a caption becomes a space (one
    caption is one line: Java could otherwise split a caption in two and shift every later
    one), the line count is checked, and a stalled JVM is killed.
    """
    if not captions:
        return []
    lines = [" ".join(c.split()) for c in captions]
    timeout = PTB_STARTUP_TIMEOUT_S + PTB_PER_CAPTION_TIMEOUT_S * len(lines)
    with tempfile.TemporaryDirectory(prefix="capt-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = [shutil.which("java") or "java", "-cp", str(_ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(src)]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise CaptError(f"PTB tokenizer: could not start Java ({e})") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                proc.kill()
            proc.communicate()
            raise CaptError(f"PTB tokenizer: Java gave no answer within {timeout:.0f} s and was killed") from None
    if proc.returncode != 0:
        tail = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        raise CaptError(f"PTB tokenizer failed in Java (exit {proc.returncode}): "
                        f"{tail[-1] if tail else 'no message'}")
    got = out.decode("utf-8", errors="replace").split("\n")
    while len(got) > len(lines) and got[-1].strip() == "":
        got.pop()
    if len(got) != len(lines):
        raise CaptError(f"PTB tokenizer: {len(lines)} captions in, {len(got)} lines out")
    drop = set(_ptb_module.PUNCTUATIONS)
    return [[w for w in line.rstrip().split(" ") if w and w not in drop] for line in got]


def tokenize_captions(captions: list[str], tokenizer: str = "simple") -> list[list[str]]:
    """Token lists of raw captions, in order: ``simple`` (:func:`capt.text.normalize_caption`) or
    ``ptb`` (coco-caption's PTBTokenizer: one Java run for the whole list, so callers batch)."""
    _check_tokenizer(tokenizer)
    if tokenizer == "ptb":
        return _ptb_tokenize(list(captions))
    return [normalize_caption(c) for c in captions]


# --------------------------------------------------------------------------- inputs


def _check_references(references: dict[int, list[str]]) -> dict[int, list[str]]:
    """The raw reference captions, type-checked, sorted by image id."""
    out = {}
    for image_id in sorted(references, key=sort_key):
        raw = references[image_id]
        if isinstance(raw, str) or not isinstance(raw, (list, tuple)):
            raise CaptError(
                f"the references of image {image_id!r} are a {type(raw).__name__}, "
                "not a list of caption strings"
            )
        for ref in raw:
            if not isinstance(ref, str):
                raise CaptError(
                    f"a reference of image {image_id!r} is a {type(ref).__name__}, not a string"
                )
        out[image_id] = list(raw)
    return out


def _tokenize_all(
    raw_refs: dict[int, list[str]], raw_hyps: dict[int, str], tokenizer: str
) -> tuple[dict[int, list[list[str]]], dict[int, list[str]]]:
    """Every reference and hypothesis tokenised in one batch (one JVM for ``ptb``); references
    that tokenise to nothing are dropped with one warning (an image may be left with none)."""
    flat = [c for refs in raw_refs.values() for c in refs] + [raw_hyps[i] for i in raw_hyps]
    toks = iter(tokenize_captions(flat, tokenizer))
    refs: dict[int, list[list[str]]] = {}
    blank = 0
    for image_id, raw in raw_refs.items():
        kept = []
        for _ in raw:
            t = next(toks)
            if t:
                kept.append(t)
            else:
                blank += 1
        refs[image_id] = kept
    hyps = {image_id: next(toks) for image_id in raw_hyps}
    if blank:
        log.warning("ignored %d blank reference caption(s)", blank)
    return refs, hyps


def _check_inputs(
    references: dict[int, list[str]], hypotheses: dict[int, str], tokenizer: str
) -> tuple[dict[int, list[list[str]]], dict[int, list[str]]]:
    """Validate both dicts and return them tokenised (sorted by image id)."""
    if not isinstance(references, dict) or not isinstance(hypotheses, dict):
        raise CaptError("references and hypotheses must both be dicts keyed by image id")
    ref_ids, hyp_ids = set(references), set(hypotheses)
    if ref_ids != hyp_ids:
        no_hyp = sorted(ref_ids - hyp_ids, key=sort_key)
        no_ref = sorted(hyp_ids - ref_ids, key=sort_key)
        raise CaptError(
            f"references and hypotheses cover different images: {len(no_hyp)} of "
            f"{len(ref_ids)} reference ids have no hypothesis (e.g. {no_hyp[:_EXAMPLES]}), "
            f"{len(no_ref)} of {len(hyp_ids)} hypothesis ids have no references "
            f"(e.g. {no_ref[:_EXAMPLES]})"
        )
    if not ref_ids:
        raise CaptError("no images to score: references and hypotheses are empty")
    raw_refs = _check_references(references)
    for image_id in raw_refs:
        hyp = hypotheses[image_id]
        if not isinstance(hyp, str):
            raise CaptError(
                f"the hypothesis for image {image_id!r} is a {type(hyp).__name__}, "
                "not one caption string"
            )
    refs, hyps = _tokenize_all(raw_refs, {i: hypotheses[i] for i in raw_refs}, tokenizer)
    for image_id, toks in refs.items():
        if not toks:
            what = "no references" if not raw_refs[image_id] else "only blank references"
            raise CaptError(f"image {image_id!r} has {what}; every scored image needs one")
    return refs, hyps


# --------------------------------------------------------------------------- BLEU


def _bleu(refs: list[list[list[str]]], hyps: list[list[str]], names=tuple(BLEU_WEIGHTS),
          quiet: bool = False) -> dict[str, float]:
    """nltk corpus BLEU (``names`` of BLEU_WEIGHTS), no smoothing; nltk's zero-count warnings
    become one log line (none when ``quiet``: the ceiling's folds would repeat it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # One call for every order: nltk counts the n-grams once, up to the longest weights' order.
        values = corpus_bleu(refs, hyps, weights=[BLEU_WEIGHTS[name] for name in names])
    out = {name: float(v) for name, v in zip(names, values if isinstance(values, list) else [values])}
    if caught and not quiet:
        log.info("BLEU without smoothing: some n-gram order has no match (%s)",
                 str(caught[0].message).strip().splitlines()[0])
    return out


def _coco_bleu(gts: dict[int, list[str]], res: dict[int, list[str]]) -> dict[str, float]:
    """coco-caption's corpus BLEU-1..4 (pycocoevalcap ``Bleu(4)``, as COCO papers report it) on
    space-joined tokens, as ``bleu1_coco``..``bleu4_coco``."""
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu{n}_coco": float(s) for n, s in zip((1, 2, 3, 4), scores)}


# --------------------------------------------------------------------------- METEOR


def _meteor_dir() -> Path:
    return Path(os.path.dirname(os.path.abspath(_meteor_module.__file__)))


def meteor_available() -> str | None:
    """None when METEOR can run here, otherwise the reason it cannot."""
    why = _java_missing()
    if why is not None:
        return why
    jar = _meteor_dir() / _meteor_module.METEOR_JAR
    if not jar.is_file():
        return f"the METEOR jar is missing from pycocoevalcap ({jar})"
    para = _meteor_dir() / "data" / "paraphrase-en.gz"
    if not para.is_file():
        return f"METEOR's paraphrase table is missing from pycocoevalcap ({para})"
    return None


class _SafeMeteor(Meteor):
    """pycocoevalcap's Meteor with a process that cannot hang or leak.

    The parent's ``__init__`` pipes stderr without ever reading it (a chatty JVM blocks), and
    its ``__del__`` takes a lock that ``compute_score`` never releases when the JVM dies
    (a hang at garbage collection). Here stderr goes to a temporary file, ``close`` kills and
    reaps the process without the lock, and a watchdog kills a stalled process so that the
    parent's blocking reads see end-of-file.
    """

    def __init__(self, java: str) -> None:
        self.meteor_p = None
        self._stderr = tempfile.TemporaryFile()
        self.meteor_cmd = [java, "-jar", "-Xmx2G", _meteor_module.METEOR_JAR,
                           "-", "-", "-stdio", "-l", "en", "-norm"]
        self.lock = threading.Lock()
        try:
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd, cwd=str(_meteor_dir()), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr,
                start_new_session=True,  # its own process group: a `java` wrapper dies too
            )
        except OSError as e:
            self.close()
            raise CaptError(f"METEOR: could not start Java ({e})") from None

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines()]
        except (OSError, ValueError):
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1] if lines else ""

    def kill(self) -> None:
        """SIGKILL the JVM's process group (idempotent, never blocks).

        Only while the leader is not yet reaped (``returncode is None``): its pid then still
        names our group and nobody else's.
        """
        p = getattr(self, "meteor_p", None)
        if p is None or p.returncode is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except (OSError, AttributeError):  # pragma: no cover - no process groups here
            p.kill()

    def close(self) -> None:
        """Kill and reap the JVM, close its pipes and the stderr file; safe to call twice."""
        p = getattr(self, "meteor_p", None)
        if p is not None:
            for stream in (p.stdin, p.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            self.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL did not take
                log.warning("METEOR: Java process %d did not exit after SIGKILL", p.pid)
            self.meteor_p = None
        err = getattr(self, "_stderr", None)
        if err is not None and not err.closed:
            err.close()

    def __del__(self) -> None:
        self.close()


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    java = shutil.which("java")
    if java is None:  # checked by the caller; kept for a direct call
        raise CaptError("METEOR needs Java, and there is no `java` on PATH")
    timeout = METEOR_STARTUP_TIMEOUT_S + METEOR_PER_IMAGE_TIMEOUT_S * len(gts)
    scorer = _SafeMeteor(java)
    stalled = threading.Event()

    def _kill() -> None:
        stalled.set()
        scorer.kill()

    watchdog = threading.Timer(timeout, _kill)
    watchdog.daemon = True
    t0 = time.perf_counter()
    watchdog.start()
    try:
        score, _ = scorer.compute_score(gts, res)
        score = float(score)
    except (ValueError, OSError, AssertionError) as e:
        if stalled.is_set():
            raise CaptError(f"METEOR: Java gave no answer within {timeout:.0f} s and was killed") from None
        why = scorer.stderr_tail() or f"{type(e).__name__}: {e}"
        raise CaptError(f"METEOR failed in Java: {why}") from None
    finally:
        watchdog.cancel()
        scorer.close()
    if not math.isfinite(score):
        raise CaptError(f"METEOR returned a non-finite score ({score})")
    log.info("METEOR on %d images took %.1f s", len(gts), time.perf_counter() - t0)
    return score


# --------------------------------------------------------------------------- public API


def score_captions(
    references: dict[int, list[str]],
    hypotheses: dict[int, str],
    *,
    meteor: bool | None = None,
    tokenizer: str = "simple",
    human_ceiling: bool = False,
) -> dict[str, float]:
    """Score one caption per image against that image's references (:func:`score_captions_per_image`
    without the per-image statistics)."""
    return score_captions_per_image(references, hypotheses, meteor=meteor, tokenizer=tokenizer,
                                    human_ceiling=human_ceiling)[0]


def score_captions_per_image(
    references: dict[int, list[str]],
    hypotheses: dict[int, str],
    *,
    meteor: bool | None = None,
    tokenizer: str = "simple",
    human_ceiling: bool = False,
) -> tuple[dict[str, float], ImageScores]:
    """Score one caption per image against that image's references, and keep what the bootstrap
    needs per image (capt.eval.per_image.ImageScores: BLEU statistics and CIDEr-D, from the same
    tokens, so its ``bleu4`` and ``cider_mean`` are the scores'; one tokenisation, one CIDEr).

    ``references``: image id -> raw reference captions; ``hypotheses``: image id -> one raw
    caption; the two must cover exactly the same ids. Returns ``bleu1``..``bleu4`` (nltk),
    ``bleu1_coco``..``bleu4_coco`` (coco-caption), ``cider``, ``rouge_l`` and, when METEOR runs,
    ``meteor``. ``meteor=None`` runs METEOR where Java is present and otherwise logs why it is
    skipped; ``True`` requires it (CaptError without Java); ``False`` skips it. ``tokenizer``
    (``simple`` | ``ptb``, see the module docstring) tokenises every caption for every metric.
    ``human_ceiling=True`` adds ``ceiling_bleu4``, ``bleu4_loo`` and ``ceiling_folds``
    (:func:`leave_one_out_bleu4` on the same tokens; CaptError when no image has two references).
    """
    if meteor not in (None, True, False):
        raise CaptError(f"meteor must be None (auto), True or False, not {meteor!r}")
    _check_tokenizer(tokenizer)
    refs, hyps = _check_inputs(references, hypotheses, tokenizer)
    ids = list(refs)

    scores = _bleu([refs[i] for i in ids], [hyps[i] for i in ids])
    gts = {i: [" ".join(t) for t in refs[i]] for i in ids}
    res = {i: [" ".join(hyps[i])] for i in ids}
    scores.update(_coco_bleu(gts, res))
    cider, cider_per_image = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    scores["cider"] = float(cider)
    scores["rouge_l"] = float(rouge)

    if meteor is False:
        log.info("METEOR skipped: turned off (meteor=False)")
    else:
        why_not = meteor_available()
        if why_not is None:
            scores["meteor"] = _meteor(gts, res)
        elif meteor is True:
            raise CaptError(f"METEOR was required but cannot run: {why_not}")
        else:
            log.warning("METEOR skipped: %s", why_not)

    if human_ceiling:
        loo = _leave_one_out(refs, hyps)
        scores.update(ceiling_bleu4=loo.ceiling_bleu4, bleu4_loo=loo.bleu4_loo, ceiling_folds=loo.folds)
    per_image = ImageScores(tuple(ids), bleu_statistics([refs[i] for i in ids], [hyps[i] for i in ids]),
                            np.asarray(cider_per_image, np.float64).reshape(len(ids)), tokenizer)
    return scores, per_image


def image_scores(references: dict[int, list[str]], hypotheses: dict[int, str], *,
                 tokenizer: str = "simple") -> ImageScores:
    """Per-image BLEU statistics and CIDEr-D of one caption per image: the same inputs, checks,
    tokens and sort order as :func:`score_captions` (so ``.bleu4`` and
    ``.cider_mean`` are its ``bleu4`` and ``cider``). CIDEr-D per image from pycocoevalcap, its
    idf from the references of every image given."""
    return score_captions_per_image(references, hypotheses, meteor=False, tokenizer=tokenizer)[1]


@dataclass(frozen=True)
class LeaveOneOut:
    """Humans and a model on the same leave-one-out folds (see :func:`leave_one_out_bleu4`).

    ``ceiling_by_fold[k]`` / ``model_by_fold[k]``: nltk corpus BLEU-4 of fold k's human captions /
    of the model's captions; ``ceiling_bleu4`` and ``bleu4_loo`` their means over the folds
    (``model_by_fold`` empty and ``bleu4_loo`` None without hypotheses). ``images``: the images
    scored (two or more references), ``skipped``: those left out.
    """

    folds: int
    images: int
    skipped: int
    ceiling_by_fold: tuple[float, ...]
    model_by_fold: tuple[float, ...]

    @property
    def ceiling_bleu4(self) -> float:
        return float(np.mean(self.ceiling_by_fold))

    @property
    def bleu4_loo(self) -> float | None:
        return float(np.mean(self.model_by_fold)) if self.model_by_fold else None


def _leave_one_out(refs: dict[int, list[list[str]]], hyps: dict[int, list[str]] | None = None) -> LeaveOneOut:
    """The folds on token lists (see :func:`leave_one_out_bleu4`)."""
    scored = [i for i, toks in refs.items() if len(toks) >= 2]
    skipped = len(refs) - len(scored)
    if not scored:
        raise CaptError(
            f"no image has two or more references ({len(refs)} images): "
            "the human ceiling needs one to hold out and one to score it against"
        )
    if skipped:
        log.info("ceiling BLEU-4: skipped %d image(s) with fewer than two references", skipped)
    folds = min(len(refs[i]) for i in scored)
    longer = sum(len(refs[i]) > folds for i in scored)
    if longer:
        log.info("ceiling BLEU-4: %d fold(s); %d image(s) with more references keep the extra ones in "
                 "every fold's references", folds, longer)
    ceiling, model = [], []
    for k in range(folds):
        fold_refs = [refs[i][:k] + refs[i][k + 1:] for i in scored]
        ceiling.append(_bleu(fold_refs, [refs[i][k] for i in scored], names=("bleu4",), quiet=True)["bleu4"])
        if hyps is not None:
            model.append(_bleu(fold_refs, [hyps[i] for i in scored], names=("bleu4",), quiet=True)["bleu4"])
    return LeaveOneOut(folds, len(scored), skipped, tuple(ceiling), tuple(model))


def leave_one_out_bleu4(
    references: dict[int, list[str]],
    hypotheses: dict[int, str] | None = None,
    *,
    tokenizer: str = "simple",
) -> LeaveOneOut:
    """The human ceiling and the model's BLEU-4 on the same references.

    Scoring one held-out human reference against the other n-1 while the model is scored
    against all n overstates the gap to humans (fewer references, lower BLEU), and a random
    draw of the held-out one adds noise. Here fold k takes reference k of each image (in the
    given order, blank references dropped) as the human caption and the image's other
    references as the references of both the human and the model's caption; nltk corpus
    BLEU-4 per fold, averaged over the K folds. K is the fewest references any scored image
    has (COCO: 5); an image with more keeps its references after the K-th in every fold's
    references; images with fewer than two are left out of both. Same tokens and BLEU as
    :func:`score_captions` (``tokenizer``).
    """
    _check_tokenizer(tokenizer)
    if hypotheses is not None:
        return _leave_one_out(*_check_inputs(references, hypotheses, tokenizer))
    if not isinstance(references, dict):
        raise CaptError("references must be a dict keyed by image id")
    refs, _ = _tokenize_all(_check_references(references), {}, tokenizer)
    return _leave_one_out(refs)


def ceiling_bleu4(references: dict[int, list[str]], *, tokenizer: str = "simple") -> float:
    """Human-agreement BLEU-4: the mean over the leave-one-out folds of each fold's human
    captions scored against the other references (:func:`leave_one_out_bleu4`). Deterministic:
    no reference is drawn at random."""
    return leave_one_out_bleu4(references, tokenizer=tokenizer).ceiling_bleu4


def write_coco_results(hypotheses: dict[int, str], path: Path) -> None:
    """Write ``[{"image_id": int, "caption": str}, ...]`` sorted by id, atomically."""
    path = Path(path)
    rows = []
    for image_id in sorted(hypotheses, key=sort_key):
        cap = hypotheses[image_id]
        if not isinstance(cap, str):
            raise CaptError(f"the caption for image {image_id!r} is a {type(cap).__name__}, not a string")
        try:
            rows.append({"image_id": int(image_id), "caption": cap})
        except (TypeError, ValueError):
            raise CaptError(f"COCO results need integer image ids, got {image_id!r}") from None
    write_atomic(path, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")


def sentence_bleu4(references: list[str], hypothesis: str) -> float:
    """BLEU-4 of one caption against its image's references, for labelling figures: nltk's
    sentence BLEU with Chen & Cherry's smoothing 1 (one caption rarely has every 4-gram order
    matched, and unsmoothed it would read 0). Tables use ``score_captions``' corpus BLEU."""
    refs = [normalize_caption(r) for r in references]
    return float(sentence_bleu(refs, normalize_caption(hypothesis), smoothing_function=SmoothingFunction().method1))
