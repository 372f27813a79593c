"""PyTorch side of granular's checkpoint tests (test/checkpoint.test.ts).

Debian's python3-torch / python3-torchvision (0.14) build seeded models; there
is no safetensors package there, so the format (8-byte little-endian header
length, JSON header, raw little-endian tensors) is written and read here.

  reference.py make ARCH OUT SIZE [DIM HEADS MLP PATCH]
                                     seeded model -> OUT/model.safetensors, OUT/images.f32 (NCHW), OUT/logits.f32
  reference.py load ARCH FILE SIZE IMAGES LOGITS [DIM HEADS MLP PATCH]
                                     strict load_state_dict of FILE, logits of IMAGES -> LOGITS
  reference.py resize OUT SIZE2 [DIM HEADS MLP PATCH]
                                     the vit model of OUT at SIZE2 px, position embeddings resampled
                                     with F.interpolate(bicubic, align_corners=False) -> OUT/logits2.f32, OUT/images2.f32
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

NUM_CLASSES = 10


def vit(size, dim=192, heads=3, mlp=768, patch=8, classes=NUM_CLASSES):
    # vit_b_16's layout at vit-tiny's width (12 layers, 3 heads, 192 wide).
    return VisionTransformer(image_size=size, patch_size=patch, num_layers=12, num_heads=heads, hidden_dim=dim, mlp_dim=mlp, num_classes=classes)


def build(arch, size, extra=()):
    if arch == 'vit-tiny':
        return vit(size, *[int(x) for x in extra]) if extra else vit(size)
    return getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)


def randomize(model):
    """Every tensor random (batch-norm statistics and the class token included), so a mapping error shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('num_batches_tracked'):
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith('weight') and t.dim() == 1:
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            elif t.dim() >= 2 and not name.endswith(('class_token', 'pos_embedding')):
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / t[0].numel()) ** 0.5)
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


def save_safetensors(state, path):
    header, blobs, off = {}, [], 0
    for name, t in state.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: 'F32', torch.int64: 'I64'}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        b, e = t['data_offsets']
        dtype = {'F32': torch.float32, 'I64': torch.int64}[t['dtype']]
        out[name] = torch.frombuffer(bytearray(body[b:e]), dtype=dtype).reshape(t['shape']) if e > b else torch.zeros(t['shape'], dtype=dtype)
    return out


def write(t, path):
    with open(path, 'wb') as f:
        f.write(t.detach().contiguous().numpy().astype('<f4').tobytes())


def images(size, seed=2):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def main():
    torch.manual_seed(0)
    cmd = sys.argv[1]
    if cmd == 'make':
        arch, out, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
        model = build(arch, size, sys.argv[5:])
        randomize(model)
        model.eval()
        save_safetensors(model.state_dict(), f'{out}/model.safetensors')
        x = images(size)
        write(x, f'{out}/images.f32')
        with torch.no_grad():
            write(model(x), f'{out}/logits.f32')
    elif cmd == 'load':
        arch, file, size, imgs, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
        state = load_safetensors(file)
        classes = [v for k, v in state.items() if k in ('fc.weight', 'classifier.weight', 'heads.head.weight')][0].shape[0]
        extra = sys.argv[7:]
        model = vit(size, *[int(v) for v in extra], classes=classes) if arch == 'vit-tiny' and extra else build(arch, size)
        if arch != 'vit-tiny' and classes != NUM_CLASSES:
            model = getattr(torchvision.models, arch)(num_classes=classes)
        # Exactly torchvision's keys (load_state_dict would add a missing num_batches_tracked itself).
        want, got = set(model.state_dict()), set(state)
        if want != got:
            raise SystemExit(f'keys differ from torchvision: missing {sorted(want - got)[:5]}, unexpected {sorted(got - want)[:5]}')
        model.load_state_dict(state, strict=True)
        model.eval()
        with open(imgs, 'rb') as f:
            x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(-1, 3, size, size)
        with torch.no_grad():
            write(model(x), out)
    elif cmd == 'resize':
        out, size2 = sys.argv[2], int(sys.argv[3])
        dims = [int(v) for v in sys.argv[4:]] or [192, 3, 768, 8]
        state = load_safetensors(f'{out}/model.safetensors')
        pos = state['encoder.pos_embedding']
        g0 = int(round((pos.shape[1] - 1) ** 0.5))
        g1 = size2 // dims[3]
        grid = pos[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g1, g1), mode='bicubic', align_corners=False)
        state['encoder.pos_embedding'] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g1 * g1, -1)], dim=1)
        model = vit(size2, *dims)
        model.load_state_dict(state, strict=True)
        model.eval()
        x = images(size2, seed=3)
        write(x, f'{out}/images2.f32')
        with torch.no_grad():
            write(model(x), f'{out}/logits2.f32')
    else:
        raise SystemExit(f'unknown command {cmd}')


if __name__ == '__main__':
    main()
