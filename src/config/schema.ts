import { z } from 'zod';

/**
 * Every config key and its default lives here, and only here. Commands parse
 * their input against this schema once; everything below them gets `Config`.
 */

const int = () => z.number().int();
const nullableInt = () => z.number().int().positive().nullable().default(null);
const nullableStr = () => z.string().nullable().default(null);

const synthetic = z
  .object({
    /** Children per node, from the root down: [2, 3, 4] is 2 superclasses x 3 x 4 = 24 classes. */
    branching: z.array(int().min(1)).min(2).default([2, 3, 4]),
    /** Side of a square patch in pixels; the image is a grid of (image_size / patch_size)^2 patches. */
    patch_size: int().positive().default(8),
    /** Features owned by each class at each level (orthonormal patch patterns). */
    features_per_class: int().positive().default(1),
    /** How many patches of a sample show its features at each level, coarsest first. */
    patches_per_level: z.array(int().min(0)).nullable().default(null),
    /** Feature strength per level, coarsest first (a missing entry repeats the last). */
    strength: z.array(z.number().nonnegative()).default([1]),
    /** Per-pixel Gaussian noise sigma on every patch. */
    noise: z.number().nonnegative().default(0.1),
    /**
     * Levels, from the top, whose features hard samples lack. null = every level
     * but the finest: a hard sample shows only its leaf's features.
     */
    hard_drop_levels: int().min(1).nullable().default(null),
    /** Fraction of hard samples in train and in test. */
    hard_fraction_train: z.number().min(0).max(1).default(0.01),
    hard_fraction_test: z.number().min(0).max(1).default(0.5),
    /** Samples generated for training (before the validation hold-out) and for test. */
    train_samples: int().positive().default(2000),
    test_samples: int().positive().default(1000),
  })
  .strict()
  .prefault({});

const data = z
  .object({
    format: z.enum(['synthetic', 'imagefolder', 'inat2021', 'wordnet', 'omniglot']).default('synthetic'),
    seed: int().nullable().default(null),
    root: nullableStr(),
    taxonomy: nullableStr(),
    annotations: z
      .object({ train: z.string().default('train.json'), test: z.string().default('val.json') })
      .strict()
      .prefault({}),
    is_a: nullableStr(),
    words: nullableStr(),
    include: z.array(z.string()).default([]),
    exclude: z.array(z.string()).default([]),
    train_size: nullableInt(),
    train_per_class: nullableInt(),
    test_size: nullableInt(),
    val_fraction: z.number().min(0).max(0.9).default(0.1),
    image_size: int().positive().default(32),
    channels: z.union([z.literal(1), z.literal(3)]).default(1),
    label_noise: z.number().min(0).max(1).default(0),
    relabel: z.string().regex(/^(random_split:\d+|shuffle_parents)$/).nullable().default(null),
    /** imagefolder/wordnet without train/ and test/ folders: seeded per-class share of ROOT/<class>/ held out for test. */
    test_fraction: z.number().gt(0).lt(1).nullable().default(null),
    /** Training-only augmentation. */
    augment: z.array(z.enum(['flip', 'crop'])).default([]),
    /** An unreadable or truncated image: skip it (counted in skipped_images) or fail (exit 2). */
    on_bad_image: z.enum(['skip', 'fail']).default('skip'),
    /** Decoded images are cached here (relative to the working folder); null = no cache. */
    cache_dir: z.string().nullable().default('datasets/cache'),
    synthetic,
  })
  .strict()
  .prefault({});

const model = z
  .object({
    arch: z.enum(['two-layer-conv', 'cnn-small', 'resnet8', 'resnet20', 'resnet18', 'resnet50']).default('two-layer-conv'),
    width: z.number().positive().default(1),
    /**
     * resnet18/resnet50: the ImageNet stem (7x7/2 conv + 3x3/2 max pool, for
     * 224 px) or the CIFAR one (3x3/1 conv, no pool, for small images); null
     * means imagenet. Other architectures have their own stem.
     */
    stem: z.enum(['imagenet', 'cifar']).nullable().default(null),
    /** two-layer-conv: filters before the width multiplier. */
    filters: int().positive().default(64),
    /** two-layer-conv: activation; smooth_relu is the theory's (polynomial below activation_rho). */
    activation: z.enum(['relu', 'smooth_relu']).default('relu'),
    activation_q: z.number().min(1).default(3),
    activation_rho: z.number().positive().default(0.1),
    /** two-layer-conv: filter init std as a multiple of 1/sqrt(patch dim); the theory's regime is small. */
    init_scale: z.number().positive().default(1),
    /** two-layer-conv: patch side (kernel = stride); null = data.synthetic.patch_size for synthetic data, else 4. */
    patch_size: int().positive().nullable().default(null),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.stem !== null && m.arch !== 'resnet18' && m.arch !== 'resnet50') {
      ctx.addIssue({ code: 'custom', path: ['stem'], message: `model.stem applies to resnet18 and resnet50 only; ${m.arch} has its own stem. Remove model.stem or pick one of those architectures.` });
    }
  })
  .prefault({});

const train = z
  .object({
    seed: int().nullable().default(null),
    level: z.string().min(1).default('leaf'),
    epochs: int().min(0).default(30),
    batch_size: int().positive().default(64),
    lr: z.number().positive().default(0.01),
    optimizer: z.enum(['sgd', 'adam']).default('sgd'),
    momentum: z.number().min(0).max(1).default(0.9),
    /** SGD: L2 added to the gradient (as PyTorch's SGD); Adam: decoupled (AdamW). */
    weight_decay: z.number().min(0).default(0),
    schedule: z.enum(['constant', 'cosine', 'step']).default('cosine'),
    warmup_epochs: z.number().min(0).default(0),
    loss: z.enum(['xent', 'mse']).default('xent'),
    /** Also checkpoint every this many steps inside an epoch (long epochs); 0 = at epoch ends only. */
    checkpoint_every_steps: int().min(0).default(0),
  })
  .strict()
  .prefault({});

/** When gradual unfreezing stops opening blocks (Liu & Gurevych 2024). */
const unfreezeStop = z.union([
  z
    .object({
      metric: z.enum(['fisher_trace', 'fisher_trace_emp', 'sharpness_avg', 'sharpness_worst']),
      when: z.literal('relative_change_below').default('relative_change_below'),
      value: z.number().positive().default(0.05),
      /** Compare with the measurement this many dynamics rows earlier. */
      window: int().positive().default(2),
    })
    .strict(),
  z.object({ step: int().min(0) }).strict(),
  z.object({ epoch: int().min(0) }).strict(),
]);

const unfreeze = z
  .object({
    /** Open one more block every `every` units. */
    every: int().positive(),
    unit: z.enum(['epoch', 'step']).default('epoch'),
    /** top-down opens the block nearest the head first (ULMFiT); fisher opens the frozen block with the largest fisher_trace@block. */
    order: z.enum(['top-down', 'bottom-up', 'random', 'fisher']).default('top-down'),
    /** Blocks trainable at step 0, taken in `order`. */
    start: int().min(0).default(0),
    stop: unfreezeStop.nullable().default(null),
  })
  .strict();

const finetune = z
  .object({
    /** Blocks frozen from the input side; with `unfreeze` these stay frozen throughout. */
    freeze: z.union([int().min(0), z.literal('all')]).default(0),
    head: z.enum(['new', 'keep']).default('new'),
    /** all: start every block from the pretrained weights; frozen_only (Dar et al.): re-initialise the blocks that are not frozen. */
    transfer: z.enum(['all', 'frozen_only']).default('all'),
    unfreeze: unfreeze.nullable().default(null),
    /** Discriminative learning rates: block i below the head trains at lr * decay^(distance from the head). */
    lr_per_block_decay: z.number().positive().max(1).default(1),
    /** train: batch norm of trainable blocks uses batch statistics; frozen: every batch norm stays in inference mode. */
    batchnorm: z.enum(['train', 'frozen']).default('train'),
  })
  .strict()
  .prefault({});

const evalSection = z
  .object({
    ood: z.array(z.enum(['gaussian_noise', 'gaussian_blur', 'contrast', 'brightness', 'jpeg', 'pixelate'])).default([]),
    ood_root: nullableStr(),
    /** Generator-side covariate shifts for synthetic data (see src/data/synthetic.ts). */
    ood_synthetic: z.array(z.enum(['weak_common', 'more_noise', 'all_hard'])).default([]),
    ood_severities: z.array(int().min(0).max(5)).default([1, 2, 3, 4, 5]),
    /** Evaluate every this many epochs (the last epoch is always evaluated). */
    every: int().positive().default(1),
    /** Steps between dynamics rows; 'auto' = half-way through epoch 1, then after epochs 1, 2, 4, 8, 16, ... and the last; 0 = off. */
    dynamics_every: z.union([int().min(0), z.literal('auto')]).default('auto'),
    fisher_samples: int().positive().default(16),
    sharpness_rho: z.number().min(0).default(0.05),
    /** Examples in the fixed training subset that sharpness is measured on. */
    sharpness_examples: int().positive().default(64),
    /** Noise draws for sharpness_avg. */
    sharpness_draws: int().positive().default(2),
    /** Projected ascent steps for sharpness_worst. */
    sharpness_steps: int().positive().default(2),
  })
  .strict()
  .prefault({});

export const configSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only').default('run'),
    seed: int().default(0),
    data,
    model,
    train,
    finetune,
    eval: evalSection,
  })
  .strict();

export type Config = z.infer<typeof configSchema>;

/** The config with every default filled in. */
export function defaultConfig(): Config {
  return configSchema.parse({});
}
