import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { configToYaml } from '../config/load';
import { initEngine } from '../engine';
import { ARCHS } from '../models/archs';
import { Arch, IMPORTABLE, importStateDict } from '../models/checkpoint';
import { readSafetensors } from '../models/safetensors';
import { saveLayersModel } from '../runs/bundle';
import { checkNewRunDir, FILES } from '../runs/rundir';
import { UsageError } from '../util/errors';
import { writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { action, commonOptions, withCommonOptions } from './common';

/** The level an imported network was trained at, as summary.json and fine-tuning runs record it. */
export const externalLevel = (n: number) => `external: ${n} classes`;

/**
 * `granular import FILE --arch ARCH --out RUN_DIR`: a torchvision or timm
 * state dict saved as safetensors becomes a completed run folder (config.yaml,
 * run.json, summary.json, model/) that `finetune --from` takes like a
 * pretraining run. Nothing is downloaded: the user brings the file.
 */
export function importCommand(): Command {
  const cmd = new Command('import')
    .description('a torchvision/timm state dict (safetensors) as a run folder that finetune --from accepts')
    .argument('<file>', 'the state dict, saved with safetensors.torch.save_file(model.state_dict(), FILE)')
    .requiredOption('--arch <arch>', `architecture of the state dict: ${IMPORTABLE.join(', ')}`)
    .requiredOption('--out <run_dir>', 'the run folder to create (must not exist or be empty)')
    .option('--format <format>', 'safetensors (pytorch pickles are not read: they execute code)', 'safetensors')
    .option('--image-size <n>', 'data.image_size of the run (default 224; a ViT: its checkpoint grid); a ViT resamples its position embeddings to it');
  withCommonOptions(cmd);
  return cmd.action(
    action(async (file: string, o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const arch = String(o.arch) as Arch;
      if (!ARCHS.includes(arch) || !IMPORTABLE.includes(arch)) throw new UsageError(`--arch '${arch}' is not importable; use one of ${IMPORTABLE.join(', ')}.`);
      if (o.format !== 'safetensors') {
        throw new UsageError(`--format '${String(o.format)}' is not read: only safetensors (a PyTorch pickle runs code when loaded). Convert it with python: safetensors.torch.save_file(torch.load(F), 'model.safetensors').`);
      }
      let imageSize: number | undefined;
      if (o.imageSize !== undefined) {
        imageSize = Number(o.imageSize);
        if (!Number.isInteger(imageSize) || imageSize < 1) throw new UsageError(`--image-size '${String(o.imageSize)}' must be a positive integer.`);
      }
      if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new UsageError(`checkpoint '${file}' does not exist or is not a file.`);
      const out = String(o.out);
      checkNewRunDir(out);
      await initEngine(c.backend, c.threads);
      const { tensors } = readSafetensors(file);
      const imp = importStateDict(tensors, arch, { imageSize, file });
      try {
        const level = externalLevel(imp.numClasses);
        const sha256 = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
        const runId = `${path.basename(out)}-${process.pid.toString(36)}${Date.now().toString(36)}`;
        const external = { file: path.resolve(file), format: 'safetensors', names: imp.style, sha256 };
        // Written beside and renamed into place: a half-written import never looks like a run.
        const tmp = `${out.replace(/\/+$/, '')}.tmp-${process.pid}`;
        fs.rmSync(tmp, { recursive: true, force: true });
        fs.mkdirSync(tmp, { recursive: true });
        try {
          writeFileAtomic(path.join(tmp, FILES.config), configToYaml(imp.cfg, `config of a network imported from ${path.resolve(file)} (${imp.style} names)\n${runId}`));
          writeFileAtomic(path.join(tmp, FILES.command), ['granular', ...process.argv.slice(2)].join(' ') + '\n');
          writeJsonAtomic(path.join(tmp, FILES.run), { run_id: runId, stage: 'import', from: null, from_run_id: null, pretrain_level: level, created: new Date().toISOString(), external });
          await saveLayersModel(imp.net.layersModel(), path.join(tmp, FILES.model));
          writeJsonAtomic(path.join(tmp, FILES.summary), {
            status: 'completed',
            run_id: runId,
            stage: 'import',
            level,
            num_classes: imp.numClasses,
            pretrain_level: level,
            arch,
            image_size: imp.cfg.data.image_size,
            params: imp.net.paramCount(imp.net.blocks.map(() => true)),
            external,
            ...(imp.posEmbedResized ? { pos_embed_resized: imp.posEmbedResized } : {}),
          });
          if (fs.existsSync(out)) fs.rmdirSync(out);
          fs.renameSync(tmp, out);
        } catch (e) {
          fs.rmSync(tmp, { recursive: true, force: true });
          throw e;
        }
        const resized = imp.posEmbedResized ? `; position embeddings resampled ${imp.posEmbedResized.from.join('x')} -> ${imp.posEmbedResized.to.join('x')}` : '';
        process.stdout.write(`imported ${out}: ${arch} (${imp.style} names), ${imp.numClasses} classes, ${imp.cfg.data.image_size} px${resized}. Fine-tune it with 'granular finetune --from ${out} --config YOUR.yaml'\n`);
        return 0;
      } finally {
        imp.net.dispose();
      }
    }),
  );
}
