import * as fs from 'node:fs';
import * as path from 'node:path';
import { sync as writeFileAtomicSync } from 'write-file-atomic';

/**
 * Write a file so that readers see either the old content or the new, never a
 * torn one: write-file-atomic's synchronous form (a uniquely named sibling temp
 * file, fsync'd, renamed over the target, removed if anything fails; an
 * existing file's mode is kept). Data is a string (UTF-8) or bytes.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  writeFileAtomicSync(file, typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
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
  try {
    fill(tmp);
  } catch (e) {
    // A half-written folder must not be mistaken for a complete one.
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const had = fs.existsSync(dir);
  if (had) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  if (had) fs.rmSync(old, { recursive: true, force: true });
}

/**
 * After a crash inside replaceDirAtomic, `dir` may be missing while a complete
 * `<dir>.tmp-*` (newer) or `<dir>.old-*` (older) sits beside it; `complete`
 * says whether a folder was finished. Put the newest complete one back.
 */
export function recoverDir(dir: string, complete: (d: string) => boolean): string | null {
  const parent = path.dirname(dir);
  const base = path.basename(dir);
  const siblings = fs.existsSync(parent) ? fs.readdirSync(parent).filter((f) => f.startsWith(`${base}.tmp-`) || f.startsWith(`${base}.old-`)) : [];
  let recovered: string | null = null;
  if (!complete(dir)) {
    const pick = [...siblings.filter((f) => f.includes('.tmp-')), ...siblings.filter((f) => f.includes('.old-'))].find((f) => complete(path.join(parent, f)));
    if (pick) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(path.join(parent, pick), dir);
      recovered = pick;
    }
  }
  for (const f of siblings) if (f !== recovered) fs.rmSync(path.join(parent, f), { recursive: true, force: true });
  return recovered;
}

/** Folder names never carry `:` or `/` from level names (`depth:2` -> `depth2`). */
export function sanitizeName(s: string): string {
  return s.replace(/[:/\\]+/g, '').replace(/[^A-Za-z0-9._=,+-]+/g, '_');
}

/**
 * Claim a new folder atomically: parents are created as needed, the folder
 * itself by a plain mkdir, which fails if it exists, so two processes never
 * get the same one. An existing name is tried again as `<dir>-2`, `-3`, ...
 * (names made from the time repeat within a second). Returns the folder made.
 */
export function claimNewDir(dir: string): string {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  for (let n = 1; ; n++) {
    const candidate = n === 1 ? dir : `${dir}-${n}`;
    try {
      fs.mkdirSync(candidate);
      return candidate;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/** Block the thread for `ms` milliseconds (short waits in lock retries). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
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

/**
 * `path.join(dir, rel)` for a normalised `dir` and a `rel` of plain names
 * (no '.', '..' or empty segments, as folder listings give them), without
 * path.join's normalising pass: it costs ~3 µs, and 50 k images are listed,
 * compared and stamped on every start. Anything else goes through path.join.
 */
export function joinPlain(dir: string, rel: string): string {
  if (rel === '' || rel.startsWith('/') || rel.startsWith('.') || rel.includes('/.') || rel.includes('//') || rel.endsWith('/') || path.sep !== '/') return path.join(dir, rel);
  return dir.endsWith('/') ? dir + rel : `${dir}/${rel}`;
}
