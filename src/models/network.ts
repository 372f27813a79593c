import * as tf from '@tensorflow/tfjs';

/**
 * A network is an ordered list of named blocks (the units that freezing and
 * unfreezing act on, counted from the input side) followed by a dense head.
 * Blocks are built from tfjs layers so the same code runs on concrete tensors
 * (training) and on symbolic ones (the saved tfjs layers model).
 */
export interface Block {
  name: string;
  layers: tf.layers.Layer[];
  /** Eager forward pass; `training` toggles batch-norm batch statistics. */
  apply(x: tf.Tensor, training: boolean): tf.Tensor;
  /** The same computation on symbolic tensors, for the saved model graph. */
  applySymbolic(x: tf.SymbolicTensor): tf.SymbolicTensor;
  /**
   * Layers of this block that layer-wise learning-rate decay counts with the
   * head (a ViT's final norm: BEiT/MAE give it the head's rate), though they
   * freeze with the block.
   */
  headRateLayers?: readonly string[];
}

export interface NamedVariable {
  /** Stable name `<layer>/<weight>` (the tfjs layers `originalName`). */
  name: string;
  /** Index of the block, or -1 for the head. */
  block: number;
  /** A learnable parameter (batch-norm moving statistics are not). */
  trainable: boolean;
  variable: tf.Variable;
  /** Takes the head's learning rate under layer-wise decay (Block.headRateLayers). */
  headRate?: boolean;
}

/**
 * A head beside the primary one (multi-level training: one head per listed
 * level). Its layer is named `head_<level>`, so its weights are
 * `head_<level>/kernel` and `head_<level>/bias`.
 */
export interface ExtraHead {
  /** Canonical name of the level it predicts (`kind`, `depth2`). */
  level: string;
  layer: tf.layers.Layer;
  numClasses: number;
}

/** The layer name of the extra head for `level` (level names may hold characters tfjs does not allow). */
export function extraHeadName(level: string): string {
  return `head_${level.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

export class Network {
  private model: tf.LayersModel | null = null;
  /** Seed the primary head was initialised from (set by buildNetwork). */
  headSeed = 0;

  constructor(
    readonly arch: string,
    readonly inputShape: [number, number, number],
    readonly blocks: Block[],
    readonly head: tf.layers.Layer,
    readonly numClasses: number,
    /** Heads of the other levels of a multi-level network (empty otherwise). */
    readonly extraHeads: ExtraHead[] = [],
  ) {
    this.buildSymbolic();
  }

  /** Wire blocks and heads on symbolic tensors: builds every weight and the saveable graph (outputs: primary head, then the extra heads). */
  private buildSymbolic(): void {
    const input = tf.input({ shape: this.inputShape, name: 'image' });
    let h: tf.SymbolicTensor = input;
    for (const b of this.blocks) h = b.applySymbolic(h);
    const out = this.head.apply(h) as tf.SymbolicTensor;
    const extra = this.extraHeads.map((e) => e.layer.apply(h) as tf.SymbolicTensor);
    this.model = tf.model({ inputs: input, outputs: extra.length ? [out, ...extra] : out, name: this.arch.replace(/[^A-Za-z0-9_]/g, '_') });
  }

  layersModel(): tf.LayersModel {
    return this.model!;
  }

  /**
   * Logits for a batch. `blockTraining[i]` says whether block i runs in
   * training mode; frozen blocks always run in inference mode so batch norm
   * uses, and keeps, its moving statistics. With `fromBlock` > 0, `x` is the
   * output of the first `fromBlock` blocks (a cached frozen prefix).
   */
  forward(x: tf.Tensor, blockTraining: readonly boolean[], fromBlock = 0): tf.Tensor {
    let h = x;
    for (let i = fromBlock; i < this.blocks.length; i++) h = this.blocks[i].apply(h, blockTraining[i]);
    return this.head.apply(h) as tf.Tensor;
  }

  /** Logits of every head, primary first: one pass through the blocks shared by all heads. */
  forwardAll(x: tf.Tensor, blockTraining: readonly boolean[], fromBlock = 0): tf.Tensor[] {
    let h = x;
    for (let i = fromBlock; i < this.blocks.length; i++) h = this.blocks[i].apply(h, blockTraining[i]);
    return [this.head.apply(h) as tf.Tensor, ...this.extraHeads.map((e) => e.layer.apply(h) as tf.Tensor)];
  }

  /** The output of the first `upTo` blocks, all in inference mode (the frozen prefix). */
  prefix(x: tf.Tensor, upTo: number): tf.Tensor {
    let h = x;
    for (let i = 0; i < upTo; i++) h = this.blocks[i].apply(h, false);
    return h;
  }

  variables(): NamedVariable[] {
    const out: NamedVariable[] = [];
    const add = (layer: tf.layers.Layer, block: number, headRate = false) => {
      const trainableNames = new Set(layer.trainableWeights.map((w) => w.originalName));
      for (const w of layer.weights) {
        out.push({ name: w.originalName, block, trainable: trainableNames.has(w.originalName), variable: w.read() as tf.Variable, ...(headRate ? { headRate } : {}) });
      }
    };
    this.blocks.forEach((b, i) => b.layers.forEach((l) => add(l, i, b.headRateLayers?.includes(l.name) === true)));
    add(this.head, -1);
    for (const e of this.extraHeads) add(e.layer, -1);
    return out;
  }

  /** Number of learnable scalars in the given blocks (and the head if asked). */
  paramCount(blockMask: readonly boolean[], includeHead = true): number {
    return this.variables()
      .filter((v) => v.trainable && (v.block < 0 ? includeHead : blockMask[v.block]))
      .reduce((a, v) => a + v.variable.size, 0);
  }

  dispose(): void {
    this.model?.dispose();
  }
}
