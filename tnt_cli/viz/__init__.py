"""See which patches a pruned ViT keeps: per-stage masks and relevance maps, drawn over the input image."""

from tnt_cli.viz.core import ImageResult, StageView, trace_images, visualize_files
from tnt_cli.viz.images import read_image

__all__ = ["ImageResult", "StageView", "read_image", "trace_images", "visualize_files"]
