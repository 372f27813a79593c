import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { batchNormTrain, isBatchNorm } from './batchnorm';
import { Block, extraHeadName, Network } from './network';
import { SmoothReLU, smoothRelu } from './smooth-relu';

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
function applyEager(l: tf.layers.Layer, x: tf.Tensor, training: boolean): tf.Tensor {
  return training && isBatchNorm(l) ? batchNormTrain(l, x) : (l.apply(x, { training }) as tf.Tensor);
}

/** A block that is a plain chain of layers. */
function chain(name: string, layers: tf.layers.Layer[]): Block {
  return {
    name,
    layers,
    apply: (x, training) => layers.reduce((h, l) => applyEager(l, h, training), x),
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

/** CIFAR ResNet (He et al. 2016): a stem, 3 stages of `n` basic blocks (16-32-64 channels). */
function resnet(cfg: Config, n: number, seeds: Seeds): Block[] {
  const w = (c: number) => Math.max(1, Math.round(c * cfg.model.width));
  const conv = (name: string, filters: number, k: number, stride: number) =>
    tf.layers.conv2d({ name, filters, kernelSize: k, strides: stride, padding: 'same', useBias: false, kernelInitializer: he(seeds) });
  const bn = (name: string) => tf.layers.batchNormalization({ name, momentum: 0.9, epsilon: 1e-5 });
  const blocks: Block[] = [chain('stem', [conv('stem_conv', w(16), 3, 1), bn('stem_bn'), tf.layers.reLU({ name: 'stem_relu' })])];
  let inC = w(16);
  [16, 32, 64].forEach((c, stage) => {
    for (let i = 0; i < n; i++) {
      const name = `stage${stage + 1}_block${i + 1}`;
      const stride = stage > 0 && i === 0 ? 2 : 1;
      const out = w(c);
      const c1 = conv(`${name}_conv1`, out, 3, stride);
      const b1 = bn(`${name}_bn1`);
      const r1 = tf.layers.reLU({ name: `${name}_relu1` });
      const c2 = conv(`${name}_conv2`, out, 3, 1);
      const b2 = bn(`${name}_bn2`);
      const proj = stride !== 1 || inC !== out ? [conv(`${name}_proj`, out, 1, stride), bn(`${name}_proj_bn`)] : [];
      const add = tf.layers.add({ name: `${name}_add` });
      const r2 = tf.layers.reLU({ name: `${name}_relu2` });
      const last = stage === 2 && i === n - 1 ? [tf.layers.globalAveragePooling2d({ name: `${name}_pool` })] : [];
      const layers = [c1, b1, r1, c2, b2, ...proj, add, r2, ...last];
      // One body for both tensor kinds: layers accept either.
      const body = <T extends tf.Tensor | tf.SymbolicTensor>(x: T, kw: { training?: boolean }): T => {
        const ap = (l: tf.layers.Layer, v: T) => (v instanceof tf.Tensor ? applyEager(l, v, kw.training === true) : l.apply(v, kw)) as T;
        const main = ap(b2, ap(c2, ap(r1, ap(b1, ap(c1, x)))));
        const short = proj.length ? ap(proj[1], ap(proj[0], x)) : x;
        let y = ap(r2, add.apply([main, short] as never, kw) as T);
        for (const l of last) y = ap(l, y);
        return y;
      };
      blocks.push({
        name,
        layers,
        apply: (x, training) => body(x, { training }),
        applySymbolic: (x) => body(x, {}),
      });
      inC = out;
    }
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
  }
}

export const ARCHS: Array<Config['model']['arch']> = ['two-layer-conv', 'cnn-small', 'resnet8', 'resnet20'];
