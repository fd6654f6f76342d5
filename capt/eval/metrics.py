"""Caption metrics: corpus BLEU-1..4 (nltk), CIDEr-D, ROUGE-L and METEOR (coco-caption).

Every caption, reference or hypothesis, is tokenised by the project's one normaliser,
:func:`capt.text.normalize_caption`; no other tokeniser (nltk's ``word_tokenize``,
coco-caption's ``PTBTokenizer``, which needs Java and the Stanford jar) is used.

- ``bleu1``..``bleu4``: nltk ``corpus_bleu`` on token lists, no smoothing, uniform weights,
  every reference of each image (the seed study's metric; equal to coco-caption BLEU when
  every hypothesis has at least 4 tokens).
- ``cider``: CIDEr-D from pycocoevalcap. Its idf comes from the references of the scored set,
  so on a single image it is 0 by construction.
- ``rouge_l``: ROUGE-L from pycocoevalcap.
- ``meteor``: METEOR 1.5 from pycocoevalcap, a bundled jar run through Java. Where Java (or the
  jar and its paraphrase table) is missing it is skipped with a log line, unless it was asked
  for. The Java process is always killed and reaped, and a watchdog kills it if it stalls.
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
from pathlib import Path

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from capt.errors import CaptError
from capt.text import normalize_caption

__all__ = ["score_captions", "ceiling_bleu4", "write_coco_results", "meteor_available"]

log = logging.getLogger(__name__)

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    f"bleu{n}": tuple(1.0 / n for _ in range(n)) for n in (1, 2, 3, 4)
}

# METEOR: Java start-up (loading the paraphrase table) takes ~15 s on a busy 2-core machine;
# scoring takes about a millisecond per image. The watchdog allows far more than that.
METEOR_STARTUP_TIMEOUT_S = 300.0
METEOR_PER_IMAGE_TIMEOUT_S = 0.05

_EXAMPLES = 3


# --------------------------------------------------------------------------- inputs


def _check_inputs(
    references: dict[int, list[str]], hypotheses: dict[int, str]
) -> tuple[dict[int, list[list[str]]], dict[int, list[str]]]:
    """Validate both dicts and return them normalised (sorted by image id)."""
    if not isinstance(references, dict) or not isinstance(hypotheses, dict):
        raise CaptError("references and hypotheses must both be dicts keyed by image id")
    ref_ids, hyp_ids = set(references), set(hypotheses)
    if ref_ids != hyp_ids:
        no_hyp = sorted(ref_ids - hyp_ids, key=_sort_key)
        no_ref = sorted(hyp_ids - ref_ids, key=_sort_key)
        raise CaptError(
            f"references and hypotheses cover different images: {len(no_hyp)} of "
            f"{len(ref_ids)} reference ids have no hypothesis (e.g. {no_hyp[:_EXAMPLES]}), "
            f"{len(no_ref)} of {len(hyp_ids)} hypothesis ids have no references "
            f"(e.g. {no_ref[:_EXAMPLES]})"
        )
    if not ref_ids:
        raise CaptError("no images to score: references and hypotheses are empty")
    refs = _normalise_references(references, require=1)
    hyps: dict[int, list[str]] = {}
    for image_id in refs:
        hyp = hypotheses[image_id]
        if not isinstance(hyp, str):
            raise CaptError(
                f"the hypothesis for image {image_id!r} is a {type(hyp).__name__}, "
                "not one caption string"
            )
        hyps[image_id] = normalize_caption(hyp)
    return refs, hyps


def _normalise_references(
    references: dict[int, list[str]], *, require: int
) -> dict[int, list[list[str]]]:
    """Token lists per image, sorted by id; blank references are dropped.

    An image left with fewer than ``require`` references raises CaptError when ``require`` is
    1 (it cannot be scored) and is simply left out otherwise (the caller skips it).
    """
    out: dict[int, list[list[str]]] = {}
    blank = 0
    for image_id in sorted(references, key=_sort_key):
        raw = references[image_id]
        if isinstance(raw, str) or not isinstance(raw, (list, tuple)):
            raise CaptError(
                f"the references of image {image_id!r} are a {type(raw).__name__}, "
                "not a list of caption strings"
            )
        toks = []
        for ref in raw:
            if not isinstance(ref, str):
                raise CaptError(
                    f"a reference of image {image_id!r} is a {type(ref).__name__}, not a string"
                )
            t = normalize_caption(ref)
            if t:
                toks.append(t)
            else:
                blank += 1
        if len(toks) < require:
            if require == 1:
                what = "no references" if not raw else "only blank references"
                raise CaptError(f"image {image_id!r} has {what}; every scored image needs one")
            continue
        out[image_id] = toks
    if blank:
        log.warning("ignored %d blank reference caption(s)", blank)
    return out


def _sort_key(image_id):
    return (0, image_id, "") if isinstance(image_id, (int, np.integer)) else (1, 0, repr(image_id))


# --------------------------------------------------------------------------- BLEU


def _bleu(refs: list[list[list[str]]], hyps: list[list[str]]) -> dict[str, float]:
    """nltk corpus BLEU-1..4, no smoothing; nltk's zero-count warnings become one log line."""
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, weights in BLEU_WEIGHTS.items():
            out[name] = float(corpus_bleu(refs, hyps, weights=weights))
    if caught:
        log.info("BLEU without smoothing: some n-gram order has no match (%s)",
                 str(caught[0].message).strip().splitlines()[0])
    return out


# --------------------------------------------------------------------------- METEOR


def _meteor_dir() -> Path:
    return Path(os.path.dirname(os.path.abspath(_meteor_module.__file__)))


def meteor_available() -> str | None:
    """None when METEOR can run here, otherwise the reason it cannot."""
    if shutil.which("java") is None:
        return "Java is not installed (no `java` on PATH)"
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
) -> dict[str, float]:
    """Score one caption per image against that image's references.

    ``references``: image id -> raw reference captions; ``hypotheses``: image id -> one raw
    caption; the two must cover exactly the same ids. Returns ``bleu1``..``bleu4``, ``cider``,
    ``rouge_l`` and, when METEOR runs, ``meteor``. ``meteor=None`` runs METEOR where Java is
    present and otherwise logs why it is skipped; ``True`` requires it (CaptError without
    Java); ``False`` skips it.
    """
    if meteor not in (None, True, False):
        raise CaptError(f"meteor must be None (auto), True or False, not {meteor!r}")
    refs, hyps = _check_inputs(references, hypotheses)
    ids = list(refs)

    scores = _bleu([refs[i] for i in ids], [hyps[i] for i in ids])

    gts = {i: [" ".join(t) for t in refs[i]] for i in ids}
    res = {i: [" ".join(hyps[i])] for i in ids}
    cider, _ = Cider().compute_score(gts, res)
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
    return scores


def _entropy(x: int) -> int:
    """A non-negative int for ``np.random.default_rng`` (negative ids map deterministically)."""
    return int(x) & 0xFFFF_FFFF_FFFF_FFFF


def ceiling_bleu4(references: dict[int, list[str]], seed: int = 0) -> float:
    """Human-agreement BLEU-4: one held-out reference per image scored against the others.

    The held-out reference of each image is drawn by ``np.random.default_rng([seed, id])``,
    so it does not depend on which other images are in the set. Images with fewer than two
    (non-blank) references are skipped. Same normaliser and BLEU as :func:`score_captions`.
    """
    if not isinstance(references, dict):
        raise CaptError("references must be a dict keyed by image id")
    refs = _normalise_references(references, require=2)
    if not refs:
        raise CaptError(
            f"no image has two or more references ({len(references)} images): "
            "the human ceiling needs one to hold out and one to score it against"
        )
    hyp_list, ref_list = [], []
    for image_id, toks in refs.items():
        held = int(np.random.default_rng([_entropy(seed), _entropy(image_id)]).integers(len(toks)))
        hyp_list.append(toks[held])
        ref_list.append(toks[:held] + toks[held + 1:])
    skipped = len(references) - len(refs)
    if skipped:
        log.info("ceiling BLEU-4: skipped %d image(s) with fewer than two references", skipped)
    return _bleu(ref_list, hyp_list)["bleu4"]


def write_coco_results(hypotheses: dict[int, str], path: Path) -> None:
    """Write ``[{"image_id": int, "caption": str}, ...]`` sorted by id, atomically."""
    path = Path(path)
    rows = []
    for image_id in sorted(hypotheses, key=_sort_key):
        cap = hypotheses[image_id]
        if not isinstance(cap, str):
            raise CaptError(f"the caption for image {image_id!r} is a {type(cap).__name__}, not a string")
        try:
            rows.append({"image_id": int(image_id), "caption": cap})
        except (TypeError, ValueError):
            raise CaptError(f"COCO results need integer image ids, got {image_id!r}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sentence_bleu4(references: list[str], hypothesis: str) -> float:
    """BLEU-4 of one caption against its image's references, for labelling figures: nltk's
    sentence BLEU with Chen & Cherry's smoothing 1 (one caption rarely has every 4-gram order
    matched, and unsmoothed it would read 0). Tables use ``score_captions``' corpus BLEU."""
    refs = [normalize_caption(r) for r in references]
    return float(sentence_bleu(refs, normalize_caption(hypothesis), smoothing_function=SmoothingFunction().method1))
