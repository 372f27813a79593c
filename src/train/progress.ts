import { SingleBar, Presets } from 'cli-progress';

/** `1:05:03`, `2:07`, `0:09`. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const p = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}:${p(m)}:${p(r)}` : `${m}:${p(r)}`;
}

/**
 * The line an epoch leaves behind (in a terminal, once its progress bar is
 * cleared; piped, as the log): losses, val/test metrics where evaluated, the
 * epoch's time, the time so far and the ETA of the run from the mean epoch
 * time of this process. `*` marks a new best val_acc (model-best/).
 */
export function epochLine(row: Record<string, number>, epochs: number, epochTimes: readonly number[], elapsed: number, best: boolean): string {
  const f = (k: string, d = 3) => (row[k] === undefined || Number.isNaN(row[k]) ? '' : ` ${k} ${row[k].toFixed(d)}${k === 'val_acc' && best ? '*' : ''}`);
  const mean = epochTimes.reduce((a, b) => a + b, 0) / Math.max(1, epochTimes.length);
  const left = epochs - row.epoch;
  const eta = left > 0 ? ` ETA ${clock(mean * left)}` : '';
  return `epoch ${row.epoch}/${epochs}${f('train_loss', 4)}${f('train_acc')}${f('val_acc')}${f('test_acc')}${f('test_acc_hard')} ${Math.round(row.images_per_second)} img/s ${row.epoch_seconds.toFixed(1)} s elapsed ${clock(elapsed)}${eta}`;
}

/** An event row as a line: `epoch 3: block2 opened, 41,216 trainable params (top-down)`. */
export function eventLine(e: Record<string, unknown>): string {
  const params = typeof e.trainable_params === 'number' ? `${e.trainable_params.toLocaleString('en-US')} trainable params` : '';
  if (e.event === 'unfreeze') return `epoch ${e.epoch}, step ${e.step}: ${e.block} opened, ${params} (${e.order})`;
  if (e.event === 'unfreeze_stop') return `epoch ${e.epoch}, step ${e.step}: unfreezing stopped (${e.reason}); ${params}`;
  return `epoch ${e.epoch}: ${String(e.event)}${e.reason ? ` (${e.reason})` : ''}`;
}

/**
 * Where a run's progress goes (stderr): in a terminal, a progress bar while
 * an epoch runs, cleared when it ends so each epoch leaves one line; lines
 * written while the bar is up (events) go above it. Piped or --quiet, lines
 * only. Silent: nothing.
 */
export class Progress {
  readonly bar: SingleBar | null;

  constructor(private readonly on: boolean, tty: boolean) {
    this.bar = on && tty
      ? new SingleBar({ format: 'epoch {epoch}/{epochs} [{bar}] {value}/{total} loss {loss} acc {acc} {ips} img/s', hideCursor: true, clearOnComplete: true, stream: process.stderr }, Presets.shades_classic)
      : null;
  }

  line(text: string): void {
    if (!this.on) return;
    const active = this.bar !== null && (this.bar as unknown as { isActive: boolean }).isActive;
    process.stderr.write(active ? `\r\x1b[2K${text}\n` : `${text}\n`);
    if (active) this.bar!.render();
  }
}
