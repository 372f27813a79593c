import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { initEngine } from '../engine';
import { buildNetwork } from '../models/archs';
import { exportStateDict, NameStyle } from '../models/checkpoint';
import { encodeSafetensors } from '../models/safetensors';
import { isVit } from '../models/vit';
import { readModelWeights } from '../runs/bundle';
import { FILES } from '../runs/rundir';
import { assignWeights, readSourceRun } from '../runs/run';
import { UsageError } from '../util/errors';
import { readJson, writeFileAtomic } from '../util/fsx';
import { action, commonOptions, withCommonOptions } from './common';

/**
 * `granular export RUN_DIR --format safetensors --out FILE`: a run's network
 * as a PyTorch state dict with torchvision's (or, for a ViT, timm's) names and
 * layouts, so `model.load_state_dict(safetensors.torch.load_file(FILE))`
 * loads it into the matching torchvision/timm model. ONNX is not written yet.
 */
export function exportCommand(): Command {
  const cmd = new Command('export')
    .description("a run's network as a torchvision/timm state dict (safetensors)")
    .argument('<run_dir>', 'a completed pretrain, finetune or import run')
    .requiredOption('--out <file>', 'the file to write')
    .option('--format <format>', 'safetensors (onnx: not yet)', 'safetensors')
    .option('--names <style>', 'torchvision (every architecture) or timm (the ViTs; the default for them)');
  withCommonOptions(cmd);
  return cmd.action(
    action(async (runDir: string, o: Record<string, unknown>) => {
      const c = commonOptions(o);
      if (o.format === 'onnx') throw new UsageError(`--format onnx is not built yet; export --format safetensors and convert in PyTorch (torch.onnx.export).`);
      if (o.format !== 'safetensors') throw new UsageError(`--format '${String(o.format)}' is unknown; use safetensors.`);
      const run = readSourceRun(runDir, `RUN_DIR '${runDir}'`, "Give the folder of a completed 'granular pretrain', 'finetune' or 'import' run.");
      const arch = run.cfg.model.arch;
      const style = (o.names ?? (isVit(arch) ? 'timm' : 'torchvision')) as NameStyle;
      if (style !== 'torchvision' && style !== 'timm') throw new UsageError(`--names '${String(o.names)}' must be torchvision or timm.`);
      await initEngine(c.backend, c.threads);
      // The input shape and head size as the run saved them (data.channels may have been 'auto').
      const manifest = readJson<{ modelTopology: { config: { layers: Array<{ config: { batch_input_shape?: Array<number | null> } }> } } }>(path.join(runDir, FILES.model, 'model.json'));
      const input = manifest.modelTopology.config.layers[0].config.batch_input_shape;
      if (!input || input.length !== 4) throw new UsageError(`RUN_DIR '${runDir}': ${FILES.model}/model.json has no image input shape; it was not saved by granular.`);
      const saved = readModelWeights(path.join(runDir, FILES.model));
      const head = saved.get('head/kernel');
      if (!head) throw new UsageError(`RUN_DIR '${runDir}' has no head/kernel weight.`);
      const net = buildNetwork(run.cfg, [input[1]!, input[2]!, input[3]!], head.shape[1] as number);
      try {
        assignWeights(net, saved, runDir, 'head');
        if ((arch === 'resnet18' || arch === 'resnet50') && run.cfg.model.padding !== 'torch') {
          process.stderr.write(`granular: warning: ${runDir} trained with model.padding=same (TensorFlow's padding); torchvision pads symmetrically, so the exported network's outputs in PyTorch differ from granular's. Train with --set model.padding=torch for an exact export.\n`);
        }
        const tensors = await exportStateDict(net, arch, style);
        const out = String(o.out);
        fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
        writeFileAtomic(out, encodeSafetensors(tensors, { format: 'pt', granular_arch: arch, names: style, run_id: run.meta.run_id, image_size: String(input[1]) }));
        process.stdout.write(`exported ${out}: ${arch}, ${tensors.length} tensors with ${style} names (load with model.load_state_dict(safetensors.torch.load_file(...)))\n`);
        return 0;
      } finally {
        net.dispose();
        for (const t of saved.values()) t.dispose();
      }
    }),
  );
}
