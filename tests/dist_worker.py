"""Run by tests/test_detect.py in 2 processes (gloo): the gradient average and replica check of
detect.distributed."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from detect.distributed import average_gradients, check_replicas


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    for i, p in enumerate(model.parameters()):
        p.grad = None if (i == 3 and rank == 0) else torch.full_like(p, float(10 * i + rank + 1))
    average_gradients(model, world)
    torch.save([p.grad for p in model.parameters()], os.path.join(out, f"grads{rank}.pt"))
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_()
    check_replicas(model, torch.device("cpu"))            # same weights: passes
    with torch.no_grad():
        next(model.parameters())[0, 0] += rank
    try:
        check_replicas(model, torch.device("cpu"))
        diverged = "not detected"
    except RuntimeError as exc:
        diverged = str(exc)
    with open(os.path.join(out, f"check{rank}.txt"), "w") as f:
        f.write(diverged)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
