"""Datasets: validated transitions, their sources and writers, transforms and replay."""

from valorl.data.dataset import Batch, Dataset, DatasetInfo, sample_batch
from valorl.data.sources import load_dataset, make_env, minari_root, save_minari, save_npz
from valorl.data.transforms import Normalizer, fit_normalizer

__all__ = [
    "Batch",
    "Dataset",
    "DatasetInfo",
    "Normalizer",
    "fit_normalizer",
    "load_dataset",
    "make_env",
    "minari_root",
    "sample_batch",
    "save_minari",
    "save_npz",
]
