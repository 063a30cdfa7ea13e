"""World detection from launcher variables, and the local loss against the single-batch loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wit_retrieval.distributed import World, world_from_env
from wit_retrieval.errors import ConfigError
from wit_retrieval.models.losses import duplicate_mask, info_nce, local_info_nce, local_spread_out, spread_out


def test_world_from_torchrun_slurm_and_nothing():
    assert world_from_env({}) == World()
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}
    assert world_from_env(torchrun) == World(3, 8, 1, 2, 1, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
             "SLURM_NNODES": "4", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    world = world_from_env(slurm)
    assert world == World(5, 8, 1, 2, 2, "slurm") and world.distributed and not world.is_main
    # torchrun inside a SLURM allocation: torchrun's variables win
    assert world_from_env({**slurm, **torchrun}).launcher == "torchrun"
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT"):
        world_from_env({k: v for k, v in slurm.items() if not k.startswith("MASTER")})
    with pytest.raises(ConfigError, match="not an integer"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_local_losses_sum_to_the_global_ones():
    """Rows split over two 'processes' (local rows against the whole batch) add up to the batch loss."""
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    p = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    hard = F.normalize(torch.randn(6, 2, 8, generator=gen), dim=-1)
    valid = torch.tensor([[True, False]] * 6)
    keys = ["a", "b", "a", "c", "d", "e"]
    mask = duplicate_mask(keys, list("uvwxyz"))
    scale = torch.tensor(5.0)
    whole = info_nce(q, p, scale, duplicates=mask, hard_negatives=hard, hard_valid=valid, same_tower=True,
                     symmetric=True)
    parts = 0
    for rows in (torch.arange(0, 3), torch.arange(3, 6)):
        parts = parts + local_info_nce(q[rows], p[rows], q, p, rows, scale, masked=mask[rows],
                                       hard_negatives=hard[rows], hard_valid=valid[rows], same_tower=True,
                                       symmetric=True) / 6
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)
    spread = sum(local_spread_out(q[r], q, r) for r in (torch.arange(0, 3), torch.arange(3, 6)))
    assert float(spread) == pytest.approx(float(spread_out(q)), rel=1e-6)


def test_ranks_exit_quickly_yet_completely(tmp_path):
    """`python -m wit_retrieval` as one of several ranks skips the interpreter's teardown only: its
    exit status, flushed output, exit handlers and non-daemon threads are those of a normal exit."""
    import os
    import subprocess
    import sys

    from wit_retrieval.__main__ import exit_status

    assert [exit_status(c) for c in (None, 0, 3)] == [0, 0, 3]
    script = f"""
import atexit, sys, threading, time
import wit_retrieval.__main__ as entry
class Teardown:
    def __del__(self):
        print(" torn down")
kept = Teardown()  # finalized by the interpreter's teardown only
def command():
    atexit.register(lambda: print("exit handler ran"))
    def late():
        time.sleep(0.3)
        open({str(tmp_path / "late")!r}, "w").write("done")
    threading.Thread(target=late).start()
    print("buffered output", end="")
    sys.exit(int(sys.argv[1]))
entry.main = command
entry.run()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
    env.update(SLURM_PROCID="1", SLURM_NTASKS="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    for status in (0, 3):
        (tmp_path / "late").unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-c", script, str(status)], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == status, done.stderr
        assert done.stdout == "buffered outputexit handler ran\n"
        assert (tmp_path / "late").read_text() == "done"
    # one process exits as usual, teardown included
    alone = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "MASTER_"))}
    done = subprocess.run([sys.executable, "-c", script, "0"], env=alone, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "buffered outputexit handler ran\n torn down\n", done
    # a message passed to sys.exit is printed and means status 1, as at a normal exit
    done = subprocess.run([sys.executable, "-c", "import wit_retrieval.__main__ as e, sys\n"
                           "e.main = lambda: sys.exit('no good')\ne.run()"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == "no good"
