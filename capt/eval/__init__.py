"""Scoring: ``evaluation`` (one evaluation of one captioner on one test set: every score below of
its captions), ``metrics`` (BLEU as nltk and coco-caption compute it, CIDEr-D, ROUGE-L, METEOR, on
the simple or the PTB tokenizer, and the leave-one-out human ceiling), ``per_image`` (the per-image
statistics every corpus score is recomputed from), ``bootstrap`` (95% intervals over test images
from those statistics, and paired comparisons of two models), ``compare`` and ``seeds`` (models
compared on the same images, and over training seeds), ``content`` (what a caption states against
the truth: objects, attributes, relations; coverage), ``baselines`` (the constant caption and the
nearest neighbour every model must beat), ``grounding`` (CHAIR by Rohrbach et al.'s rules, with
``chair_synonyms.txt``, and the pointing game and mass in mask of each word's map), ``faithfulness``
(does a word's map explain the model: deletion and insertion curves, the model-randomisation sanity
check), ``clipscore`` (CLIP-S and RefCLIP-S), ``difference`` (why model A beats model B: the images
and content words where they differ), ``maps`` (every word's map on disk, named by technique), ``sweep`` (the KD sweeps), ``study`` (the study's
comparisons: every student against the baselines, fine-tuning twins, seeds) and ``table`` (the
study's table as JSON and Markdown, and the CPU timings)."""
