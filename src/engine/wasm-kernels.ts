/**
 * Convolution gradient kernels that make conv nets trainable, and fast, on the
 * tfjs wasm backend.
 *
 * The wasm backend ships no Conv2DBackpropFilter at all, and its
 * Conv2DBackpropInput is a scalar loop nest several times slower than its
 * XNNPACK-backed forward Conv2D. Both gradients are rebuilt here from the
 * backend's own fast kernels (Conv2D, BatchMatMul, Transpose, PadV2, ...),
 * called directly through their kernelFunc so that intermediates never touch
 * the engine or the gradient tape; each is freed with backend.disposeData.
 *
 * Only NHWC, undilated forward convolutions are supported: the wasm forward
 * Conv2D rejects NCHW, and tfjs's conv2d gradient rejects dilations.
 */
import * as tf from '@tensorflow/tfjs';
// Side effect: registers the wasm backend and the kernels composed below, so
// the kernel we replace can be captured even before tf.setBackend('wasm').
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { fastKernels, replaced } from './wasm-fast-kernels';

const WASM = 'wasm';

type Conv2DInfo = tf.backend_util.Conv2DInfo;

/**
 * The attributes both gradient kernels share with the forward conv they
 * differentiate. tfjs never passes dilations to them; a direct runKernel
 * caller might, and gets an error rather than a silently wrong gradient.
 */
type ForwardConvAttrs = Omit<tf.Conv2DBackpropInputAttrs, 'inputShape'> & { dilations?: [number, number] | number };

/** Runs another wasm kernel on raw TensorInfos, outside the engine: no tape entry, caller frees the result. */
function runWasmKernel(
  kernelName: string,
  backend: BackendWasm,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap = {},
): tf.TensorInfo {
  const kernel = tf.getKernel(kernelName, WASM);
  if (!kernel) throw new Error(`wasm training kernels: the wasm backend has no '${kernelName}' kernel`);
  return kernel.kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
}

/**
 * A view of `t` with another shape. wasm kernels address data by dataId alone,
 * so this is a free reshape; the view must not be disposed separately.
 */
function withShape(t: tf.TensorInfo, shape: number[]): tf.TensorInfo {
  return { dataId: t.dataId, shape, dtype: t.dtype };
}

/** Geometry of the forward convolution, after rejecting what these kernels cannot differentiate. */
function forwardConvInfo(
  kernelName: string,
  inShape: [number, number, number, number],
  filterShape: [number, number, number, number],
  attrs: ForwardConvAttrs,
): Conv2DInfo {
  if (attrs.dataFormat !== 'NHWC') {
    throw new Error(`wasm ${kernelName}: only dataFormat 'NHWC' is supported, got '${attrs.dataFormat}'`);
  }
  if (attrs.dilations !== undefined && !tf.backend_util.tupleValuesAreOne(attrs.dilations)) {
    throw new Error(`wasm ${kernelName}: only undilated convolutions are supported, got dilations ${attrs.dilations}`);
  }
  return tf.backend_util.computeConv2DInfo(
    inShape,
    filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
}

/**
 * im2col, transposed: a [1, KH*KW*Cin, B*OH*OW] matrix whose row (kh, kw, ci)
 * holds x[b, oh*sh - padTop + kh, ow*sw - padLeft + kw, ci] over all output
 * pixels (b, oh, ow), zero where that falls into the padding. Rows ordered
 * like the filter's [KH, KW, Cin] prefix make dW = patches x dy come out in
 * filter layout without a transpose.
 */
function filterPatches(backend: BackendWasm, x: tf.TensorInfo, info: Conv2DInfo): tf.TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const { top: padTop, left: padLeft } = info.padInfo;
  // Channel-major x makes every patch row segment a run of x with a constant
  // step (the stride), so the inner loop is a plain strided copy.
  const xChannelMajor = runWasmKernel('Transpose', backend, { x }, { perm: [3, 0, 1, 2] });
  const pixels = batchSize * outHeight * outWidth;
  const patches = backend.makeOutput([1, filterHeight * filterWidth * inChannels, pixels], 'float32');
  // Views come after the last allocation: growing the wasm heap detaches older ones.
  const src = backend.typedArrayFromHeap(xChannelMajor);
  const dst = backend.typedArrayFromHeap(patches);
  let dstOffset = 0;
  for (let kh = 0; kh < filterHeight; kh++) {
    for (let kw = 0; kw < filterWidth; kw++) {
      // Output columns whose input column ow*sw - padLeft + kw lies inside x.
      const owBegin = Math.min(outWidth, Math.max(0, Math.ceil((padLeft - kw) / strideWidth)));
      const owEnd = Math.max(owBegin, Math.min(outWidth, Math.floor((inWidth - 1 + padLeft - kw) / strideWidth) + 1));
      for (let plane = 0; plane < inChannels * batchSize; plane++) {
        for (let oh = 0; oh < outHeight; oh++, dstOffset += outWidth) {
          const ih = oh * strideHeight - padTop + kh;
          if (ih < 0 || ih >= inHeight) {
            for (let ow = 0; ow < outWidth; ow++) dst[dstOffset + ow] = 0;
            continue;
          }
          const srcRow = (plane * inHeight + ih) * inWidth - padLeft + kw;
          for (let ow = 0; ow < owBegin; ow++) dst[dstOffset + ow] = 0;
          for (let ow = owBegin; ow < owEnd; ow++) dst[dstOffset + ow] = src[srcRow + ow * strideWidth];
          for (let ow = owEnd; ow < outWidth; ow++) dst[dstOffset + ow] = 0;
        }
      }
    }
  }
  backend.disposeData(xChannelMajor.dataId);
  return patches;
}

/**
 * dW = im2col(x)^T * dy as one [KH*KW*Cin, N] x [N, Cout] matmul (N = B*OH*OW).
 * Chosen over the equally exact trick of a Conv2D of x^T [Cin,H,W,B] with dy^T
 * [OH,OW,B,Cout] as the filter, dilated by the stride: that conv's fresh
 * dy-sized filter goes through a slow strided transpose and XNNPACK packing on
 * every call, and it took 1.05-1.5x as long on each cnn-small layer (batch 64,
 * 32x32, 3-32-64-128 channels) and on stride-2 shapes.
 */
function conv2DBackpropFilter({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const wasm = backend as BackendWasm;
  const { filterShape, ...convAttrs } = attrs as unknown as tf.Conv2DBackpropFilterAttrs & ForwardConvAttrs;
  const info = forwardConvInfo(tf.Conv2DBackpropFilter, x.shape as Conv2DInfo['inShape'], filterShape, convAttrs);
  const patches = filterPatches(wasm, x, info);
  // BatchMatMul caches its packed weights under the weight tensor's id alone,
  // whatever shape that buffer is viewed with, until the tensor is freed. A
  // private copy of dy (a memcpy) keeps another view of dy's buffer, such as
  // the gradient an Add hands to two convs, from hitting that cache with the
  // wrong shape, and frees the packed copy as soon as dW is done.
  const dyCopy = runWasmKernel('Identity', wasm, { x: dy });
  const pixels = info.batchSize * info.outHeight * info.outWidth;
  // Untransposed operands with batch 1 keep BatchMatMul on its XNNPACK path;
  // any transpose flag sends it to a naive triple loop.
  const dW = runWasmKernel(
    'BatchMatMul',
    wasm,
    { a: patches, b: withShape(dyCopy, [1, pixels, info.outChannels]) },
    { transposeA: false, transposeB: false },
  );
  wasm.disposeData(patches.dataId);
  wasm.disposeData(dyCopy.dataId);
  return withShape(dW, filterShape);
}

/**
 * dy spread out by the stride: [B, OH*sh, OW*sw, C] with dy[b, oh, ow] at
 * [b, oh*sh, ow*sw] and zeros in between and after, as two constant pads of
 * rank-3 views (a zero tail after every pixel, then after every row).
 */
function spreadByStride(backend: BackendWasm, dy: tf.TensorInfo, strideHeight: number, strideWidth: number): tf.TensorInfo {
  const [batch, outHeight, outWidth, channels] = dy.shape;
  let spread = dy;
  if (strideWidth > 1) {
    spread = runWasmKernel(
      'PadV2',
      backend,
      { x: withShape(dy, [batch * outHeight * outWidth, 1, channels]) },
      { paddings: [[0, 0], [0, strideWidth - 1], [0, 0]], constantValue: 0 },
    );
  }
  if (strideHeight > 1) {
    const rowsSpread = runWasmKernel(
      'PadV2',
      backend,
      { x: withShape(spread, [batch * outHeight, 1, outWidth * strideWidth * channels]) },
      { paddings: [[0, 0], [0, strideHeight - 1], [0, 0]], constantValue: 0 },
    );
    if (spread !== dy) backend.disposeData(spread.dataId);
    spread = rowsSpread;
  }
  return withShape(spread, [batch, outHeight * strideHeight, outWidth * strideWidth, channels]);
}

/** The replaced wasm Conv2DBackpropInput, kept for the paddings the conv formulation cannot express. */
let originalBackpropInput: tf.KernelConfig | undefined;

/**
 * dx as a forward Conv2D (XNNPACK) of dy, spread out by the stride, with the
 * filter flipped in space and its in/out channels swapped, under the
 * complementary padding KH-1-padTop / KW-1-padLeft. On cnn-small layers this
 * is 5-11x faster than the original scalar kernel; stride 2 wastes 3/4 of the
 * multiplies on the inserted zeros and is still 2.5-3x faster.
 */
function conv2DBackpropInput(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
  const wasm = backend as BackendWasm;
  const { inputShape, ...convAttrs } = attrs as unknown as tf.Conv2DBackpropInputAttrs & ForwardConvAttrs;
  const info = forwardConvInfo(tf.Conv2DBackpropInput, inputShape, filter.shape as Conv2DInfo['filterShape'], convAttrs);
  const { filterHeight, filterWidth, strideHeight, strideWidth, inHeight, inWidth } = info;
  const padTop = filterHeight - 1 - info.padInfo.top;
  const padLeft = filterWidth - 1 - info.padInfo.left;
  // Explicit paddings wider than the kernel would need dy cropped first;
  // nobody trains with those, so the original kernel handles them.
  if (padTop < 0 || padLeft < 0) return originalBackpropInput!.kernelFunc(args) as tf.TensorInfo;

  const flipped = runWasmKernel('Reverse', wasm, { x: filter }, { dims: [0, 1] });
  const transposedFilter = runWasmKernel('Transpose', wasm, { x: flipped }, { perm: [0, 1, 3, 2] });
  wasm.disposeData(flipped.dataId);
  const spread = strideHeight * strideWidth > 1 ? spreadByStride(wasm, dy, strideHeight, strideWidth) : dy;
  // The spread tail of zeros can reach past what dx needs (padding < 0); the
  // extra output rows/columns are cropped below.
  const padBottom = inHeight + filterHeight - 1 - spread.shape[1] - padTop;
  const padRight = inWidth + filterWidth - 1 - spread.shape[2] - padLeft;
  const dx = runWasmKernel(
    'Conv2D',
    wasm,
    { x: spread, filter: transposedFilter },
    {
      strides: [1, 1],
      dilations: [1, 1],
      dataFormat: 'NHWC',
      pad: [[0, 0], [padTop, Math.max(0, padBottom)], [padLeft, Math.max(0, padRight)], [0, 0]],
    },
  );
  wasm.disposeData(transposedFilter.dataId);
  if (spread !== dy) wasm.disposeData(spread.dataId);
  if (padBottom >= 0 && padRight >= 0) return dx;
  const cropped = runWasmKernel('Slice', wasm, { x: dx }, { begin: [0, 0, 0, 0], size: inputShape });
  wasm.disposeData(dx.dataId);
  return cropped;
}

const conv2DBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: WASM,
  kernelFunc: conv2DBackpropFilter,
};

const conv2DBackpropInputConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backendName: WASM,
  // The backend runs the setupFuncs of the kernels registered when it
  // initialises; once replaced, the original's (binding its wasm export) would
  // be skipped, leaving the fallback unusable.
  setupFunc: (backend) => originalBackpropInput?.setupFunc?.(backend),
  kernelFunc: conv2DBackpropInput,
};

/**
 * Registers Conv2DBackpropFilter, a faster Conv2DBackpropInput and the
 * kernels of ./wasm-fast-kernels (Tile, MaxPoolGrad, Sum, Mean) for the wasm
 * backend. Idempotent, and safe before or after tf.setBackend('wasm').
 */
export function registerWasmTrainingKernels(): void {
  const currentBackpropInput = tf.getKernel(tf.Conv2DBackpropInput, WASM);
  if (currentBackpropInput && currentBackpropInput !== conv2DBackpropInputConfig) {
    originalBackpropInput = currentBackpropInput;
  }
  if (!originalBackpropInput) {
    throw new Error('wasm training kernels: the wasm backend registered no Conv2DBackpropInput to fall back on');
  }
  for (const { config, fallsBack } of fastKernels) {
    const current = tf.getKernel(config.kernelName, WASM);
    if (fallsBack && current && current !== config) replaced.set(config.kernelName, current);
    if (fallsBack && !replaced.has(config.kernelName)) {
      throw new Error(`wasm training kernels: the wasm backend registered no ${config.kernelName} to fall back on`);
    }
  }
  for (const config of [conv2DBackpropFilterConfig, conv2DBackpropInputConfig, ...fastKernels.map((k) => k.config)]) {
    const registered = tf.getKernel(config.kernelName, WASM);
    if (registered === config) continue;
    // registerKernel over an existing entry works but logs a warning.
    if (registered) tf.unregisterKernel(config.kernelName, WASM);
    tf.registerKernel(config);
  }
}
