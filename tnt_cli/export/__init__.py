"""Run pruned models outside PyTorch: ONNX export with static token counts, verified in onnxruntime."""

from tnt_cli.export.onnx import ExportReport, export_onnx, graph_tokens_per_block

__all__ = ["ExportReport", "export_onnx", "graph_tokens_per_block"]
