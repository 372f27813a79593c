import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { engineCapabilities } from '../engine';
import { batchNormTrain, isBatchNorm, isPlainRelu } from './batchnorm';
import { Block, extraHeadName, Network } from './network';
import { DENSENET121_BLOCKS, densenet121 } from './densenet';
import { SmoothReLU, smoothRelu } from './smooth-relu';
import { TorchConv2D, TorchMaxPool2D } from './torch-layers';
import { vit, vitBlockNames } from './vit';

/**
 * The architectures, each as named blocks. Every initializer is seeded from
 * train.seed (per layer), so the same seed gives the same initial weights.
 */
class Seeds {
  private i = 0;
  constructor(private readonly base: number) {}
  next(): number {
    return (this.base * 1000 + ++this.i) % 2147483647;
  }
}

const he = (s: Seeds) => tf.initializers.heNormal({ seed: s.next() });

/** A layer on an eager tensor: batch norm in training mode as one fused op (./batchnorm.ts). */
export function applyEager(l: tf.layers.Layer, x: tf.Tensor, training: boolean): tf.Tensor {
  if (training && isBatchNorm(l)) return batchNormTrain(l, x);
  if (training && engineCapabilities().plainConvTraining) {
    const conv = plainConv(l);
    if (conv) return tf.conv2d(x as tf.Tensor4D, conv.kernel as tf.Tensor4D, conv.strides, conv.padding);
  }
  return l.apply(x, { training }) as tf.Tensor;
}

/**
 * A bias-free, linear, undilated channels-last Conv2D layer's kernel and
 * geometry, else null. tfjs-layers runs such a layer as tf.fused.conv2d,
 * whose gradient (one customGrad) computes the input's gradient even where
 * nothing needs it: for a network's first convolution that is the gradient of
 * the images (a quarter of resnet18's convolution backward time at 112 px, 3
 * output channels being oneDNN's slowest case). tf.conv2d has one gradient per
 * input, and backpropagation skips the unneeded one. Same kernel, same bits.
 */
function plainConv(l: tf.layers.Layer): { kernel: tf.Tensor; strides: [number, number]; padding: 'same' | 'valid' } | null {
  if (l.getClassName() !== 'Conv2D') return null;
  const c = l.getConfig() as { useBias: boolean; activation: string; dataFormat: string; dilationRate: number | number[]; strides: number | number[]; padding: string };
  const dilation = Array.isArray(c.dilationRate) ? c.dilationRate : [c.dilationRate];
  if (c.useBias || c.activation !== 'linear' || c.dataFormat !== 'channelsLast' || dilation.some((d) => d !== 1) || (c.padding !== 'same' && c.padding !== 'valid')) return null;
  const s = Array.isArray(c.strides) ? c.strides : [c.strides, c.strides];
  const kernel = (l as unknown as { kernel: { read(): tf.Tensor } }).kernel.read();
  return { kernel, strides: [s[0], s[1] ?? s[0]], padding: c.padding };
}

/**
 * Layers in order on an eager tensor; in training mode a batch norm followed
 * by a plain ReLU runs as one fused op (./batchnorm.ts).
 */
function applyChain(layers: tf.layers.Layer[], x: tf.Tensor, training: boolean): tf.Tensor {
  let h = x;
  for (let i = 0; i < layers.length; i++) {
    if (training && isBatchNorm(layers[i]) && i + 1 < layers.length && isPlainRelu(layers[i + 1])) {
      h = batchNormTrain(layers[i], h, { relu: true });
      i++;
    } else h = applyEager(layers[i], h, training);
  }
  return h;
}

/** A block that is a plain chain of layers. */
export function chain(name: string, layers: tf.layers.Layer[]): Block {
  return {
    name,
    layers,
    apply: (x, training) => applyChain(layers, x, training),
    applySymbolic: (x) => layers.reduce((h, l) => l.apply(h) as tf.SymbolicTensor, x),
  };
}

/**
 * The theory's two-layer network: a convolution whose kernel equals its stride
 * (one filter response per patch), (smoothed) ReLU, average over patches. Eagerly it is a
 * reshape into patches and one matMul, which trains far faster than a strided
 * convolution; the saved graph uses the equivalent Conv2D layer.
 */
function twoLayerConv(cfg: Config, shape: [number, number, number], seeds: Seeds): Block[] {
  const [H, W, C] = shape;
  const p = cfg.model.patch_size ?? (cfg.data.format === 'synthetic' ? cfg.data.synthetic.patch_size : 4);
  if (H % p || W % p) throw new UsageError(`model.patch_size ${p} must divide the image size ${H}x${W}.`);
  const m = Math.max(1, Math.round(cfg.model.filters * cfg.model.width));
  const conv = tf.layers.conv2d({
    name: 'features_conv',
    filters: m,
    kernelSize: p,
    strides: p,
    padding: 'valid',
    useBias: false,
    // Small random init, as in the theory: alignment starts near chance.
    kernelInitializer: tf.initializers.randomNormal({ mean: 0, stddev: cfg.model.init_scale / Math.sqrt(p * p * C), seed: seeds.next() }),
  });
  const { activation, activation_q: q, activation_rho: rho } = cfg.model;
  const act = activation === 'smooth_relu' ? new SmoothReLU({ name: 'features_act', q, rho }) : tf.layers.reLU({ name: 'features_act' });
  const actFn = (z: tf.Tensor) => (activation === 'smooth_relu' ? smoothRelu(z, q, rho) : tf.relu(z));
  const pool = tf.layers.globalAveragePooling2d({ name: 'features_pool' });
  const gh = H / p;
  const gw = W / p;
  return [
    {
      name: 'features',
      layers: [conv, act, pool],
      apply: (x) =>
        tf.tidy(() => {
          const B = x.shape[0];
          const patches = x.reshape([B, gh, p, gw, p, C]).transpose([0, 1, 3, 2, 4, 5]).reshape([B * gh * gw, p * p * C]);
          const kernel = (conv.getWeights()[0] as tf.Tensor).reshape([p * p * C, m]);
          return actFn(tf.matMul(patches, kernel)).reshape([B, gh * gw, m]).mean(1);
        }),
      applySymbolic: (x) => pool.apply(act.apply(conv.apply(x))) as tf.SymbolicTensor,
    },
  ];
}

function cnnSmall(cfg: Config, seeds: Seeds): Block[] {
  const w = (n: number) => Math.max(1, Math.round(n * cfg.model.width));
  const conv = (name: string, filters: number) =>
    tf.layers.conv2d({ name, filters, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: he(seeds) });
  return [
    chain('block1', [conv('block1_conv', w(32)), tf.layers.maxPooling2d({ name: 'block1_pool', poolSize: 2 })]),
    chain('block2', [conv('block2_conv', w(64)), tf.layers.maxPooling2d({ name: 'block2_pool', poolSize: 2 })]),
    chain('block3', [conv('block3_conv', w(128)), tf.layers.globalAveragePooling2d({ name: 'block3_pool' })]),
  ];
}

type Conv = (name: string, filters: number, k: number, stride: number) => tf.layers.Layer;
type Bn = (name: string) => tf.layers.Layer;

/**
 * Bias-free convolutions and batch norms as the ResNets use them (He et al.
 * 2016; PyTorch's BatchNorm2d eps 1e-5, momentum 0.1). Padding 'same' is
 * TensorFlow's; 'torch' pads (k-1)/2 on every side as torchvision does.
 */
function resnetLayers(seeds: Seeds, padding: 'same' | 'torch' = 'same'): { conv: Conv; bn: Bn } {
  return {
    conv: (name, filters, k, stride) =>
      padding === 'torch'
        ? new TorchConv2D({ name, filters, kernelSize: k, strides: stride, pad: (k - 1) / 2, kernelInitializer: he(seeds) })
        : tf.layers.conv2d({ name, filters, kernelSize: k, strides: stride, padding: 'same', useBias: false, kernelInitializer: he(seeds) }),
    bn: (name) => tf.layers.batchNormalization({ name, momentum: 0.9, epsilon: 1e-5 }),
  };
}

/**
 * One residual unit, `relu(main(x) + shortcut(x))`, where the shortcut is the
 * identity or a strided 1x1 projection + batch norm when the shape changes.
 * `main` is [conv, bn, relu, conv, bn] (basic block) or three such stages
 * (bottleneck), given as (conv, bn) pairs with ReLUs between them.
 */
interface Unit {
  layers: tf.layers.Layer[];
  apply<T extends tf.Tensor | tf.SymbolicTensor>(x: T, kw: { training?: boolean }): T;
}

/** `ap(l, v)`: layer l on v, batch norm as the fused op in training mode (eager), else the layer. */
function ap<T extends tf.Tensor | tf.SymbolicTensor>(l: tf.layers.Layer, v: T, kw: { training?: boolean }): T {
  return (v instanceof tf.Tensor ? applyEager(l, v, kw.training === true) : l.apply(v, kw)) as T;
}

function residualUnit(name: string, pairs: Array<[tf.layers.Layer, tf.layers.Layer]>, proj: tf.layers.Layer[]): Unit {
  const relus = pairs.slice(0, -1).map((_, i) => tf.layers.reLU({ name: `${name}_relu${i + 1}` }));
  const add = tf.layers.add({ name: `${name}_add` });
  const out = tf.layers.reLU({ name: `${name}_relu${pairs.length}` });
  const layers = [...pairs.flatMap(([c, b], i) => [c, b, ...(i < relus.length ? [relus[i]] : [])]), ...proj, add, out];
  return {
    layers,
    apply: (x, kw) => {
      if (x instanceof tf.Tensor && kw.training === true) {
        // Training, eagerly: each batch norm fused with the ReLU after it, the
        // last one with the shortcut add and the unit's ReLU too.
        let h: tf.Tensor = x;
        pairs.forEach(([c, b], i) => {
          h = applyEager(c, h, true);
          if (i < relus.length) h = batchNormTrain(b, h, { relu: true });
        });
        const short = proj.length ? batchNormTrain(proj[1], applyEager(proj[0], x, true)) : x;
        return batchNormTrain(pairs[pairs.length - 1][1], h, { residual: short, relu: true }) as typeof x;
      }
      let main = x;
      pairs.forEach(([c, b], i) => {
        main = ap(b, ap(c, main, kw), kw);
        if (i < relus.length) main = ap(relus[i], main, kw);
      });
      const short = proj.length ? ap(proj[1], ap(proj[0], x, kw), kw) : x;
      return ap(out, add.apply([main, short] as never, kw) as typeof x, kw);
    },
  };
}

/** A block made of units (and layers after them, e.g. the final pool); applies to either tensor kind. */
function unitsBlock(name: string, units: Unit[], after: tf.layers.Layer[] = []): Block {
  const body = <T extends tf.Tensor | tf.SymbolicTensor>(x: T, kw: { training?: boolean }): T => {
    let y = x;
    for (const u of units) y = u.apply(y, kw);
    for (const l of after) y = ap(l, y, kw);
    return y;
  };
  return { name, layers: [...units.flatMap((u) => u.layers), ...after], apply: (x, training) => body(x, { training }), applySymbolic: (x) => body(x, {}) };
}

/** CIFAR ResNet (He et al. 2016): a stem, 3 stages of `n` basic blocks (16-32-64 channels). */
function resnet(cfg: Config, n: number, seeds: Seeds): Block[] {
  const w = (c: number) => Math.max(1, Math.round(c * cfg.model.width));
  const { conv, bn } = resnetLayers(seeds);
  const blocks: Block[] = [chain('stem', [conv('stem_conv', w(16), 3, 1), bn('stem_bn'), tf.layers.reLU({ name: 'stem_relu' })])];
  let inC = w(16);
  [16, 32, 64].forEach((c, stage) => {
    for (let i = 0; i < n; i++) {
      const name = `stage${stage + 1}_block${i + 1}`;
      const stride = stage > 0 && i === 0 ? 2 : 1;
      const out = w(c);
      const pairs: Array<[tf.layers.Layer, tf.layers.Layer]> = [
        [conv(`${name}_conv1`, out, 3, stride), bn(`${name}_bn1`)],
        [conv(`${name}_conv2`, out, 3, 1), bn(`${name}_bn2`)],
      ];
      const proj = stride !== 1 || inC !== out ? [conv(`${name}_proj`, out, 1, stride), bn(`${name}_proj_bn`)] : [];
      const last = stage === 2 && i === n - 1 ? [tf.layers.globalAveragePooling2d({ name: `${name}_pool` })] : [];
      blocks.push(unitsBlock(name, [residualUnit(name, pairs, proj)], last));
      inC = out;
    }
  });
  return blocks;
}

/** Units per stage and the unit kind of the ImageNet ResNets (He et al. 2016, table 1; torchvision's resnet18/resnet50). */
const IMAGENET_RESNETS = {
  resnet18: { units: [2, 2, 2, 2], bottleneck: false },
  resnet50: { units: [3, 4, 6, 3], bottleneck: true },
} as const;

/**
 * ResNet-18 / ResNet-50 as torchvision builds them (He et al. 2016; the
 * bottleneck's stride on its 3x3 conv, "ResNet v1.5"): a stem, then layer1..4
 * of basic (18) or bottleneck (50, expansion 4) units at 64-128-256-512
 * channels, global average pool. The `imagenet` stem is a 7x7/2 conv + batch
 * norm + ReLU + 3x3/2 max pool (224 px in, 56 px into layer1); `cifar` is a
 * 3x3/1 conv + batch norm + ReLU without the pool, for small images. Padding
 * is TensorFlow's 'same' (PyTorch pads the 7x7 conv 3/3 and the pool 1/1;
 * 'same' pads 2/3 and 0/1 at even sizes): the output sizes and parameter
 * counts are the same. model.padding torch pads as PyTorch does (what
 * torchvision weights need to give torchvision's outputs). Blocks: stem,
 * layer1, ..., layer4.
 */
function imagenetResnet(cfg: Config, arch: keyof typeof IMAGENET_RESNETS, seeds: Seeds): Block[] {
  const w = (c: number) => Math.max(1, Math.round(c * cfg.model.width));
  const torchPad = cfg.model.padding === 'torch';
  const { conv, bn } = resnetLayers(seeds, torchPad ? 'torch' : 'same');
  const { units, bottleneck } = IMAGENET_RESNETS[arch];
  const expansion = bottleneck ? 4 : 1;
  const pool = torchPad ? new TorchMaxPool2D({ name: 'stem_pool', poolSize: 3, strides: 2, pad: 1 }) : tf.layers.maxPooling2d({ name: 'stem_pool', poolSize: 3, strides: 2, padding: 'same' });
  const stem =
    (cfg.model.stem ?? 'imagenet') === 'imagenet'
      ? [conv('stem_conv', w(64), 7, 2), bn('stem_bn'), tf.layers.reLU({ name: 'stem_relu' }), pool]
      : [conv('stem_conv', w(64), 3, 1), bn('stem_bn'), tf.layers.reLU({ name: 'stem_relu' })];
  const blocks: Block[] = [chain('stem', stem)];
  let inC = w(64);
  [64, 128, 256, 512].forEach((c, stage) => {
    const planes = w(c);
    const out = planes * expansion;
    const unitList: Unit[] = [];
    for (let i = 0; i < units[stage]; i++) {
      const name = `layer${stage + 1}_${i + 1}`;
      const stride = stage > 0 && i === 0 ? 2 : 1;
      const pairs: Array<[tf.layers.Layer, tf.layers.Layer]> = bottleneck
        ? [
            [conv(`${name}_conv1`, planes, 1, 1), bn(`${name}_bn1`)],
            [conv(`${name}_conv2`, planes, 3, stride), bn(`${name}_bn2`)],
            [conv(`${name}_conv3`, out, 1, 1), bn(`${name}_bn3`)],
          ]
        : [
            [conv(`${name}_conv1`, out, 3, stride), bn(`${name}_bn1`)],
            [conv(`${name}_conv2`, out, 3, 1), bn(`${name}_bn2`)],
          ];
      const proj = stride !== 1 || inC !== out ? [conv(`${name}_proj`, out, 1, stride), bn(`${name}_proj_bn`)] : [];
      unitList.push(residualUnit(name, pairs, proj));
      inC = out;
    }
    const last = stage === 3 ? [tf.layers.globalAveragePooling2d({ name: 'layer4_pool' })] : [];
    blocks.push(unitsBlock(`layer${stage + 1}`, unitList, last));
  });
  return blocks;
}

export function newHead(numClasses: number, seed: number): tf.layers.Layer {
  return tf.layers.dense({ name: 'head', units: numClasses, kernelInitializer: tf.initializers.glorotUniform({ seed }) });
}

export interface HeadOptions {
  /** Seed of the primary head; by default the next seed of train.seed's stream (after every block's). */
  headSeed?: number;
  /** Multi-level training: a head per further level (`head_<level>`), seeded after the primary head. */
  extraHeads?: ReadonlyArray<{ level: string; numClasses: number }>;
}

/**
 * Build the configured architecture with a fresh head for `numClasses` (and
 * the extra heads asked for). The primary head's seed is kept in
 * `Network.headSeed` (summary.json records it).
 */
export function buildNetwork(cfg: Config, shape: [number, number, number], numClasses: number, heads: HeadOptions = {}): Network {
  const seeds = new Seeds(cfg.train.seed);
  let blocks: Block[];
  switch (cfg.model.arch) {
    case 'two-layer-conv':
      blocks = twoLayerConv(cfg, shape, seeds);
      break;
    case 'cnn-small':
      blocks = cnnSmall(cfg, seeds);
      break;
    case 'resnet8':
      blocks = resnet(cfg, 1, seeds);
      break;
    case 'resnet20':
      blocks = resnet(cfg, 3, seeds);
      break;
    case 'resnet18':
    case 'resnet50':
      blocks = imagenetResnet(cfg, cfg.model.arch, seeds);
      break;
    case 'densenet121':
      blocks = densenet121(cfg, seeds);
      break;
    case 'vit-tiny':
    case 'vit-small':
    case 'vit-base':
      blocks = vit(cfg, shape, cfg.model.arch, seeds);
      break;
  }
  const headSeed = heads.headSeed ?? seeds.next();
  const extra = (heads.extraHeads ?? []).map((e, i) => ({
    level: e.level,
    numClasses: e.numClasses,
    layer: tf.layers.dense({ name: extraHeadName(e.level), units: e.numClasses, kernelInitializer: tf.initializers.glorotUniform({ seed: (headSeed + 1 + i) % 2147483647 }) }),
  }));
  const net = new Network(cfg.model.arch, shape, blocks, newHead(numClasses, headSeed), numClasses, extra);
  net.headSeed = headSeed;
  return net;
}

/** Block names of an architecture, input side first, without building it (for --help). */
export function blockNames(arch: Config['model']['arch']): string[] {
  const res = (n: number) => ['stem', ...[1, 2, 3].flatMap((s) => Array.from({ length: n }, (_, i) => `stage${s}_block${i + 1}`))];
  switch (arch) {
    case 'two-layer-conv':
      return ['features'];
    case 'cnn-small':
      return ['block1', 'block2', 'block3'];
    case 'resnet8':
      return res(1);
    case 'resnet20':
      return res(3);
    case 'resnet18':
    case 'resnet50':
      return ['stem', 'layer1', 'layer2', 'layer3', 'layer4'];
    case 'densenet121':
      return ['stem', ...DENSENET121_BLOCKS.map((_, i) => `denseblock${i + 1}`)];
    case 'vit-tiny':
    case 'vit-small':
    case 'vit-base':
      return vitBlockNames();
  }
}

export const ARCHS: Array<Config['model']['arch']> = ['two-layer-conv', 'cnn-small', 'resnet8', 'resnet20', 'resnet18', 'resnet50', 'densenet121', 'vit-tiny', 'vit-small', 'vit-base'];
