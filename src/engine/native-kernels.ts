/**
 * Native kernels from native/onednn.cc (built by `npm run build:native` into
 * native/build/granular_onednn.node): convolutions (forward, both gradients,
 * FusedConv2D with bias and ReLU) and matrix products from oneDNN, the CPU
 * kernel library PyTorch uses, and multi-threaded pooling, batch-norm,
 * reduction and elementwise loops.
 *
 * They are registered on two backends:
 * - `native` (./native-backend): tensors in ordinary memory (typed arrays),
 *   the default when the addon loads. Every hot kernel of a training step is
 *   here; the rest are tfjs's pure-JavaScript cpu kernels.
 * - `wasm`, over our wasm kernels (./wasm-kernels, ./wasm-fast-kernels): the
 *   set this project had before the native backend, computing in place on
 *   views of the wasm heap (backend.typedArrayFromHeap; every view is taken
 *   after the last output is made, since growing the heap detaches older
 *   ones). Its numerics are unchanged, so runs made on it resume bit-identically.
 *
 * Each kernel hands the cases it does not cover (dilations, NCHW, exotic
 * activations, explicit paddings oneDNN cannot express, other dtypes) to the
 * kernel it replaced.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, SOFTMAX_GRAD } from './kernel-names';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { NativeBackend } from './native-backend';

/** What native/onednn.cc exports. Geometry arrays are documented there. */
export interface OneDnnAddon {
  conv2d(x: Float32Array, filter: Float32Array, bias: Float32Array | null, y: Float32Array, geometry: number[], relu: boolean): void;
  conv2dBackpropInput(dy: Float32Array, filter: Float32Array, dx: Float32Array, geometry: number[]): void;
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, geometry: number[]): void;
  implementation(kind: 'forward' | 'backward_data' | 'backward_weights', geometry: number[]): string;
  maxPool(x: Float32Array, y: Float32Array, geometry: number[]): void;
  maxPoolGrad(x: Float32Array, dy: Float32Array, dx: Float32Array, geometry: number[]): void;
  sumAxes(x: Float32Array, out: Float32Array, outer: number, mid: number, inner: number, scale: number): void;
  broadcastBinary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, shape: number[], aStrides: number[], bStrides: number[]): void;
  unary(op: number, x: Float32Array, out: Float32Array, n: number, alpha: number): void;
  gemm(a: Float32Array, b: Float32Array, out: Float32Array, bias: Float32Array | null, geometry: number[], relu: boolean): void;
  batchNorm(x: Float32Array, mean: Float32Array, variance: Float32Array, offset: Float32Array | null, scale: Float32Array | null, out: Float32Array, n: number, channels: number, epsilon: number): void;
  batchNormTrain(
    x: Float32Array, gamma: Float32Array | null, beta: Float32Array | null, residual: Float32Array | null,
    y: Float32Array, mean: Float32Array, variance: Float32Array, invStd: Float32Array, rows: number, channels: number, epsilon: number, relu: boolean,
  ): void;
  batchNormTrainGrad(
    dy: Float32Array, x: Float32Array, mean: Float32Array, invStd: Float32Array, gamma: Float32Array | null, y: Float32Array | null,
    dx: Float32Array, dGamma: Float32Array, dBeta: Float32Array, dResidual: Float32Array | null, rows: number, channels: number,
  ): void;
  release(values: ArrayBufferView): void;
  /** madvise(MADV_HUGEPAGE) over the buffer's aligned 2 MiB pages; returns the bytes advised (0 where unsupported). */
  adviseHugePages(values: ArrayBufferView): number;
  setThreads(n: number): number;
  version(): string;
  primitives(): number;
  softmax(x: Float32Array, out: Float32Array, rows: number, cols: number): void;
  concatRows(inputs: Float32Array[], widths: number[], out: Float32Array, outer: number): void;
  splitRows(x: Float32Array, outputs: Float32Array[], widths: number[], outer: number): void;
  avgPoolGrad(dy: Float32Array, dx: Float32Array, geometry: number[]): void;
  layerNorm(x: Float32Array, gamma: Float32Array | null, beta: Float32Array | null, y: Float32Array, mean: Float32Array, invStd: Float32Array, rows: number, cols: number, epsilon: number): void;
  layerNormGrad(
    dy: Float32Array, x: Float32Array, mean: Float32Array, invStd: Float32Array, gamma: Float32Array | null,
    dx: Float32Array, dGamma: Float32Array, dBeta: Float32Array, rows: number, cols: number,
  ): void;
  gelu(x: Float32Array, y: Float32Array, n: number): void;
  geluGrad(dy: Float32Array, x: Float32Array, dx: Float32Array, n: number): void;
  softmaxGrad(dy: Float32Array, y: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  transpose(x: Float32Array | Int32Array, out: Float32Array | Int32Array, shape: number[], perm: number[]): void;
}

const ADDON_FUNCTIONS: Array<keyof OneDnnAddon> = [
  'conv2d',
  'conv2dBackpropInput',
  'conv2dBackpropFilter',
  'implementation',
  'maxPool',
  'maxPoolGrad',
  'sumAxes',
  'broadcastBinary',
  'unary',
  'gemm',
  'batchNorm',
  'batchNormTrain',
  'batchNormTrainGrad',
  'release',
  'adviseHugePages',
  'setThreads',
  'version',
  'primitives',
  'softmax',
  'concatRows',
  'splitRows',
  'avgPoolGrad',
  'layerNorm',
  'layerNormGrad',
  'gelu',
  'geluGrad',
  'softmaxGrad',
  'transpose',
];

/** Where `npm run build:native` puts the addon (this file runs from dist/src/engine/). */
export const ADDON_PATH = path.join(__dirname, '..', '..', '..', 'native', 'build', 'granular_onednn.node');

/** The environment variable that turns the native kernels off (`GRANULAR_NATIVE=0`). */
export const NATIVE_ENV = 'GRANULAR_NATIVE';

/**
 * Kernel names of the fused training-mode batch norm (src/models/batchnorm.ts), LayerNorm
 * (src/models/layer-norm.ts), GELU and softmax gradient (src/models/fused-ops.ts), native backend only.
 */
export { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, SOFTMAX_GRAD };

let loaded: { addon: OneDnnAddon | null; why: string | null } | null = null;

/** The addon, or null and why not (not built, disabled, fails to load). */
export function loadOneDnn(): { addon: OneDnnAddon | null; why: string | null } {
  if (loaded) return loaded;
  if (process.env[NATIVE_ENV] === '0') {
    loaded = { addon: null, why: `disabled by ${NATIVE_ENV}=0` };
  } else {
    // libgomp reads this once, when the addon loads it. Its default lets idle
    // threads spin after every parallel region; beside the wasm pool's
    // threads and other processes on few cores that spinning starved the
    // very threads it waited for (resnet8: 14 img/s spinning, 361 passive,
    // 2 cores under load). A value the user set wins.
    process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
    try {
      const a = require(ADDON_PATH) as OneDnnAddon;
      // An addon built from an older native/onednn.cc lacks newer functions.
      const missing = ADDON_FUNCTIONS.filter((f) => typeof a[f] !== 'function');
      loaded = missing.length
        ? { addon: null, why: `${ADDON_PATH} is out of date (no ${missing.join(', ')}); rebuild it with 'npm run build:native'` }
        : { addon: a, why: null };
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why =
        err.code === 'MODULE_NOT_FOUND'
          ? `not built (run 'npm run build:native'; it needs g++ and oneDNN, e.g. apt-get install libdnnl-dev)`
          : `${ADDON_PATH} does not load (${err.message.split('\n')[0]}); rebuild it with 'npm run build:native'`;
      loaded = { addon: null, why };
    }
  }
  return loaded;
}

type Conv2DInfo = tf.backend_util.Conv2DInfo;
type KernelArgs = Parameters<tf.KernelFunc>[0];
type BackendName = 'wasm' | 'native';

/**
 * Output allocation and data access, per backend. On wasm, `f32` views must
 * be taken after every `out` of the call (a heap growth detaches them).
 */
interface Io {
  out(shape: number[]): tf.TensorInfo;
  f32(t: tf.TensorInfo): Float32Array;
}

function io(backend: object): Io {
  if ((backend as { typedArrayFromHeap?: unknown }).typedArrayFromHeap) {
    const wasm = backend as BackendWasm;
    return { out: (shape) => wasm.makeOutput(shape, 'float32'), f32: (t) => wasm.typedArrayFromHeap(t) as Float32Array };
  }
  const native = backend as NativeBackend;
  return {
    out: (shape) => native.makeOutputInfo(shape, 'float32'),
    // The cpu kernels' Cast from bool keeps the Uint8Array under the float32 dtype.
    f32: (t) => {
      const v = native.values(t);
      return v instanceof Float32Array ? v : Float32Array.from(v);
    },
  };
}

/** The kernels these replaced, by backend and name: the fallback for the cases passed on. */
const previous = new Map<string, tf.KernelConfig>();
let addon: OneDnnAddon;

function fallBack(kernelName: string, args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const backendName = isWasm(args.backend) ? 'wasm' : 'native';
  const kernel = previous.get(`${backendName}/${kernelName}`);
  if (!kernel) throw new Error(`native kernels: no previous '${kernelName}' kernel on ${backendName} to fall back on`);
  return kernel.kernelFunc(args) as tf.TensorInfo | tf.TensorInfo[];
}

function isWasm(backend: object): boolean {
  return Boolean((backend as { typedArrayFromHeap?: unknown }).typedArrayFromHeap);
}

const allFloat32 = (...ts: Array<tf.TensorInfo | undefined>) => ts.every((t) => !t || t.dtype === 'float32');

interface ConvAttrs {
  strides: [number, number] | number;
  pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: [number, number] | number;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/**
 * The addon's 15-integer geometry of an NHWC/HWIO convolution, or null when
 * oneDNN cannot run it as given: NCHW, dilations, non-float32 data, empty
 * tensors, or paddings whose output size oneDNN would compute differently.
 */
function convGeometry(
  xShape: number[],
  filterShape: number[],
  attrs: ConvAttrs,
  dtypes: string[],
): { info: Conv2DInfo; geometry: number[] } | null {
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC') return null;
  if (attrs.dilations !== undefined && !tf.backend_util.tupleValuesAreOne(attrs.dilations)) return null;
  if (dtypes.some((d) => d !== 'float32')) return null;
  if (xShape.length !== 4 || filterShape.length !== 4) return null;
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const { top, left, bottom, right } = info.padInfo;
  if ([top, left, bottom, right].some((p) => p < 0)) return null;
  const sizes = [batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth];
  if (sizes.some((s) => !(s > 0))) return null;
  if (Math.floor((inHeight + top + bottom - filterHeight) / strideHeight) + 1 !== outHeight) return null;
  if (Math.floor((inWidth + left + right - filterWidth) / strideWidth) + 1 !== outWidth) return null;
  return { info, geometry: [...sizes, strideHeight, strideWidth, top, left, bottom, right] };
}

function conv2D(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
  const g = convGeometry(x.shape, filter.shape, args.attrs as unknown as ConvAttrs, [x.dtype, filter.dtype]);
  if (!g) return fallBack(tf.Conv2D, args);
  const b = io(args.backend);
  const y = b.out(g.info.outShape);
  addon.conv2d(b.f32(x), b.f32(filter), null, b.f32(y), g.geometry, false);
  return y;
}

/**
 * FusedConv2D with no activation or ReLU, and no bias or one per output
 * channel: what the models' conv layers produce when no gradient is being
 * recorded (tfjs fuses only then) and bias-free convs always.
 */
function fusedConv2D(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, filter, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const attrs = args.attrs as unknown as tf.FusedConv2DAttrs;
  const g = convGeometry(x!.shape, filter!.shape, attrs as unknown as ConvAttrs, [x!.dtype, filter!.dtype, ...(bias ? [bias.dtype] : [])]);
  const activationOk = attrs.activation === 'linear' || attrs.activation === 'relu' || attrs.activation === undefined;
  const biasOk = !bias || (tf.util.sizeFromShape(bias.shape) === g?.info.outChannels && bias.shape[bias.shape.length - 1] === g?.info.outChannels);
  if (!g || !activationOk || !biasOk || preluActivationWeights) return fallBack(tf.FusedConv2D, args);
  const b = io(args.backend);
  const y = b.out(g.info.outShape);
  addon.conv2d(b.f32(x!), b.f32(filter!), bias ? b.f32(bias) : null, b.f32(y), g.geometry, attrs.activation === 'relu');
  return y;
}

function conv2DBackpropInput(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
  const attrs = args.attrs as unknown as tf.Conv2DBackpropInputAttrs & ConvAttrs;
  const g = convGeometry(attrs.inputShape, filter.shape, attrs, [dy.dtype, filter.dtype]);
  if (!g || !tf.util.arraysEqual(dy.shape, g.info.outShape)) return fallBack(tf.Conv2DBackpropInput, args);
  const b = io(args.backend);
  const dx = b.out(attrs.inputShape);
  addon.conv2dBackpropInput(b.f32(dy), b.f32(filter), b.f32(dx), g.geometry);
  return dx;
}

function conv2DBackpropFilter(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const attrs = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs & ConvAttrs;
  const g = convGeometry(x.shape, attrs.filterShape, attrs, [x.dtype, dy.dtype]);
  if (!g || !tf.util.arraysEqual(dy.shape, g.info.outShape)) return fallBack(tf.Conv2DBackpropFilter, args);
  // The addon runs a strided 1x1 weight gradient as a unit-stride one on the
  // pixels the filter sees (working around a oneDNN 2.6 bug), unpadded only.
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = g.info;
  const strided1x1 = filterHeight === 1 && filterWidth === 1 && strideHeight * strideWidth > 1;
  if (strided1x1 && padInfo.top + padInfo.left + padInfo.bottom + padInfo.right > 0) return fallBack(tf.Conv2DBackpropFilter, args);
  const b = io(args.backend);
  const dw = b.out(attrs.filterShape);
  addon.conv2dBackpropFilter(b.f32(x), b.f32(dy), b.f32(dw), g.geometry);
  return dw;
}

/** The addon's 12-integer pool geometry, or null when it does not apply (NCHW, dilations, non-float32, empty). */
function poolGeometry(xShape: number[], attrs: tf.MaxPoolAttrs, dtypes: string[]): { info: Conv2DInfo; geometry: number[] } | null {
  if (dtypes.some((d) => d !== 'float32') || xShape.length !== 4 || tf.util.sizeFromShape(xShape) === 0) return null;
  const info = tf.backend_util.computePool2DInfo(xShape as [number, number, number, number], attrs.filterSize, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth } = info;
  if ([outHeight, outWidth].some((s) => !(s > 0))) return null;
  return { info, geometry: [batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth, info.padInfo.top, info.padInfo.left] };
}

/** MaxPool (native backend): the maximum of each window, NaN propagating, images and rows split over threads. */
function maxPool(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const g = poolGeometry(x.shape, args.attrs as unknown as tf.MaxPoolAttrs, [x.dtype]);
  if (!g) return fallBack(tf.MaxPool, args);
  const b = io(args.backend);
  const y = b.out(g.info.outShape);
  addon.maxPool(b.f32(x), b.f32(y), g.geometry);
  return y;
}

/** MaxPoolGrad: the same rule as ./wasm-fast-kernels (first maximum of each window), images split over threads. */
function maxPoolGrad(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { dy, input } = args.inputs as { dy: tf.TensorInfo; input: tf.TensorInfo };
  const g = poolGeometry(input.shape, args.attrs as unknown as tf.MaxPoolAttrs, [input.dtype, dy.dtype]);
  if (!g) return fallBack(tf.MaxPoolGrad, args);
  const b = io(args.backend);
  const dx = b.out(input.shape);
  addon.maxPoolGrad(b.f32(input), b.f32(dy), b.f32(dx), g.geometry);
  return dx;
}

/** AvgPoolGrad of an unpadded pool (DenseNet's 2x2/2 transitions); padded ones go to the replaced kernel. */
function avgPoolGrad(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { dy, input } = args.inputs as { dy: tf.TensorInfo; input: tf.TensorInfo };
  const g = poolGeometry(input.shape, args.attrs as unknown as tf.MaxPoolAttrs, [input.dtype, dy.dtype]);
  const p = g?.info.padInfo;
  if (!g || !p || p.top + p.left + p.bottom + p.right > 0 || !tf.util.arraysEqual(dy.shape, g.info.outShape)) return fallBack(tf.AvgPoolGrad, args);
  const b = io(args.backend);
  const dx = b.out(input.shape);
  addon.avgPoolGrad(b.f32(dy), b.f32(dx), g.geometry.slice(0, 10));
  return dx;
}

/**
 * Sum/Mean in float64 (as the cpu backend, for precision: float32 column sums
 * over 65k rows drifted batch-norm training by 2.6e-3 in 20 steps), on all
 * threads, over a contiguous run of axes: leading ones (batch-norm statistics
 * and bias gradients) on both backends, middle ones (global average pooling)
 * on the native backend. Other axes go to the replaced kernel.
 */
function reduce(kernelName: string, args: KernelArgs, mean: boolean): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = args.attrs as unknown as tf.SumAttrs;
  if (x.dtype !== 'float32' || x.shape.length === 0) return fallBack(kernelName, args);
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const first = axes[0];
  const contiguous = axes.length > 0 && axes.every((a, i) => a === first + i) && axes.length < x.shape.length;
  if (!contiguous || (first > 0 && isWasm(args.backend))) return fallBack(kernelName, args);
  const last = first + axes.length;
  const outer = tf.util.sizeFromShape(x.shape.slice(0, first));
  const mid = tf.util.sizeFromShape(x.shape.slice(first, last));
  const inner = tf.util.sizeFromShape(x.shape.slice(last));
  if (outer === 0 || mid === 0 || inner === 0) return fallBack(kernelName, args);
  const outShape = keepDims ? x.shape.map((d, i) => (i >= first && i < last ? 1 : d)) : [...x.shape.slice(0, first), ...x.shape.slice(last)];
  const b = io(args.backend);
  const out = b.out(outShape);
  addon.sumAxes(b.f32(x), b.f32(out), outer, mid, inner, mean ? 1 / mid : 1);
  return out;
}

/** The addon's binary op codes (native/onednn.cc, BroadcastBinary). */
const BINARY_OPS: Record<string, number> = {
  [tf.Add]: 0,
  [tf.Sub]: 1,
  [tf.Multiply]: 2,
  [tf.RealDiv]: 3,
  [tf.SquaredDifference]: 4,
  [tf.Maximum]: 5,
  [tf.Minimum]: 6,
};

/**
 * Strides of an operand of `shape` read over an output of `outShape`
 * (numpy broadcasting: missing leading axes and size-1 axes get stride 0),
 * with adjacent axes merged where both operands allow it. Returns the merged
 * output shape and both stride lists.
 */
export function broadcastStrides(aShape: number[], bShape: number[], outShape: number[]): { shape: number[]; a: number[]; b: number[] } {
  const r = outShape.length;
  const strides = (shape: number[]) => {
    const s = new Array<number>(r).fill(0);
    let acc = 1;
    for (let i = shape.length - 1; i >= 0; i--) {
      const o = r - shape.length + i;
      s[o] = shape[i] === 1 && outShape[o] !== 1 ? 0 : acc;
      acc *= shape[i];
    }
    return s;
  };
  const sa = strides(aShape);
  const sb = strides(bShape);
  const shape: number[] = [];
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < r; i++) {
    if (outShape[i] === 1) continue;
    const k = shape.length - 1;
    // Axis i merges into the previous one when, for both operands, stepping
    // over it continues the previous axis's stride pattern.
    if (k >= 0 && sa[i] * outShape[i] === a[k] && sb[i] * outShape[i] === b[k]) {
      shape[k] *= outShape[i];
      a[k] = sa[i];
      b[k] = sb[i];
    } else {
      shape.push(outShape[i]);
      a.push(sa[i]);
      b.push(sb[i]);
    }
  }
  if (shape.length === 0) return { shape: [1], a: [1], b: [1] };
  return { shape, a, b };
}

/**
 * Elementwise float32 Add/Sub/Multiply/RealDiv/SquaredDifference/Maximum/
 * Minimum with numpy broadcasting (batch norm's per-channel statistics, a
 * mean's gradient over [N,1,1,C], the optimizer's updates), one float32
 * operation per element, on all threads. The wasm backend keeps the
 * leading-axes broadcasts it had (results are the same bits either way).
 */
function binary(kernelName: string, args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallBack(kernelName, args);
  const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
  if (tf.util.sizeFromShape(outShape) === 0 || outShape.length > 8) return fallBack(kernelName, args);
  if (isWasm(args.backend) && (BINARY_OPS[kernelName] > 4 || !leadingBroadcast(a.shape, b.shape, outShape))) return fallBack(kernelName, args);
  const s = broadcastStrides(a.shape, b.shape, outShape);
  const o = io(args.backend);
  const out = o.out(outShape);
  addon.broadcastBinary(BINARY_OPS[kernelName], o.f32(a), o.f32(b), o.f32(out), s.shape, s.a, s.b);
  return out;
}

/** Whether one operand spans the output and the other is broadcast over leading axes only (the wasm path's cases). */
function leadingBroadcast(aShape: number[], bShape: number[], outShape: number[]): boolean {
  const n = tf.util.sizeFromShape(outShape);
  const period = (shape: number[]) => {
    let first = 0;
    while (first < shape.length && shape[first] === 1) first++;
    const kept = shape.slice(first);
    return kept.length <= outShape.length && tf.util.arraysEqual(kept, outShape.slice(outShape.length - kept.length));
  };
  return period(aShape) && period(bShape) && (tf.util.sizeFromShape(aShape) === n || tf.util.sizeFromShape(bShape) === n);
}

/** The addon's unary op codes (native/onednn.cc, Unary). */
const UNARY_OPS: Record<string, number> = {
  [tf.Relu]: 0,
  [tf.Step]: 1,
  [tf.Neg]: 2,
  [tf.Square]: 3,
  [tf.Sqrt]: 4,
  [tf.Rsqrt]: 5,
  [tf.Exp]: 6,
  [tf.Log]: 7,
  [tf.Abs]: 8,
  [tf.Relu6]: 9,
  [tf.Sigmoid]: 10,
  // GELU's (x * (1 + erf(x / sqrt 2)) / 2) and its gradient's.
  [tf.Erf]: 11,
};

/** Elementwise float32 unary ops on all threads (ReLU and its gradient mask, Step, are the hot ones). */
function unary(kernelName: string, args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const n = tf.util.sizeFromShape(x.shape);
  if (x.dtype !== 'float32' || n === 0) return fallBack(kernelName, args);
  const alpha = kernelName === tf.Step ? ((args.attrs as unknown as tf.StepAttrs).alpha ?? 0) : 0;
  const b = io(args.backend);
  const out = b.out(x.shape);
  addon.unary(UNARY_OPS[kernelName], b.f32(x), b.f32(out), n, alpha);
  return out;
}

/**
 * BatchMatMul and _FusedMatMul (dense layers: bias, linear or ReLU) of float32
 * matrices, batch dimensions equal or one side's broadcast, with oneDNN's
 * sgemm. Rank 2 and up; anything else goes to the replaced kernel.
 */
function matMul(kernelName: string, args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const attrs = args.attrs as unknown as tf.BatchMatMulAttrs & { activation?: string };
  const activation = attrs.activation ?? 'linear';
  if (!allFloat32(a, b, bias) || preluActivationWeights || (activation !== 'linear' && activation !== 'relu')) return fallBack(kernelName, args);
  const ra = a!.shape.length;
  const rb = b!.shape.length;
  if (ra < 2 || rb < 2) return fallBack(kernelName, args);
  const M = attrs.transposeA ? a!.shape[ra - 1] : a!.shape[ra - 2];
  const K = attrs.transposeA ? a!.shape[ra - 2] : a!.shape[ra - 1];
  const Kb = attrs.transposeB ? b!.shape[rb - 1] : b!.shape[rb - 2];
  const N = attrs.transposeB ? b!.shape[rb - 2] : b!.shape[rb - 1];
  const batchA = a!.shape.slice(0, -2);
  const batchB = b!.shape.slice(0, -2);
  const na = tf.util.sizeFromShape(batchA);
  const nb = tf.util.sizeFromShape(batchB);
  const batchShape = na >= nb ? batchA : batchB;
  const sameBatch = tf.util.arraysEqual(batchA, batchB) || na === 1 || nb === 1;
  const biasOk = !bias || (tf.util.sizeFromShape(bias.shape) === N && bias.shape[bias.shape.length - 1] === N);
  if (K !== Kb || !sameBatch || !biasOk || M * N * K === 0) return fallBack(kernelName, args);
  const batch = Math.max(na, nb);
  const o = io(args.backend);
  const out = o.out([...batchShape, M, N]);
  addon.gemm(o.f32(a!), o.f32(b!), o.f32(out), bias ? o.f32(bias) : null, [batch, M, N, K, attrs.transposeA ? 1 : 0, attrs.transposeB ? 1 : 0, na === 1 ? 0 : M * K, nb === 1 ? 0 : K * N], activation === 'relu');
  return out;
}

/** FusedBatchNorm (inference mode) with per-channel (innermost axis) statistics, in float64 like the cpu backend. */
function fusedBatchNorm(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, mean, variance, offset, scale } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { varianceEpsilon } = args.attrs as unknown as tf.FusedBatchNormAttrs;
  const channels = x!.shape[x!.shape.length - 1];
  const perChannel = (t: tf.TensorInfo | undefined) =>
    !t || (t.dtype === 'float32' && tf.util.sizeFromShape(t.shape) === channels && t.shape[t.shape.length - 1] === channels);
  const n = tf.util.sizeFromShape(x!.shape);
  if (x!.dtype !== 'float32' || x!.shape.length === 0 || n === 0 || ![mean, variance, offset, scale].every(perChannel) || !mean || !variance) {
    return fallBack(tf.FusedBatchNorm, args);
  }
  const b = io(args.backend);
  const out = b.out(x!.shape);
  const view = (t: tf.TensorInfo | undefined) => (t ? b.f32(t) : null);
  addon.batchNorm(view(x)!, view(mean)!, view(variance)!, view(offset), view(scale), view(out)!, n, channels, varianceEpsilon);
  return out;
}

/** Attributes of the fused training-mode batch norm kernels. */
export interface BatchNormTrainAttrs {
  epsilon: number;
  /** A ReLU after the normalisation (and the residual). */
  relu: boolean;
}

/**
 * GranularBatchNormTrain: inputs x [..., C], gamma [C], beta [C], residual
 * (optional, x's shape); outputs y = relu?(batchnorm(x) + residual), and the
 * batch mean, biased variance and 1/sqrt(variance + epsilon), each [C].
 * native/onednn.cc BatchNormTrain has the definition.
 */
function batchNormTrain(args: KernelArgs): tf.TensorInfo[] {
  const { x, gamma, beta, residual } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { epsilon, relu } = args.attrs as unknown as BatchNormTrainAttrs;
  const C = x!.shape[x!.shape.length - 1];
  const n = tf.util.sizeFromShape(x!.shape);
  if (!allFloat32(x, gamma, beta, residual) || n === 0 || (residual && !tf.util.arraysEqual(residual.shape, x!.shape))) {
    throw new Error(`${BATCH_NORM_TRAIN}: float32 x with residual of the same shape expected, got x [${x!.shape}] ${x!.dtype}`);
  }
  const b = io(args.backend);
  const [y, mean, variance, invStd] = [b.out(x!.shape), b.out([C]), b.out([C]), b.out([C])];
  const view = (t: tf.TensorInfo | undefined) => (t ? b.f32(t) : null);
  addon.batchNormTrain(b.f32(x!), view(gamma), view(beta), view(residual), b.f32(y), b.f32(mean), b.f32(variance), b.f32(invStd), n / C, C, epsilon, relu);
  return [y, mean, variance, invStd];
}

/**
 * GranularBatchNormTrainGrad: inputs dy, x, mean, invStd, gamma (optional), y
 * (given when the forward had a ReLU); attribute residual (whether to return
 * its gradient). Outputs dx, dGamma, dBeta (and dResidual).
 */
function batchNormTrainGrad(args: KernelArgs): tf.TensorInfo[] {
  const { dy, x, mean, invStd, gamma, y } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { residual } = args.attrs as unknown as { residual: boolean };
  const C = x!.shape[x!.shape.length - 1];
  const n = tf.util.sizeFromShape(x!.shape);
  const b = io(args.backend);
  const outs = [b.out(x!.shape), b.out([C]), b.out([C]), ...(residual ? [b.out(x!.shape)] : [])];
  addon.batchNormTrainGrad(
    b.f32(dy!), b.f32(x!), b.f32(mean!), b.f32(invStd!), gamma ? b.f32(gamma) : null, y ? b.f32(y) : null,
    b.f32(outs[0]), b.f32(outs[1]), b.f32(outs[2]), residual ? b.f32(outs[3]) : null, n / C, C,
  );
  return outs;
}

/**
 * GranularLayerNorm: inputs x [..., D], gamma [D], beta [D] (each optional
 * but x); attribute epsilon; outputs y (x's shape), and per row of x viewed
 * as [rows, D] the mean and 1/sqrt(variance + epsilon), each [rows].
 * native/onednn.cc LayerNorm has the definition.
 */
function layerNorm(args: KernelArgs): tf.TensorInfo[] {
  const { x, gamma, beta } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { epsilon } = args.attrs as unknown as { epsilon: number };
  const D = x!.shape[x!.shape.length - 1];
  const n = tf.util.sizeFromShape(x!.shape);
  const perRow = (t: tf.TensorInfo | undefined) => !t || tf.util.sizeFromShape(t.shape) === D;
  if (!allFloat32(x, gamma, beta) || n === 0 || !perRow(gamma) || !perRow(beta)) {
    throw new Error(`${LAYER_NORM}: float32 x [..., D] with gamma and beta [D] expected, got x [${x!.shape}] ${x!.dtype}`);
  }
  const b = io(args.backend);
  const [y, mean, invStd] = [b.out(x!.shape), b.out([n / D]), b.out([n / D])];
  const view = (t: tf.TensorInfo | undefined) => (t ? b.f32(t) : null);
  addon.layerNorm(b.f32(x!), view(gamma), view(beta), b.f32(y), b.f32(mean), b.f32(invStd), n / D, D, epsilon);
  return [y, mean, invStd];
}

/** GranularLayerNormGrad: inputs dy, x, mean, invStd, gamma (optional); outputs dx, dGamma, dBeta. */
function layerNormGrad(args: KernelArgs): tf.TensorInfo[] {
  const { dy, x, mean, invStd, gamma } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const D = x!.shape[x!.shape.length - 1];
  const n = tf.util.sizeFromShape(x!.shape);
  const b = io(args.backend);
  const outs = [b.out(x!.shape), b.out([D]), b.out([D])];
  addon.layerNormGrad(b.f32(dy!), b.f32(x!), b.f32(mean!), b.f32(invStd!), gamma ? b.f32(gamma) : null, b.f32(outs[0]), b.f32(outs[1]), b.f32(outs[2]), n / D, D);
  return outs;
}

/**
 * Transpose of any dtype and rank, by output-order strided copy (the cpu
 * backend's kernel computes every element's source index from scratch: ~10x
 * slower at the sizes the two-layer network transposes each step): in the
 * addon for float32 and int32 up to rank 8 (whole rows by memcpy when the last
 * axis stays last: the attention's head splits and merges), here otherwise.
 * Native backend only; same values as tf.transpose (a permutation, no arithmetic).
 */
function transpose(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  if (x.dtype !== 'float32' && x.dtype !== 'int32') return fallBack(tf.Transpose, args);
  const { perm } = args.attrs as unknown as tf.TransposeAttrs;
  const native = args.backend as NativeBackend;
  const outShape = perm.map((p) => x.shape[p]);
  const src = native.values(x);
  const out = native.makeOutputInfo(outShape, x.dtype);
  const dst = native.values(out);
  const rank = x.shape.length;
  if (rank >= 1 && rank <= 8 && dst.length > 0 && (src instanceof Float32Array || src instanceof Int32Array) && (dst instanceof Float32Array || dst instanceof Int32Array)) {
    addon.transpose(src, dst, x.shape, perm);
    return out;
  }
  const inStrides = new Array<number>(rank);
  for (let i = rank - 1, acc = 1; i >= 0; i--) {
    inStrides[i] = acc;
    acc *= x.shape[i];
  }
  // The stride in the input of each output axis; the last output axis is the inner loop.
  const st = perm.map((p) => inStrides[p]);
  const n = dst.length;
  const inner = rank ? outShape[rank - 1] : 1;
  const innerStride = rank ? st[rank - 1] : 1;
  const idx = new Array<number>(rank).fill(0);
  let base = 0;
  for (let o = 0; o < n; o += inner) {
    for (let k = 0, s = base; k < inner; k++, s += innerStride) dst[o + k] = src[s];
    // Advance the outer axes (an odometer over outShape[0 .. rank-2]).
    for (let ax = rank - 2; ax >= 0; ax--) {
      idx[ax]++;
      base += st[ax];
      if (idx[ax] < outShape[ax]) break;
      base -= st[ax] * outShape[ax];
      idx[ax] = 0;
    }
  }
  return out;
}

/**
 * Pow of a float32 tensor by a scalar exponent (the smoothed ReLU's x^q),
 * with Math.pow as the cpu kernel does (same values), without its general
 * broadcasting machinery. Other cases go to the replaced kernel.
 */
function powScalar(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || tf.util.sizeFromShape(b.shape) !== 1 || b.shape.length > a.shape.length) return fallBack(tf.Pow, args);
  const native = args.backend as NativeBackend;
  const x = native.values(a);
  const e = native.values(b)[0];
  const out = native.makeOutputInfo(a.shape, 'float32');
  const y = native.values(out);
  for (let i = 0; i < y.length; i++) y[i] = Math.pow(x[i], e);
  return out;
}

/**
 * Softmax over the last axis (attention weights, the loss), one pass per row
 * on all threads; tfjs's cpu kernel runs max, exp, sum and division as
 * separate JavaScript loops. Its gradient is built from ops that are native.
 */
function softmax(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { logits } = args.inputs as { logits: tf.TensorInfo };
  const { dim } = args.attrs as unknown as tf.SoftmaxAttrs;
  const rank = logits.shape.length;
  const n = tf.util.sizeFromShape(logits.shape);
  if (logits.dtype !== 'float32' || rank === 0 || n === 0 || (dim !== -1 && dim !== rank - 1)) return fallBack(tf.Softmax, args);
  const cols = logits.shape[rank - 1];
  const b = io(args.backend);
  const out = b.out(logits.shape);
  addon.softmax(b.f32(logits), b.f32(out), n / cols, cols);
  return out;
}

/**
 * Concat of float32 tensors along any axis, as rows: outer = the product of
 * the axes before it, each input contributing the product of its axes from it
 * on per row (DenseNet concatenates channels in every dense layer). tfjs's cpu
 * kernel copies element by element when the axis is not the first.
 */
function concat(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const inputs = (args.inputs as unknown as tf.TensorInfo[]).filter((t) => tf.util.sizeFromShape(t.shape) > 0);
  const { axis } = args.attrs as unknown as tf.ConcatAttrs;
  if (!inputs.length || inputs.some((t) => t.dtype !== 'float32' || t.shape.length !== inputs[0].shape.length)) return fallBack(tf.Concat, args);
  const shape = inputs[0].shape;
  const ax = tf.util.parseAxisParam(axis, shape)[0];
  const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), ax);
  const outer = tf.util.sizeFromShape(shape.slice(0, ax));
  const widths = inputs.map((t) => tf.util.sizeFromShape(t.shape.slice(ax)));
  const b = io(args.backend);
  const out = b.out(outShape);
  addon.concatRows(inputs.map((t) => b.f32(t)), widths, b.f32(out), outer);
  return out;
}

/** SplitV (Concat's gradient) of a float32 tensor along any axis, as rows (see concat). */
function splitV(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { numOrSizeSplits, axis } = args.attrs as unknown as tf.SplitVAttrs;
  if (x.dtype !== 'float32' || x.shape.length === 0 || tf.util.sizeFromShape(x.shape) === 0) return fallBack(tf.SplitV, args);
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
  if (sizes.some((s) => s <= 0)) return fallBack(tf.SplitV, args);
  const outer = tf.util.sizeFromShape(x.shape.slice(0, ax));
  const inner = tf.util.sizeFromShape(x.shape.slice(ax + 1));
  const b = io(args.backend);
  const outs = sizes.map((s) => b.out([...x.shape.slice(0, ax), s, ...x.shape.slice(ax + 1)]));
  addon.splitRows(b.f32(x), outs.map((o) => b.f32(o)), sizes.map((s) => s * inner), outer);
  return outs;
}

/** GranularGelu: input x (float32); output y = x * Phi(x) (native/onednn.cc Gelu). */
function gelu(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const n = tf.util.sizeFromShape(x.shape);
  if (x.dtype !== 'float32') throw new Error(`${GELU}: float32 x expected, got ${x.dtype}`);
  const b = io(args.backend);
  const y = b.out(x.shape);
  if (n > 0) addon.gelu(b.f32(x), b.f32(y), n);
  return y;
}

/** GranularGeluGrad: inputs dy, x (same shape); output dx = dy * GELU'(x). */
function geluGrad(args: KernelArgs): tf.TensorInfo {
  const { dy, x } = args.inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  const n = tf.util.sizeFromShape(x.shape);
  if (!allFloat32(dy, x) || !tf.util.arraysEqual(dy.shape, x.shape)) throw new Error(`${GELU_GRAD}: float32 dy and x of one shape expected, got [${dy.shape}] and [${x.shape}]`);
  const b = io(args.backend);
  const dx = b.out(x.shape);
  if (n > 0) addon.geluGrad(b.f32(dy), b.f32(x), b.f32(dx), n);
  return dx;
}

/** GranularSoftmaxGrad: inputs dy, y (a softmax's output over the last axis, same shape); output dx = y * (dy - sum(dy * y)) per row. */
function softmaxGrad(args: KernelArgs): tf.TensorInfo {
  const { dy, y } = args.inputs as { dy: tf.TensorInfo; y: tf.TensorInfo };
  const n = tf.util.sizeFromShape(y.shape);
  if (!allFloat32(dy, y) || !tf.util.arraysEqual(dy.shape, y.shape) || y.shape.length === 0) {
    throw new Error(`${SOFTMAX_GRAD}: float32 dy and y of one shape (rank >= 1) expected, got [${dy.shape}] and [${y.shape}]`);
  }
  const cols = y.shape[y.shape.length - 1];
  const b = io(args.backend);
  const dx = b.out(y.shape);
  if (n > 0) addon.softmaxGrad(b.f32(dy), b.f32(y), b.f32(dx), n / cols, cols);
  return dx;
}

interface NativeKernel {
  kernelFunc: tf.KernelFunc;
  /** Also over the wasm kernels (the set that existed before the native backend, with its numerics). */
  wasm: boolean;
}

const kernels: Record<string, NativeKernel> = {
  [tf.Conv2D]: { kernelFunc: conv2D as tf.KernelFunc, wasm: true },
  [tf.FusedConv2D]: { kernelFunc: fusedConv2D as tf.KernelFunc, wasm: true },
  [tf.Conv2DBackpropInput]: { kernelFunc: conv2DBackpropInput as tf.KernelFunc, wasm: true },
  [tf.Conv2DBackpropFilter]: { kernelFunc: conv2DBackpropFilter as tf.KernelFunc, wasm: true },
  [tf.MaxPool]: { kernelFunc: maxPool as tf.KernelFunc, wasm: false },
  [tf.MaxPoolGrad]: { kernelFunc: maxPoolGrad as tf.KernelFunc, wasm: true },
  [tf.Sum]: { kernelFunc: ((args: KernelArgs) => reduce(tf.Sum, args, false)) as tf.KernelFunc, wasm: true },
  [tf.Mean]: { kernelFunc: ((args: KernelArgs) => reduce(tf.Mean, args, true)) as tf.KernelFunc, wasm: true },
  [tf.FusedBatchNorm]: { kernelFunc: fusedBatchNorm as tf.KernelFunc, wasm: true },
  [tf.BatchMatMul]: { kernelFunc: ((args: KernelArgs) => matMul(tf.BatchMatMul, args)) as tf.KernelFunc, wasm: false },
  [tf._FusedMatMul]: { kernelFunc: ((args: KernelArgs) => matMul(tf._FusedMatMul, args)) as tf.KernelFunc, wasm: false },
  [tf.Transpose]: { kernelFunc: transpose as tf.KernelFunc, wasm: false },
  [tf.Pow]: { kernelFunc: powScalar as tf.KernelFunc, wasm: false },
  [tf.Softmax]: { kernelFunc: softmax as tf.KernelFunc, wasm: false },
  [tf.Concat]: { kernelFunc: concat as tf.KernelFunc, wasm: false },
  [tf.SplitV]: { kernelFunc: splitV as tf.KernelFunc, wasm: false },
  [tf.AvgPoolGrad]: { kernelFunc: avgPoolGrad as tf.KernelFunc, wasm: false },
  [BATCH_NORM_TRAIN]: { kernelFunc: batchNormTrain as unknown as tf.KernelFunc, wasm: false },
  [BATCH_NORM_TRAIN_GRAD]: { kernelFunc: batchNormTrainGrad as unknown as tf.KernelFunc, wasm: false },
  [LAYER_NORM]: { kernelFunc: layerNorm as unknown as tf.KernelFunc, wasm: false },
  [LAYER_NORM_GRAD]: { kernelFunc: layerNormGrad as unknown as tf.KernelFunc, wasm: false },
  [GELU]: { kernelFunc: gelu as unknown as tf.KernelFunc, wasm: false },
  [GELU_GRAD]: { kernelFunc: geluGrad as unknown as tf.KernelFunc, wasm: false },
  [SOFTMAX_GRAD]: { kernelFunc: softmaxGrad as unknown as tf.KernelFunc, wasm: false },
  ...Object.fromEntries(
    Object.keys(BINARY_OPS).map((name) => [name, { kernelFunc: ((args: KernelArgs) => binary(name, args)) as tf.KernelFunc, wasm: BINARY_OPS[name] <= 4 }]),
  ),
  ...Object.fromEntries(Object.keys(UNARY_OPS).map((name) => [name, { kernelFunc: ((args: KernelArgs) => unary(name, args)) as tf.KernelFunc, wasm: false }])),
};

/** The kernel names the native set registers on a backend. */
export function nativeKernelNames(backendName: BackendName): string[] {
  return Object.keys(kernels).filter((k) => backendName === 'native' || kernels[k].wasm);
}

/** @deprecated name kept for the wasm tests: the kernels registered over wasm. */
export const NATIVE_KERNELS = nativeKernelNames('wasm');

const configs = new Map<string, tf.KernelConfig>();

function configFor(kernelName: string, backendName: BackendName): tf.KernelConfig {
  const key = `${backendName}/${kernelName}`;
  let c = configs.get(key);
  if (!c) {
    c = {
      kernelName,
      backendName,
      kernelFunc: kernels[kernelName].kernelFunc,
      // The backend runs the setupFuncs of the kernels registered when it
      // initialises; the replaced wasm ones bind wasm exports the fallbacks need.
      setupFunc: (backend) => previous.get(key)?.setupFunc?.(backend),
    };
    configs.set(key, c);
  }
  return c;
}

/**
 * Registers the native kernels over whatever kernels `backendName` has now
 * (wasm: call after registerWasmTrainingKernels, before or after
 * tf.setBackend('wasm'); native: ./native-backend does it), with `threads`
 * OpenMP threads. Returns a description such as "oneDNN 2.6.3 (OpenMP, avx2), 2
 * threads", or null and why the addon is unavailable. Idempotent.
 */
export function registerNativeKernels(threads: number, backendName: BackendName = 'wasm'): { native: string | null; why: string | null } {
  const { addon: a, why } = loadOneDnn();
  if (!a) return { native: null, why };
  addon = a;
  const n = a.setThreads(threads);
  for (const kernelName of nativeKernelNames(backendName)) {
    const config = configFor(kernelName, backendName);
    const current = tf.getKernel(kernelName, backendName);
    if (current === config) continue;
    if (current) {
      previous.set(`${backendName}/${kernelName}`, current);
      // registerKernel over an existing entry works but logs a warning.
      tf.unregisterKernel(kernelName, backendName);
    } else if (!kernelName.startsWith('Granular')) {
      throw new Error(`native kernels: the ${backendName} backend registered no ${kernelName} to fall back on`);
    }
    tf.registerKernel(config);
  }
  return { native: `${a.version()}, ${n} thread${n === 1 ? '' : 's'}`, why: null };
}
