"""See which patches a pruned ViT keeps: per-stage masks and relevance maps, drawn over the input image."""

from tnt_cli.viz.core import trace_images
from tnt_cli.viz.files import visualize, visualize_files
from tnt_cli.viz.images import read_image
from tnt_cli.viz.result import ImageResult, StageView

__all__ = ["ImageResult", "StageView", "read_image", "trace_images", "visualize", "visualize_files"]
