import { Command } from 'commander';
import { parseSets, readConfigFiles, resolveConfig } from '../config/load';
import { listDataset } from '../data';
import { Hierarchy, Level } from '../hierarchy/tree';
import { makeSplit } from '../data/labels/split';
import { action, collect, commonOptions, withCommonOptions } from './common';

export interface LevelStats {
  name: string;
  depth_spec: string;
  classes: number;
  images_min: number;
  images_median: number;
  images_max: number;
  /** Class names that occur more than once at this level (told apart by path). */
  ambiguous_names: number;
}

export function levelStats(h: Hierarchy, level: Level, trainY: Int32Array): LevelStats {
  const counts = new Array(level.classes.length).fill(0);
  for (const y of trainY) if (level.classOf[y] >= 0) counts[level.classOf[y]]++;
  const sorted = [...counts].sort((a, b) => a - b);
  const names = new Map<string, number>();
  for (const c of level.classes) names.set(h.node(c).name, (names.get(h.node(c).name) ?? 0) + 1);
  return {
    name: level.name,
    depth_spec: level.spec,
    classes: level.classes.length,
    images_min: sorted[0] ?? 0,
    images_median: sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : 0,
    images_max: sorted[sorted.length - 1] ?? 0,
    ambiguous_names: [...names.values()].filter((n) => n > 1).length,
  };
}

export function hierarchyCommand(): Command {
  const cmd = new Command('hierarchy')
    .description('print every level of the configured hierarchy: classes, training images per class (as a run trains on them), ambiguous names')
    .option('--config <file>', 'YAML config; repeatable: files compose in order, a later one overriding an earlier one', collect, [])
    .option('--set <key=value>', 'override a config key (repeatable)', collect, [])
    .option('--json', 'machine-readable output', false)
    .addHelpText(
      'after',
      `
Images per class are those a run trains on: after the validation hold-out (data.val_fraction)
and the caps (data.train_size, data.train_per_class), from the same seeded split a run makes.`,
    );
  // Accepted like on every command (README: common options); nothing here computes on a backend.
  withCommonOptions(cmd);
  return cmd.action(
      action(async (o: Record<string, unknown>) => {
        commonOptions(o);
        const layers = [];
        layers.push(...readConfigFiles(o.config as string[]));
        layers.push(parseSets(o.set as string[]));
        const cfg = resolveConfig(layers);
        // Listed, not decoded: the tree and the counts need no pixel (35k images in seconds, no record cache written).
        const data = await listDataset(cfg);
        const h = data.hierarchy;
        // The split a pretraining run with this config makes: val held out, caps applied.
        const split = makeSplit(data, cfg);
        const trained = Int32Array.from(split.train, (i) => data.train.y[i]);
        const levels = h.levels().map((l) => levelStats(h, l, trained));
        const report = {
          format: cfg.data.format,
          classes: h.classes.length,
          max_depth: h.maxDepth,
          train_images: data.train.y.length,
          train_images_trained: split.train.length,
          val_images: split.val.length,
          test_images: split.test.length,
          skipped_images: data.skipped,
          /** True when the counts come from the listing: unreadable images and data.duplicates are found when a run reads the files. */
          listed_only: data.listed,
          nodes_with_several_parents: h.dag?.multiParentNodes ?? 0,
          levels,
          valid_level_specs: h.validLevelSpecs(),
        };
        if (o.json) {
          process.stdout.write(JSON.stringify(report, null, 2) + '\n');
          return 0;
        }
        const n = (x: number) => x.toLocaleString('en-US');
        const caps = [cfg.data.train_size !== null ? `data.train_size ${cfg.data.train_size}` : '', cfg.data.train_per_class !== null ? `data.train_per_class ${cfg.data.train_per_class}` : ''].filter(Boolean);
        process.stdout.write(`${cfg.data.format}: ${report.classes} classes, depth ${report.max_depth}, ${n(report.train_images)} training images: ${n(split.train.length)} trained on, ${n(split.val.length)} held out for validation (data.val_fraction ${cfg.data.val_fraction})${caps.length ? `, capped by ${caps.join(' and ')}` : ''}; ${n(report.test_images)} test images\n`);
        if (h.dag) process.stdout.write(`DAG turned into a tree: ${h.dag.multiParentNodes} node(s) had several parents (longest path from the root kept)\n`);
        if (data.skipped) process.stdout.write(`${data.skipped} unreadable image(s) skipped\n`);
        if (data.listed) process.stdout.write(`counts from the listing (no image decoded): unreadable images and the dataset's own duplicates (data.duplicates: ${cfg.data.duplicates}) are found when a run reads the files\n`);
        if (cfg.data.include.length || cfg.data.exclude.length || cfg.data.relabel) {
          process.stdout.write(`as transformed by data.include [${cfg.data.include.join(', ')}], data.exclude [${cfg.data.exclude.join(', ')}], data.relabel ${cfg.data.relabel ?? 'none'}\n`);
        }
        const rows = [['level', 'spec', 'classes', 'trained img/class min', 'median', 'max', 'ambiguous names']];
        for (const l of levels) rows.push([l.name, l.depth_spec, String(l.classes), String(l.images_min), String(l.images_median), String(l.images_max), String(l.ambiguous_names)]);
        process.stdout.write(formatTable(rows) + '\n');
        process.stdout.write(`valid --level values: ${report.valid_level_specs.join(', ')}\n`);
        return 0;
      }),
  );
}

/** A plain aligned text table (first row is the header). */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
  return rows.map((r, i) => r.map((c, j) => c.padEnd(widths[j])).join('  ').trimEnd() + (i === 0 ? '\n' + widths.map((w) => '-'.repeat(w)).join('  ') : '')).join('\n');
}
