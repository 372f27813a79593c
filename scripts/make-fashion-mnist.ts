/**
 * Fashion-MNIST as an imagefolder for granular, from the system's IDX files
 * (Debian: dataset-fashion-mnist); nothing is downloaded.
 *
 *   npm run dataset:fashion-mnist -- [--out datasets/fashion-mnist] [--train-per-class N] [--test-per-class N] [--seed S] [--source DIR]
 *
 * The hierarchy (group -> kind -> item) and why: src/data/formats/fashion-mnist.ts.
 */
import { parseArgs } from 'node:util';
import { FASHION_MNIST_SYSTEM, makeFashionMnist } from '../src/data/formats/fashion-mnist';
import { UsageError } from '../src/util/errors';

function count(v: string | undefined, flag: string): number | null {
  if (v === undefined || v === 'all') return null;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`${flag} '${v}' must be a positive integer or 'all'.`);
  return Number(v);
}

function seedOf(v: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`--seed '${v}' must be a non-negative integer.`);
  return Number(v);
}

const HELP = `Fashion-MNIST as an imagefolder for granular, from the system's IDX files (nothing is downloaded).

usage: npm run dataset:fashion-mnist -- [--out DIR] [--train-per-class N|all] [--test-per-class N|all] [--seed S] [--source DIR]

  --out DIR              the imagefolder to write (default datasets/fashion-mnist): train/, test/, taxonomy.csv
  --train-per-class N    images per item in train/ (seeded, nested: a smaller set is inside a larger one; default all)
  --test-per-class N     images per item in test/ (default all)
  --seed S               seed of the per-class subsets (default 0)
  --source DIR           folder of the IDX files (default ${FASHION_MNIST_SYSTEM}, Debian's dataset-fashion-mnist)

The hierarchy: group (clothing, accessory) -> kind (top, warm, long, footwear, bag) -> item (10);
why, in src/data/formats/fashion-mnist.ts. Then: npx granular hierarchy --set data.format=imagefolder --set data.root=DIR
`;

async function main(): Promise<void> {
  if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) {
    process.stdout.write(HELP);
    return;
  }
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'datasets/fashion-mnist' },
      source: { type: 'string', default: FASHION_MNIST_SYSTEM },
      'train-per-class': { type: 'string' },
      'test-per-class': { type: 'string' },
      seed: { type: 'string', default: '0' },
    },
  });
  const counts = await makeFashionMnist({
    source: values.source!,
    out: values.out!,
    trainPerClass: count(values['train-per-class'], '--train-per-class'),
    testPerClass: count(values['test-per-class'], '--test-per-class'),
    seed: seedOf(values.seed!),
    log: (l) => process.stderr.write(`make-fashion-mnist: ${l}\n`),
  });
  process.stdout.write(`${values.out}: ${counts.train} training and ${counts.test} test images in 10 items, 5 kinds, 2 groups\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`make-fashion-mnist: ${e.message}\n`);
  process.exit(e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1);
});
