import * as fs from 'node:fs';
import { isAlive } from './rundir';

/** The environment variable through which `granular sweep` tells a child run its PID. */
export const SWEEP_PID_ENV = 'GRANULAR_SWEEP_PID';

/** The current parent PID (Linux: /proc, which follows re-parenting); null where unknown. */
function currentParent(): number | null {
  try {
    // Fields after the command name, which is in parentheses and may hold spaces.
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/**
 * A run started by `granular sweep` stops when the sweep is gone, even if it
 * was SIGKILLed and could not pass a signal on (Linux's prctl(PR_SET_PDEATHSIG)
 * is not reachable from Node, so a watchdog polls the sweep's PID). It sends
 * this process SIGTERM, which a run handles by stopping at the next step
 * boundary with status `interrupted`, so the next sweep resumes it. Does
 * nothing outside a sweep. The timer never keeps the process alive.
 */
export function stopWithSweep(pollMs = 500): void {
  const pid = Number(process.env[SWEEP_PID_ENV]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  const timer = setInterval(() => {
    const parent = currentParent();
    if (isAlive(pid) && (parent === null || parent === pid)) return;
    clearInterval(timer);
    process.stderr.write(`granular: the sweep that started this run (process ${pid}) is gone; stopping (resumable)\n`);
    process.kill(process.pid, 'SIGTERM');
  }, pollMs);
  timer.unref();
}
