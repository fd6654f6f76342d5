"""Scoring: ``metrics`` (BLEU as nltk and coco-caption compute it, CIDEr-D, ROUGE-L, METEOR, on
the simple or the PTB tokenizer, and the leave-one-out human ceiling), ``bootstrap`` (95% intervals
over test images from per-image statistics, and paired comparisons of two models), ``grounding`` (CHAIR by
Rohrbach et al.'s rules, with ``chair_synonyms.txt``, and the pointing game and mass in mask of
each word's map), ``maps`` (every word's map on disk, named by technique) and ``table`` (the
study's table as JSON and Markdown)."""
