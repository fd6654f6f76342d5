"""capt: a reproducible image-captioning research pipeline.

The library never reads params.yaml and never imports typer or dvc: the
Typer commands in ``stages/`` do that wiring and pass typed configs in.
"""

__version__ = "0.1.0"
