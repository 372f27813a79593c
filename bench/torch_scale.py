"""PyTorch side of `npm run bench:scale`: torchvision's ImageFolder + ToTensor
and a DataLoader (shuffled, `--workers` processes) feeding the same cnn-small
as bench/torch_bench.py for `--steps` SGD steps. Prints one JSON line:

- peak_rss_mb: ru_maxrss of this process; worker_rss_mb: the largest
  DataLoader worker (RUSAGE_CHILDREN), each a forked copy that decodes images;
- decode_img_per_s: images per second the DataLoader delivers on its own
  (the first 20 batches, no training): its decoding throughput, paid again
  every epoch since nothing is cached;
- train_img_per_s: images per second over the training steps (loading included);
- first_step_seconds: from interpreter start to the first training step
  (the ImageFolder scan of every file included).

    python3 bench/torch_scale.py --root datasets/bench/folder-5000/train --steps 300

Needs PyTorch and torchvision (Debian: apt-get install python3-torchvision).
"""
import argparse
import json
import resource
import time

T0 = time.time()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from torchvision import transforms  # noqa: E402

from torch_bench import CnnSmall  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--channels", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tf = [transforms.Grayscale()] if a.channels == 1 else []
    ds = torchvision.datasets.ImageFolder(a.root, transform=transforms.Compose(tf + [transforms.ToTensor()]))
    loader = lambda: torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=True, persistent_workers=False)

    net = CnnSmall(len(ds.classes))
    if a.channels == 1:
        net.c1 = nn.Conv2d(1, net.c1.out_channels, 3, padding=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    step = 0
    first = None
    t = None
    while step < a.steps:
        for x, y in loader():
            if first is None:
                first = time.time() - T0
                t = time.time()
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            step += 1
            if step >= a.steps:
                break
    train = a.steps * a.batch / (time.time() - t)

    # Decoding throughput of the loader alone (after training, so the time to the first step is not charged with it).
    it = iter(loader())
    next(it)
    t = time.time()
    n = 0
    for _ in range(20):
        x, _y = next(it)
        n += x.shape[0]
    decode = n / (time.time() - t)
    del it

    print(json.dumps({
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "decode_img_per_s": decode,
        "train_img_per_s": train,
        "first_step_seconds": first,
        "images": len(ds),
        "loss": float(loss),
    }))


if __name__ == "__main__":
    main()
