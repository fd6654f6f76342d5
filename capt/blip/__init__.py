"""BLIP through transformers: ``model`` (the pretrained captioner or a small one from a config,
captions, and its words with WordPiece pieces merged), ``gradcam`` (Grad-CAM on a cross-attention
layer for each word), ``faithfulness`` (its words' probabilities on perturbed images, for the
deletion and insertion curves) and ``train`` (fine-tuning with the shared loop on the study's captions)."""
