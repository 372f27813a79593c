import { Config } from '../config/schema';
import { randomSplit, shuffleParents } from '../hierarchy/transform';
import { Hierarchy } from '../hierarchy/tree';
import { Rng } from '../util/rng';

/**
 * data.relabel on class labels, for any format (no pixels involved):
 * - `random_split:K`: every class becomes K pseudo-subclasses; each split's
 *   examples of a class are dealt to them round-robin in a seeded order, so the
 *   pseudo-classes are balanced and carry no information beyond their class;
 * - `shuffle_parents`: the leaves keep their labels but hang under random parents.
 * `labels` holds each split's class indices (train first, then test); the
 * results come back in the same order.
 */
export function relabel(h: Hierarchy, cfg: Config, labels: readonly Int32Array[]): { hierarchy: Hierarchy; labels: Int32Array[] } {
  const spec = cfg.data.relabel;
  if (spec?.startsWith('random_split:')) {
    const t = randomSplit(h, Number(spec.split(':')[1]));
    const dealt = labels.map((ys, part) => {
      const order = Array.from(ys, (_, i) => i);
      new Rng(cfg.data.seed, 405 + part).shuffle(order);
      const seen = new Map<number, number>();
      const out = new Int32Array(ys.length);
      for (const i of order) {
        const n = seen.get(ys[i]) ?? 0;
        seen.set(ys[i], n + 1);
        out[i] = t.pseudoOf(ys[i], n);
      }
      return out;
    });
    return { hierarchy: t.hierarchy, labels: dealt };
  }
  if (spec === 'shuffle_parents') return { hierarchy: shuffleParents(h, cfg.data.seed).hierarchy, labels: [...labels] };
  return { hierarchy: h, labels: [...labels] };
}
