import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { writeFileAtomic, writeJsonAtomic } from '../util/fsx';

/**
 * Named float32/int32 tensors in one binary file plus a JSON manifest: the
 * format of checkpoints and of model weights (tfjs's own weightsManifest).
 */
export interface TensorSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
}

/**
 * The tensors' bytes in order, read back with await data() (a GPU backend has
 * no synchronous read), all reads in flight together; and their specs.
 */
export async function packTensors(tensors: ReadonlyArray<{ name: string; tensor: tf.Tensor }>): Promise<{ specs: TensorSpec[]; bytes: Uint8Array }> {
  const values = await Promise.all(tensors.map(({ tensor }) => tensor.data()));
  const specs: TensorSpec[] = [];
  let total = 0;
  for (const v of values) total += v.byteLength;
  const bytes = new Uint8Array(total);
  let off = 0;
  tensors.forEach(({ name, tensor }, i) => {
    const data = values[i] as Float32Array | Int32Array;
    bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), off);
    off += data.byteLength;
    specs.push({ name, shape: tensor.shape.slice(), dtype: tensor.dtype as 'float32' | 'int32' });
  });
  return { specs, bytes };
}

/** Write the tensors to dir/file (one binary file, atomically); returns their specs for the manifest. */
export async function writeTensors(dir: string, file: string, tensors: ReadonlyArray<{ name: string; tensor: tf.Tensor }>): Promise<TensorSpec[]> {
  const { specs, bytes } = await packTensors(tensors);
  writeFileAtomic(path.join(dir, file), bytes);
  return specs;
}

export function readTensors(file: string, specs: readonly TensorSpec[]): Map<string, tf.Tensor> {
  const raw = fs.readFileSync(file);
  const out = new Map<string, tf.Tensor>();
  let off = 0;
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const bytes = raw.subarray(off, off + n * 4);
    if (bytes.byteLength !== n * 4) throw new Error(`${file} is truncated: tensor '${s.name}' needs ${n * 4} bytes at offset ${off}`);
    const copy = new Uint8Array(bytes).buffer;
    const arr = s.dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy);
    out.set(s.name, tf.tensor(arr, s.shape, s.dtype));
    off += n * 4;
  }
  return out;
}

/** Save a layers model in tfjs layers format (model.json + weights.bin), names = originalName. */
export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const weights = model.weights.map((w) => ({ name: w.originalName, tensor: w.read() }));
  const specs = await writeTensors(dir, 'weights.bin', weights);
  const topology = model.toJSON(null, false);
  writeJsonAtomic(path.join(dir, 'model.json'), {
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: 'granular',
    modelTopology: topology,
    weightsManifest: [{ paths: ['weights.bin'], weights: specs }],
  });
}

/** Read a saved model's weights by name. */
export function readModelWeights(dir: string): Map<string, tf.Tensor> {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  return readTensors(path.join(dir, 'weights.bin'), manifest.weightsManifest[0].weights);
}
