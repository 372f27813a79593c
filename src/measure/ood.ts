import { Config } from '../config/schema';
import { corrupt, Corruption } from '../data/corruptions';
import { renderShifted, SyntheticShift } from '../data/synthetic';
import { Dataset, Examples } from '../data/types';
import { Split } from '../data/split';
import { Level } from '../hierarchy/tree';
import { Network } from '../models/network';
import { predictProbs } from './predict';
import { accuracy, argmaxRows } from './accuracy';

/**
 * OOD accuracy at the run's level (DESIGN.md metric keys):
 * `ood_acc@<shift>:<severity>`, `ood_acc@<shift>` (mean over severities) and
 * `ood_acc` (mean over shifts). Image corruptions act on the test images;
 * synthetic shifts render a new test set from the shifted generator.
 */
export async function oodMetrics(cfg: Config, net: Network, data: Dataset, split: Split, level: Level): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const severities = cfg.eval.ood_severities.filter((s) => s > 0);
  const score = (e: Examples, idx: number[]) => {
    const probs = predictProbs(net, e, idx, data.shape);
    return accuracy(argmaxRows(probs, net.numClasses), Int32Array.from(idx, (i) => level.classOf[e.y[i]]));
  };
  const size = data.shape[0] * data.shape[1] * data.shape[2];
  const testX = new Float32Array(split.test.length * size);
  split.test.forEach((i, k) => testX.set(data.test.x.subarray(i * size, (i + 1) * size), k * size));
  const testY = Int32Array.from(split.test, (i) => data.test.y[i]);
  const all = split.test.map((_, k) => k);
  const means: number[] = [];
  const shifts: Array<[string, (s: number) => Promise<number>]> = [
    ...cfg.eval.ood.map((c): [string, (s: number) => Promise<number>] => [c, async (s) => score({ x: await corrupt(testX, data.shape, c as Corruption, s, cfg.data.seed!), y: testY, ids: [] }, all)]),
    ...cfg.eval.ood_synthetic.map((c): [string, (s: number) => Promise<number>] => [
      c,
      async (s) => {
        const e = renderShifted(cfg, c as SyntheticShift, s, split.test.length);
        return score(e, e.ids.map((_, k) => k));
      },
    ]),
  ];
  for (const [name, at] of shifts) {
    const accs: number[] = [];
    for (const s of severities) {
      const a = await at(s);
      out[`ood_acc@${name}:${s}`] = a;
      accs.push(a);
    }
    out[`ood_acc@${name}`] = accs.reduce((a, b) => a + b, 0) / accs.length;
    means.push(out[`ood_acc@${name}`]);
  }
  if (means.length) out.ood_acc = means.reduce((a, b) => a + b, 0) / means.length;
  return out;
}
