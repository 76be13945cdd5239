"""Data parallelism through torch.distributed: 2 gloo processes (launched by torchrun) equal one process.

MSD and MSD+RFBE on the toy dual encoder (GroupNorm, no augmentation inside the method, float64) for 3 steps of a
global batch of 8: each rank takes 4 samples, scores its queries against the all-gathered momentum keys of the
global batch, the queues all-gather, gradients are averaged (DDP for MSD; once per optimiser step after RFBE's
sub-batch backward passes). The averaged gradients of every step, the parameters and the queue contents must
equal those of one process on the concatenated batch, on both ranks; only rank 0 writes files.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import _ddp_worker as worker
from medvlp_lib.train import read_run

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(Path(worker.__file__)), str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MEDVLP_DEVICE="cpu")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        tail = lambda b: (b.decode() if isinstance(b, bytes) else b or "")[-3000:]  # noqa: E731
        pytest.fail(f"torchrun with 2 gloo ranks ({cmd}) did not finish within {TIMEOUT_S} s: the rendezvous or a "
                    f"collective hung (the worker's process group times out after 60 s).\nstdout: "
                    f"{tail(err.stdout)}\nstderr: {tail(err.stderr)}")
    assert proc.returncode == 0, f"torchrun failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    return out


def _load(path: Path) -> dict:
    assert path.exists(), f"{path.name} missing: a rank did not finish"
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", worker.SCENARIOS)
def test_two_processes_equal_one_process_on_the_concatenated_batch(two_ranks, name):
    ranks = [_load(two_ranks / f"{name}_rank{r}.pt") for r in (0, 1)]
    msd, method, hist = worker.run_scenario(name)  # one process, the same global batches
    ref_state = method.state_dict()
    assert len(msd.grads) == worker.STEPS
    for r, got in enumerate(ranks):
        assert len(got["grads"]) == worker.STEPS
        for step, (g_ref, g) in enumerate(zip(msd.grads, got["grads"])):
            assert g.keys() == g_ref.keys()
            for k in g_ref:
                torch.testing.assert_close(g[k], g_ref[k], rtol=1e-9, atol=1e-12,
                                           msg=lambda m: f"rank {r}, step {step}, grad {k}: {m}")
        for k, v in ref_state.items():
            if v.dtype.is_floating_point:
                torch.testing.assert_close(got["state"][k], v, rtol=1e-9, atol=1e-12,
                                           msg=lambda m: f"rank {r}, {k}: {m}")
            else:
                assert torch.equal(got["state"][k], v), f"rank {r}, {k}"
        assert [h["loss"] for h in got["history"]] == pytest.approx([h["loss"] for h in hist], rel=1e-9)
    # the queues wrapped around and hold the global batch's keys in global order
    queue_ids = ref_state[("method." if name == "rfbe" else "") + "image_queue.sample_ids"]
    assert (queue_ids >= 0).all() and int(ranks[0]["state"][("method." if name == "rfbe" else "")
                                                             + "image_queue.ptr"]) == (3 * 8) % 12
    # the test can fail: a single rank's half batch gives another gradient
    assert not torch.allclose(msd.grads[0]["logit_scale"], 2 * msd.grads[0]["logit_scale"])


@pytest.mark.parametrize("name", worker.SCENARIOS)
def test_only_rank_zero_writes_the_run_folder(two_ranks, name):
    run = read_run(two_ranks / f"run_{name}")  # rank 1 would have failed on any write
    assert run["status"] == "finished" and run["step"] == worker.STEPS
    assert run["engine"]["world_size"] == 2 and run["engine"]["backend"] == "gloo"
    assert len(run["history"]) == worker.STEPS
    ckpts = sorted(p.name for p in (two_ranks / f"run_{name}" / "checkpoints").iterdir())
    assert ckpts == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    rank0 = _load(two_ranks / f"{name}_rank0.pt")["state"]
    saved = torch.load(two_ranks / f"run_{name}" / "checkpoints" / "ckpt_00000003.pt", weights_only=True)["method"]
    assert all(torch.equal(saved[k], v) for k, v in rank0.items())


def test_batch_source_without_items_is_refused_under_ddp(two_ranks):
    for r in (0, 1):
        assert "map-style dataset" in _load(two_ranks / f"plain_rank{r}.pt")["error"]
