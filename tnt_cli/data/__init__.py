"""Datasets and loaders for tnt: ImageFolder roots, Fashion-MNIST and its cluttered and textured variants.

Public API (used by finetune, calibrate, evaluate, visualize):
- `build_loader(spec, split, vit, *, batch_size, train=False, workers=0, limit=None, seed=0, **aug)`
- `build_dataset(spec, split, transform=None, *, seed=0)`, `dataset_classes(spec)`
- `eval_transform(vit)`, `train_transform(vit, ...)`, `resolve_config(vit) -> DataConfig`
"""

from tnt_cli.data.config import DataConfig, resolve_config
from tnt_cli.data.datasets import build_dataset, canonical_spec, dataset_classes
from tnt_cli.data.folder import BadImageError
from tnt_cli.data.loader import build_loader, subset_indices
from tnt_cli.data.sampler import EpochSampler
from tnt_cli.data.transforms import TensorBatchTransform, eval_transform, train_transform

__all__ = [
    "BadImageError",
    "DataConfig",
    "EpochSampler",
    "TensorBatchTransform",
    "build_dataset",
    "build_loader",
    "canonical_spec",
    "dataset_classes",
    "eval_transform",
    "resolve_config",
    "subset_indices",
    "train_transform",
]
