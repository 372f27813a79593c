/**
 * PyTorch state dicts in and out: the names and layouts of torchvision's
 * resnet18/resnet50/densenet121/VisionTransformer and timm's
 * VisionTransformer mapped onto granular's networks (models/archs.ts), so a
 * published checkpoint becomes a run folder that `finetune --from` accepts
 * (commands/import.ts) and a trained run loads with `load_state_dict`
 * (commands/export.ts). Layouts: convolutions OIHW <-> HWIO, linear weights
 * [out, in] <-> [in, out], batch norm weight/bias/running_mean/running_var <->
 * gamma/beta/moving_mean/moving_variance, LayerNorm weight/bias <-> gamma/beta.
 */
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../config/load';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { buildNetwork } from './archs';
import { Network } from './network';
import { SafeTensor } from './safetensors';
import { isVit, VIT_SIZES, VitArch } from './vit';

export type Arch = Config['model']['arch'];
/** Whose state dict names: torchvision's (every architecture) or timm's (the ViTs). */
export type NameStyle = 'torchvision' | 'timm';
export const IMPORTABLE: readonly Arch[] = ['resnet18', 'resnet50', 'densenet121', 'vit-tiny', 'vit-small', 'vit-base'];

const BN: Record<string, string> = { gamma: 'weight', beta: 'bias', moving_mean: 'running_mean', moving_variance: 'running_var' };
const PARAM: Record<string, string> = { kernel: 'weight', bias: 'bias', gamma: 'weight', beta: 'bias' };

/**
 * The state dict names of granular weight `name` (`<layer>/<weight>`), the
 * first the one export writes, the others accepted on import (torchvision
 * renamed the ViT's MLP layers across versions), or null for a weight the
 * architecture does not have in that style.
 */
export function torchNames(arch: Arch, style: NameStyle, name: string): string[] | null {
  const [layer, weight] = name.split('/');
  const bnOrParam = (prefix: string) => (BN[weight] ?? PARAM[weight] ? [`${prefix}.${BN[weight] ?? PARAM[weight]}`] : null);
  let m: RegExpMatchArray | null;
  if (arch === 'resnet18' || arch === 'resnet50') {
    if (layer === 'head') return bnOrParam('fc');
    if (layer === 'stem_conv') return bnOrParam('conv1');
    if (layer === 'stem_bn') return bnOrParam('bn1');
    if ((m = layer.match(/^layer(\d)_(\d+)_(conv|bn)(\d)$/))) return bnOrParam(`layer${m[1]}.${Number(m[2]) - 1}.${m[3]}${m[4]}`);
    if ((m = layer.match(/^layer(\d)_(\d+)_proj(_bn)?$/))) return bnOrParam(`layer${m[1]}.${Number(m[2]) - 1}.downsample.${m[3] ? 1 : 0}`);
    return null;
  }
  if (arch === 'densenet121') {
    if (layer === 'head') return bnOrParam('classifier');
    if (/^(conv0|norm0|norm5)$/.test(layer)) return bnOrParam(`features.${layer}`);
    if ((m = layer.match(/^denseblock(\d)_denselayer(\d+)_(norm1|conv1|norm2|conv2)$/))) return bnOrParam(`features.denseblock${m[1]}.denselayer${m[2]}.${m[3]}`);
    if ((m = layer.match(/^transition(\d)_(norm|conv)$/))) return bnOrParam(`features.transition${m[1]}.${m[2]}`);
    return null;
  }
  if (!isVit(arch)) return null;
  const tv = style === 'torchvision';
  if (layer === 'embed') {
    if (weight === 'cls_token') return [tv ? 'class_token' : 'cls_token'];
    if (weight === 'pos_embed') return [tv ? 'encoder.pos_embedding' : 'pos_embed'];
    return null;
  }
  if (layer === 'patch_embed_proj') return bnOrParam(tv ? 'conv_proj' : 'patch_embed.proj');
  if (layer === 'head') return bnOrParam(tv ? 'heads.head' : 'head');
  if (layer === 'norm') return bnOrParam(tv ? 'encoder.ln' : 'norm');
  if (layer === 'fc_norm') return tv ? null : bnOrParam('fc_norm');
  if (!(m = layer.match(/^block(\d+)_(norm1|norm2|attn|mlp_fc1|mlp_fc2)$/))) return null;
  const i = Number(m[1]) - 1;
  const b = tv ? `encoder.layers.encoder_layer_${i}` : `blocks.${i}`;
  switch (m[2]) {
    case 'norm1':
      return bnOrParam(tv ? `${b}.ln_1` : `${b}.norm1`);
    case 'norm2':
      return bnOrParam(tv ? `${b}.ln_2` : `${b}.norm2`);
    case 'mlp_fc1':
      return tv ? [`${b}.mlp.0.${PARAM[weight]}`, `${b}.mlp.linear_1.${PARAM[weight]}`] : bnOrParam(`${b}.mlp.fc1`);
    case 'mlp_fc2':
      return tv ? [`${b}.mlp.3.${PARAM[weight]}`, `${b}.mlp.linear_2.${PARAM[weight]}`] : bnOrParam(`${b}.mlp.fc2`);
    default: {
      const w: Record<string, [string, string]> = {
        qkv_kernel: ['self_attention.in_proj_weight', 'attn.qkv.weight'],
        qkv_bias: ['self_attention.in_proj_bias', 'attn.qkv.bias'],
        proj_kernel: ['self_attention.out_proj.weight', 'attn.proj.weight'],
        proj_bias: ['self_attention.out_proj.bias', 'attn.proj.bias'],
      };
      return w[weight] ? [`${b}.${w[weight][tv ? 0 : 1]}`] : null;
    }
  }
}

/** Granular layout -> PyTorch layout permutation by rank: HWIO -> OIHW, [in, out] -> [out, in]; null = as is. */
const toTorchPerm = (rank: number): number[] | null => (rank === 4 ? [3, 2, 0, 1] : rank === 2 ? [1, 0] : null);
const fromTorchPerm = (rank: number): number[] | null => (rank === 4 ? [2, 3, 1, 0] : rank === 2 ? [1, 0] : null);

/**
 * Resample a [1, prefix + gh0*gw0, D] position embedding to a gh x gw grid,
 * prefix tokens (the class token's) kept: PyTorch's bicubic interpolation
 * (F.interpolate mode='bicubic', align_corners=False, A = -0.75), the
 * resampling of DeiT's and MAE's `interpolate_pos_embed` (timm's
 * resample_abs_pos_embed is the same without its antialias option). The old
 * grid must be square. Throws UsageError otherwise.
 */
export function resizePosEmbed(pos: Float32Array, tokens: number, dim: number, prefix: number, gh: number, gw: number): Float32Array {
  const g0 = Math.round(Math.sqrt(tokens - prefix));
  if (g0 * g0 !== tokens - prefix) throw new UsageError(`the checkpoint's position embeddings hold ${tokens - prefix} patch tokens, not a square grid; cannot resample them to ${gh}x${gw}.`);
  const out = new Float32Array((prefix + gh * gw) * dim);
  out.set(pos.subarray(0, prefix * dim));
  const A = -0.75;
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  /** For each output index: 4 input indices (clamped) and weights. */
  const taps = (inN: number, outN: number) =>
    Array.from({ length: outN }, (_, o) => {
      const x = (o + 0.5) * (inN / outN) - 0.5;
      const i0 = Math.floor(x);
      const t = x - i0;
      const w = [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)];
      return [-1, 0, 1, 2].map((k, j) => ({ i: Math.min(inN - 1, Math.max(0, i0 + k)), w: w[j] }));
    });
  const th = taps(g0, gh);
  const tw = taps(g0, gw);
  // Rows first ([gh, g0, D]), then columns, as PyTorch's separable kernel.
  const rows = new Float32Array(gh * g0 * dim);
  for (let y = 0; y < gh; y++)
    for (let x = 0; x < g0; x++)
      for (let d = 0; d < dim; d++) {
        let s = 0;
        for (const { i, w } of th[y]) s += w * pos[(prefix + i * g0 + x) * dim + d];
        rows[(y * g0 + x) * dim + d] = s;
      }
  for (let y = 0; y < gh; y++)
    for (let x = 0; x < gw; x++)
      for (let d = 0; d < dim; d++) {
        let s = 0;
        for (const { i, w } of tw[x]) s += w * rows[(y * g0 + i) * dim + d];
        out[(prefix + y * gw + x) * dim + d] = s;
      }
  return out;
}

/** What an imported checkpoint became. */
export interface Imported {
  cfg: Config;
  net: Network;
  style: NameStyle;
  numClasses: number;
  /** The position embeddings' grid before and after resampling (ViTs at another image size), else null. */
  posEmbedResized: { from: number[]; to: number[] } | null;
}

const f32 = (t: SafeTensor, name: string): Float32Array => {
  if (!(t.data instanceof Float32Array)) throw new UsageError(`checkpoint tensor '${name}' has dtype ${t.dtype}; a weight must be floating point.`);
  return t.data;
};

/**
 * A state dict (safetensors tensors by name, `module.` prefixes dropped) as a
 * granular network of `arch`: the config it implies (model.* from the
 * tensors' shapes: width, patch size, class token; data.image_size
 * `imageSize` or, for a ViT, the checkpoint's own grid; data.channels;
 * data.normalize imagenet, as torchvision/timm models expect), the network
 * built with it and the weights assigned. Throws UsageError for a state dict
 * of another architecture or style, a missing or extra tensor (num_batches_tracked
 * aside), or a shape that does not fit.
 */
export function importStateDict(raw: ReadonlyMap<string, SafeTensor>, arch: Arch, opts: { imageSize?: number; file: string }): Imported {
  if (!IMPORTABLE.includes(arch)) throw new UsageError(`--arch ${arch} cannot be imported; importable architectures: ${IMPORTABLE.join(', ')}.`);
  const sd = new Map<string, SafeTensor>();
  for (const [k, v] of raw) sd.set(k.replace(/^(module\.)+/, ''), v);
  const need = (name: string) => {
    const t = sd.get(name);
    if (!t) {
      const keys = [...sd.keys()];
      throw new UsageError(`'${opts.file}' has no tensor '${name}', which a ${arch} state dict has; it holds ${keys.length} tensors (${keys.slice(0, 4).join(', ')}${keys.length > 4 ? ', ...' : ''}). Is it another architecture? Pass the matching --arch (${IMPORTABLE.join(', ')}).`);
    }
    return t;
  };
  let style: NameStyle = 'torchvision';
  const model: Record<string, unknown> = { arch };
  let imageSize = opts.imageSize ?? 224;
  let channels: number;
  let headName: string;
  if (isVit(arch)) {
    style = sd.has('conv_proj.weight') ? 'torchvision' : sd.has('patch_embed.proj.weight') ? 'timm' : (need('patch_embed.proj.weight'), 'timm');
    const proj = need(style === 'timm' ? 'patch_embed.proj.weight' : 'conv_proj.weight');
    const [d, c, p] = proj.shape;
    channels = c;
    const { dim } = VIT_SIZES[arch as VitArch];
    if (d % VIT_SIZES[arch as VitArch].heads) throw new UsageError(`'${opts.file}' has embedding width ${d}, not a multiple of ${arch}'s ${VIT_SIZES[arch as VitArch].heads} heads. Pass the matching --arch.`);
    const classToken = sd.has(style === 'timm' ? 'cls_token' : 'class_token');
    Object.assign(model, { width: d / dim, patch_size: p, pool: classToken ? 'token' : 'avg' });
    const pos = need(style === 'timm' ? 'pos_embed' : 'encoder.pos_embedding');
    const grid = Math.round(Math.sqrt(pos.shape[1] - (classToken ? 1 : 0)));
    if (opts.imageSize === undefined) imageSize = grid * p;
    headName = style === 'timm' ? 'head.weight' : 'heads.head.weight';
  } else {
    const first = need(arch === 'densenet121' ? 'features.conv0.weight' : 'conv1.weight');
    channels = first.shape[1];
    Object.assign(model, { width: first.shape[0] / 64, padding: 'torch' });
    headName = arch === 'densenet121' ? 'classifier.weight' : 'fc.weight';
  }
  const numClasses = need(headName).shape[0];
  const cfg = resolveConfig([{ name: `import-${arch}`, seed: 0, model, data: { image_size: imageSize, channels, normalize: 'imagenet' } }], `the config of imported '${opts.file}'`);
  const net = buildNetwork(cfg, [imageSize, imageSize, channels], numClasses);
  const used = new Set<string>();
  let posEmbedResized: Imported['posEmbedResized'] = null;
  try {
    for (const v of net.variables()) {
      const names = torchNames(arch, style, v.name);
      if (!names) throw new Error(`no ${style} name for granular weight '${v.name}' of ${arch}`);
      const theirs = names.find((n) => sd.has(n)) ?? names[0];
      const t = need(theirs);
      used.add(theirs);
      let data = f32(t, theirs);
      let shape = t.shape;
      if (v.name === 'embed/pos_embed' && shape[1] !== v.variable.shape[1]) {
        const [, tokens, d] = shape;
        const p = cfg.model.patch_size!;
        const prefix = cfg.model.pool === 'token' ? 1 : 0;
        data = resizePosEmbed(data, tokens, d, prefix, imageSize / p, imageSize / p);
        posEmbedResized = { from: [Math.round(Math.sqrt(tokens - prefix)), Math.round(Math.sqrt(tokens - prefix))], to: [imageSize / p, imageSize / p] };
        shape = [1, prefix + (imageSize / p) ** 2, d];
      }
      const perm = fromTorchPerm(shape.length);
      const value = tf.tidy(() => {
        const x = tf.tensor(data, shape, 'float32');
        return perm && !v.name.startsWith('embed/') ? x.transpose(perm) : x;
      });
      if (value.shape.join('x') !== v.variable.shape.join('x')) {
        value.dispose();
        throw new UsageError(`checkpoint tensor '${theirs}' has shape [${t.shape}], which gives [${shape}] in granular's layout, but ${arch} (model.width ${cfg.model.width}) needs [${v.variable.shape}]. Is it another architecture? Pass the matching --arch.`);
      }
      v.variable.assign(value);
      value.dispose();
    }
    const extra = [...sd.keys()].filter((k) => !used.has(k) && !k.endsWith('num_batches_tracked'));
    if (extra.length) {
      throw new UsageError(
        `'${opts.file}' has ${extra.length} tensor(s) that ${arch} (${style} names) does not: ${extra.slice(0, 6).join(', ')}${extra.length > 6 ? ', ...' : ''}. ` +
          `Is it another architecture (e.g. resnet50 rather than resnet18)? Pass the matching --arch; granular does not drop weights silently.`,
      );
    }
  } catch (e) {
    net.dispose();
    throw e;
  }
  return { cfg, net, style, numClasses, posEmbedResized };
}

/**
 * A network's weights as a PyTorch state dict of `style` names, in
 * PyTorch's layouts, plus each batch norm's `num_batches_tracked` (0: unknown)
 * so that a strict `load_state_dict` accepts it. Extra heads of multi-level
 * networks are left out (the architectures have one head). Throws UsageError
 * for an architecture or option the style cannot express (a torchvision ViT
 * has no global-average-pooling variant).
 */
export async function exportStateDict(net: Network, arch: Arch, style: NameStyle): Promise<Array<{ name: string; shape: number[]; data: Float32Array | BigInt64Array }>> {
  if (!IMPORTABLE.includes(arch)) throw new UsageError(`${arch} has no torchvision/timm counterpart; export supports ${IMPORTABLE.join(', ')}.`);
  if (style === 'timm' && !isVit(arch)) throw new UsageError(`--names timm applies to the ViTs; ${arch} is exported with torchvision's names (--names torchvision).`);
  const extraHeads = new Set(net.extraHeads.map((e) => e.layer.name));
  const out: Array<{ name: string; shape: number[]; data: Float32Array | BigInt64Array }> = [];
  for (const v of net.variables()) {
    if (extraHeads.has(v.name.split('/')[0])) continue;
    const names = torchNames(arch, style, v.name);
    if (!names) throw new UsageError(`${arch}'s weight '${v.name}' has no ${style} counterpart${v.name.startsWith('fc_norm') ? ' (torchvision ViTs have no global-average-pooling variant: export with --names timm)' : ''}.`);
    const perm = v.name.startsWith('embed/') ? null : toTorchPerm(v.variable.rank);
    const t = tf.tidy(() => (perm ? v.variable.transpose(perm) : v.variable.clone()));
    // await data(): a GPU backend has no synchronous readback.
    const data = (await t.data().finally(() => t.dispose())) as Float32Array;
    out.push({ name: names[0], shape: t.shape.slice(), data });
    if (names[0].endsWith('.running_var')) out.push({ name: names[0].replace(/running_var$/, 'num_batches_tracked'), shape: [], data: new BigInt64Array(1) });
  }
  return out;
}
