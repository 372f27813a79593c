import * as fs from 'node:fs';
import { Config } from '../config/schema';
import { decodeAll } from '../data/formats/decode';
import { FloatStore, gatherFloats, RecordStore } from '../data/cache/store';
import { listImages, subfolders } from '../data/formats/folders';
import { UsageError } from '../util/errors';
import { corrupt, Corruption } from '../data/corruptions';
import { renderShifted, SyntheticShift } from '../data/formats/synthetic';
import { Dataset, Examples } from '../data/types';
import { levelLabels, Split } from '../data/labels/split';
import { Level } from '../hierarchy/tree';
import { Network } from '../models/network';
import { evalBatchSize, predictProbs } from './predict';
import { accuracy, argmaxRows } from './accuracy';
import { atRunLevel, HeadReading } from './evaluate';

/**
 * OOD accuracy at the run's level (DESIGN.md metric keys):
 * `ood_acc@<shift>:<severity>`, `ood_acc@<shift>` (mean over severities) and
 * `ood_acc` (mean over shifts). Image corruptions act on the test images;
 * synthetic shifts render a new test set from the shifted generator.
 * `heads`: how the network is read at the run's level, exactly as `test_acc`
 * reads it (measure/evaluate.ts atRunLevel): a kept finer head
 * (finetune.head: coarsen) is scored by its summed probabilities, never by
 * its fine argmax.
 */
export async function oodMetrics(cfg: Config, net: Network, data: Dataset, split: Split, level: Level, heads?: HeadReading): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const severities = cfg.eval.ood_severities.filter((s) => s > 0);
  const score = async (e: Examples, idx: number[]) => {
    const { probs, k } = atRunLevel(await predictProbs(net, e, idx, data.shape, 0, evalBatchSize(cfg)), net.numClasses, heads);
    return accuracy(argmaxRows(probs, k), levelLabels(e, idx, level));
  };
  const norm = data.test.x.norm;
  // Corruptions act on the test images in [0, 1], before normalisation (DESIGN.md "OOD").
  const testX = cfg.eval.ood.length ? gatherFloats(data.test.x, split.test) : new Float32Array(0);
  const testY = Int32Array.from(split.test, (i) => data.test.y[i]);
  const all = split.test.map((_, k) => k);
  const means: number[] = [];
  const shifts: Array<[string, (s: number) => Promise<number>]> = [
    ...cfg.eval.ood.map((c): [string, (s: number) => Promise<number>] => [
      c,
      async (s) => score({ x: new FloatStore(await corrupt(testX, data.shape, c as Corruption, s, cfg.data.seed), data.shape, norm), y: testY, ids: [] }, all),
    ]),
    ...cfg.eval.ood_synthetic.map((c): [string, (s: number) => Promise<number>] => [
      c,
      async (s) => {
        const e = renderShifted(cfg, c as SyntheticShift, s, split.test.length);
        e.x.norm = norm;
        return score(e, e.ids.map((_, k) => k));
      },
    ]),
  ];
  if (cfg.eval.ood_root) {
    const ext = await externalOod(cfg.eval.ood_root, data, cfg.data.stored_size);
    shifts.push(['external', async () => score(ext, ext.ids.map((_, k) => k))]);
  }
  for (const [name, at] of shifts) {
    if (name === 'external') {
      out['ood_acc@external'] = await at(0);
      means.push(out['ood_acc@external']);
      continue;
    }
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

/**
 * An external OOD test folder (`eval.ood_root`): `<root>/<class>/*.png|jpg|ppm`,
 * one folder per dataset class, named like the class (its last path segment).
 * Images are decoded like the dataset's; every one is a test example.
 */
async function externalOod(root: string, data: Dataset, storedSize: number | null): Promise<Examples> {
  const h = data.hierarchy;
  const byName = new Map<string, number[]>();
  h.classes.forEach((c, i) => byName.set(h.node(c).name, [...(byName.get(h.node(c).name) ?? []), i]));
  let onDisk: Map<string, string>;
  try {
    onDisk = subfolders(root);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`eval.ood_root '${root}' is not a readable folder. It should hold one folder of images per class.`);
  }
  const folders = [...onDisk.keys()];
  const unknown = folders.filter((f) => byName.get(f)?.length !== 1);
  if (unknown.length || !folders.length) {
    throw new UsageError(
      `eval.ood_root '${root}': ${folders.length ? `${unknown.length} folder(s) name no single class of the dataset (${unknown.slice(0, 5).join(', ')})` : 'no class folders'}. ` +
        `Name each folder like a class of the dataset (e.g. ${h.classes.slice(0, 3).map((c) => h.node(c).name).join(', ')}).`,
    );
  }
  const files = folders.flatMap((f) => listImages(root, f, onDisk.get(f)).map((x) => ({ ...x, cls: byName.get(f)![0] })));
  const [side, , C] = data.shape;
  // Decoded as the test images are (EXIF orientation, stored size), then seen through the same centre crop.
  const stored = storedSize ?? side;
  const dec = await decodeAll(files.map((f) => ({ read: () => fs.promises.readFile(f.abs) })), stored, C as 1 | 3);
  const bad = new Set(dec.bad.map((b) => b.index));
  const keep = files.map((_, i) => i).filter((i) => !bad.has(i));
  const x = new RecordStore({ kind: 'bytes', data: dec.pixels, stored, rows: Int32Array.from(keep), shape: data.shape, norm: data.test.x.norm });
  return { x, y: Int32Array.from(keep, (i) => files[i].cls), ids: keep.map((i) => files[i].id) };
}
