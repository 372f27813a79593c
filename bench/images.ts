/**
 * Image loading benchmark: 5,000 generated 32x32 PNGs in imagefolder layout,
 * loaded once with an empty decode cache and once from the cache.
 * Targets (issue 4): first load < 20 s, cached load < 2 s.
 * Run: npx tsc -p tsconfig.json && node dist/bench/images.js [count]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 5000);
  const classes = 10;
  const side = 32;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-bench-images-'));
  const t0 = Date.now();
  const taxonomy = ['group,leaf', ...Array.from({ length: classes }, (_, k) => `g${k % 2},c${k}`)].join('\n') + '\n';
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), taxonomy);
  const jobs: Array<Promise<unknown>> = [];
  for (let i = 0; i < count; i++) {
    const k = i % classes;
    const part = Math.floor(i / classes) % 10 === 9 ? 'test' : 'train';
    const dir = path.join(root, part, `c${k}`);
    fs.mkdirSync(dir, { recursive: true });
    const raw = Buffer.alloc(side * side * 3);
    for (let j = 0; j < raw.length; j++) raw[j] = (j * 7 + i * 13 + k * 29) & 255;
    jobs.push(sharp(raw, { raw: { width: side, height: side, channels: 3 } }).png().toFile(path.join(dir, `img${i}.png`)));
    if (jobs.length >= 64) await Promise.all(jobs.splice(0));
  }
  await Promise.all(jobs);
  const cache = path.join(root, 'cache');
  const cfg = resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=32', 'data.channels=3', `data.cache_dir=${cache}`])]);
  process.stdout.write(`generated ${count} ${side}x${side} PNGs in ${((Date.now() - t0) / 1000).toFixed(1)} s (${root})\n`);
  const time = async (what: string, target: number) => {
    const t = process.hrtime.bigint();
    const ds = await loadDataset(cfg);
    const s = Number(process.hrtime.bigint() - t) / 1e9;
    const n = ds.train.y.length + ds.test.y.length;
    process.stdout.write(`${what.padEnd(13)} ${s.toFixed(2)} s  (${Math.round(n / s)} images/s, target < ${target} s: ${s < target ? 'ok' : 'MISSED'})\n`);
    return s;
  };
  await time('first load', 20);
  await time('cached load', 2);
  fs.rmSync(root, { recursive: true, force: true });
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
