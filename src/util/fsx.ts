import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Write a file so that readers see either the old content or the new, never a
 * torn one: write a sibling temp file, fsync it, rename over the target.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    if (typeof data === 'string') fs.writeSync(fd, data);
    else fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T = unknown>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/**
 * Replace a whole folder atomically: the caller fills `<dir>.tmp-<pid>`, then
 * this swaps it in; the old folder is removed only once the new one is in place.
 */
export function replaceDirAtomic(dir: string, fill: (tmpDir: string) => void): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  const old = `${dir}.old-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  fill(tmp);
  const had = fs.existsSync(dir);
  if (had) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  if (had) fs.rmSync(old, { recursive: true, force: true });
}

/** Folder names never carry `:` or `/` from level names (`depth:2` -> `depth2`). */
export function sanitizeName(s: string): string {
  return s.replace(/[:/\\]+/g, '').replace(/[^A-Za-z0-9._=,+-]+/g, '_');
}

export function ensureDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
}

export function isNonEmptyDir(dir: string): boolean {
  try {
    return fs.readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

export function relPath(from: string, to: string): string {
  return path.relative(from, to) || '.';
}
