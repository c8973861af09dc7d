"""The communicator scenarios over torch.distributed, started by torchrun: Gloo
between 2 CPU processes always (with PyTorch), NCCL when 2 GPUs are present."""

from __future__ import annotations

import dist_launch
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("this PyTorch build has no torch.distributed", allow_module_level=True)


def _backends():
    yield "gloo"
    if torch.cuda.device_count() >= 2:
        yield "nccl"


@pytest.fixture(params=list(_backends()))
def torch_backend(request):
    return request.param


def run_ranks(scenario, tmp_path, backend):
    return dist_launch.run_ranks(dist_launch.torchrun, scenario, tmp_path, 2, extra=["torch"],
                                 env={"XPNN_TEST_TORCH_BACKEND": backend})


def test_collectives_over_torch_distributed(tmp_path, torch_backend):
    proc, outs, _ = run_ranks("collectives", tmp_path, torch_backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"backend='{torch_backend}'" in out["comm"] for out in outs)
    for out in outs:
        assert out["mean_rel_err"] <= 1e-12
        assert out["sum"] == [2.0, 2.0]
        assert out["gathered"] == [0.0, 1.0, 0.0, 1.0, 2.0]
        assert out["sgd_rel_err"] <= 1e-12
        assert out["numerical_rel_err"] <= 1e-12
    assert outs[0]["digest"] == outs[1]["digest"]


def test_train_over_torch_distributed(tmp_path, torch_backend):
    proc, outs, _ = run_ranks("train", tmp_path, torch_backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outs[0]["digest"] == outs[1]["digest"]
    assert all(out["train_rel_err"] <= 1e-12 for out in outs)


def test_a_raising_process_ends_the_run(tmp_path):
    proc, outs, seconds = run_ranks("raise_on_one", tmp_path, "gloo")
    assert proc.returncode != 0 and outs == [None, None]
    assert "boom on purpose" in proc.stdout + proc.stderr


def test_an_nccl_group_created_here_uses_the_local_rank_gpu(monkeypatch):
    """torchrun sets LOCAL_RANK but no CUDA device; an NCCL group created by
    TorchDistComm must select cuda:LOCAL_RANK before init_process_group, or every process
    of a node uses cuda:0. Mocked (no GPU needed): the calls and their order."""
    from xpnn.dist.torch_dist import TorchDistComm

    dist, calls = torch.distributed, []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(dist, "get_backend",
                        lambda group=None: [c for c in calls if isinstance(c, str)][-1])
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("device", d)))
    monkeypatch.setattr(torch.cuda, "current_device",
                        lambda: [c[1] for c in calls if isinstance(c, tuple)][-1])
    comm = TorchDistComm(backend="nccl")
    assert calls == [("device", 1), "nccl"]
    assert comm._device == torch.device("cuda", 1)
    comm._owns_group = False  # nothing to destroy

    calls.clear()
    TorchDistComm(backend="gloo")._owns_group = False
    assert calls == ["gloo"]  # a Gloo group leaves the device alone
