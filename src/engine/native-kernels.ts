/**
 * Optional native kernels for the wasm backend: convolutions (forward, both
 * gradients, FusedConv2D with bias and ReLU) from oneDNN, the CPU kernel
 * library PyTorch uses, and multi-threaded MaxPoolGrad and float64 Sum/Mean.
 * The addon is native/onednn.cc, built by `npm run build:native` into
 * native/build/granular_onednn.node; without it (or with GRANULAR_NATIVE=0)
 * the wasm kernels of ./wasm-kernels and ./wasm-fast-kernels run instead.
 *
 * The addon computes in place on Float32Array views of the wasm heap
 * (backend.typedArrayFromHeap), so no tensor data is copied; every view is
 * taken after the last makeOutput, since growing the heap detaches older ones.
 * Each kernel hands the cases it does not cover (dilations, NCHW, exotic
 * activations, explicit paddings oneDNN cannot express) to the kernel it
 * replaced.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const WASM = 'wasm';

/** What native/onednn.cc exports. Geometry arrays are documented there. */
export interface OneDnnAddon {
  conv2d(x: Float32Array, filter: Float32Array, bias: Float32Array | null, y: Float32Array, geometry: number[], relu: boolean): void;
  conv2dBackpropInput(dy: Float32Array, filter: Float32Array, dx: Float32Array, geometry: number[]): void;
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, geometry: number[]): void;
  implementation(kind: 'forward' | 'backward_data' | 'backward_weights', geometry: number[]): string;
  maxPoolGrad(x: Float32Array, dy: Float32Array, dx: Float32Array, geometry: number[]): void;
  sumLeading(x: Float32Array, out: Float32Array, outer: number, inner: number, scale: number): void;
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, n: number, aPeriod: number, bPeriod: number): void;
  batchNorm(x: Float32Array, mean: Float32Array, variance: Float32Array, offset: Float32Array | null, scale: Float32Array | null, out: Float32Array, n: number, channels: number, epsilon: number): void;
  setThreads(n: number): number;
  version(): string;
  primitives(): number;
}

const ADDON_FUNCTIONS: Array<keyof OneDnnAddon> = [
  'conv2d',
  'conv2dBackpropInput',
  'conv2dBackpropFilter',
  'implementation',
  'maxPoolGrad',
  'sumLeading',
  'binary',
  'batchNorm',
  'setThreads',
  'version',
  'primitives',
];

/** Where `npm run build:native` puts the addon (this file runs from dist/src/engine/). */
export const ADDON_PATH = path.join(__dirname, '..', '..', '..', 'native', 'build', 'granular_onednn.node');

/** The environment variable that turns the native kernels off (`GRANULAR_NATIVE=0`). */
export const NATIVE_ENV = 'GRANULAR_NATIVE';

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

/** The kernels these replaced, by name: the fallback for the cases passed on. */
const previous = new Map<string, tf.KernelConfig>();
let addon: OneDnnAddon;

function fallBack(kernelName: string, args: KernelArgs): tf.TensorInfo {
  const kernel = previous.get(kernelName);
  if (!kernel) throw new Error(`native kernels: no previous '${kernelName}' kernel to fall back on`);
  return kernel.kernelFunc(args) as tf.TensorInfo;
}

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

function conv2D(args: KernelArgs): tf.TensorInfo {
  const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
  const g = convGeometry(x.shape, filter.shape, args.attrs as unknown as ConvAttrs, [x.dtype, filter.dtype]);
  if (!g) return fallBack(tf.Conv2D, args);
  const wasm = args.backend as BackendWasm;
  const y = wasm.makeOutput(g.info.outShape, 'float32');
  addon.conv2d(wasm.typedArrayFromHeap(x) as Float32Array, wasm.typedArrayFromHeap(filter) as Float32Array, null, wasm.typedArrayFromHeap(y) as Float32Array, g.geometry, false);
  return y;
}

/**
 * FusedConv2D with no activation or ReLU, and no bias or one per output
 * channel: what the models' conv layers produce when no gradient is being
 * recorded (tfjs fuses only then) and resnet8's bias-free convs always.
 */
function fusedConv2D(args: KernelArgs): tf.TensorInfo {
  const { x, filter, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const attrs = args.attrs as unknown as tf.FusedConv2DAttrs;
  const g = convGeometry(x!.shape, filter!.shape, attrs as unknown as ConvAttrs, [x!.dtype, filter!.dtype, ...(bias ? [bias.dtype] : [])]);
  const activationOk = attrs.activation === 'linear' || attrs.activation === 'relu' || attrs.activation === undefined;
  const biasOk = !bias || (tf.util.sizeFromShape(bias.shape) === g?.info.outChannels && bias.shape[bias.shape.length - 1] === g?.info.outChannels);
  if (!g || !activationOk || !biasOk || preluActivationWeights) return fallBack(tf.FusedConv2D, args);
  const wasm = args.backend as BackendWasm;
  const y = wasm.makeOutput(g.info.outShape, 'float32');
  addon.conv2d(
    wasm.typedArrayFromHeap(x!) as Float32Array,
    wasm.typedArrayFromHeap(filter!) as Float32Array,
    bias ? (wasm.typedArrayFromHeap(bias) as Float32Array) : null,
    wasm.typedArrayFromHeap(y) as Float32Array,
    g.geometry,
    attrs.activation === 'relu',
  );
  return y;
}

function conv2DBackpropInput(args: KernelArgs): tf.TensorInfo {
  const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
  const attrs = args.attrs as unknown as tf.Conv2DBackpropInputAttrs & ConvAttrs;
  const g = convGeometry(attrs.inputShape, filter.shape, attrs, [dy.dtype, filter.dtype]);
  if (!g || !tf.util.arraysEqual(dy.shape, g.info.outShape)) return fallBack(tf.Conv2DBackpropInput, args);
  const wasm = args.backend as BackendWasm;
  const dx = wasm.makeOutput(attrs.inputShape, 'float32');
  addon.conv2dBackpropInput(wasm.typedArrayFromHeap(dy) as Float32Array, wasm.typedArrayFromHeap(filter) as Float32Array, wasm.typedArrayFromHeap(dx) as Float32Array, g.geometry);
  return dx;
}

function conv2DBackpropFilter(args: KernelArgs): tf.TensorInfo {
  const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const attrs = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs & ConvAttrs;
  const g = convGeometry(x.shape, attrs.filterShape, attrs, [x.dtype, dy.dtype]);
  if (!g || !tf.util.arraysEqual(dy.shape, g.info.outShape)) return fallBack(tf.Conv2DBackpropFilter, args);
  // The addon runs a strided 1x1 weight gradient as a unit-stride one on the
  // pixels the filter sees (working around a oneDNN 2.6 bug), unpadded only.
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = g.info;
  const strided1x1 = filterHeight === 1 && filterWidth === 1 && strideHeight * strideWidth > 1;
  if (strided1x1 && padInfo.top + padInfo.left + padInfo.bottom + padInfo.right > 0) return fallBack(tf.Conv2DBackpropFilter, args);
  const wasm = args.backend as BackendWasm;
  const dw = wasm.makeOutput(attrs.filterShape, 'float32');
  addon.conv2dBackpropFilter(wasm.typedArrayFromHeap(x) as Float32Array, wasm.typedArrayFromHeap(dy) as Float32Array, wasm.typedArrayFromHeap(dw) as Float32Array, g.geometry);
  return dw;
}

/** MaxPoolGrad: the same rule as ./wasm-fast-kernels (first maximum of each window), images split over threads. */
function maxPoolGrad(args: KernelArgs): tf.TensorInfo {
  const { dy, input } = args.inputs as { dy: tf.TensorInfo; input: tf.TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as tf.MaxPoolGradAttrs;
  if (input.dtype !== 'float32' || dy.dtype !== 'float32') return fallBack(tf.MaxPoolGrad, args);
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const wasm = args.backend as BackendWasm;
  const dx = wasm.makeOutput(input.shape, 'float32');
  if (tf.util.sizeFromShape(input.shape) === 0) return dx;
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth } = info;
  addon.maxPoolGrad(
    wasm.typedArrayFromHeap(input) as Float32Array,
    wasm.typedArrayFromHeap(dy) as Float32Array,
    wasm.typedArrayFromHeap(dx) as Float32Array,
    [batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth, info.padInfo.top, info.padInfo.left],
  );
  return dx;
}

/** Sum/Mean over leading axes in float64 (as ./wasm-fast-kernels does, for the same precision reason), on all threads. */
function reduceLeading(kernelName: string, args: KernelArgs, mean: boolean): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = args.attrs as unknown as tf.SumAttrs;
  if (x.dtype !== 'float32' || x.shape.length === 0) return fallBack(kernelName, args);
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const leading = axes.length;
  if (leading === 0 || leading === x.shape.length || !axes.every((a, i) => a === i)) return fallBack(kernelName, args);
  const outer = tf.util.sizeFromShape(x.shape.slice(0, leading));
  const innerShape = x.shape.slice(leading);
  const inner = tf.util.sizeFromShape(innerShape);
  if (outer === 0 || inner === 0) return fallBack(kernelName, args);
  const wasm = args.backend as BackendWasm;
  const out = wasm.makeOutput(keepDims ? [...x.shape.slice(0, leading).map(() => 1), ...innerShape] : innerShape, 'float32');
  addon.sumLeading(wasm.typedArrayFromHeap(x) as Float32Array, wasm.typedArrayFromHeap(out) as Float32Array, outer, inner, mean ? 1 / outer : 1);
  return out;
}

/**
 * The period with which an operand repeats over an output of `outShape`: its
 * size when its shape, leading 1s dropped, is a suffix of outShape (the
 * operand is broadcast over the leading axes only), else null.
 */
function period(shape: number[], outShape: number[]): number | null {
  let first = 0;
  while (first < shape.length && shape[first] === 1) first++;
  const kept = shape.slice(first);
  if (kept.length > outShape.length || !tf.util.arraysEqual(kept, outShape.slice(outShape.length - kept.length))) return null;
  return tf.util.sizeFromShape(kept);
}

/** The addon's op codes (native/onednn.cc, Binary). */
const BINARY_OPS: Record<string, number> = { [tf.Add]: 0, [tf.Sub]: 1, [tf.Multiply]: 2, [tf.RealDiv]: 3, [tf.SquaredDifference]: 4 };

/**
 * Elementwise float32 Add/Sub/Multiply/RealDiv/SquaredDifference of equal
 * shapes, or with one operand broadcast over leading axes (batch norm's
 * per-channel statistics and their gradients: the stock kernels' generic
 * broadcast loop took ~17 ms for [64,16,16,32] * [1,1,1,32]). One float32
 * operation per element, as in the wasm kernels, on all threads.
 */
function binary(kernelName: string, args: KernelArgs): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallBack(kernelName, args);
  const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
  const n = tf.util.sizeFromShape(outShape);
  const ap = period(a.shape, outShape);
  const bp = period(b.shape, outShape);
  if (n === 0 || ap === null || bp === null || ap === 0 || bp === 0 || (ap !== n && bp !== n)) return fallBack(kernelName, args);
  const wasm = args.backend as BackendWasm;
  const out = wasm.makeOutput(outShape, 'float32');
  addon.binary(BINARY_OPS[kernelName], wasm.typedArrayFromHeap(a) as Float32Array, wasm.typedArrayFromHeap(b) as Float32Array, wasm.typedArrayFromHeap(out) as Float32Array, n, ap, bp);
  return out;
}

/** FusedBatchNorm with per-channel (innermost axis) statistics, in float64 like the cpu backend. */
function fusedBatchNorm(args: KernelArgs): tf.TensorInfo {
  const { x, mean, variance, offset, scale } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { varianceEpsilon } = args.attrs as unknown as tf.FusedBatchNormAttrs;
  const channels = x!.shape[x!.shape.length - 1];
  const perChannel = (t: tf.TensorInfo | undefined) =>
    !t || (t.dtype === 'float32' && tf.util.sizeFromShape(t.shape) === channels && t.shape[t.shape.length - 1] === channels);
  const n = tf.util.sizeFromShape(x!.shape);
  if (x!.dtype !== 'float32' || x!.shape.length === 0 || n === 0 || ![mean, variance, offset, scale].every(perChannel) || !mean || !variance) {
    return fallBack(tf.FusedBatchNorm, args);
  }
  const wasm = args.backend as BackendWasm;
  const out = wasm.makeOutput(x!.shape, 'float32');
  const view = (t: tf.TensorInfo | undefined) => (t ? (wasm.typedArrayFromHeap(t) as Float32Array) : null);
  addon.batchNorm(view(x)!, view(mean)!, view(variance)!, view(offset), view(scale), view(out)!, n, channels, varianceEpsilon);
  return out;
}

const kernelFuncs: Record<string, tf.KernelFunc> = {
  [tf.Conv2D]: conv2D as tf.KernelFunc,
  [tf.FusedConv2D]: fusedConv2D as tf.KernelFunc,
  [tf.Conv2DBackpropInput]: conv2DBackpropInput as tf.KernelFunc,
  [tf.Conv2DBackpropFilter]: conv2DBackpropFilter as tf.KernelFunc,
  [tf.MaxPoolGrad]: maxPoolGrad as tf.KernelFunc,
  [tf.Sum]: ((args: KernelArgs) => reduceLeading(tf.Sum, args, false)) as tf.KernelFunc,
  [tf.Mean]: ((args: KernelArgs) => reduceLeading(tf.Mean, args, true)) as tf.KernelFunc,
  [tf.FusedBatchNorm]: fusedBatchNorm as tf.KernelFunc,
  ...Object.fromEntries(Object.keys(BINARY_OPS).map((name) => [name, ((args: KernelArgs) => binary(name, args)) as tf.KernelFunc])),
};

/** The kernel names the native set replaces. */
export const NATIVE_KERNELS = Object.keys(kernelFuncs);

const configs: tf.KernelConfig[] = NATIVE_KERNELS.map((kernelName) => ({
  kernelName,
  backendName: WASM,
  kernelFunc: kernelFuncs[kernelName],
  // The backend runs the setupFuncs of the kernels registered when it
  // initialises; the replaced ones bind wasm exports the fallbacks need.
  setupFunc: (backend) => previous.get(kernelName)?.setupFunc?.(backend),
}));

/**
 * Registers the native kernels over whatever wasm kernels are registered now
 * (call after registerWasmTrainingKernels, before or after
 * tf.setBackend('wasm')), with `threads` OpenMP threads. Returns a
 * description such as "oneDNN 2.6.3 (OpenMP), 2 threads", or null and why
 * the addon is unavailable. Idempotent.
 */
export function registerNativeKernels(threads: number): { native: string | null; why: string | null } {
  const { addon: a, why } = loadOneDnn();
  if (!a) return { native: null, why };
  addon = a;
  const n = a.setThreads(threads);
  for (const config of configs) {
    const current = tf.getKernel(config.kernelName, WASM);
    if (current === config) continue;
    if (!current) throw new Error(`native kernels: the wasm backend registered no ${config.kernelName} to fall back on`);
    previous.set(config.kernelName, current);
    // registerKernel over an existing entry works but logs a warning.
    tf.unregisterKernel(config.kernelName, WASM);
    tf.registerKernel(config);
  }
  return { native: `${a.version()}, ${n} thread${n === 1 ? '' : 's'}`, why: null };
}

