import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
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

/** What env.json records about the code (gitRecord). */
export interface GitRecord {
  git: GitState | null;
  workdir_git?: GitState;
}

/** stdout of `git -C cwd args…`, trimmed; null where git is missing, fails or takes over 5 s. */
function git(cwd: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('git', ['-C', cwd, ...args], { encoding: 'utf8', timeout: 5000 }, (err, stdout) => resolve(err ? null : stdout.trim()));
  });
}

/** The top folder of the git repository holding `dir` (the first folder upwards with a .git entry; real path), or null. */
function repoRoot(dir: string): string | null {
  let d = path.resolve(dir);
  for (;;) {
    if (fs.existsSync(path.join(d, '.git'))) {
      try {
        return fs.realpathSync(d);
      } catch {
        return d;
      }
    }
    const up = path.dirname(d);
    if (up === d) return null;
    d = up;
  }
}

/**
 * The commit and dirty flag of the git repository whose top folder is
 * `root`, from one `git status` (porcelain v2: `# branch.oid <commit>`, then
 * a line per changed tracked file), or null where git is missing or the
 * repository has no commit. Untracked files do not count as dirty: run
 * folders and caches are untracked.
 */
export async function gitState(root: string): Promise<GitState | null> {
  const out = await git(root, ['status', '--porcelain=v2', '--branch', '--untracked-files=no']);
  if (out === null) return null;
  const lines = out.split('\n');
  const commit = lines.find((l) => l.startsWith('# branch.oid '))?.slice('# branch.oid '.length);
  if (!commit || !/^[0-9a-f]{7,}$/.test(commit)) return null;
  return { root, commit, dirty: lines.some((l) => l !== '' && !l.startsWith('#')) };
}

/**
 * What env.json records about the code: `git` for granular's own checkout and,
 * when the run was started inside another repository (a study's configs),
 * `workdir_git` for that one. The two are asked at once, in child processes,
 * so a caller can start this early and await it when env.json is written.
 */
export async function gitRecord(cwd = process.cwd()): Promise<GitRecord> {
  const codeRoot = repoRoot(CODE_ROOT);
  const workRoot = repoRoot(cwd);
  const [code, work] = await Promise.all([codeRoot ? gitState(codeRoot) : null, workRoot && workRoot !== codeRoot ? gitState(workRoot) : null]);
  return { git: code, ...(work ? { workdir_git: work } : {}) };
}
