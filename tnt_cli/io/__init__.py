"""Model sources and the files tnt reads and writes, one module per role (as timm splits `_factory` / `_builder`
/ `_hub`):

- `sources`: resolve a MODEL string (timm name, hf-hub:, directory, .safetensors, .pth) to a loaded model;
- `builder`: build a TNT model from parts (backbone, state dict, heads) and record where it came from;
- `model_dir`: the tnt model directory (write, read, update its card); `card` / `card_results`: its README.md;
- `labels`: a model's class names; `arch` / `weights`: checkpoint layouts and safe tensor files;
- `hub` / `push` / `offline`: the Hugging Face Hub; `outdir` / `atomic` / `jsonio`: safe output files.
"""
