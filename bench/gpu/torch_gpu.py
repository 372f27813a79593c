"""PyTorch side of the GPU device check (bench/gpu/bench.ts): the same
resnet18 / resnet50 as src/models/archs.ts (bench/torch_bench.py builds them),
trained on CUDA with the same step (SGD momentum 0.9, softmax cross-entropy,
random batches, loss read back every step), in fp32 or with AMP (float16
autocast + GradScaler). Without a CUDA device it runs on the CPU, fp32 only,
and says so in "device". Prints one JSON line.

    python3 bench/gpu/torch_gpu.py --arch resnet18 --size 224 --batch 64 --steps 10 [--amp]

Peak memory: torch.cuda.max_memory_reserved() (the caching allocator's
high-water mark; 0 on the CPU).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_bench import build  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=2, help="timing blocks; the best one counts")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler (CUDA only)")
    a = p.parse_args()

    cuda = torch.cuda.is_available()
    if a.amp and not cuda:
        raise SystemExit("torch_gpu: --amp needs a CUDA device")
    dev = torch.device("cuda" if cuda else "cpu")
    # As a user would run it: cuDNN picks its fastest algorithms.
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = build(a.arch, a.classes, "imagenet").to(dev)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9)
    scaler = torch.cuda.amp.GradScaler(enabled=a.amp)
    batches = [(torch.randn(a.batch, 3, a.size, a.size, device=dev), torch.randint(0, a.classes, (a.batch,), device=dev)) for _ in range(2)]

    def step(i):
        x, y = batches[i % 2]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=a.amp):
            loss = F.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item()

    for i in range(a.warmup):
        step(i)
    seconds = float("inf")
    loss = float("nan")
    for _ in range(a.repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(a.steps):
            loss = step(i)
        if cuda:
            torch.cuda.synchronize()
        seconds = min(seconds, time.perf_counter() - t0)
    if loss != loss:
        raise SystemExit("torch_gpu: the loss is NaN")
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps({
        "arch": a.arch,
        "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "images_per_second": a.steps * a.batch / seconds,
        "ms_per_step": 1000 * seconds / a.steps,
        "last_loss": loss,
        "max_memory_reserved": torch.cuda.max_memory_reserved(dev) if cuda else 0,
        "max_memory_allocated": torch.cuda.max_memory_allocated(dev) if cuda else 0,
        "device": f"{name}, torch {torch.__version__}{', AMP float16' if a.amp else ', fp32'}",
    }))


if __name__ == "__main__":
    main()
