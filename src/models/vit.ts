import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { Block } from './network';
import { withFusedGelu } from './fused-ops';
import { MultiHeadSelfAttention, TokenEmbedding, TokenPool, TorchLayerNorm } from './torch-layers';

/**
 * Width and heads of the Vision Transformers (Dosovitskiy et al. 2021; the
 * tiny/small sizes of Touvron et al. 2021, DeiT), as timm's vit_tiny/small/base:
 * 12 pre-norm blocks, MLP ratio 4, LayerNorm eps 1e-6, qkv bias.
 */
export const VIT_SIZES = {
  'vit-tiny': { dim: 192, heads: 3 },
  'vit-small': { dim: 384, heads: 6 },
  'vit-base': { dim: 768, heads: 12 },
} as const;
export type VitArch = keyof typeof VIT_SIZES;
export const VIT_DEPTH = 12;
export const VIT_DEFAULT_PATCH = 16;

export const isVit = (arch: string): arch is VitArch => arch in VIT_SIZES;

/** Embedding width after model.width: a multiple of the head count (every head keeps an equal share). */
export function vitDim(arch: VitArch, width: number): number {
  const { dim, heads } = VIT_SIZES[arch];
  return heads * Math.max(1, Math.round((dim * width) / heads));
}

/** Block names of a ViT, input side first: patch_embed, block1..block12. */
export function vitBlockNames(): string[] {
  return ['patch_embed', ...Array.from({ length: VIT_DEPTH }, (_, i) => `block${i + 1}`)];
}

/**
 * A ViT as timm's VisionTransformer builds it: a p x p / p convolution into
 * patch tokens, a class token (model.pool token) or none (avg), position
 * embeddings, 12 pre-norm blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))`
 * with a GELU (erf) MLP, then the final LayerNorm and the class token's
 * output (token), or the mean over tokens and then the LayerNorm (avg: timm's
 * fc_norm). The final norm and pool belong to the last block. Parameter counts
 * at 224 px, patch 16, 1000 classes: 5,717,416 / 22,050,664 / 86,567,656
 * (timm vit_tiny/small/base_patch16_224). Blocks: patch_embed, block1..block12.
 * Throws UsageError when model.patch_size does not divide the image.
 */
export function vit(cfg: Config, shape: [number, number, number], arch: VitArch, seeds: { next(): number }): Block[] {
  const [H, W] = shape;
  const p = cfg.model.patch_size ?? VIT_DEFAULT_PATCH;
  if (H % p || W % p) throw new UsageError(`model.patch_size ${p} must divide the image size ${H}x${W} (${arch}); pick a patch size that divides data.image_size, e.g. --set model.patch_size=${[16, 8, 4, 2].find((q) => H % q === 0 && W % q === 0) ?? 1}.`);
  const d = vitDim(arch, cfg.model.width);
  const heads = VIT_SIZES[arch].heads;
  const pool = cfg.model.pool ?? 'token';
  // GELU runs as one kernel forward and one back where the backend has them (./fused-ops).
  const dense = (name: string, units: number, activation?: 'gelu') => {
    const layer = tf.layers.dense({ name, units, activation, kernelInitializer: tf.initializers.truncatedNormal({ mean: 0, stddev: 0.02, seed: seeds.next() }) });
    return activation === 'gelu' ? withFusedGelu(layer) : layer;
  };
  const norm = (name: string) => new TorchLayerNorm({ name, epsilon: 1e-6 });
  const proj = tf.layers.conv2d({ name: 'patch_embed_proj', filters: d, kernelSize: p, strides: p, padding: 'valid', useBias: true, kernelInitializer: tf.initializers.leCunNormal({ seed: seeds.next() }) });
  const embed = new TokenEmbedding({ name: 'embed', classToken: pool === 'token', seed: seeds.next() });
  const blocks: Block[] = [
    { name: 'patch_embed', layers: [proj, embed], apply: (x) => embed.apply(proj.apply(x)) as tf.Tensor, applySymbolic: (x) => embed.apply(proj.apply(x)) as tf.SymbolicTensor },
  ];
  for (let i = 1; i <= VIT_DEPTH; i++) {
    const n = `block${i}`;
    const norm1 = norm(`${n}_norm1`);
    const attn = new MultiHeadSelfAttention({ name: `${n}_attn`, heads, seed: seeds.next() });
    const add1 = tf.layers.add({ name: `${n}_add1` });
    const norm2 = norm(`${n}_norm2`);
    const fc1 = dense(`${n}_mlp_fc1`, 4 * d, 'gelu');
    const fc2 = dense(`${n}_mlp_fc2`, d);
    const add2 = tf.layers.add({ name: `${n}_add2` });
    const tail: tf.layers.Layer[] =
      i < VIT_DEPTH ? [] : pool === 'token' ? [norm('norm'), new TokenPool({ name: 'pool', mode: 'token' })] : [new TokenPool({ name: 'pool', mode: 'avg' }), norm('fc_norm')];
    const body = <T extends tf.Tensor | tf.SymbolicTensor>(x: T): T => {
      const a = (l: tf.layers.Layer, v: T | T[]) => l.apply(v as never) as T;
      let h = a(add1, [x, a(attn, a(norm1, x))]);
      h = a(add2, [h, a(fc2, a(fc1, a(norm2, h)))]);
      for (const l of tail) h = a(l, h);
      return h;
    };
    // BEiT/MAE layer-wise decay: patch_embed decay^13, block i decay^(13-i), the final norm and head 1 (finetune.ts blockLrScale).
    const headRateLayers = tail.filter((l) => l instanceof TorchLayerNorm).map((l) => l.name);
    blocks.push({ name: n, layers: [norm1, attn, add1, norm2, fc1, fc2, add2, ...tail], apply: (x) => body(x), applySymbolic: (x) => body(x), headRateLayers });
  }
  return blocks;
}
