"""Clean-image data sets: loading by reference, and the clean train/test split."""

from .datasets import load_dataset, parse_dataset_ref
from .split import Split, split_dataset

__all__ = ["load_dataset", "parse_dataset_ref", "Split", "split_dataset"]
