"""The Show-Attend-Tell captioners: ``encoder`` (a torchvision ResNet trunk pooled to a grid of
cells), ``decoder`` (Xu et al. 2015: an LSTM with soft attention over those cells),
``beam_search`` (batched beam search returning every word's attention map), ``gradcam`` (Grad-CAM
of each word on the encoder's last block) and ``saved`` (a trained captioner as one file of
configs, words and state dicts) and ``checkpoint`` (state-dict files written atomically, read with
``weights_only=True``: what every trained model and training checkpoint is)."""
