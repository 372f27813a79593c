"""PyTorch side of `npm run bench` and `npm run bench:resnet`: the same
cnn-small / resnet8 / resnet20 / resnet18 / resnet50 as src/models/archs.ts,
trained on CPU with the same step (SGD momentum, softmax cross-entropy) on
random batches. Prints one JSON line.

    python3 bench/torch_bench.py --arch cnn-small --threads 1 --steps 20
    python3 bench/torch_bench.py --arch resnet18 --size 224 --batch 32 --threads 1 --steps 3

Needs PyTorch (Debian: apt-get install python3-torch; or pip install torch).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CnnSmall(nn.Module):
    """block1..3: 3x3 'same' conv + ReLU (32, 64, 128), 2x2 max pool after the first two, global average pool."""

    def __init__(self, classes, width=1.0):
        super().__init__()
        w = lambda n: max(1, round(n * width))
        self.c1 = nn.Conv2d(3, w(32), 3, padding=1)
        self.c2 = nn.Conv2d(w(32), w(64), 3, padding=1)
        self.c3 = nn.Conv2d(w(64), w(128), 3, padding=1)
        self.head = nn.Linear(w(128), classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.c3(x)).mean((2, 3))
        return self.head(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


class ResNet(nn.Module):
    """CIFAR ResNet: stem 3x3 conv 16 + BN + ReLU, 3 stages of n basic blocks (16, 32, 64), GAP, dense."""

    def __init__(self, n, classes, width=1.0):
        super().__init__()
        w = lambda c: max(1, round(c * width))
        self.stem = nn.Sequential(nn.Conv2d(3, w(16), 3, 1, 1, bias=False), nn.BatchNorm2d(w(16)), nn.ReLU())
        blocks, cin = [], w(16)
        for stage, c in enumerate([16, 32, 64]):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, w(c), stride))
                cin = w(c)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class Bottleneck(nn.Module):
    """1x1 (planes), 3x3 with the stride (planes), 1x1 (4 planes), as torchvision's ResNet v1.5."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


class ImageNetResNet(nn.Module):
    """ResNet-18 / ResNet-50 as torchvision builds them: stem (imagenet: 7x7/2 conv 64 + BN + ReLU +
    3x3/2 max pool; cifar: 3x3/1 conv 64 + BN + ReLU), layer1..4 at 64-128-256-512, GAP, dense.
    Same parameter count as src/models/archs.ts (which pads 'same' where this pads symmetrically)."""

    def __init__(self, arch, classes, stem="imagenet", width=1.0):
        super().__init__()
        w = lambda c: max(1, round(c * width))
        units, bottleneck = {"resnet18": ([2, 2, 2, 2], False), "resnet50": ([3, 4, 6, 3], True)}[arch]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, w(64), 7, 2, 3, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, w(64), 3, 1, 1, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU(inplace=True))
        layers, cin = [], w(64)
        for stage, c in enumerate([64, 128, 256, 512]):
            for i in range(units[stage]):
                stride = 2 if stage > 0 and i == 0 else 1
                if bottleneck:
                    layers.append(Bottleneck(cin, w(c), stride))
                    cin = w(c) * 4
                else:
                    layers.append(BasicBlock(cin, w(c), stride))
                    cin = w(c)
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


def build(arch, classes, stem="imagenet", width=1.0, size=224):
    if arch == "cnn-small":
        return CnnSmall(classes, width)
    if arch == "resnet8":
        return ResNet(1, classes, width)
    if arch == "resnet20":
        return ResNet(3, classes, width)
    if arch in ("resnet18", "resnet50"):
        return ImageNetResNet(arch, classes, stem, width)
    if arch == "densenet121":
        import torchvision
        return torchvision.models.densenet121(num_classes=classes)
    if arch in ("vit-tiny", "vit-small", "vit-base"):
        # timm's vit_*_patch16 sizes in torchvision's VisionTransformer (the same layout and parameter count).
        from torchvision.models.vision_transformer import VisionTransformer
        dim, heads = {"vit-tiny": (192, 3), "vit-small": (384, 6), "vit-base": (768, 12)}[arch]
        return VisionTransformer(image_size=size, patch_size=16, num_layers=12, num_heads=heads, hidden_dim=dim, mlp_dim=4 * dim, num_classes=classes)
    raise SystemExit(f"torch_bench: unknown arch {arch}")


def blas_library():
    """The BLAS shared library this process loaded (Debian's python3-torch links libblas.so.3,
    whichever implementation update-alternatives selects: the reference netlib BLAS of libblas3
    is many times slower at matmul-heavy networks than OpenBLAS; install libopenblas0-pthread)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ", ".join(sorted(libs)) or "unknown"
    except OSError:
        return "unknown"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=1, help="timing blocks; the best one counts")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    p.add_argument("--width", type=float, default=1.0)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = build(a.arch, a.classes, a.stem, a.width, a.size)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9)
    # Two batches in rotation, channels first (PyTorch's native CPU layout).
    batches = [(torch.randn(a.batch, 3, a.size, a.size), torch.randint(0, a.classes, (a.batch,))) for _ in range(2)]

    def step(i):
        x, y = batches[i % 2]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(a.warmup):
        step(i)
    seconds = float("inf")
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        for i in range(a.steps):
            loss = step(i)
        seconds = min(seconds, time.perf_counter() - t0)
    print(json.dumps({
        "arch": a.arch,
        "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "threads": torch.get_num_threads(),
        "images_per_second": a.steps * a.batch / seconds,
        "ms_per_step": 1000 * seconds / a.steps,
        "last_loss": loss,
        # Linux reports KiB.
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "blas": blas_library(),
    }))


if __name__ == "__main__":
    main()
