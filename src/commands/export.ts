import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { IMAGENET_MEAN, IMAGENET_STD } from '../data/cache/store';
import { initEngine } from '../engine';
import { buildNetwork } from '../models/archs';
import { exportStateDict, NameStyle } from '../models/checkpoint';
import { networkToOnnx, ONNX_OPSET, OnnxLayout } from '../models/onnx';
import { encodeSafetensors } from '../models/safetensors';
import { isVit } from '../models/vit';
import { readModelWeights } from '../runs/bundle';
import { FILES } from '../runs/rundir';
import { assignWeights, readSourceRun } from '../runs/run';
import { UsageError } from '../util/errors';
import { readJson, writeFileAtomic } from '../util/fsx';
import { action, commonOptions, withCommonOptions } from './common';

/**
 * `granular export RUN_DIR --format safetensors|onnx --out FILE`: a run's
 * network as a PyTorch state dict with torchvision's (or, for a ViT, timm's)
 * names and layouts, so `model.load_state_dict(safetensors.torch.load_file(FILE))`
 * loads it into the matching torchvision/timm model; or as an ONNX model
 * (models/onnx.ts: every architecture, input NCHW or with --layout nhwc
 * granular's NHWC, output the primary head's logits) for onnxruntime.
 */
export function exportCommand(): Command {
  const cmd = new Command('export')
    .description("a run's network as a torchvision/timm state dict (safetensors) or an ONNX model (onnx)")
    .argument('<run_dir>', 'a completed pretrain, finetune or import run')
    .requiredOption('--out <file>', 'the file to write')
    .option('--format <format>', 'safetensors or onnx', 'safetensors')
    .option('--names <style>', 'safetensors: torchvision (every architecture) or timm (the ViTs; the default for them)')
    .option('--layout <layout>', "onnx: the input's layout, nchw (PyTorch's, the default) or nhwc (granular's)");
  withCommonOptions(cmd);
  return cmd.action(
    action(async (runDir: string, o: Record<string, unknown>) => {
      const c = commonOptions(o);
      if (o.format !== 'safetensors' && o.format !== 'onnx') throw new UsageError(`--format '${String(o.format)}' is unknown; use safetensors or onnx.`);
      const onnxFormat = o.format === 'onnx';
      if (onnxFormat && o.names !== undefined) throw new UsageError(`--names applies to --format safetensors (state dict names); an ONNX model has no such choice. Drop --names.`);
      if (!onnxFormat && o.layout !== undefined) throw new UsageError(`--layout applies to --format onnx; a safetensors state dict is always in PyTorch's layouts. Drop --layout.`);
      const layout = (o.layout ?? 'nchw') as OnnxLayout;
      if (layout !== 'nchw' && layout !== 'nhwc') throw new UsageError(`--layout '${String(o.layout)}' must be nchw or nhwc.`);
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
        const out = String(o.out);
        if (onnxFormat) {
          const [H, W, C] = net.inputShape;
          const shape = layout === 'nchw' ? `[N, ${C}, ${H}, ${W}]` : `[N, ${H}, ${W}, ${C}]`;
          const doc =
            `granular ${arch} from run ${run.meta.run_id}: input 'image' float32 ${shape} (${layout.toUpperCase()}), pixels in [0, 1] then normalised as ` +
            `data.normalize=${run.cfg.data.normalize} (${normalizeWords(run.cfg.data.normalize)}); output 'logits' [N, ${net.numClasses}] of the primary head, before softmax.`;
          const bytes = await networkToOnnx(net, { layout, docString: doc, metadata: { granular_arch: arch, run_id: run.meta.run_id, layout, normalize: run.cfg.data.normalize, image_size: String(H) } });
          fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
          writeFileAtomic(out, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
          process.stdout.write(`exported ${out}: ${arch}, ONNX opset ${ONNX_OPSET}, input 'image' ${shape} (${layout.toUpperCase()}), output 'logits' [N, ${net.numClasses}]\n`);
          return 0;
        }
        if ((arch === 'resnet18' || arch === 'resnet50') && run.cfg.model.padding !== 'torch') {
          process.stderr.write(`granular: warning: ${runDir} trained with model.padding=same (TensorFlow's padding); torchvision pads symmetrically, so the exported network's outputs in PyTorch differ from granular's. Train with --set model.padding=torch for an exact export.\n`);
        }
        const tensors = await exportStateDict(net, arch, style);
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

/** What data.normalize does to the pixels, in words, for the ONNX model's doc_string. */
function normalizeWords(n: string): string {
  switch (n) {
    case 'none':
      return 'no normalisation';
    case 'imagenet':
      return `minus ImageNet mean [${IMAGENET_MEAN.join(', ')}], divided by std [${IMAGENET_STD.join(', ')}] (one channel: their averages)`;
    default:
      return "minus the per-channel mean, divided by the std, of the run's training split (granular eval recomputes them)";
  }
}
