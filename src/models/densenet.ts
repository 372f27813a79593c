import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { applyEager, chain } from './archs';
import { batchNormTrain } from './batchnorm';
import { Block } from './network';
import { TorchConv2D, TorchMaxPool2D } from './torch-layers';

/** Dense layers per dense block of DenseNet-121 (Huang et al. 2017, table 1; torchvision's densenet121). */
export const DENSENET121_BLOCKS = [6, 12, 24, 16] as const;

type Kw = { training?: boolean };
const ap = <T extends tf.Tensor | tf.SymbolicTensor>(l: tf.layers.Layer, v: T, kw: Kw): T =>
  (v instanceof tf.Tensor ? applyEager(l, v, kw.training === true) : l.apply(v, kw)) as T;

/**
 * DenseNet-121 as torchvision builds it (growth rate 32, bottleneck 4 x 32,
 * 64 initial features, compression 0.5, memory-inefficient concatenation):
 * stem = 7x7/2 conv (pad 3) + BN + ReLU + 3x3/2 max pool (pad 1); each dense
 * layer BN-ReLU-1x1 conv (128) - BN-ReLU-3x3 conv (32), its output
 * concatenated after its input (channels: input first, as torch.cat);
 * denseblock1..3 each end with their transition (BN-ReLU-1x1 conv to half
 * the channels, 2x2/2 average pool), denseblock4 with BN, ReLU and global
 * average pooling. PyTorch's symmetric padding always, so torchvision weights
 * give torchvision's outputs. 7,978,856 parameters with 1000 classes;
 * model.width scales growth rate and initial features.
 */
export function densenet121(cfg: Config, seeds: { next(): number }): Block[] {
  const w = (c: number) => Math.max(1, Math.round(c * cfg.model.width));
  const growth = w(32);
  const conv = (name: string, filters: number, k: number, stride = 1) =>
    new TorchConv2D({ name, filters, kernelSize: k, strides: stride, pad: (k - 1) / 2, kernelInitializer: tf.initializers.heNormal({ seed: seeds.next() }) });
  const bn = (name: string) => tf.layers.batchNormalization({ name, momentum: 0.9, epsilon: 1e-5 });
  const relu = (name: string) => tf.layers.reLU({ name });
  let channels = w(64);
  const blocks: Block[] = [chain('stem', [conv('conv0', channels, 7, 2), bn('norm0'), relu('relu0'), new TorchMaxPool2D({ name: 'pool0', poolSize: 3, strides: 2, pad: 1 })])];
  DENSENET121_BLOCKS.forEach((n, b) => {
    const name = `denseblock${b + 1}`;
    const units: Array<{ layers: tf.layers.Layer[]; apply<T extends tf.Tensor | tf.SymbolicTensor>(x: T, kw: Kw): T }> = [];
    for (let i = 1; i <= n; i++) {
      const p = `${name}_denselayer${i}`;
      const [norm1, relu1, conv1, norm2, relu2, conv2] = [bn(`${p}_norm1`), relu(`${p}_relu1`), conv(`${p}_conv1`, 4 * growth, 1), bn(`${p}_norm2`), relu(`${p}_relu2`), conv(`${p}_conv2`, growth, 3)];
      const cat = tf.layers.concatenate({ name: `${p}_concat`, axis: -1 });
      units.push({
        layers: [norm1, relu1, conv1, norm2, relu2, conv2, cat],
        apply: (x, kw) => {
          let h;
          if (x instanceof tf.Tensor && kw.training === true) {
            // Training, eagerly: each batch norm fused with its ReLU (./batchnorm.ts).
            h = batchNormTrain(norm2, applyEager(conv1, batchNormTrain(norm1, x, { relu: true }), true), { relu: true });
          } else h = ap(relu2, ap(norm2, ap(conv1, ap(relu1, ap(norm1, x, kw), kw), kw), kw), kw);
          return cat.apply([x, ap(conv2, h as typeof x, kw)] as never) as typeof x;
        },
      });
      channels += growth;
    }
    const after: tf.layers.Layer[] =
      b < DENSENET121_BLOCKS.length - 1
        ? [bn(`transition${b + 1}_norm`), relu(`transition${b + 1}_relu`), conv(`transition${b + 1}_conv`, Math.floor(channels / 2), 1), tf.layers.averagePooling2d({ name: `transition${b + 1}_pool`, poolSize: 2, strides: 2, padding: 'valid' })]
        : [bn('norm5'), relu('relu5'), tf.layers.globalAveragePooling2d({ name: 'pool5' })];
    if (b < DENSENET121_BLOCKS.length - 1) channels = Math.floor(channels / 2);
    const tail = chain(`${name}_tail`, after);
    const body = <T extends tf.Tensor | tf.SymbolicTensor>(x: T, kw: Kw): T => {
      let y = x;
      for (const u of units) y = u.apply(y, kw);
      return (y instanceof tf.Tensor ? tail.apply(y, kw.training === true) : tail.applySymbolic(y as tf.SymbolicTensor)) as T;
    };
    blocks.push({ name, layers: [...units.flatMap((u) => u.layers), ...after], apply: (x, training) => body(x, { training }), applySymbolic: (x) => body(x, {}) });
  });
  return blocks;
}
