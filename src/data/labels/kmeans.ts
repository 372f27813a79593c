import { Rng } from '../../util/rng';

/** The result of k-means on n points of dimension d. */
export interface KMeansResult {
  /** [k x d] row-major. */
  centers: Float32Array;
  /** Cluster of each point, in 0..k-1. */
  assign: Int32Array;
  /** Sum over points of the squared distance to their centre. */
  inertia: number;
  /** Lloyd iterations run (the last one changed no assignment, unless maxIter was reached). */
  iterations: number;
  /** Points per cluster. */
  sizes: number[];
}

function sqDist(x: Float32Array, i: number, c: Float32Array, j: number, d: number): number {
  let s = 0;
  for (let t = 0; t < d; t++) {
    const v = x[i * d + t] - c[j * d + t];
    s += v * v;
  }
  return s;
}

/** Index of the centre nearest to point i (ties to the lower index) and its squared distance. */
export function nearestCenter(x: Float32Array, i: number, centers: Float32Array, k: number, d: number): [number, number] {
  let best = 0;
  let bd = Infinity;
  for (let j = 0; j < k; j++) {
    const v = sqDist(x, i, centers, j, d);
    if (v < bd) {
      bd = v;
      best = j;
    }
  }
  return [best, bd];
}

/**
 * k-means (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007),
 * every draw from `rng`, so the result is a function of the seed. x: [n x d]
 * row-major; requires n >= k >= 1. A cluster that empties during the
 * iterations is re-seeded with the point farthest from its centre, so all k
 * clusters are non-empty at the end when the points have at least k distinct
 * values. Stops when no assignment changes, or after `maxIter` iterations.
 */
export function kmeans(x: Float32Array, n: number, d: number, k: number, rng: Rng, maxIter = 100): KMeansResult {
  if (k < 1 || n < k) throw new Error(`kmeans: need n >= k >= 1 (n = ${n}, k = ${k})`);
  const centers = new Float32Array(k * d);
  // k-means++: the first centre uniformly, each next one with probability proportional to D(x)^2.
  const first = rng.int(n);
  centers.set(x.subarray(first * d, first * d + d), 0);
  const dist = new Float64Array(n).fill(Infinity);
  for (let j = 1; j < k; j++) {
    let total = 0;
    for (let i = 0; i < n; i++) {
      dist[i] = Math.min(dist[i], sqDist(x, i, centers, j - 1, d));
      total += dist[i];
    }
    let pick = n - 1;
    if (total > 0) {
      let r = rng.next() * total;
      for (let i = 0; i < n; i++) {
        r -= dist[i];
        if (r < 0) {
          pick = i;
          break;
        }
      }
    } else pick = rng.int(n); // every point coincides with a centre already
    centers.set(x.subarray(pick * d, pick * d + d), j * d);
  }
  const assign = new Int32Array(n).fill(-1);
  let iterations = 0;
  for (; iterations < maxIter; ) {
    iterations++;
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const [j] = nearestCenter(x, i, centers, k, d);
      if (j !== assign[i]) {
        assign[i] = j;
        changed++;
      }
    }
    // Update step; an empty cluster takes the point farthest from its own centre.
    const sums = new Float64Array(k * d);
    const counts = new Int32Array(k);
    for (let i = 0; i < n; i++) {
      counts[assign[i]]++;
      for (let t = 0; t < d; t++) sums[assign[i] * d + t] += x[i * d + t];
    }
    let reseeded = false;
    for (let j = 0; j < k; j++) {
      if (counts[j] > 0) {
        for (let t = 0; t < d; t++) centers[j * d + t] = sums[j * d + t] / counts[j];
        continue;
      }
      let far = -1;
      let fd = -1;
      for (let i = 0; i < n; i++) {
        if (counts[assign[i]] <= 1) continue;
        const v = sqDist(x, i, centers, assign[i], d);
        if (v > fd) {
          fd = v;
          far = i;
        }
      }
      if (far < 0) continue;
      counts[assign[far]]--;
      counts[j]++;
      assign[far] = j;
      centers.set(x.subarray(far * d, far * d + d), j * d);
      reseeded = true;
    }
    if (changed === 0 && !reseeded) break;
  }
  const sizes = new Array<number>(k).fill(0);
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    sizes[assign[i]]++;
    inertia += sqDist(x, i, centers, assign[i], d);
  }
  return { centers, assign, inertia, iterations, sizes };
}
