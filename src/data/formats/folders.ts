import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { UsageError } from '../../util/errors';
import { Rng } from '../../util/rng';
import { Refs } from '../cache/catalog';
import { joinPlain, writeFileAtomic } from '../../util/fsx';
import { statIdentity } from '../cache/stamp';

export const IMAGE_EXT = /\.(png|jpe?g|ppm|pgm|pbm|pnm|webp|tiff?|gif)$/i;

export interface FileInfo {
  /** Path relative to the dataset root: the example id. */
  id: string;
  abs: string;
  /** The file is not at root/id: a name on disk differs from its NFC form in the id. */
  renamed?: boolean;
}

/** A name as granular compares it: Unicode NFC (macOS and some archivers write NFD). */
export function nfc(name: string): string {
  return name.normalize('NFC');
}

/**
 * One entry of a folder: its name in NFC (compared, recorded), its path on
 * disk (read), and what it is once symbolic links are followed.
 */
export interface Entry {
  name: string;
  onDisk: string;
  abs: string;
  kind: 'file' | 'dir' | 'other' | 'broken';
  /** The link's target, when the entry is a symbolic link. */
  link: string | null;
  /** Why a link could not be followed (ENOENT, ELOOP, ...). */
  error?: string;
}

/**
 * The entries of `dir` that are not hidden, named in NFC. Two entries whose
 * names differ only in normalization would be one name: a UsageError.
 */
export function listEntries(dir: string): Entry[] {
  const byName = new Map<string, string>();
  const out: Entry[] = [];
  const entries = fs.readdirSync(dir, { withFileTypes: true });
  // A name that is not valid UTF-8 reads back with U+FFFD in it, a path that names nothing on disk.
  if (entries.some((e) => e.name.includes('\uFFFD'))) refuseNonUtf8(dir, entries);
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const name = nfc(e.name);
    const prev = byName.get(name);
    if (prev !== undefined) {
      throw new UsageError(
        `'${dir}' holds two entries whose names differ only in Unicode normalization (NFC/NFD): ${JSON.stringify(prev)} and ${JSON.stringify(e.name)}. ` +
          `granular compares names in NFC, so they would be one name; rename or merge them.`,
      );
    }
    byName.set(name, e.name);
    const abs = path.join(dir, e.name);
    const link = e.isSymbolicLink() ? fs.readlinkSync(abs) : null;
    // The folder listing already says what a plain file or folder is (no stat of
    // every image: 50 k of them cost ~0.3 s). Links are followed, for folders as
    // for files (a curated subset linked from an image pool), and an entry whose
    // type the file system did not report is looked up.
    let kind: Entry['kind'] = e.isDirectory() ? 'dir' : e.isFile() ? 'file' : 'other';
    let error: string | undefined;
    if (link !== null || !(e.isDirectory() || e.isFile() || e.isFIFO() || e.isSocket() || e.isBlockDevice() || e.isCharacterDevice())) {
      try {
        const st = fs.statSync(abs);
        kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
      } catch (err) {
        kind = 'broken';
        error = (err as NodeJS.ErrnoException).code ?? String(err);
      }
    }
    out.push({ name, onDisk: e.name, abs, kind, link, ...(error ? { error } : {}) });
  }
  return out;
}

/** A file name as it would be typed in JavaScript: printable ASCII as it is, every other byte as \xNN. */
export function escapeName(raw: Buffer): string {
  let out = '';
  for (const b of raw) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}

/**
 * Refuse (UsageError) the first image or folder of `dir` whose name on disk
 * is not valid UTF-8: ids are text (split.json, the record cache), and the
 * decoded name (with U+FFFD) names no file. Hidden entries and files that are
 * not images are left alone, as the listing leaves them.
 */
function refuseNonUtf8(dir: string, entries: fs.Dirent[]): void {
  const kinds = new Map(entries.map((e) => [e.name, e]));
  for (const raw of fs.readdirSync(dir, { encoding: 'buffer' })) {
    const name = raw.toString('utf8');
    if (Buffer.from(name, 'utf8').equals(raw) || name.startsWith('.')) continue;
    const e = kinds.get(name);
    if (!IMAGE_EXT.test(name) && !e?.isDirectory()) continue;
    throw new UsageError(
      `'${dir}' holds ${IMAGE_EXT.test(name) ? 'an image' : 'a folder'} whose name is not valid UTF-8: "${escapeName(raw)}" (bytes ${[...raw].map((b) => b.toString(16).padStart(2, '0')).join(' ')}). ` +
        'granular records image names as text, so it cannot name this one. Rename it to UTF-8 (e.g. convmv -f latin1 -t utf-8 --notest -r on the folder, for names written in Latin-1), or move it out of the dataset.',
    );
  }
}

/**
 * Image files directly inside `root/rel` (sorted by id); ids use NFC names, `abs` the names on disk.
 * Stamps are taken later, by the record cache, where data.verify asks for them.
 * With `cache`, a folder listed before and unchanged since is not read again.
 */
export function listImages(root: string, rel: string, relOnDisk = rel, cache?: ListingCache): FileInfo[] {
  const dir = path.join(root, relOnDisk);
  // The folder's time is read before its entries: a change made while they are read moves it past the listing's.
  const mtime = cache?.folderTime(dir);
  const known = cache?.lookup(dir, mtime);
  const folderRenamed = rel !== relOnDisk;
  if (known) {
    return known.map((f) =>
      typeof f === 'string' ? { id: `${rel}/${f}`, abs: joinPlain(dir, f), renamed: folderRenamed } : { id: `${rel}/${f[0]}`, abs: joinPlain(dir, f[1]), renamed: true },
    );
  }
  const listedAt = Date.now();
  const out: FileInfo[] = [];
  const names: ListedName[] = [];
  let links = false;
  for (const e of listEntries(dir)) {
    if (!IMAGE_EXT.test(e.name)) continue;
    // A dangling link named like an image is an image that cannot be read: counted and
    // reported with the unreadable ones (or fatal with data.on_bad_image: fail), never dropped unsaid.
    if (e.kind === 'broken' || e.kind === 'file') {
      out.push({ id: `${rel}/${e.name}`, abs: e.abs, renamed: folderRenamed || e.name !== e.onDisk });
      names.push(e.name === e.onDisk ? e.name : [e.name, e.onDisk]);
      links ||= e.link !== null;
    }
  }
  const order = out.map((_, i) => i).sort((a, b) => (out[a].id < out[b].id ? -1 : out[a].id > out[b].id ? 1 : 0));
  // A link can be pointed elsewhere without its folder changing: such folders are listed every time.
  if (cache && !links) cache.store(dir, mtime, listedAt, order.map((i) => names[i]));
  return order.map((i) => out[i]);
}

/** An image's name in a listing: its NFC name, or [NFC name, name on disk] where they differ. */
type ListedName = string | [string, string];

/** 3: listings that held a name which is not valid UTF-8 (now refused) are not reused. */
const LISTING_VERSION = 3;

/** What a folder's stat says for the listing cache. */
interface FolderTime {
  mtime: number;
  ident: number;
}
/**
 * A folder whose modification time is at least this much older than its
 * listing is trusted to be unchanged: file systems stamp times in ticks
 * (1 ms to 2 s), so a change in the same tick as the listing would not move it.
 */
const RACY_MS = 2000;

/**
 * Image listings of class folders, kept in the record cache folder between
 * runs (`<format>-<key>.listing`, JSON; not `.json`, which names a record
 * store's summary there). Adding, removing or renaming an entry updates its folder's
 * modification time, so a folder whose time is unchanged (and was old enough
 * when it was listed) has the listing it had: one stat per folder instead of
 * reading every folder's entries (~0.25 s per 50 k images). Rewriting an image
 * in place does not move its folder's time; that is the record cache's
 * data.verify check, which compares each image's size and time.
 * The same idea as git's index of directory stats ("untracked cache").
 */
export class ListingCache {
  private folders: Record<string, { mtime: number; ident: number; listed: number; names: ListedName[] }> = {};
  private changed = false;

  /** @param file the cache file (read if present; an unreadable one is ignored and rewritten). */
  constructor(
    private readonly file: string,
    private readonly root: string,
  ) {
    try {
      const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { version: number; folders: ListingCache['folders'] };
      if (j.version === LISTING_VERSION && j.folders && typeof j.folders === 'object') this.folders = j.folders;
    } catch {
      // none yet, or torn by a crash before the rename: list again
    }
  }

  /** The modification time of folder `dir` in ms and its identity (statIdentity: device, inode, mtime, ctime); undefined when it is gone. */
  folderTime(dir: string): FolderTime | undefined {
    const st = fs.statSync(dir, { throwIfNoEntry: false });
    return st ? { mtime: st.mtimeMs, ident: statIdentity(st) } : undefined;
  }

  /** The listing of `dir` when it is known and the folder, now at time `mtime`, has not changed since; null otherwise. */
  lookup(dir: string, t: FolderTime | undefined): ListedName[] | null {
    const f = this.folders[dir];
    // The identity, not the time alone: a folder swapped in with `mv` or copied with its times (rsync -a) has another inode or ctime.
    return f && t && t.mtime === f.mtime && t.ident === f.ident && f.listed - t.mtime >= RACY_MS ? f.names : null;
  }

  /** Keep the listing `names` of `dir`, whose time was `mtime` before it was read at `listedAt`. */
  store(dir: string, t: FolderTime | undefined, listedAt: number, names: ListedName[]): void {
    if (t === undefined) return;
    this.folders[dir] = { mtime: t.mtime, ident: t.ident, listed: listedAt, names };
    this.changed = true;
  }

  /** Write the listings back (atomically) when any was added or renewed; a cache that cannot be written is only slower next time. */
  save(): void {
    if (!this.changed) return;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true });
      writeFileAtomic(this.file, JSON.stringify({ version: LISTING_VERSION, root: this.root, folders: this.folders }));
      this.changed = false;
    } catch {
      // read-only cache folder: the record cache says so where it matters
    }
  }

  /** The listing cache of dataset `root` in `cacheDir` (data.cache_dir), or undefined without one. */
  static of(cacheDir: string | null, format: string, root: string): ListingCache | undefined {
    if (cacheDir === null) return undefined;
    const abs = path.resolve(root);
    const key = createHash('sha256').update(`${format}\n${abs}`).digest('hex').slice(0, 16);
    return new ListingCache(path.join(path.resolve(cacheDir), `${format}-${key}.listing`), abs);
  }
}

/**
 * Class folders inside `dir` (symbolic links followed): NFC name -> name on
 * disk, sorted by name. A link that cannot be followed is a UsageError naming
 * it: it was meant as a class, and dropping it would train on fewer classes.
 */
export function subfolders(dir: string): Map<string, string> {
  const broken = listEntries(dir).filter((e) => e.kind === 'broken' && !IMAGE_EXT.test(e.name));
  if (broken.length) {
    const e = broken[0];
    throw new UsageError(
      `'${e.abs}' is a symbolic link to '${e.link}', which cannot be followed (${e.error})${broken.length > 1 ? `; so are ${broken.length - 1} more in '${dir}'` : ''}. ` +
        `Fix the link (a relative target is read from the link's own folder) or remove it.`,
    );
  }
  const found = listEntries(dir)
    .filter((e) => e.kind === 'dir')
    .map((e) => [e.name, e.onDisk] as [string, string]);
  return new Map(found.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
}

/**
 * The file a relative path names, matching each segment in NFC when the
 * exact name is not there (a JSON written with NFC names, files on disk in
 * NFD). `listings` caches folder listings across calls. Null if absent.
 */
export function findOnDisk(root: string, rel: string, listings: Map<string, Map<string, string>>): { abs: string; st: fs.Stats } | null {
  const exact = path.resolve(root, rel);
  try {
    return { abs: exact, st: fs.statSync(exact) };
  } catch {
    // fall through to the NFC match below
  }
  let dir = path.resolve(root);
  for (const seg of rel.split('/')) {
    if (seg === '' || seg === '.') continue;
    let names = listings.get(dir);
    if (!names) {
      names = new Map();
      try {
        for (const n of fs.readdirSync(dir)) names.set(nfc(n), n);
      } catch {
        // not a folder: nothing matches below it
      }
      listings.set(dir, names);
    }
    const onDisk = seg === '..' ? '..' : names.get(nfc(seg));
    if (onDisk === undefined) return null;
    dir = path.join(dir, onDisk);
  }
  try {
    return { abs: dir, st: fs.statSync(dir) };
  } catch {
    return null;
  }
}

/** Class folder name -> its images, for the training and the test part. */
export interface ClassFolders {
  train: Map<string, FileInfo[]>;
  test: Map<string, FileInfo[]>;
  /** How the parts were found, for messages. */
  layout: string;
}

/**
 * `ROOT/train/<class>/…` and `ROOT/test/<class>/…` (`val/` is accepted for
 * test), or, with data.test_fraction, `ROOT/<class>/…` split per class by a
 * seeded draw.
 */
export function scanClassFolders(root: string, cfg: Config, skip: (name: string) => boolean = () => false): ClassFolders {
  const cache = ListingCache.of(cfg.data.cache_dir, cfg.data.format, root);
  try {
    return scanWith(root, cfg, skip, cache);
  } finally {
    cache?.save();
  }
}

function scanWith(root: string, cfg: Config, skip: (name: string) => boolean, cache: ListingCache | undefined): ClassFolders {
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new UsageError(`data.root '${root}' is not a folder.`);
  const hasTrain = fs.existsSync(path.join(root, 'train'));
  const testName = ['test', 'val'].find((n) => fs.existsSync(path.join(root, n)));
  const scan = (rel: string) =>
    new Map([...subfolders(path.join(root, rel))].filter(([n]) => !skip(n)).map(([n, onDisk]) => [n, listImages(root, `${rel}/${n}`, `${rel}/${onDisk}`, cache)]));
  if (hasTrain) {
    if (cfg.data.test_fraction !== null) {
      throw new UsageError(`data.test_fraction is set but '${root}' already has a train/ folder (its test set comes from ${testName ?? 'test'}/). Remove data.test_fraction.`);
    }
    if (!testName) throw new UsageError(`'${root}' has a train/ folder but no test/ (or val/) folder. Add one, or put the class folders directly in the root and set data.test_fraction.`);
    return { train: scan('train'), test: scan(testName), layout: `train/ and ${testName}/` };
  }
  if (cfg.data.test_fraction === null) {
    throw new UsageError(`'${root}' has no train/ folder. Use ROOT/train/<class>/ and ROOT/test/<class>/, or set data.test_fraction (e.g. 0.2) to split ROOT/<class>/ into train and test.`);
  }
  const all = new Map([...subfolders(root)].filter(([n]) => !skip(n)).map(([n, onDisk]) => [n, listImages(root, n, onDisk, cache)]));
  const rng = new Rng(cfg.data.seed, 403);
  const train = new Map<string, FileInfo[]>();
  const test = new Map<string, FileInfo[]>();
  for (const [name, files] of all) {
    const order = files.slice();
    rng.shuffle(order);
    // At least one training image per class whenever the class has any.
    const nTest = Math.min(Math.round(cfg.data.test_fraction * files.length), Math.max(0, files.length - 1));
    const inTest = new Set(order.slice(0, nTest).map((f) => f.id));
    train.set(name, files.filter((f) => !inTest.has(f.id)));
    test.set(name, files.filter((f) => inTest.has(f.id)));
  }
  return { train, test, layout: `ROOT/<class>/ split by data.test_fraction=${cfg.data.test_fraction}` };
}

/**
 * The class folders of `m` as catalogue columns (folder -> class index by
 * `classOf`), with the files whose path on disk is not root/id.
 */
export function folderRefs(m: Map<string, FileInfo[]>, classOf: (folder: string) => number): { refs: Refs; onDisk: Map<string, string> } {
  const onDisk = new Map<string, string>();
  const ids: string[] = [];
  const cls: number[] = [];
  for (const [folder, files] of m) {
    const c = classOf(folder);
    for (const f of files) {
      if (f.renamed) onDisk.set(f.id, f.abs);
      ids.push(f.id);
      cls.push(c);
    }
  }
  const refs: Refs = { ids, cls: Int32Array.from(cls) };
  return { refs, onDisk };
}

/** Resolve a dataset path: absolute, or relative to the working folder. */
export function requireRoot(cfg: Config): string {
  if (!cfg.data.root) throw new UsageError(`data.format=${cfg.data.format} needs data.root (the dataset folder). Set it in the config or with --set data.root=PATH.`);
  return path.resolve(cfg.data.root);
}
