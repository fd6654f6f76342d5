"""benchmarks/project_coco.py's projection of a stage that writes files for both test sets."""

from __future__ import annotations

import importlib.util

import pytest

from tests.repo_copy import REPO


@pytest.fixture(scope="module")
def project_coco():
    spec = importlib.util.spec_from_file_location("project_coco", REPO / "benchmarks/project_coco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_output_file_scales_by_the_test_set_it_names(project_coco):
    assert project_coco.dataset_of("results/captions/teacher-shapes-shift.json", ["shapes", "shapes-shift"]) == \
        "shapes-shift"
    assert project_coco.dataset_of("results/captions/teacher-shapes.json", ["shapes", "shapes-shift"]) == "shapes"
    assert project_coco.dataset_of("results/baselines/summary.json", ["coco", "flickr8k"]) is None
    images = {"coco": {"train": 6, "val": 2, "test": 3}, "flickr8k": {"train": 2, "val": 1, "test": 2}}
    files = {"results/captions/teacher-coco.json": 300, "results/captions/teacher-flickr8k.json": 200,
             "results/baselines/summary.json": 50, "models/teacher.pt": 10_000}
    per_image, projected, scales = project_coco.per_test_set_bytes(files, images)
    assert per_image == pytest.approx(500 / 5)
    assert projected == pytest.approx(50 + 300 / 3 * 5_000 + 200 / 2 * 1_000)      # weights left to the caller
    assert scales == "test images of coco: 3 -> 5,000, flickr8k: 2 -> 1,000"


def test_blips_test_cache_scales_with_the_test_images_alone(project_coco):
    """prepare@coco's splits lie on one line of bytes over images (10 a image, 100 overhead each);
    test_blip.h5, the test images again at 384 px (20 a image, the same overhead), scales by the
    test images, 3 -> 5,000, its overhead counted once."""
    images = {"train": 6, "val": 2, "test": 3}
    real = {"train": 113_287, "val": 5_000, "test": 5_000}
    files = {"data/prepared/coco/train.h5": 160, "data/prepared/coco/val.h5": 120, "data/prepared/coco/test.h5": 130,
             "data/prepared/coco/test_blip.h5": 160, "data/prepared/coco/word_map.json": 11}
    per_image, projected = project_coco.scaled_bytes(files, images, real, "all")
    assert per_image == pytest.approx(10)
    assert projected == pytest.approx(3 * 100 + 10 * 123_287 + 11 * 123_287 / 11 + 100 + 20 * 5_000)
