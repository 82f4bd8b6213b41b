"""Data loading: folder datasets, the synthetic default dataset and the training sampler (NumPy + OpenCV)."""

from jmedseg.data.dataset import (
    IMAGE_EXTENSIONS,
    PREPROCESS_CHOICES,
    Sample,
    SegDataset,
    build_datasets,
    load_image,
    load_split,
    read_image_file,
    split_train_val,
)
from jmedseg.data.sampler import TrainSampler
from jmedseg.data.synthetic import generate_synthetic, synthetic_root

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESS_CHOICES",
    "Sample",
    "SegDataset",
    "TrainSampler",
    "build_datasets",
    "generate_synthetic",
    "load_image",
    "load_split",
    "read_image_file",
    "split_train_val",
    "synthetic_root",
]
