"""Stage evaluate_replicate@<variant>-<seed>: a replicate student's scores on each test split
named on the command line (dvc.yaml: both of ``study.test_sets``), in one process.

Params: ``evaluate`` (beam_size, max_len, batch_size, tokenizer, device, bootstrap_resamples,
bootstrap_seed), as every evaluation. Reads ``models/replicates/<variant>-s<seed>.pt`` (stage
replicate@<variant>-<seed>) and ``data/prepared/<dataset>/test.h5``; writes
``metrics/replicates/<variant>-s<seed>-<dataset>.json`` (the same scores as evaluate@<model>: BLEU-1..4,
coco-caption BLEU, CIDEr-D, ROUGE-L, the leave-one-out pair, the 95% bootstrap intervals) and
``results/scores/replicates/<variant>-s<seed>-<dataset>.json`` and
``results/content/replicates/<variant>-s<seed>-<dataset>.json`` (where ``data/raw/<dataset>`` has
instances: the content metric's per-image counts, capt.eval.content), the per-image statistics
from which the report compares the variants over seeds (capt.eval.seeds). A replicate answers "how
much does another seed change the score?": it draws no maps (no Grad-CAM, grounding or CHAIR),
which the study's own students (evaluate@<model>) have. METEOR is not computed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from torch.utils.data import DataLoader
from tqdm import tqdm

from capt.data.cache import read_references
from capt.data.dataset import CaptionDataset
from capt.errors import CaptError
from capt.eval.bootstrap import confidence_intervals
from capt.eval.metrics import ptb_tokenizer_available, score_captions_per_image
from capt.models.saved import Captioner, load_captioner
from capt.train.distributed import resolve_device
from stages._common import make_config, read_params, stage_main, write_json
from stages.evaluate import EvaluateConfig, caption_content, content_cells, test_instances

log = logging.getLogger("stages.evaluate_replicate")


@stage_main
def main(variant: str, seed: int, datasets: list[str]) -> None:
    cfg = make_config(EvaluateConfig, read_params("evaluate"), "evaluate")
    if cfg.tokenizer == "ptb" and (why_not := ptb_tokenizer_available()) is not None:
        raise CaptError(f"evaluate.tokenizer is ptb (coco-caption's PTBTokenizer), which cannot run: {why_not}")
    name = f"{variant}-s{seed}"
    captioner = load_captioner(Path("models/replicates") / f"{name}.pt").to(resolve_device(cfg.device))
    for dataset in datasets:
        evaluate_replicate_on(captioner, name, dataset, cfg)


def evaluate_replicate_on(captioner: Captioner, name: str, dataset: str, cfg: EvaluateConfig) -> None:
    """Caption ``dataset``'s test split with the replicate ``name`` and write its scores."""
    test_h5 = Path("data/prepared") / dataset / "test.h5"
    hypotheses = {}
    for batch in tqdm(DataLoader(CaptionDataset(test_h5), batch_size=cfg.batch_size), desc=f"{name}: caption",
                      unit="batch"):
        for image_id, d in zip(batch["image_id"].tolist(),
                               captioner.caption(batch["image"], beam_size=cfg.beam_size, max_len=cfg.max_len)):
            hypotheses[image_id] = captioner.words(d)
    scores, per_image = score_captions_per_image(read_references(test_h5), hypotheses, tokenizer=cfg.tokenizer,
                                                 human_ceiling=True, meteor=False)
    scores["images"] = len(hypotheses)
    scores.update(confidence_intervals(per_image, cfg.bootstrap_resamples, cfg.bootstrap_seed))
    content = caption_content(hypotheses, test_instances(dataset, hypotheses))
    scores.update(content_cells(content, cfg))
    write_json(Path("metrics/replicates") / f"{name}-{dataset}.json", scores)
    per_image.write(Path("results/scores/replicates") / f"{name}-{dataset}.json", name, dataset)
    write_json(Path("results/content/replicates") / f"{name}-{dataset}.json",
               {"model": name, "dataset": dataset, **{kind: c.to_json() for kind, c in content.items()}})
    log.info("%s on %s: BLEU-4 %.4f [%.4f, %.4f], CIDEr-D %.4f", name, dataset, scores["bleu4"],
             *scores["bleu4_ci95"], scores["cider"])


if __name__ == "__main__":
    typer.run(main)
