/**
 * Names of the kernels granular adds to tfjs backends (./native-kernels
 * implements them). Public: models/batchnorm.ts runs them where
 * Capabilities.fusedBatchNormTrain says the backend has them.
 */
export const BATCH_NORM_TRAIN = 'GranularBatchNormTrain';
export const BATCH_NORM_TRAIN_GRAD = 'GranularBatchNormTrainGrad';
/** LayerNorm over the last axis and its gradient (models/layer-norm.ts, where Capabilities.fusedLayerNorm). */
export const LAYER_NORM = 'GranularLayerNorm';
export const LAYER_NORM_GRAD = 'GranularLayerNormGrad';
/** GELU (x * Phi(x)) and its gradient (models/fused-ops.ts, where the backend registers them). */
export const GELU = 'GranularGelu';
export const GELU_GRAD = 'GranularGeluGrad';
/** The gradient of a softmax over the last axis from its output (models/fused-ops.ts). */
export const SOFTMAX_GRAD = 'GranularSoftmaxGrad';
