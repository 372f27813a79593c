import * as tf from '@tensorflow/tfjs';
import { softmaxLastAxis } from './fused-ops';
import { layerNorm } from './layer-norm';

/**
 * Layers whose arithmetic follows PyTorch's modules exactly, so a torchvision
 * or timm state dict mapped by name (src/models/checkpoint.ts) gives PyTorch's
 * outputs: symmetric zero padding (TensorFlow's 'same' puts the odd pixel at
 * the bottom/right, PyTorch pads both sides), and the Vision Transformer's
 * token embedding, self-attention and pooling (timm vision_transformer.py,
 * Dosovitskiy et al. 2021). Each is registered for the saved model graph.
 */

type Init = ReturnType<typeof tf.initializers.heNormal>;

/** The shape of a single-input layer's input (tfjs passes one shape or a list of them). */
function inputShapeOf(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
}

/** The tensor of a single-input layer's call (tfjs passes one tensor or a list). */
function inputOf(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
  return Array.isArray(inputs) ? inputs[0] : inputs;
}

/**
 * nn.Conv2d(padding=p) in NHWC/HWIO: a convolution with `pad` zero pixels on
 * every side. Its weights are `kernel` [k, k, in, out] (and `bias`), as
 * tf.layers.conv2d names them, so runs of either padding share weight names.
 * Runs as tf.conv2d (one gradient per input: backpropagation skips the
 * image's gradient under a network's first convolution).
 */
export class TorchConv2D extends tf.layers.Layer {
  static readonly className = 'TorchConv2D';
  readonly filters: number;
  readonly kernelSize: number;
  readonly stride: number;
  readonly pad: number;
  readonly useBias: boolean;
  private readonly init: Init | null;
  private kernel: tf.LayerVariable | null = null;
  private bias: tf.LayerVariable | null = null;

  constructor(args: { name?: string; filters: number; kernelSize: number; strides?: number; pad: number; useBias?: boolean; kernelInitializer?: Init }) {
    super({ name: args.name });
    this.filters = args.filters;
    this.kernelSize = args.kernelSize;
    this.stride = args.strides ?? 1;
    this.pad = args.pad;
    this.useBias = args.useBias ?? false;
    this.init = args.kernelInitializer ?? null;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const s = inputShapeOf(inputShape);
    const inC = s[s.length - 1] as number;
    this.kernel = this.addWeight('kernel', [this.kernelSize, this.kernelSize, inC, this.filters], 'float32', this.init ?? tf.initializers.heNormal({}));
    if (this.useBias) this.bias = this.addWeight('bias', [this.filters], 'float32', tf.initializers.zeros());
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShapeOf(inputShape);
    const out = (n: number | null) => (n === null ? null : Math.floor((n + 2 * this.pad - this.kernelSize) / this.stride) + 1);
    return [s[0], out(s[1]), out(s[2]), this.filters];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs) as tf.Tensor4D;
    return tf.tidy(() => {
      const y = tf.conv2d(x, this.kernel!.read() as tf.Tensor4D, this.stride, this.pad);
      return this.bias ? tf.add(y, this.bias.read()) : y;
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), filters: this.filters, kernelSize: this.kernelSize, strides: this.stride, pad: this.pad, useBias: this.useBias };
  }
}

/** nn.MaxPool2d(k, stride, padding=p): padded positions never win (PyTorch pads with -inf). */
export class TorchMaxPool2D extends tf.layers.Layer {
  static readonly className = 'TorchMaxPool2D';
  readonly poolSize: number;
  readonly stride: number;
  readonly pad: number;

  constructor(args: { name?: string; poolSize: number; strides: number; pad: number }) {
    super({ name: args.name });
    this.poolSize = args.poolSize;
    this.stride = args.strides;
    this.pad = args.pad;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShapeOf(inputShape);
    const out = (n: number | null) => (n === null ? null : Math.floor((n + 2 * this.pad - this.poolSize) / this.stride) + 1);
    return [s[0], out(s[1]), out(s[2]), s[3]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs) as tf.Tensor4D;
    return tf.maxPool(x, this.poolSize, this.stride, this.pad);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), poolSize: this.poolSize, strides: this.stride, pad: this.pad };
  }
}

/**
 * A ViT's patch grid [B, gh, gw, D] as tokens [B, T, D]: flattened row-major
 * (timm's `flatten(2).transpose(1, 2)`), a learned class token in front when
 * `classToken`, plus learned position embeddings. Weights: `cls_token`
 * [1, 1, D] and `pos_embed` [1, T, D], T = gh*gw (+1), timm's shapes.
 */
export class TokenEmbedding extends tf.layers.Layer {
  static readonly className = 'TokenEmbedding';
  readonly classToken: boolean;
  private readonly seed: number;
  private cls: tf.LayerVariable | null = null;
  private pos: tf.LayerVariable | null = null;

  constructor(args: { name?: string; classToken: boolean; seed: number }) {
    super({ name: args.name });
    this.classToken = args.classToken;
    this.seed = args.seed;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const s = inputShapeOf(inputShape) as number[];
    const [gh, gw, d] = [s[1], s[2], s[3]];
    // timm: cls_token ~ N(0, 1e-6), pos_embed ~ trunc_normal(std 0.02).
    if (this.classToken) this.cls = this.addWeight('cls_token', [1, 1, d], 'float32', tf.initializers.randomNormal({ mean: 0, stddev: 1e-6, seed: this.seed }));
    this.pos = this.addWeight('pos_embed', [1, gh * gw + (this.classToken ? 1 : 0), d], 'float32', tf.initializers.truncatedNormal({ mean: 0, stddev: 0.02, seed: this.seed + 1 }));
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShapeOf(inputShape) as number[];
    return [s[0], s[1] * s[2] + (this.classToken ? 1 : 0), s[3]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs);
    return tf.tidy(() => {
      const [b, gh, gw, d] = x.shape;
      let t = x.reshape([b, gh * gw, d]);
      // broadcastTo, not tile: tile's gradient is a slice per copy.
      if (this.cls) t = tf.concat([tf.broadcastTo(this.cls.read(), [b, 1, d]), t], 1);
      return tf.add(t, this.pos!.read());
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), classToken: this.classToken, seed: this.seed };
  }
}

/**
 * Multi-head self-attention as timm's `Attention` (qkv_bias=True): one
 * projection to q, k, v ([D, 3D], laid out q | k | v, heads contiguous inside
 * each), softmax(q k^T / sqrt(D/heads)) v per head, the heads concatenated and
 * projected ([D, D]). In [B, T, D], out [B, T, D]. Weights `qkv_kernel`,
 * `qkv_bias`, `proj_kernel`, `proj_bias` (kernels [in, out], PyTorch's
 * Linear.weight transposed). Throws if D is not a multiple of `heads`.
 */
export class MultiHeadSelfAttention extends tf.layers.Layer {
  static readonly className = 'MultiHeadSelfAttention';
  readonly heads: number;
  private readonly seed: number;
  private qkvKernel: tf.LayerVariable | null = null;
  private qkvBias: tf.LayerVariable | null = null;
  private projKernel: tf.LayerVariable | null = null;
  private projBias: tf.LayerVariable | null = null;

  constructor(args: { name?: string; heads: number; seed: number }) {
    super({ name: args.name });
    this.heads = args.heads;
    this.seed = args.seed;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const s = inputShapeOf(inputShape) as number[];
    const d = s[s.length - 1];
    if (d % this.heads) throw new Error(`attention width ${d} is not a multiple of ${this.heads} heads`);
    const tn = (seed: number) => tf.initializers.truncatedNormal({ mean: 0, stddev: 0.02, seed });
    this.qkvKernel = this.addWeight('qkv_kernel', [d, 3 * d], 'float32', tn(this.seed));
    this.qkvBias = this.addWeight('qkv_bias', [3 * d], 'float32', tf.initializers.zeros());
    this.projKernel = this.addWeight('proj_kernel', [d, d], 'float32', tn(this.seed + 1));
    this.projBias = this.addWeight('proj_bias', [d], 'float32', tf.initializers.zeros());
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return inputShapeOf(inputShape);
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs);
    return tf.tidy(() => {
      const [b, t, d] = x.shape;
      const h = this.heads;
      const hd = d / h;
      // Bias added inside the product (one _FusedMatMul, its gradient a column sum): the same float32 sum as matMul then add.
      const qkv = tf.fused.matMul({ a: x.reshape([b * t, d]), b: this.qkvKernel!.read() as tf.Tensor2D, bias: this.qkvBias!.read() });
      // [B*T, 3D] -> [3, B, heads, T, hd]
      const [q, k, v] = tf.unstack(qkv.reshape([b, t, 3, h, hd]).transpose([2, 0, 3, 1, 4]));
      const attn = softmaxLastAxis(tf.matMul(q.mul(1 / Math.sqrt(hd)), k, false, true));
      const o = tf.matMul(attn, v).transpose([0, 2, 1, 3]).reshape([b * t, d]);
      return tf.fused.matMul({ a: o, b: this.projKernel!.read() as tf.Tensor2D, bias: this.projBias!.read() }).reshape([b, t, d]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), heads: this.heads, seed: this.seed };
  }
}

/**
 * nn.LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta,
 * var the biased variance (Ba et al. 2016). Weights `gamma`, `beta` [D] as
 * tf.layers.layerNormalization names them; that layer tiles its statistics and
 * weights to the input's shape, and tile's gradient is one slice per copy
 * (28k slices per step in a 12-block ViT), so this one broadcasts, and runs
 * as one fused kernel where the backend has it (./layer-norm.ts).
 */
export class TorchLayerNorm extends tf.layers.Layer {
  static readonly className = 'TorchLayerNorm';
  readonly epsilon: number;
  private gamma: tf.LayerVariable | null = null;
  private beta: tf.LayerVariable | null = null;

  constructor(args: { name?: string; epsilon: number }) {
    super({ name: args.name });
    this.epsilon = args.epsilon;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const s = inputShapeOf(inputShape) as number[];
    const d = s[s.length - 1];
    this.gamma = this.addWeight('gamma', [d], 'float32', tf.initializers.ones());
    this.beta = this.addWeight('beta', [d], 'float32', tf.initializers.zeros());
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return inputShapeOf(inputShape);
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs);
    return layerNorm(x, this.gamma!.read(), this.beta!.read(), this.epsilon);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), epsilon: this.epsilon };
  }
}

/** [B, T, D] -> [B, D]: the class token's output (`token`, token 0) or the mean over tokens (`avg`). */
export class TokenPool extends tf.layers.Layer {
  static readonly className = 'TokenPool';
  readonly mode: 'token' | 'avg';

  constructor(args: { name?: string; mode: 'token' | 'avg' }) {
    super({ name: args.name });
    this.mode = args.mode;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShapeOf(inputShape);
    return [s[0], s[2]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = inputOf(inputs);
    return tf.tidy(() => {
      if (this.mode === 'avg') return x.mean(1);
      const [b, , d] = x.shape;
      return x.slice([0, 0, 0], [b, 1, d]).reshape([b, d]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), mode: this.mode };
  }
}

for (const c of [TorchConv2D, TorchMaxPool2D, TorchLayerNorm, TokenEmbedding, MultiHeadSelfAttention, TokenPool]) tf.serialization.registerClass(c);
