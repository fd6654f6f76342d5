"""Datasets: downloads, the shapes world, readers, vocabulary, HDF5 caches, torch Datasets."""
