import { StageOutcome } from '../train/stage';

/** The last line a stage prints on stdout: status, folder, headline numbers. */
export function printOutcome(out: StageOutcome): void {
  const s = out.summary;
  const num = (k: string) => (typeof s[k] === 'number' ? ` ${k}=${(s[k] as number).toFixed(4)}` : '');
  if (s.status === 'completed') {
    process.stdout.write(`completed ${out.runDir}${num('test_acc')}${num('test_acc_hard')}${num('train_images_per_second')}\n`);
  } else if (s.status === 'interrupted') {
    process.stdout.write(`interrupted ${out.runDir}: resume with '${s.resume}'\n`);
  } else {
    process.stderr.write(`granular: run failed: ${s.error}\n  details in ${out.runDir}/summary.json\n`);
  }
}
