"""Device hygiene, proven without a GPU: every forward path runs with model and inputs on PyTorch's `meta` device.

A tensor made on the CPU by mistake inside a forward (`torch.zeros(n)` without `device=`) meets the model's
tensors there and raises, as it would on CUDA. Plain meta tensors are laxer than CUDA about index arguments
(`gather`, `index_select` and `scatter_add` accept a CPU index on meta, not on CUDA), so every run also goes
through `MetaOnly`, a dispatch mode that refuses any op mixing meta tensors with CPU tensors (0-dim CPU scalars
excepted, as on CUDA; an explicit `.to(device)` is a transfer, not a mix).

Covered: every method (tnt, random, evit, evit-fuse, tome, dense) x reducer (drop, merge, gated merge, fuse),
with and without similarity pruning, in eval and train mode with a backward pass; the training task's loss
(`PruningTask`: anchored, noisy and heads-only tnt steps and every baseline, with distillation) and its backward;
calibrate's cached sweep and its speed timing; visualize's traced forward. `test_a_planted_cpu_tensor_fails`
shows the check can fail.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers import tiny_tnt
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# ---- the entry points under test, in one place ----
import tnt_cli.engine.model as engine_model
import tnt_cli.methods.tome as tome_module
from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.eval import sweep
from tnt_cli.eval.cached import dense_states, needed_states, run_from_states
from tnt_cli.methods.apply import apply_method
from tnt_cli.methods.registry import DENSE, METHODS, REDUCING_METHODS, REFERENCE, lookup, names
from tnt_cli.recipes import REDUCERS as ENGINE_REDUCERS
from tnt_cli.train.task import LossSettings, PruningPass, PruningTask
from tnt_cli.viz.core import method_context

# ------------------------------------------------------------------------------------------------------------
TRACED = names(traceable=True)  # visualize's methods
BASELINES = tuple(m for m in REDUCING_METHODS if m != REFERENCE)  # every method but tnt and dense
(TOME,) = names(own_setting="tome_r")  # ToMe: swept at a given merge count r below
REDUCERS = (*ENGINE_REDUCERS, "gated-merge")  # every reducer the engine has, and merge gated by a threshold
META = torch.device("meta")
TRANSFERS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default, torch.ops.aten.lift_fresh.default}


class MetaOnly(TorchDispatchMode):
    """Refuse any op whose tensor arguments mix the meta device with real (CPU) tensors, as CUDA would."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in TRANSFERS:
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            on_meta = any(t.device.type == "meta" for t in tensors)
            stray = [t for t in tensors if t.device.type != "meta" and t.dim() > 0]  # 0-dim CPU scalars are fine
            if on_meta and stray:
                shapes = ", ".join(f"{tuple(t.shape)} on {t.device}" for t in stray)
                raise RuntimeError(f"{func} mixes meta tensors with {shapes}: a tensor was made without device=")
        return func(*args, **kwargs)


def schedules(reducer: str) -> list[Schedule]:
    """One prune layer, several, and each with similarity pruning (after the top-k / before block 0)."""
    gate = {"reducer": "merge", "merge_threshold": 0.1} if reducer == "gated-merge" else {"reducer": reducer}
    return [
        Schedule((1,), (0.5,), **gate),
        Schedule((1, 2), (0.7, 0.7), **gate),
        Schedule((1,), (0.5,), sim_prune=4, **gate),
        Schedule((1, 2), (0.7, 0.7), sim_prune=4, **gate),
    ]


def meta_model(kind: str = "vit") -> TNTModel:
    return tiny_tnt(kind).to(META)


def meta_images(batch: int = 2) -> torch.Tensor:
    return torch.empty(batch, 3, 32, 32, device=META)


def on_meta(tensor: torch.Tensor) -> torch.Tensor:
    assert tensor.device == META, tensor.device
    return tensor


def run_everywhere(model: TNTModel, method: str, schedule: Schedule) -> None:
    """Eval forward, train forward + backward, visualize's trace and calibrate's cached resume, all on meta."""
    x = meta_images()
    with apply_method(model, method, schedule) as setup:
        model.eval()
        assert on_meta(setup.module(x)).shape == (2, 10)
        states = dense_states(model, x, needed_states(setup))
        on_meta(run_from_states(setup, states))
        model.train()
        logits = on_meta(setup.module(x))
        logits.float().sum().backward()
        assert all(p.grad is None or p.grad.device == META for p in model.parameters())
        model.zero_grad(set_to_none=True)
        model.eval()
    if method in TRACED:
        with method_context(model, method, schedule) as setup, torch.no_grad():
            logits, traces = setup.module.forward_traced(x)
            on_meta(logits)
            assert traces and all(on_meta(t.kept_positions) is not None for t in traces)


@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_reducer_runs_on_meta(method, reducer):
    model = meta_model()
    with MetaOnly():
        for schedule in schedules(reducer):
            run_everywhere(model, method, schedule)


@pytest.mark.parametrize("kind", ["vit_reg_avg", "vit_reg_cls_avg", "deit_distilled"])
def test_prefix_token_layouts_run_on_meta(kind):
    """Registers, average pooling (size-weighted with merge/fuse) and the distillation token, on meta."""
    model = meta_model(kind)
    methods = [m for m in METHODS if kind != "vit_reg_avg" or not lookup(m).needs_class_token]
    with MetaOnly():
        for method in methods:
            for reducer in ENGINE_REDUCERS:
                run_everywhere(model, method, schedules(reducer)[2])


def test_training_mode_noise_runs_on_meta():
    """TNTModel's own training forward: relevance noise after every noise block (sigmoid, softmax and rank)."""
    from tnt_cli.engine import NoiseConfig

    with MetaOnly():
        for relevance in ("sigmoid", "softmax", "rank"):
            model = meta_model()
            model.noise = NoiseConfig(blocks=(0, 1, 2, 3), relevance=relevance)
            model.train()
            loss = on_meta(model(meta_images())).sum() + model.rate_loss()
            loss.backward()
            assert model.heads["1"].weight.grad.device == META


def loss_settings(method: str, *, anchor: bool = False, trains_backbone: bool = True) -> LossSettings:
    return LossSettings(method=method, rate_weight=1.0, distill=True, distill_weight=1.0, distill_temp=2.0,
                        drop_weight=1.0, noise_trains_backbone=trains_backbone, anchor=anchor,
                        heads_fraction=0.5, target_rate=0.3, noise_blocks=(0, 1, 2))  # fmt: skip


TASKS = {
    "tnt-anchored": (REFERENCE, {"anchor": True}),
    "tnt-noisy": (REFERENCE, {}),
    "tnt-heads-noise": (REFERENCE, {"trains_backbone": False}),
    **{m: (m, {}) for m in BASELINES},
}


# tnt's pruning pass reduces with every reducer; the baselines reduce their own way (drop only is passed to them)
REDUCING_STEPS = ("tnt-anchored", "tnt-noisy")
STEPS = [(t, r) for t in TASKS for r in (ENGINE_REDUCERS if t in REDUCING_STEPS else ("drop",))]


@pytest.mark.parametrize(("task_name", "reducer"), STEPS)
def test_the_training_step_runs_on_meta(task_name, reducer):
    """`PruningTask` (what `tnt finetune` calls every step): its passes, its loss and the backward, on meta."""
    method, options = TASKS[task_name]
    model = meta_model().train()
    teacher = copy.deepcopy(model.vit).eval().requires_grad_(False)
    task = PruningTask(model, torch.nn.CrossEntropyLoss(label_smoothing=0.1), loss_settings(method, **options),
                       teacher=teacher)  # fmt: skip
    drop = PruningPass((1, 2), (0.7, 0.3), reducer=reducer)
    images, targets = meta_images(4), torch.zeros(4, dtype=torch.long, device=META)
    with MetaOnly():
        for step in (1, 2, 3):
            out = task(images, targets, drop.schedule(seed=0, step=step, micro=0), batch_start=4 * step)
            on_meta(out["loss"]).backward()
            assert {k: on_meta(v).shape for k, v in out.items()}
    trained = [p for p in model.parameters() if p.grad is not None]
    assert trained and all(p.grad.device == META for p in trained)


class _Logits:
    """Stands in for `Accumulator` (which reads numbers back to the host, impossible on meta)."""

    seen: list[torch.Tensor] = []  # noqa: RUF012 - one list per test, reset by the test

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.seen.append(on_meta(logits))

    def result(self) -> dict:
        return {"top1": 0.0, "top5": 0.0, "loss": 0.0}

    @property
    def images(self) -> int:
        return 0


def test_calibrates_cached_sweep_and_speed_timing_run_on_meta(monkeypatch):
    """`run_sweep` (dense states once per batch, every point resumed from them) and `measure_speed`, on meta."""
    model = meta_model()
    points = [sweep.SweepPoint(DENSE)]
    for reducer in ENGINE_REDUCERS:
        for schedule in schedules(reducer):
            points += [sweep.SweepPoint(m, schedule) for m in REDUCING_METHODS if m != TOME]
    points.append(sweep.SweepPoint(TOME, tome_r=(2, 2, 1, 1)))
    loader = [(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)) for _ in range(2)]  # CPU, as a loader
    _Logits.seen = []
    monkeypatch.setattr(sweep, "Accumulator", _Logits)
    with MetaOnly():
        sweep.run_sweep(model, points, loader, device=META)
        sweep.measure_speed(model, points[:4], device=META, batch_size=2, rounds=1, min_seconds=0.0)
    assert len(_Logits.seen) == 2 * len(points)


# ------------------------------------------------------------------------------------------------------------ the check
def _plant_cpu_zeros(function):
    """`function` with a CPU tensor made inside it (`torch.zeros(n)` without device=) added to its first output."""

    def planted(*args, **kwargs):
        out = function(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        first = first + torch.zeros(first.shape[-1])
        return (first, *out[1:]) if isinstance(out, tuple) else first

    return planted


PLANTS = {  # (module, function, a method whose forward calls it)
    "engine gather": (engine_model, "gather_tokens", REFERENCE),
    "engine merge": (engine_model, "merge_into_kept", REFERENCE),
    "tome merge": (tome_module, "merge_wavg", TOME),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_cpu_tensor_fails(monkeypatch, plant):
    """The same runs fail when a forward makes a tensor without device=: the test above can fail."""
    module, name, method = PLANTS[plant]
    monkeypatch.setattr(module, name, _plant_cpu_zeros(getattr(module, name)))
    with pytest.raises(RuntimeError, match="device"), MetaOnly():
        run_everywhere(meta_model(), method, schedules("merge")[0])


def test_meta_only_catches_what_plain_meta_lets_through():
    """A CPU index passes plain meta tensors but not CUDA: the dispatch mode refuses it too."""
    x, index = torch.empty(2, 5, 3, device=META), torch.zeros(2, 4, 3, dtype=torch.long)
    assert torch.gather(x, 1, index).device == META  # plain meta: accepted
    with pytest.raises(RuntimeError, match="without device="), MetaOnly():
        torch.gather(x, 1, index)
    with MetaOnly():  # explicit transfers and CPU scalars are fine
        torch.gather(x, 1, index.to(META))
        assert (x * torch.tensor(2.0)).device == META
