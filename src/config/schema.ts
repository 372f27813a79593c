import { z } from 'zod';

/**
 * Every config key and its default lives here, and only here. Commands parse
 * their input against this schema once; everything below them gets `Config`.
 * Each key carries a one-line `.describe()`: `granular config --keys` prints
 * them, so a key without one is a key nobody can find.
 */

const int = () => z.number().int();
const nullableInt = () => z.number().int().positive().nullable().default(null);
const nullableStr = () => z.string().nullable().default(null);

const synthetic = z
  .object({
    branching: z.array(int().min(1)).min(2).default([2, 3, 4]).describe('children per node from the root down: [2, 3, 4] is 2 superclasses x 3 x 4 = 24 classes'),
    patch_size: int().positive().default(8).describe('side of a square patch in pixels; an image is a grid of (image_size / patch_size)^2 patches'),
    features_per_class: int().positive().default(1).describe('features owned by each class at each level (orthonormal patch patterns)'),
    patches_per_level: z.array(int().min(0)).nullable().default(null).describe('patches of a sample that show its features at each level, coarsest first; null = floor(patches / (levels + 1)) each'),
    strength: z.array(z.number().nonnegative()).default([1]).describe('feature strength per level, coarsest first (a missing entry repeats the last)'),
    noise: z.number().nonnegative().default(0.1).describe('per-pixel Gaussian noise sigma on every patch'),
    hard_drop_levels: int().min(1).nullable().default(null).describe('levels, from the top, whose features hard samples lack; null = all but the finest (a hard sample shows only its leaf features)'),
    hard_fraction_train: z.number().min(0).max(1).default(0.01).describe('fraction of hard samples in the training set'),
    hard_fraction_test: z.number().min(0).max(1).default(0.5).describe('fraction of hard samples in the test set'),
    train_samples: int().positive().default(2000).describe('samples generated for training (before the validation hold-out)'),
    test_samples: int().positive().default(1000).describe('samples generated for the test set'),
  })
  .strict()
  .prefault({})
  .describe('the synthetic hierarchical multi-view generator (data.format synthetic)');

const data = z
  .object({
    format: z.enum(['synthetic', 'imagefolder', 'inat2021', 'wordnet', 'omniglot', 'cifar']).default('synthetic').describe('dataset source (data.source is accepted as an alias)'),
    seed: int().nullable().default(null).describe('seed of data generation, splits, subsets and label noise; null = the top-level seed'),
    root: nullableStr().describe('dataset folder (not used by synthetic)'),
    taxonomy: nullableStr().describe('imagefolder: path of the taxonomy CSV; null = <root>/taxonomy.csv'),
    annotations: z
      .object({
        train: z.string().default('train.json').describe('inat2021: training annotations, relative to data.root'),
        test: z.string().default('val.json').describe('inat2021: test annotations, relative to data.root'),
      })
      .strict()
      .prefault({})
      .describe('inat2021: the COCO-style annotation files'),
    is_a: nullableStr().describe('wordnet: edge list "parent child" per line; null = <root>/wordnet.is_a.txt'),
    words: nullableStr().describe('wordnet: names of the synsets; null = <root>/words.txt'),
    include: z.array(z.string()).default([]).describe('keep only the classes under these nodes (paths or names, any level)'),
    exclude: z.array(z.string()).default([]).describe('drop the classes under these nodes (paths or names, any level)'),
    train_size: nullableInt().describe('cap on training images (seeded, stratified, nested); null = all'),
    train_per_class: nullableInt().describe('cap on training images per class (seeded, nested); null = all'),
    test_size: nullableInt().describe('cap on test images (seeded, stratified, nested); null = all'),
    val_fraction: z.number().min(0).max(0.9).default(0.1).describe('share of the training images held out for val_acc (model selection and early stopping look only here)'),
    image_size: int().positive().default(32).describe('side in pixels that images are resized to'),
    channels: z
      .union([z.literal('auto'), z.literal(1), z.literal(3)])
      .default('auto')
      .describe('auto (3 when any training image is stored in colour, else 1; decided from the image headers, the run records the value and why), 1 (grey) or 3 (RGB)'),
    duplicates: z
      .enum(['drop_test', 'keep', 'refuse'])
      .default('drop_test')
      .describe("test images with the same file content as a training image of the dataset, or as a differently labelled test image (public datasets hold a few): drop_test (removed from the test set, counted and named), keep, or refuse (exit 2)"),
    label_noise: z.number().min(0).max(1).default(0).describe('fraction of training labels flipped to another class, drawn once per data.seed'),
    relabel: z
      .string()
      .regex(/^(random_split:\d+|shuffle_parents|cluster:\d+)$/, 'random_split:K, shuffle_parents or cluster:K')
      .nullable()
      .default(null)
      .describe('hierarchy controls: random_split:K (each class split into K random pseudo-classes), shuffle_parents, or cluster:K (k-means on the features of data.relabel_from)'),
    relabel_from: nullableStr().describe('cluster:K: folder of the finished run whose penultimate features are clustered, within each class of the level it trained at'),
    test_fraction: z.number().gt(0).lt(1).nullable().default(null).describe('imagefolder/wordnet without train/ and test/ folders: seeded share of ROOT/<class>/ held out for test'),
    augment: z
      .array(z.enum(['flip', 'crop', 'random_resized_crop']))
      .default([])
      .describe('training-only augmentation: flip (left-right, p=1/2), crop (shift by up to side/8, edges repeated), random_resized_crop (a random area 8-100 % and aspect 3/4-4/3 of the stored image, resized to image_size)'),
    stored_size: int()
      .positive()
      .nullable()
      .default(null)
      .describe('side of the stored (decoded) square image, >= data.image_size; evaluation centre-crops image_size from it, random_resized_crop draws from all of it; null = data.image_size'),
    normalize: z
      .enum(['none', 'imagenet', 'dataset'])
      .default('none')
      .describe('per-channel input normalisation after augmentation: none (pixels in [0, 1]), imagenet (ImageNet mean/std), dataset (mean/std of the training split)'),
    verify: z
      .enum(['files', 'folders'])
      .default('files')
      .describe('how a cached dataset is checked for changes: files (size and mtime of every image; a new run checks its training images on a worker thread while it starts, before training reads them) or folders (only images in folders whose mtime changed; faster, misses files rewritten in place)'),
    on_bad_image: z.enum(['skip', 'fail']).default('skip').describe('an unreadable or truncated image: skip it (counted in skipped_images) or fail (exit 2)'),
    cache_dir: z.string().nullable().default('datasets/cache').describe('where the record cache of decoded images lives (relative to the working folder); null = a temporary one, removed when the process ends'),
    synthetic,
  })
  .strict()
  .prefault({})
  .describe('the dataset: where images and the class hierarchy come from, splits, caps, noise');

const model = z
  .object({
    arch: z
      .enum(['two-layer-conv', 'cnn-small', 'resnet8', 'resnet20', 'resnet18', 'resnet50', 'densenet121', 'vit-tiny', 'vit-small', 'vit-base'])
      .default('two-layer-conv')
      .describe('architecture (blocks per architecture: granular finetune --help)'),
    width: z.number().positive().default(1).describe('width multiplier for every architecture'),
    stem: z
      .enum(['imagenet', 'cifar'])
      .nullable()
      .default(null)
      .describe('resnet18/resnet50: imagenet (7x7/2 conv + 3x3/2 max pool, for 224 px) or cifar (3x3/1 conv, no pool, for small images); null = imagenet'),
    filters: int().positive().default(64).describe('two-layer-conv: filters before the width multiplier'),
    activation: z.enum(['relu', 'smooth_relu']).default('relu').describe("two-layer-conv: activation; smooth_relu is the theory's (polynomial below activation_rho)"),
    activation_q: z.number().min(1).default(3).describe('smooth_relu: power of the polynomial part'),
    activation_rho: z.number().positive().default(0.1).describe('smooth_relu: threshold below which responses are damped'),
    init_scale: z.number().positive().default(1).describe("two-layer-conv: filter init std as a multiple of 1/sqrt(patch dim); the theory's regime is small"),
    patch_size: int()
      .positive()
      .nullable()
      .default(null)
      .describe('two-layer-conv and vit-*: patch side (kernel = stride); null = two-layer-conv: data.synthetic.patch_size for synthetic data, else 4; vit-*: 16'),
    pool: z
      .enum(['token', 'avg'])
      .nullable()
      .default(null)
      .describe("vit-*: token (a class token, final LayerNorm, its output; timm's default) or avg (no class token; mean over patch tokens, then LayerNorm: timm global_pool='avg'); null = token"),
    padding: z
      .enum(['same', 'torch'])
      .nullable()
      .default(null)
      .describe("resnet18/resnet50/densenet121: same (TensorFlow's, extra pixel at the bottom/right) or torch (PyTorch's symmetric padding: torchvision weights give torchvision's outputs); null = same for the ResNets, torch for densenet121"),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.stem !== null && m.arch !== 'resnet18' && m.arch !== 'resnet50') {
      ctx.addIssue({ code: 'custom', path: ['stem'], message: `model.stem applies to resnet18 and resnet50 only; ${m.arch} has its own stem. Remove model.stem or pick one of those architectures.` });
    }
    if (m.pool !== null && !m.arch.startsWith('vit-')) {
      ctx.addIssue({ code: 'custom', path: ['pool'], message: `model.pool applies to vit-tiny, vit-small and vit-base only; ${m.arch} pools its own way. Remove model.pool or pick a ViT.` });
    }
    if (m.padding !== null && !['resnet18', 'resnet50', 'densenet121'].includes(m.arch)) {
      ctx.addIssue({ code: 'custom', path: ['padding'], message: `model.padding applies to resnet18, resnet50 and densenet121 only. Remove model.padding or pick one of those architectures.` });
    }
    if (m.patch_size !== null && m.arch !== 'two-layer-conv' && !m.arch.startsWith('vit-')) {
      ctx.addIssue({ code: 'custom', path: ['patch_size'], message: `model.patch_size applies to two-layer-conv and the ViTs only; ${m.arch} has no patches. Remove model.patch_size or pick one of those architectures.` });
    }
  })
  .prefault({})
  .describe('the network (locked when fine-tuning from a pretrained run)');

const train = z
  .object({
    seed: int().nullable().default(null).describe('seed of initialisation, shuffling and augmentation; null = the top-level seed'),
    level: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .default('leaf')
      .describe('label level: leaf, top|coarse, a level name, depth:N, height:N, nodes:FILE; a list (finest first) trains one head per level'),
    level_weights: z.array(z.number().positive()).nullable().default(null).describe('multi-level training: loss weight of each listed level (multi_head: normalised to sum 1, null = equal; semantic_softmax: used as given, null = Ridnik et al.\'s depth weighting)'),
    multi_level: z
      .enum(['multi_head', 'semantic_softmax'])
      .default('multi_head')
      .describe('train.level as a list: multi_head (one softmax per listed level over its depth cut, weights normalised to sum 1) or semantic_softmax (Ridnik et al. 2021: one softmax per depth over the classes at that depth, images whose class is shallower masked out, their depth weighting)'),
    epochs: int().min(0).default(30).describe('passes over the training set'),
    batch_size: int().positive().default(64).describe('training batch size'),
    lr: z.number().positive().default(0.01).describe('peak learning rate'),
    optimizer: z.enum(['sgd', 'adam']).default('sgd').describe('sgd (with momentum) or adam'),
    momentum: z.number().min(0).max(1).default(0.9).describe('SGD momentum'),
    weight_decay: z.number().min(0).default(0).describe("SGD: L2 added to the gradient (as PyTorch's SGD); Adam: decoupled (AdamW)"),
    schedule: z.enum(['constant', 'cosine', 'step']).default('cosine').describe('learning-rate schedule: constant, cosine to zero, or step (x0.1 at 50 % and 75 % of the run)'),
    warmup_epochs: z.number().min(0).default(0).describe('linear warm-up from 0 to train.lr over this many epochs'),
    loss: z.enum(['xent', 'mse']).default('xent').describe('cross-entropy or mean squared error on one-hot targets'),
    label_smoothing: z.number().min(0).lt(1).default(0).describe('label smoothing eps: targets (1 - eps) one-hot + eps / classes (Szegedy et al. 2016); 0 = off'),
    checkpoint_every_steps: int().min(0).default(0).describe('also checkpoint every this many steps inside an epoch (long epochs); 0 = at epoch ends only'),
    max_steps: int()
      .positive()
      .nullable()
      .default(null)
      .describe('stop after this many training steps in all (the run then evaluates and ends mid-epoch); null = train.epochs full epochs'),
    until_converged: z
      .object({ patience: int().min(1).default(3).describe('stop once this many epoch-to-epoch changes of the training loss in a row are below 1 % of the first epoch\'s loss') })
      .strict()
      .nullable()
      .default(null)
      .describe('train until the training loss plateaus (train.epochs is then the maximum; the schedule still spans train.epochs); null = exactly train.epochs'),
    early_stop: z
      .object({
        patience: int().min(0).default(0).describe('stop once val_acc has not improved for this many epochs; 0 = never stop early'),
        min_delta: z.number().min(0).default(0).describe('an improvement of val_acc must exceed this to count'),
      })
      .strict()
      .prefault({})
      .describe('early stopping on val_acc (model-best/ holds the best epoch either way)'),
  })
  .strict()
  .prefault({})
  .describe('the training loop of this stage');

const stopMetric = z.enum(['fisher_trace', 'fisher_trace_emp', 'sharpness_avg', 'sharpness_worst']);

/** When gradual unfreezing stops opening blocks (Liu & Gurevych 2024). */
const unfreezeStop = z.union([
  z
    .object({
      metric: stopMetric.describe('the dynamics measure watched'),
      when: z.literal('relative_change_below').default('relative_change_below').describe('stop once the relative change falls below value'),
      value: z.number().positive().default(0.05).describe('relative-change threshold'),
      window: int().positive().default(2).describe('compare with the measurement this many dynamics rows earlier'),
    })
    .strict(),
  z
    .object({
      metric: stopMetric.describe('the dynamics measure watched (Fisher trace or sharpness)'),
      when: z.literal('below_fraction_of_peak').describe('stop once the measure falls below value x its running maximum (fires on a geometric decay)'),
      value: z.number().gt(0).lt(1).default(0.5).describe('fraction of the running maximum, in (0, 1)'),
    })
    .strict(),
  z.object({ step: int().min(0).describe('stop opening blocks at this step') }).strict(),
  z.object({ epoch: int().min(0).describe('stop opening blocks at this epoch') }).strict(),
]);

const unfreeze = z
  .object({
    every: int().positive().describe('open one more block every this many units'),
    unit: z.enum(['epoch', 'step']).default('epoch').describe('unit of every'),
    order: z.enum(['top-down', 'bottom-up', 'random', 'fisher']).default('top-down').describe('top-down opens the block nearest the head first (ULMFiT); fisher the frozen block with the largest fisher_trace@block'),
    start: int().min(0).default(0).describe('blocks trainable at step 0, taken in order'),
    stop: unfreezeStop.nullable().default(null).describe('when opening stops: {step: N}, {epoch: N} or {metric, value, window}; null = until every block is open'),
  })
  .strict();

const finetune = z
  .object({
    freeze: z.union([int().min(0), z.literal('all')]).default(0).describe('blocks frozen from the input side (all = linear probe); with unfreeze these stay frozen throughout'),
    head: z
      .enum(['new', 'keep', 'coarsen'])
      .default('new')
      .describe("new: a fresh head for the target level; keep: the source's head for that level; coarsen: the source's finer head, trained through summed probabilities"),
    head_level: nullableStr().describe('keep/coarsen from a multi-level source: which of its levels\' heads to start from; null = the target level (keep) or the finest (coarsen)'),
    transfer: z.enum(['all', 'frozen_only']).default('all').describe('all: every block starts from the pretrained weights; frozen_only (Dar et al.): re-initialise the blocks that are not frozen'),
    unfreeze: unfreeze.nullable().default(null).describe('gradual-unfreezing schedule {every, unit, order, start, stop}; null = none'),
    lr_per_block_decay: z.number().positive().max(1).default(1).describe('discriminative learning rates: block i trains at lr * decay^(distance from the head)'),
    batchnorm: z.enum(['train', 'frozen']).default('train').describe('train: batch norm of trainable blocks uses batch statistics; frozen: every batch norm stays in inference mode'),
  })
  .strict()
  .prefault({})
  .describe('how a fine-tuning run uses its pretrained network (granular finetune)');

const evalSection = z
  .object({
    ood: z.array(z.enum(['gaussian_noise', 'gaussian_blur', 'contrast', 'brightness', 'jpeg', 'pixelate'])).default([]).describe('image corruptions for the OOD test (not for synthetic data)'),
    ood_root: nullableStr().describe('an external OOD test folder, one folder of images per class (ood_acc@external)'),
    ood_synthetic: z.array(z.enum(['weak_common', 'more_noise', 'all_hard'])).default([]).describe('generator-side covariate shifts for synthetic data (see src/data/formats/synthetic.ts)'),
    ood_severities: z.array(int().min(0).max(5)).default([1, 2, 3, 4, 5]).describe('severities of each corruption or shift (0 = identity)'),
    batch_size: int()
      .positive()
      .nullable()
      .default(null)
      .describe('batch of every evaluation pass (test, validation, OOD, Fisher/sharpness probes, frozen-prefix cache); null = train.batch_size'),
    every: int().positive().default(1).describe('evaluate every this many epochs (the last epoch is always evaluated)'),
    dynamics_every: z.union([int().min(0), z.literal('auto')]).default('auto').describe("steps between dynamics rows; auto = half-way through epoch 1, then after epochs 1, 2, 4, 8, ... and the last; 0 = off"),
    train_acc_samples: int().positive().default(10000).describe('training images train_acc_final is measured on: a fixed seeded sample of this many (all of them when fewer)'),
    fisher_samples: int().positive().default(16).describe('examples of the fixed training subset the Fisher trace is measured on'),
    sharpness_rho: z.number().min(0).default(0.05).describe('radius rho of adaptive sharpness'),
    sharpness_examples: int().positive().default(64).describe('examples of the fixed training subset sharpness is measured on'),
    sharpness_draws: int().positive().default(2).describe('noise draws for sharpness_avg'),
    sharpness_steps: int().positive().default(2).describe('projected ascent steps for sharpness_worst'),
  })
  .strict()
  .prefault({})
  .describe('what is measured: OOD tests, evaluation frequency, Fisher trace and sharpness');

export const configSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only').default('run').describe('name used in default run folders: runs/<stage>-<name>-<time>/'),
    seed: int().default(0).describe('default of data.seed and train.seed'),
    data,
    model,
    train,
    finetune,
    eval: evalSection,
  })
  .strict();

/** The config as the schema parses it: data.seed and train.seed may still be null (they inherit `seed`). */
export type ParsedConfig = z.infer<typeof configSchema>;

/** The resolved config every run uses (config/load.ts resolveConfig): every seed is a number. */
export type Config = Omit<ParsedConfig, 'data' | 'train'> & {
  data: ParsedConfig['data'] & { seed: number };
  train: ParsedConfig['train'] & { seed: number };
};

/** The config with every default filled in (seeds not yet inherited). */
export function defaultConfig(): ParsedConfig {
  return configSchema.parse({});
}
