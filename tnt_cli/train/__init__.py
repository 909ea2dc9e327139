"""TNT fine-tuning: config, optimizer and schedule, checkpoints, DDP, the training loop.

Import `tnt_cli.train.trainer` for the loop (it imports torch); `tnt_cli.train.config` is torch-free.
"""
