/**
 * Replacements for wasm kernels that dominate a training step's profile, or
 * that lose precision there:
 * - Tile and MaxPoolGrad: the stock kernels are generic per-element index
 *   loops; memory-order JavaScript over the wasm heap is 30x and 2.4-2.9x
 *   faster on resnet8 / cnn-small shapes (bench/README.md has the numbers).
 * - Sum and Mean over the leading axes (batch-norm statistics and gradients):
 *   the stock kernels accumulate 65k-element columns in float32. That drifts
 *   enough (~1e-5 relative) that batch-norm training amplifies it: resnet8's
 *   20-step fixed-seed loss strayed 2.6e-3 from the cpu backend's. Ours
 *   accumulate in float64 like the cpu backend, for ~0.4 ms more per call
 *   (1.9 vs 1.45 ms on [64,32,32,16]).
 *
 * A kernel that handles only some cases calls the replaced wasm kernel for
 * the rest; `replaced` holds those originals.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const WASM = 'wasm';

/** The wasm backend's own kernels we replaced, by kernel name, for the cases we pass on. */
export const replaced = new Map<string, tf.KernelConfig>();

function original(kernelName: string, args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const kernel = replaced.get(kernelName);
  if (!kernel) throw new Error(`wasm fast kernels: no original '${kernelName}' kernel to fall back on`);
  return kernel.kernelFunc(args) as tf.TensorInfo;
}

/**
 * Tile: the output is built from the innermost axis out. A row of x is
 * written `reps` times, then each finished block is copied (copyWithin, a
 * memmove) `reps` times along the next axis out, so every output element is
 * written once by a bulk copy instead of by a per-element index computation.
 * Batch norm's gradient tiles a [1,1,1,C] vector to the activation's shape:
 * 1M elements took the stock kernel ~50 ms.
 */
function tile({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x } = inputs as { x: tf.TensorInfo };
  const { reps } = attrs as unknown as tf.TileAttrs;
  const wasm = backend as BackendWasm;
  const rank = x.shape.length;
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = wasm.makeOutput(outShape, x.dtype);
  if (tf.util.sizeFromShape(outShape) === 0) return out;
  if (rank === 0) {
    wasm.typedArrayFromHeap(out).set(wasm.typedArrayFromHeap(x));
    return out;
  }
  const src = wasm.typedArrayFromHeap(x);
  const dst = wasm.typedArrayFromHeap(out);
  // Sizes of one block (one index of this axis and everything inside it).
  const inBlock = new Array<number>(rank + 1).fill(1);
  const outBlock = new Array<number>(rank + 1).fill(1);
  for (let d = rank - 1; d >= 0; d--) {
    inBlock[d] = inBlock[d + 1] * x.shape[d];
    outBlock[d] = outBlock[d + 1] * outShape[d];
  }
  // fill(d, s, o): writes the output block of axis d (size outBlock[d]) at o from the input block at s.
  const fill = (d: number, s: number, o: number): void => {
    const n = x.shape[d];
    if (d === rank - 1) {
      for (let i = 0; i < n; i++) dst[o + i] = src[s + i];
    } else {
      for (let i = 0; i < n; i++) fill(d + 1, s + i * inBlock[d + 1], o + i * outBlock[d + 1]);
    }
    const chunk = n * outBlock[d + 1];
    for (let r = 1; r < reps[d]; r++) dst.copyWithin(o + r * chunk, o, o + chunk);
  };
  fill(0, 0, 0);
  return out;
}

/** How many leading axes a float32 Sum/Mean reduces, or null when it is another case. */
function leadingReduction(x: tf.TensorInfo, axis: number | number[]): number | null {
  if (x.dtype !== 'float32') return null;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  if (axes.length === 0 || axes.length === x.shape.length) return null;
  if (!axes.every((a, i) => a === i)) return null;
  return axes.length;
}

/** out[j] = sum over i of x[i*inner + j] (times 1/outer for a mean), accumulated in float64 in memory order. */
function reduceLeading(wasm: BackendWasm, x: tf.TensorInfo, leading: number, keepDims: boolean, mean: boolean): tf.TensorInfo {
  const outer = tf.util.sizeFromShape(x.shape.slice(0, leading));
  const innerShape = x.shape.slice(leading);
  const inner = tf.util.sizeFromShape(innerShape);
  const out = wasm.makeOutput(keepDims ? [...x.shape.slice(0, leading).map(() => 1), ...innerShape] : innerShape, 'float32');
  const src = wasm.typedArrayFromHeap(x);
  const dst = wasm.typedArrayFromHeap(out);
  const acc = new Float64Array(inner);
  for (let s = 0; s < outer * inner; s += inner) {
    for (let j = 0; j < inner; j++) acc[j] += src[s + j];
  }
  const scale = mean ? 1 / outer : 1;
  for (let j = 0; j < inner; j++) dst[j] = acc[j] * scale;
  return out;
}

function sum(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = args.attrs as unknown as tf.SumAttrs;
  const leading = leadingReduction(x, axis);
  return leading === null ? original(tf.Sum, args) : reduceLeading(args.backend as BackendWasm, x, leading, keepDims, false);
}

function mean(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = args.attrs as unknown as tf.MeanAttrs;
  const leading = leadingReduction(x, axis);
  return leading === null ? original(tf.Mean, args) : reduceLeading(args.backend as BackendWasm, x, leading, keepDims, true);
}

/**
 * MaxPoolGrad: dx is dy scattered to the argmax of each pooling window (the
 * first maximum in row-major window order, as the cpu backend picks it),
 * channels innermost so the inner loop runs over contiguous memory. The
 * stock kernel loops over dx and rescans every covering window per element.
 */
function maxPoolGrad({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { dy, input } = inputs as { dy: tf.TensorInfo; input: tf.TensorInfo; output: tf.TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
  const wasm = backend as BackendWasm;
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const { batchSize, inHeight, inWidth, inChannels: C, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const { top: padTop, left: padLeft } = info.padInfo;
  const dx = wasm.makeOutput(input.shape, 'float32');
  // Views after the last allocation: growing the wasm heap detaches older ones.
  const xs = wasm.typedArrayFromHeap(input);
  const dys = wasm.typedArrayFromHeap(dy);
  const dxs = wasm.typedArrayFromHeap(dx);
  dxs.fill(0);
  const best = new Float32Array(C);
  const where = new Int32Array(C);
  let dyOffset = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = oh * strideHeight - padTop;
      const hBegin = Math.max(0, h0);
      const hEnd = Math.min(inHeight, h0 + filterHeight);
      for (let ow = 0; ow < outWidth; ow++, dyOffset += C) {
        const w0 = ow * strideWidth - padLeft;
        const wBegin = Math.max(0, w0);
        const wEnd = Math.min(inWidth, w0 + filterWidth);
        best.fill(-Infinity);
        where.fill(-1);
        for (let ih = hBegin; ih < hEnd; ih++) {
          for (let iw = wBegin; iw < wEnd; iw++) {
            const base = ((b * inHeight + ih) * inWidth + iw) * C;
            for (let c = 0; c < C; c++) {
              const v = xs[base + c];
              if (v > best[c]) {
                best[c] = v;
                where[c] = base + c;
              }
            }
          }
        }
        for (let c = 0; c < C; c++) if (where[c] >= 0) dxs[where[c]] += dys[dyOffset + c];
      }
    }
  }
  return dx;
}

/** The kernels, and whether each keeps the original around for the cases it passes on. */
/**
 * UnsortedSegmentSum, which the wasm backend lacks: the gradient of
 * tf.gather (the coarsen objective's per-coarse-class log-sum-exp,
 * models/objective.ts). out[seg[i], ...] += x[i, ...] for every i whose
 * segment id is in [0, numSegments), as tfjs's cpu kernel
 * (unsortedSegmentSumImpl). x [...ids.shape, ...inner]; ids int32 of any rank;
 * returns [numSegments, ...inner] float32 (as the cpu kernel does).
 */
function unsortedSegmentSum({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = attrs as unknown as tf.UnsortedSegmentSumAttrs;
  const wasm = backend as BackendWasm;
  const n = tf.util.sizeFromShape(segmentIds.shape);
  const innerShape = x.shape.slice(segmentIds.shape.length);
  const inner = tf.util.sizeFromShape(innerShape);
  // float32 whatever x is, as the cpu backend's kernel returns.
  const out = wasm.makeOutput([numSegments, ...innerShape], 'float32');
  const dst = wasm.typedArrayFromHeap(out);
  dst.fill(0);
  const src = wasm.typedArrayFromHeap(x);
  const ids = wasm.typedArrayFromHeap(segmentIds);
  for (let i = 0; i < n; i++) {
    const seg = ids[i];
    if (seg < 0 || seg >= numSegments) continue;
    const o = seg * inner;
    const a = i * inner;
    for (let k = 0; k < inner; k++) dst[o + k] += src[a + k];
  }
  return out;
}

export const fastKernels: Array<{ config: tf.KernelConfig; fallsBack: boolean }> = [
  { config: { kernelName: tf.Tile, backendName: WASM, kernelFunc: tile }, fallsBack: false },
  { config: { kernelName: tf.MaxPoolGrad, backendName: WASM, kernelFunc: maxPoolGrad }, fallsBack: false },
  { config: { kernelName: tf.UnsortedSegmentSum, backendName: WASM, kernelFunc: unsortedSegmentSum }, fallsBack: false },
  // The stock kernel's setupFunc binds its wasm export; ours forwards to it for the fallback.
  { config: { kernelName: tf.Sum, backendName: WASM, kernelFunc: sum, setupFunc: (b) => replaced.get(tf.Sum)?.setupFunc?.(b) }, fallsBack: true },
  { config: { kernelName: tf.Mean, backendName: WASM, kernelFunc: mean, setupFunc: (b) => replaced.get(tf.Mean)?.setupFunc?.(b) }, fallsBack: true },
];
