/** Learning rate at a step: warmup (linear), then constant, cosine to zero, or steps of 0.1 at 50% and 75%. */
export function learningRate(
  kind: 'constant' | 'cosine' | 'step',
  base: number,
  step: number,
  totalSteps: number,
  warmupSteps = 0,
): number {
  if (warmupSteps > 0 && step < warmupSteps) return (base * (step + 1)) / warmupSteps;
  const span = Math.max(1, totalSteps - warmupSteps);
  const t = Math.min(1, (step - warmupSteps) / span);
  switch (kind) {
    case 'constant':
      return base;
    case 'cosine':
      return 0.5 * base * (1 + Math.cos(Math.PI * t));
    case 'step':
      return base * (t >= 0.75 ? 0.01 : t >= 0.5 ? 0.1 : 1);
  }
}
