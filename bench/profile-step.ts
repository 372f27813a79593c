/**
 * Where one training step's kernel time goes: `tf.profile` of a forward pass
 * alone and of a whole step (forward, softmax cross-entropy, gradients; the
 * SGD update left out), kernel time by kernel name and by name and input
 * shapes, backward = step - forward. Kernel times are the backend's own
 * per-kernel timings, so their shares hold under machine load; the totals do not.
 *
 *   node dist/bench/profile-step.js [--arch vit-tiny] [--size 224] [--batch 16]
 *       [--threads 1] [--backend native] [--top 20] [--steps 2]
 */
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config/load';
import { initEngine, parseBackend } from '../src/engine/backend';
import { buildNetwork } from '../src/models/archs';
import { Rng } from '../src/util/rng';

type Kernels = Awaited<ReturnType<typeof tf.profile>>['kernels'];

function parse(argv: string[]): Record<string, string> {
  const o: Record<string, string> = { arch: 'vit-tiny', size: '224', batch: '16', threads: '1', backend: 'native', top: '20', steps: '2' };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o) || argv[i + 1] === undefined) throw new Error(`profile-step: unknown option or missing value: ${argv[i]}`);
    o[k] = argv[i + 1];
  }
  return o;
}

function table(title: string, kernels: Kernels, key: (k: Kernels[number]) => string, top: number, steps: number): number {
  const by = new Map<string, { ms: number; calls: number }>();
  for (const k of kernels) {
    const e = by.get(key(k)) ?? { ms: 0, calls: 0 };
    e.ms += (k.kernelTimeMs as number) / steps;
    e.calls += 1 / steps;
    by.set(key(k), e);
  }
  const total = [...by.values()].reduce((s, e) => s + e.ms, 0);
  console.log(`\n${title}: ${total.toFixed(0)} ms kernel time, ${(kernels.length / steps).toFixed(0)} kernel calls per step`);
  for (const [name, e] of [...by.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, top)) {
    console.log(`  ${e.ms.toFixed(1).padStart(8)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}% ${e.calls.toFixed(0).padStart(5)} calls  ${name}`);
  }
  return total;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const [size, batch, top, steps] = [Number(o.size), Number(o.batch), Number(o.top), Number(o.steps)];
  const engine = await initEngine(parseBackend(o.backend), Number(o.threads));
  console.log(`${o.arch} ${size}px batch ${batch}, ${engine.backend}/${engine.kernels}, ${engine.threads} thread(s)`);
  const shape: [number, number, number] = [size, size, 3];
  const cfg = resolveConfig([{ seed: 0, model: { arch: o.arch }, data: { image_size: size, channels: 3 } }], 'the profile config');
  const net = buildNetwork(cfg, shape, 10);
  const vars = net.variables().filter((v) => v.trainable).map((v) => v.variable);
  const training = net.blocks.map(() => true);
  const rng = new Rng(1);
  const x = tf.tensor4d(Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal()), [batch, ...shape]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from({ length: batch }, () => rng.int(10)), 'int32'), 10);
  const step = () => {
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, net.forward(x, training)) as tf.Scalar, vars);
    tf.dispose([value, ...Object.values(grads)]);
  };
  step();
  // tf.profile returns the engine's one profile object: copy the kernels before profiling again.
  const fwd = [...(await tf.profile(() => {
    for (let i = 0; i < steps; i++) tf.tidy(() => { net.forward(x, training); });
  })).kernels];
  const t0 = performance.now();
  const all = [...(await tf.profile(() => {
    for (let i = 0; i < steps; i++) step();
  })).kernels];
  const wall = (performance.now() - t0) / steps;
  // Op-level entries (fusedMatMul__op, a customGrad's 'forward') wrap kernels that are listed themselves.
  const real = (ks: Kernels) => ks.filter((k) => tf.getKernel(k.name, tf.getBackend()) !== undefined);
  const shapes = (k: Kernels[number]) => `${k.name} ${JSON.stringify(k.inputShapes)}`;
  const f = table('forward by kernel', real(fwd), (k) => k.name, top, steps);
  const s = table('step (forward + backward) by kernel', real(all), (k) => k.name, top, steps);
  table('step by kernel and input shapes', real(all), shapes, top, steps);
  console.log(`\nforward ${f.toFixed(0)} ms, backward ~${(s - f).toFixed(0)} ms of kernel time; step wall time ${wall.toFixed(0)} ms (profiling included)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
