import * as tf from '@tensorflow/tfjs';

/**
 * The smoothed ReLU of the multi-view theory (Allen-Zhu & Li 2020; Hong et al.
 * 2024): 0 below 0, z^q / (q rho^(q-1)) on [0, rho], z - (1 - 1/q) rho above.
 * Weak responses (below rho) are suppressed polynomially, so a filter grows
 * toward the features with the strongest signal and rare features stay
 * unlearned unless the labels need them; with plain ReLU every feature is
 * learned in proportion to its frequency.
 */
export function smoothRelu(z: tf.Tensor, q: number, rho: number): tf.Tensor {
  return tf.tidy(() => {
    const pos = tf.relu(z);
    const low = tf.minimum(pos, rho);
    // Polynomial part up to rho, linear part beyond; continuous with a continuous derivative.
    const poly = tf.pow(low, q).div(q * Math.pow(rho, q - 1));
    return poly.add(tf.relu(pos.sub(rho)));
  });
}

export class SmoothReLU extends tf.layers.Layer {
  static readonly className = 'SmoothReLU';
  readonly q: number;
  readonly rho: number;

  constructor(args: { q: number; rho: number; name?: string }) {
    super({ name: args.name });
    this.q = args.q;
    this.rho = args.rho;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return smoothRelu(Array.isArray(inputs) ? inputs[0] : inputs, this.q, this.rho);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), q: this.q, rho: this.rho };
  }
}

tf.serialization.registerClass(SmoothReLU);
