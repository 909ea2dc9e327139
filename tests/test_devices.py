"""The calls that differ between the CPU and CUDA, checked on a CPU-only machine: torch's CUDA queries are replaced
by fakes (a machine with N GPUs of a given compute capability), the way a GPU machine would answer them.

Device choice (`--device cuda:N`, torchrun's LOCAL_RANK), the process group's backend, autocast's dtype, pinned
batches, peak memory, and restoring CUDA RNG and GradScaler state from a checkpoint made elsewhere.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import FMNIST, tiny_vit

from tnt_cli import devices
from tnt_cli.errors import SettingError
from tnt_cli.train import distributed as D
from tnt_cli.train.checkpoint import restore_scaler, rng_state, set_rng_state
from tnt_cli.train.plan import resolve_amp

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(n, capability=(9, 0))`: torch reports n CUDA GPUs; returns the list `set_device` was called with."""
    chosen: list[torch.device] = []

    def install(n: int, capability: tuple[int, int] = (9, 0)) -> list[torch.device]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
        monkeypatch.setattr(torch.version, "hip", None)
        return chosen

    return install


@pytest.fixture
def torchrun(monkeypatch):
    """`torchrun(local_rank, world=2)`: the environment torchrun gives a process."""

    def install(local_rank: int, world: int = 2) -> None:
        for name, value in (("RANK", local_rank), ("LOCAL_RANK", local_rank), ("WORLD_SIZE", world)):
            monkeypatch.setenv(name, str(value))

    return install


def test_a_gpu_number_beyond_the_machines_gpus_is_one_line(gpus):
    gpus(2)
    assert devices.resolve_device("cuda:1") == CUDA1
    with pytest.raises(SettingError, match=r"^device cuda:2: torch sees 2 CUDA GPU\(s\), numbered from 0$"):
        devices.resolve_device("cuda:2")
    gpus(0)
    with pytest.raises(SettingError, match="no CUDA device is available"):
        devices.resolve_device("cuda")
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(gpus, torchrun, monkeypatch):
    chosen = gpus(2)
    torchrun(1)
    assert D.pick_device("auto") == CUDA1 and D.pick_device("cuda") == CUDA1
    assert chosen == [CUDA1, CUDA1]
    with pytest.raises(SettingError, match="would put every process on one GPU: use device cuda"):
        D.pick_device("cuda:0")
    torchrun(2, world=3)
    with pytest.raises(SettingError, match="LOCAL_RANK 2 has no GPU of its own: torch sees 2 CUDA GPU"):
        D.pick_device("auto")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):  # one process: any GPU number is the user's choice
        monkeypatch.delenv(name)
    assert D.pick_device("cuda:1") == CUDA1
    assert D.pick_device("cpu") == torch.device("cpu")


def test_the_process_group_is_nccl_on_cuda_and_gloo_elsewhere(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert D.process_group_options(CUDA1) == ("nccl", {"device_id": CUDA1})
    assert D.process_group_options(torch.device("cpu")) == ("gloo", {})
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)  # a build without NCCL
    assert D.process_group_options(CUDA1) == ("gloo", {})


def test_autocast_is_bf16_only_where_the_gpu_computes_it(gpus):
    cpu = torch.device("cpu")
    assert {resolve_amp(amp, cpu) for amp in ("auto", "bf16", "fp16", "off")} == {"off"}
    gpus(1, capability=(9, 0))  # Hopper
    assert [resolve_amp(amp, CUDA0) for amp in ("auto", "bf16", "fp16", "off")] == ["bf16", "bf16", "fp16", "off"]
    gpus(1, capability=(7, 5))  # Turing: bf16 only emulated
    assert resolve_amp("auto", CUDA0) == "fp16" and resolve_amp("fp16", CUDA0) == "fp16"
    with pytest.raises(SettingError, match=r"^amp bf16: this GPU does not compute in bfloat16 .* use amp fp16 or auto"):
        resolve_amp("bf16", CUDA0)
    assert not devices.native_bf16(cpu)


def test_batches_are_pinned_only_for_a_model_on_a_gpu(gpus, tmp_path):
    from tnt_cli.engine import attach_tnt
    from tnt_cli.train import setup as S
    from tnt_cli.train.config import TrainConfig

    gpus(1)  # a machine with a GPU, running on the CPU
    cfg = TrainConfig(model="m", data="fashion-mnist", out=str(tmp_path / "o"), batch_size=8, limit=64)
    model = attach_tnt(tiny_vit(shape=FMNIST))
    loader = S.build_train_loader(cfg, model, S.open_training_data(cfg), None)
    assert loader.pin_memory is False
    assert devices.pin_memory(CUDA1) and not devices.pin_memory("cpu")


def test_peak_memory_is_none_on_the_cpu_and_runs_nothing():
    calls = []
    assert devices.peak_memory_mib("cpu", lambda: calls.append(1)) is None and not calls


def test_a_checkpoint_from_a_machine_with_more_gpus_restores_the_ones_here(gpus, monkeypatch):
    gpus(1)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    state = rng_state() | {"cuda": [torch.full((4,), 1, dtype=torch.uint8), torch.full((4,), 2, dtype=torch.uint8)]}
    set_rng_state(state)
    assert [(d, s.tolist()) for d, s in restored] == [(0, [1, 1, 1, 1])]


def test_a_scaler_resumes_from_a_run_that_did_not_scale():
    """A checkpoint made without fp16 (CPU, bf16) holds an empty GradScaler state; an fp16 resume starts afresh."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    restore_scaler(scaler, {})  # torch itself refuses this
    assert scaler.get_scale() == 1024.0
    restore_scaler(scaler, torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())
    assert scaler.get_scale() == 8.0
