import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** The checkout granular runs from (dist/src/runs → the repository root). */
const CODE_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface GitState {
  /** The repository's top folder. */
  root: string;
  /** HEAD's full commit hash. */
  commit: string;
  /** Tracked files differ from HEAD (uncommitted edits): the commit alone does not reproduce the code. */
  dirty: boolean;
}

function git(cwd: string, args: string[]): string | null {
  const r = spawnSync('git', ['-C', cwd, ...args], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 ? r.stdout.trim() : null;
}

/**
 * The commit and dirty flag of the git repository holding `dir`, or null
 * where git is missing or `dir` is in no repository (an installed package).
 * Untracked files do not count as dirty: run folders and caches are untracked.
 */
export function gitState(dir: string): GitState | null {
  const root = git(dir, ['rev-parse', '--show-toplevel']);
  const commit = root === null ? null : git(dir, ['rev-parse', 'HEAD']);
  if (root === null || commit === null) return null;
  const status = git(dir, ['status', '--porcelain', '--untracked-files=no']);
  return { root, commit, dirty: status === null ? true : status.length > 0 };
}

/**
 * What env.json records about the code: `git` for granular's own checkout and,
 * when the run was started inside another repository (a study's configs),
 * `workdir_git` for that one.
 */
export function gitRecord(cwd = process.cwd()): { git: GitState | null; workdir_git?: GitState } {
  const code = gitState(CODE_ROOT);
  const work = gitState(cwd);
  return { git: code, ...(work && work.root !== code?.root ? { workdir_git: work } : {}) };
}
