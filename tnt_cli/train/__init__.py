"""TNT fine-tuning: config, set-up, the run's plan, optimizer and schedule, checkpoints, DDP, the training loop,
where the run writes and how it ends.

Import `tnt_cli.train.trainer` for the loop (it imports torch); `tnt_cli.train.config` is torch-free.
"""
