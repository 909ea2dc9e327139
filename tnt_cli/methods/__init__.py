"""The baselines' own forwards, written from their papers: ToMe, EViT and the random scorer.

`tnt_cli.eval.baselines` configures them (`apply_method`) at TNT's compute; these modules only run them and
count their MACs. `blocks` holds what they share: timm's block split open at the attention / MLP boundary.
"""
