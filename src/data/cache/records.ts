/**
 * The record cache: every image of a dataset decoded once into a fixed-size
 * uint8 record (stored_size x stored_size x channels, row-major HWC) in
 * sharded files on disk, so training reads a batch's records by offset and
 * the OS page cache does the rest; memory does not grow with the dataset.
 *
 * One store per (format, dataset source, stored size, channels, decoder
 * version), in `cache_dir`:
 *   <base>.u8, <base>.1.u8, ...   shards of `records_per_shard` records (no file over 1 GiB)
 *   <base>.stats                  per record: per channel sum and sum of squares (float64), then the CRC-32 of those bytes, for data.normalize=dataset
 *   <base>.catalog                the catalogue: per image id its stamp, record, content hash (binary, below; CRC-32 of its body in the header)
 *   <base>.sums                   per record: the CRC-32 of its bytes, checked every time a record is read
 *   <base>.damaged                written when a record failed its check: the next run decodes everything again
 *   <base>.json                   a readable summary of the store (size, channels, count, bad images)
 *   <base>.lk/                    the lock, held while a process adds records (a folder whose mtime is its holder's heartbeat)
 * Records are only ever appended: a changed image gets a new record and the
 * catalogue (rewritten atomically) points at it, so a run reading the store
 * meanwhile keeps consistent pixels. A fresh store holds the records in
 * catalogue order (train images, then test images).
 *
 * Faults on the cache path end in a message that says what to do: a cache
 * folder that cannot be written is used read-only when it holds every image
 * (exit 2 naming it otherwise); a full disk stops the decode with exit 2 and
 * the files cut back to what the catalogue vouches for; a damaged statistics
 * entry is recomputed from its (checksummed) record; an image that could not
 * be read is tried again on the next run.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../../util/errors';
import { contentHash, decodeImage, DECODE_PARALLEL, forEachParallel } from '../formats/decode';
import { changedHere, changedInBackground, FileLayout, stampJob, statIdentity } from './stamp';
import { crc32 } from 'node:zlib';
import * as lockfile from 'proper-lockfile';
import { LOCK_STALE_MS, LOCK_UPDATE_MS } from '../../util/lock-timing';
import { heartbeat, takeLock, takeOver } from '../../util/heartbeat-lock';

/** Bump when decoding changes (v3: EXIF orientation, aspect-preserving resize + centre crop, records). */
export const RECORD_VERSION = 3;
const CATALOG_MAGIC = 'granular-catalog';
/** Shards stay far below the 2 GiB that readFileSync and many tools refuse. */
const SHARD_BYTES = Number(process.env.GRANULAR_SHARD_BYTES ?? 2 ** 30);
/** Bytes of a content hash (contentHash's 16 hex digits). */
export const HASH_BYTES = 8;

/**
 * Bytes of one record's entry in `<base>.stats`: per channel the sum and the
 * sum of squares of its bytes (2 x channels float64), then the CRC-32 (zlib)
 * of those 16 x channels bytes (uint32 LE) and 4 bytes of padding.
 */
export function statsEntryBytes(channels: number): number {
  return 16 * channels + 8;
}

export function statsPath(loc: Pick<StoreLocation, 'dir' | 'base'>): string {
  return path.join(loc.dir, `${loc.base}.stats`);
}

/** errno codes of a folder that cannot be written here (permissions, a read-only mount). */
const NOT_WRITABLE = new Set(['EACCES', 'EPERM', 'EROFS']);
/** errno codes of a full disk (or quota). */
const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);

/**
 * A reason an image was skipped that comes from reading its file (Node's
 * system errors: "EACCES: permission denied, open ..."), not from decoding
 * its bytes: such a skip is checked again on the next run, since permissions,
 * mounts and links get fixed without the file changing.
 */
const READ_FAILURE = /^E[A-Z]+: /;

/**
 * Write all of `buf` at `position` (a short write on a full disk is continued
 * until the disk says ENOSPC, never taken as done).
 */
function writeFull(fd: number, buf: Uint8Array, position: number): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.writeSync(fd, buf, off, buf.length - off, position + off);
    if (n <= 0) throw Object.assign(new Error(`ENOSPC: no bytes written at offset ${position + off}`), { code: 'ENOSPC' });
    off += n;
  }
}

/**
 * Replace `file` with `data` atomically: a temporary name, every byte checked
 * written (writeFull) and synced, then renamed; on failure the temporary
 * file is removed. The cache's own rather than util/fsx's writeFileAtomic
 * (write-file-atomic), which takes one write call's count as the whole file:
 * a catalogue cut short by a full disk must never be renamed into place.
 */
function replaceFile(file: string, data: Uint8Array): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      writeFull(fd, data, 0);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * A failed write into the cache folder `dir` as the error a user acts on:
 * a full disk or a folder that cannot be written is a UsageError (exit 2,
 * before any run folder exists) naming the folder and what to do; anything
 * else is returned as it is.
 */
function cacheWriteError(e: unknown, dir: string, needBytes: number): Error {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  const where = (e as NodeJS.ErrnoException).path ?? dir;
  if (DISK_FULL.has(code)) {
    return new UsageError(
      `the disk holding the record cache folder '${dir}' is full (${code}) while writing ${where}; this dataset's records need about ${(needBytes / 1e6).toFixed(1)} MB there. ` +
        'The cache was cut back to what it held before (nothing half-written is kept). Free space on that disk, or set data.cache_dir to a folder on a disk with room.',
    );
  }
  if (NOT_WRITABLE.has(code)) {
    return new UsageError(`cannot write in the record cache folder '${dir}' (${code}: ${where}). Make the folder writable for this user, or set data.cache_dir to a writable folder (null: a temporary one per run).`);
  }
  return e as Error;
}

/** Where an image's bytes come from, and what tells that it changed. */
export interface ImageSource {
  /** Identifies the dataset's files for the cache (format and absolute root or archive paths). */
  identity: string;
  /** The file bytes of image `id`. */
  read(id: string): Buffer | Promise<Buffer>;
  /** At most the first `bytes` bytes of image `id` (a header, for data.channels: auto); default: read(id). */
  head?(id: string, bytes: number): Buffer;
  /** Set where the format itself says whether its images have colour (CIFAR: always): data.channels auto reads no file. */
  colour?: { channels: 1 | 3; reason: string };
  /**
   * Two numbers that change whenever the image changes: [size, statIdentity] for a
   * file, [crc32, compressed size] for an archive entry; null when it is gone.
   */
  stamp(id: string): [number, number] | null;
  /**
   * The folder (absolute) whose modification time changes when images are added
   * to it, removed or renamed (data.verify: folders); null for archives, whose
   * stamps cost nothing.
   */
  folder(id: string): string | null;
  /** Where the image files lie, for sources whose stamp is fileStamp of the file (their stamps can be checked on another thread). */
  files?: FileLayout;
  /** The data error for images listed but not found (default: the dataset changed while being read). */
  missing?(ids: string[]): string;
}

/** The shape of a store's records and where its shards lie. */
export interface StoreLocation {
  dir: string;
  base: string;
  size: number;
  channels: number;
  recordBytes: number;
  perShard: number;
  /** Records written (some may be unreferenced after changes). */
  count: number;
}

export function shardPath(loc: Pick<StoreLocation, 'dir' | 'base'>, shard: number): string {
  return path.join(loc.dir, shard === 0 ? `${loc.base}.u8` : `${loc.base}.${shard}.u8`);
}

function layout(size: number, channels: number, shardBytes = SHARD_BYTES): { recordBytes: number; perShard: number } {
  const recordBytes = size * size * channels;
  return { recordBytes, perShard: Math.max(1, Math.floor(shardBytes / recordBytes)) };
}

/**
 * Reads records by index with positioned reads (one per record); works on any
 * thread, so the prefetch worker opens its own.
 */
export class RecordReader {
  private readonly fds: number[] = [];
  /** The CRC-32 of each record (<base>.sums), read when first needed and again when the store has grown. */
  private sums = new Uint32Array(0);
  constructor(readonly loc: StoreLocation) {}

  private expected(r: number): number {
    if (r >= this.sums.length) {
      let buf: Buffer;
      try {
        buf = fs.readFileSync(sumsPath(this.loc));
      } catch (e) {
        throw new RecordCacheDamaged(this.loc, `its checksum file ${sumsPath(this.loc)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      this.sums = new Uint32Array(buf.length >> 2);
      Buffer.from(this.sums.buffer).set(buf.subarray(0, this.sums.length * 4));
      if (r >= this.sums.length) throw new RecordCacheDamaged(this.loc, `its checksum file ${sumsPath(this.loc)} holds ${this.sums.length} records, not record ${r}`);
    }
    return this.sums[r];
  }

  private fd(shard: number): number {
    while (this.fds.length <= shard) this.fds.push(-1);
    if (this.fds[shard] < 0) this.fds[shard] = fs.openSync(shardPath(this.loc, shard), 'r');
    return this.fds[shard];
  }

  /** Copy record `r` into `out` at byte `at`. */
  read(r: number, out: Uint8Array, at: number): void {
    const { perShard, recordBytes } = this.loc;
    const shard = Math.floor(r / perShard);
    const got = fs.readSync(this.fd(shard), out, at, recordBytes, (r % perShard) * recordBytes);
    if (got !== recordBytes) throw new Error(`record ${r} of ${shardPath(this.loc, shard)} is truncated (${got} of ${recordBytes} bytes); delete the cache folder's ${this.loc.base}.* files`);
    // Never train on bytes the disk, a copy or a stray write changed: the check costs ~1 us per 12 KiB record.
    if (crc32(out.subarray(at, at + recordBytes)) !== this.expected(r)) {
      throw new RecordCacheDamaged(this.loc, `record ${r} in ${shardPath(this.loc, shard)} fails its checksum (its bytes changed after it was written)`);
    }
  }

  close(): void {
    for (const fd of this.fds) if (fd >= 0) fs.closeSync(fd);
    this.fds.length = 0;
  }
}

export function sumsPath(loc: Pick<StoreLocation, 'dir' | 'base'>): string {
  return path.join(loc.dir, `${loc.base}.sums`);
}

function damagedPath(dir: string, base: string): string {
  return path.join(dir, `${base}.damaged`);
}

/**
 * A record that fails its checksum: the run stops (it never reads those
 * pixels), and `<base>.damaged` makes the next run decode the store again.
 */
export class RecordCacheDamaged extends Error {
  constructor(loc: Pick<StoreLocation, 'dir' | 'base'>, what: string) {
    let marked = true;
    try {
      fs.writeFileSync(damagedPath(loc.dir, loc.base), what + '\n');
    } catch {
      marked = false; // a read-only cache: the message says what to do
    }
    super(
      `the record cache ${path.join(loc.dir, loc.base)}.* is damaged: ${what}. ` +
        (marked ? 'The next run decodes the images again; start it the same way.' : `Delete ${path.join(loc.dir, loc.base)}.* (the cache folder is not writable here) and run again.`),
    );
    this.name = 'RecordCacheDamaged';
  }
}

/** The catalogue: what the store holds, per image id, in the order the dataset listed them. */
interface Catalogue {
  header: {
    magic: string;
    version: number;
    format: string;
    identity: string;
    size: number;
    channels: number;
    record_bytes: number;
    records_per_shard: number;
    /** Records written so far. */
    records: number;
    entries: number;
    /**
     * The first `listed` entries are the images of the last listing, in its
     * order; the rest are images it did not ask for (other data.include
     * settings), kept so their records stay in use.
     */
    listed: number;
    /** sha256 of the listed ids joined by "\n": an equal list aligns entry k with image k without reading the ids. */
    ids_hash: string;
    ids_bytes: number;
    /** Record -> why it could not be decoded (its bytes are zeros). */
    bad: Record<string, string>;
    /** CRC-32 (zlib) of everything after the header: a zeroed or flipped page is found before anything is trusted. */
    body_crc32: number;
    /** Folder (absolute) -> its statIdentity (device, inode, mtime, ctime) when its images were last stamped. */
    folders: Record<string, number>;
    /** Bytes per record in <base>.stats (statsEntryBytes: its entries carry a CRC-32). */
    stats_bytes: number;
  };
  stampA: Float64Array;
  stampB: Float64Array;
  /** Record index per entry; -1 = not decoded yet (an interrupted first decode). */
  record: Int32Array;
  hash: Uint8Array;
  /** The ids blob (utf8, "\n"-joined); split only when the lists differ. */
  idsBlob: Buffer;
}

function idsHash(ids: readonly string[]): string {
  const h = createHash('sha256');
  // Chunks keep the hashing fast without one huge joined string.
  for (let i = 0; i < ids.length; i += 4096) h.update(ids.slice(i, i + 4096).join('\n') + '\n');
  return h.digest('hex');
}

const pad8 = (n: number) => (n + 7) & ~7;

function encodeCatalogue(c: Catalogue): Buffer {
  const n = c.header.entries;
  const body = Buffer.concat([
    Buffer.from(c.stampA.buffer, c.stampA.byteOffset, n * 8), Buffer.from(c.stampB.buffer, c.stampB.byteOffset, n * 8),
    Buffer.from(c.record.buffer, c.record.byteOffset, n * 4), Buffer.alloc(pad8(n * 4) - n * 4),
    Buffer.from(c.hash.buffer, c.hash.byteOffset, n * HASH_BYTES), c.idsBlob,
  ]);
  c.header.body_crc32 = crc32(body);
  const head = Buffer.from(JSON.stringify(c.header) + '\n');
  const headLen = pad8(4 + head.length);
  const parts: Buffer[] = [];
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32LE(head.length);
  parts.push(lenBuf, head, Buffer.alloc(headLen - 4 - head.length), body);
  return Buffer.concat(parts);
}

/** Parse a catalogue file; throws with the reason it cannot be used. */
function decodeCatalogue(buf: Buffer): Catalogue {
  if (buf.length < 4) throw new Error('it is empty');
  const headLenRaw = buf.readUInt32LE(0);
  if (headLenRaw > buf.length - 4) throw new Error('its header is cut off');
  const header = JSON.parse(buf.toString('utf8', 4, 4 + headLenRaw)) as Catalogue['header'];
  if (header.magic !== CATALOG_MAGIC) throw new Error('it is not a granular catalogue');
  if (header.version !== RECORD_VERSION) throw new Error(`it was written by decoder version ${header.version}, this granular decodes with version ${RECORD_VERSION} (EXIF orientation, aspect-preserving resize)`);
  const n = header.entries;
  let at = pad8(4 + headLenRaw);
  const need = at + 16 * n + pad8(4 * n) + HASH_BYTES * n + header.ids_bytes;
  if (buf.length !== need) throw new Error(`it is ${buf.length} bytes, expected ${need} (cut off or damaged)`);
  if (typeof header.body_crc32 !== 'number') throw new Error('it was written by an older granular, without checksums');
  if (header.stats_bytes !== statsEntryBytes(header.channels)) throw new Error('it was written by an older granular, without checksums on its normalisation statistics');
  if (crc32(buf.subarray(at)) !== header.body_crc32) throw new Error('its contents fail their checksum (flipped or zeroed bytes)');
  // Copies: the Buffer's memory may be unaligned for typed-array views.
  const f64 = () => {
    const a = new Float64Array(n);
    Buffer.from(a.buffer).set(buf.subarray(at, at + 8 * n));
    at += 8 * n;
    return a;
  };
  const stampA = f64();
  const stampB = f64();
  const record = new Int32Array(n);
  Buffer.from(record.buffer).set(buf.subarray(at, at + 4 * n));
  at += pad8(4 * n);
  const hash = Uint8Array.from(buf.subarray(at, at + HASH_BYTES * n));
  at += HASH_BYTES * n;
  return { header, stampA, stampB, record, hash, idsBlob: Buffer.from(buf.subarray(at, at + header.ids_bytes)) };
}

/** What a dataset's images are in the store. */
export interface Synced {
  loc: StoreLocation;
  /** Per image (in the order given): its record; -1 when it could not be decoded. */
  record: Int32Array;
  /** Per image: HASH_BYTES of its content hash. */
  hash: Uint8Array;
  /** Images that could not be decoded (index into the list given), with the reason. */
  bad: Array<{ index: number; reason: string }>;
  /** Images decoded by this call (0: everything came from the cache). */
  decoded: number;
  /**
   * With `deferred`: the indices of the deferred images whose stamp moved since
   * they were cached (or whose file is gone), once a worker thread has checked
   * them. Their records and hashes above are the cached ones until then.
   */
  pending?: Promise<number[]>;
}

export interface SyncOptions {
  format: string;
  source: ImageSource;
  ids: readonly string[];
  size: number;
  channels: 1 | 3;
  /** null: a temporary store, removed when the process exits. */
  cacheDir: string | null;
  verify: 'files' | 'folders';
  log: (line: string) => void;
  /** Bytes per shard file (tests use small ones); default 1 GiB or GRANULAR_SHARD_BYTES. */
  shardBytes?: number;
  /**
   * Images ids[start..end) whose stamps may be checked after this call returns,
   * on a worker thread (`Synced.pending`), when verify is 'files', the
   * listing is the catalogued one and the source has file paths. Each such
   * image keeps its cached record meanwhile; the caller must await `pending`
   * before it reads them and sync again if any changed.
   */
  deferred?: { start: number; end: number };
}

let tempRoot: string | null = null;
function temporaryDir(): string {
  if (!tempRoot) {
    tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-records-'));
    const root = tempRoot;
    process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  }
  return tempRoot;
}

export function storeBase(format: string, identity: string, size: number, channels: number): string {
  const key = createHash('sha256').update(`granular-records-v${RECORD_VERSION}\n${format}\n${identity}\n${size}\n${channels}\n`).digest('hex').slice(0, 16);
  return `${format}-${key}-${size}x${channels}`;
}


/**
 * Take the store's lock while adding records; while another process holds
 * it, wait. The lock is a folder (`<base>.lk`, made atomically) whose mtime
 * its holder refreshes every LOCK_STALE_MS / 4 (proper-lockfile): liveness is
 * the heartbeat, never a PID, so it holds across PID namespaces, containers
 * and hosts sharing the cache folder (a PID from another namespace means
 * nothing here, and PID 1 is always alive). A lock whose heartbeat is
 * LOCK_STALE_MS old (its holder was killed) is taken over, guarded so that of
 * several processes doing so exactly one gets it (src/util/heartbeat-lock.ts
 * `takeOver`, shared with the run lock). If the lock is lost meanwhile (the
 * folder removed or replaced), `check()` throws before anything else is
 * written. Errors: the file system's (EACCES, EROFS, ENOSPC...) with their code.
 */
export async function lockStore(file: string, log: (l: string) => void): Promise<{ unlock: () => void; check: () => void }> {
  let lost: Error | null = null;
  let said = false;
  const take = () => takeLock(file, LOCK_UPDATE_MS, (e: Error) => (lost = e));
  for (;;) {
    try {
      await take();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
    }
    const beat = heartbeat(file);
    if (beat !== null && Date.now() - beat >= LOCK_STALE_MS) {
      const t = await takeOver(file, beat, LOCK_STALE_MS, LOCK_UPDATE_MS, take);
      if (t.ok) {
        log(`took over the record cache lock ${file}, whose holder stopped refreshing it ${((Date.now() - beat) / 1000).toFixed(1)} s ago (killed, or its container or host is gone)`);
        break;
      }
      if (t.code !== 'ELOCKED' && t.code !== 'EBUSY') throw Object.assign(new Error(`cannot take over the record cache lock ${file}: ${t.message}`), { code: t.code });
      // Another process took it over first, or is doing so: wait for that one.
    }
    if (!said) log(`waiting for another process, which is adding images to the record cache (${file}; a lock not refreshed for ${LOCK_STALE_MS / 1000} s is taken over)`);
    said = true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    unlock: () => {
      if (lost) return;
      try {
        lockfile.unlockSync(file, { realpath: false, lockfilePath: file });
      } catch {
        // already released or taken over: nothing of ours to remove
      }
    },
    check: () => {
      if (lost) throw new Error(`lost the record cache lock ${file} while adding records (${(lost as Error).message}); another process may have taken it. Run again.`);
    },
  };
}

/** Read the catalogue of `base` in `dir`, or say why it cannot be used (null: there is none). */
function loadCatalogue(dir: string, base: string, expect: { format: string; identity: string; size: number; channels: number; shardBytes?: number }): { cat: Catalogue | null; problem: string | null } {
  const file = path.join(dir, `${base}.catalog`);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { cat: null, problem: null };
    return { cat: null, problem: `its catalogue ${file} cannot be read (${(e as Error).message})` };
  }
  let cat: Catalogue;
  try {
    cat = decodeCatalogue(buf);
  } catch (e) {
    return { cat: null, problem: `its catalogue ${file} is unusable: ${(e as Error).message}` };
  }
  const h = cat.header;
  const { recordBytes, perShard } = layout(expect.size, expect.channels, expect.shardBytes);
  if (h.format !== expect.format || h.identity !== expect.identity || h.size !== expect.size || h.channels !== expect.channels) {
    return { cat: null, problem: `its catalogue ${file} describes other data (${h.format} ${h.identity} at ${h.size}x${h.channels})` };
  }
  if (h.record_bytes !== recordBytes || h.records_per_shard !== perShard) {
    return { cat: null, problem: `its catalogue ${file} has ${h.records_per_shard} records of ${h.record_bytes} bytes per shard, this process uses ${perShard} of ${recordBytes} (GRANULAR_SHARD_BYTES changed?)` };
  }
  const damaged = damagedPath(dir, base);
  if (fs.existsSync(damaged)) {
    let why = '';
    try {
      why = fs.readFileSync(damaged, 'utf8').trim();
    } catch {
      // the marker alone says enough
    }
    return { cat: null, problem: `a run found it damaged${why ? ` (${why})` : ''}` };
  }
  const sums = fs.statSync(sumsPath({ dir, base }), { throwIfNoEntry: false })?.size ?? -1;
  if (sums < 4 * h.records) return { cat: null, problem: sums < 0 ? `its checksum file ${sumsPath({ dir, base })} is missing` : `its checksum file ${sumsPath({ dir, base })} is cut off` };
  // Every record the catalogue vouches for must be on disk.
  for (let s = 0; s * perShard < h.records; s++) {
    const want = Math.min(perShard, h.records - s * perShard) * recordBytes;
    const f = shardPath({ dir, base }, s);
    let got = -1;
    try {
      got = fs.statSync(f).size;
    } catch {
      return { cat: null, problem: `its shard ${f} is missing` };
    }
    if (got < want) return { cat: null, problem: `its shard ${f} is ${got} bytes, shorter than the ${want} bytes of records it should hold` };
  }
  return { cat, problem: null };
}

/** Per record and channel: sum and sum of squares of the bytes (for data.normalize=dataset). */
export function recordStats(px: Uint8Array, channels: number): Float64Array {
  const out = new Float64Array(2 * channels);
  for (let j = 0; j < px.length; j += channels) {
    for (let c = 0; c < channels; c++) {
      const v = px[j + c];
      out[c] += v;
      out[channels + c] += v * v;
    }
  }
  return out;
}

/**
 * Make sure every image of `ids` has a current record in the store, decoding
 * only what is new or changed, and return where each one is. An existing store
 * that cannot be used is reported through `log` with the reason, then rebuilt.
 */
export async function syncRecords(o: SyncOptions): Promise<Synced> {
  const { size, channels, source, ids, log } = o;
  const n = ids.length;
  const dir = o.cacheDir ?? temporaryDir();
  const base = storeBase(o.format, source.identity, size, channels);
  const { recordBytes, perShard } = layout(size, channels, o.shardBytes);
  const needBytes = n * (recordBytes + statsEntryBytes(channels) + 4 + 16 + HASH_BYTES);
  // A folder this process cannot write (permissions, a read-only mount): a
  // cache built there before is used read-only, without the lock (records are
  // append-only and the catalogue replaced atomically, so a writer elsewhere
  // cannot tear what is read); anything that needs decoding is refused below.
  let lock: { unlock: () => void; check: () => void } | null = null;
  let readOnly: string | null = null;
  try {
    fs.mkdirSync(dir, { recursive: true });
    lock = await lockStore(path.join(dir, `${base}.lk`), log);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (DISK_FULL.has(code)) throw cacheWriteError(e, dir, needBytes);
    if (!NOT_WRITABLE.has(code)) throw e;
    readOnly = code;
  }
  const refuseReadOnly = (what: string) =>
    new UsageError(`the record cache folder '${dir}' cannot be written by this process (${readOnly}) and ${what}. Make the folder writable for this user, or set data.cache_dir to a writable folder (null: a temporary one per run).`);
  try {
    const expect = { format: o.format, identity: source.identity, size, channels, shardBytes: o.shardBytes };
    const { cat: old, problem } = loadCatalogue(dir, base, expect);
    if (readOnly) {
      if (problem) throw refuseReadOnly(`its record cache ${path.join(dir, base)}.* cannot be used (${problem}), so the ${n} images cannot be decoded into it`);
      if (!old) throw refuseReadOnly(`holds no record cache of this data (${path.join(dir, base)}.*), so the ${n} images cannot be decoded into it`);
      log(`the record cache folder '${dir}' is read-only here (${readOnly}): using its records as they are`);
    }
    if (problem) log(`warning: the record cache ${path.join(dir, base)}.* cannot be used: ${problem}. Decoding all ${n} images again.`);
    if (!old && !problem && o.cacheDir) warnOldCaches(dir, o.format, log);

    // Match the listed images with catalogue entries.
    const listHash = idsHash(ids);
    const entryOf = new Int32Array(n).fill(-1);
    let oldIds: string[] | null = null;
    if (old) {
      if (old.header.ids_hash === listHash && old.header.listed === n) {
        for (let k = 0; k < n; k++) entryOf[k] = k;
      } else {
        oldIds = old.idsBlob.toString('utf8').split('\n');
        const index = new Map<string, number>();
        for (let e = 0; e < old.header.entries; e++) index.set(oldIds[e], e);
        for (let k = 0; k < n; k++) entryOf[k] = index.get(ids[k]) ?? -1;
      }
    }

    // data.verify=folders: a folder whose mtime is unchanged vouches for the
    // catalogued stamps of its images (none were added, removed or renamed).
    const folders: Record<string, number> = {};
    const folderUnchanged = new Map<string, boolean>();
    const vouched = (k: number): boolean => {
      if (o.verify !== 'folders') return false;
      const f = source.folder(ids[k]);
      if (f === null) return false;
      let same = folderUnchanged.get(f);
      if (same === undefined) {
        const st = fs.statSync(f, { throwIfNoEntry: false });
        const m = st ? statIdentity(st) : undefined;
        if (m !== undefined) folders[f] = m;
        same = m !== undefined && old !== null && old.header.folders[f] === m;
        folderUnchanged.set(f, same);
      }
      return same && entryOf[k] >= 0;
    };

    // Stamp what needs stamping; an image whose stamp moved is decoded again.
    const stampA = new Float64Array(n);
    const stampB = new Float64Array(n);
    const record = new Int32Array(n).fill(-1);
    const hash = new Uint8Array(n * HASH_BYTES);
    const badOut: Record<string, string> = {};
    const todo: number[] = [];
    const missing: string[] = [];
    let changed = 0;
    let retried = 0;
    const defer = o.verify === 'files' && o.deferred && old && source.files && old.header.ids_hash === listHash && old.header.listed === n ? o.deferred : null;
    const deferredK: number[] = [];
    for (let k = 0; k < n; k++) {
      const e = entryOf[k];
      if (vouched(k)) {
        stampA[k] = old!.stampA[e];
        stampB[k] = old!.stampB[e];
      } else if (defer && k >= defer.start && k < defer.end && e >= 0 && old!.record[e] >= 0 && old!.header.bad[String(old!.record[e])] === undefined) {
        // A good cached record: checked on a worker thread while the caller goes on.
        stampA[k] = old!.stampA[e];
        stampB[k] = old!.stampB[e];
        deferredK.push(k);
      } else {
        const st = source.stamp(ids[k]);
        if (!st) {
          missing.push(ids[k]);
          continue;
        }
        [stampA[k], stampB[k]] = st;
      }
      if (e >= 0 && old!.record[e] >= 0 && old!.stampA[e] === stampA[k] && old!.stampB[e] === stampB[k]) {
        const why = old!.header.bad[String(old!.record[e])];
        // A file that could not be read (permissions, a dangling link) may be readable now without changing: try it again.
        if (why !== undefined && READ_FAILURE.test(why) && readableNow(source, ids[k])) {
          retried++;
          todo.push(k);
          continue;
        }
        record[k] = old!.record[e];
        hash.set(old!.hash.subarray(e * HASH_BYTES, (e + 1) * HASH_BYTES), k * HASH_BYTES);
        if (why !== undefined) badOut[String(record[k])] = why;
      } else {
        if (e >= 0 && old!.record[e] >= 0) changed++;
        todo.push(k);
      }
    }
    if (missing.length) {
      const some = `${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}`;
      // A folder listing saw them a moment ago: the dataset changes while we read it.
      throw new UsageError(source.missing?.(missing) ?? `${missing.length} image(s) vanished while the dataset was being read: ${some}. Run again once the dataset stops changing.`);
    }
    if (changed) log(`${changed} image(s) changed since they were cached (size or modification time): decoding them again`);
    if (retried) log(`${retried} image(s) that could not be read before can be read now: decoding them`);
    if (readOnly && todo.length) {
      const some = `${todo.slice(0, 5).map((k) => ids[k]).join(', ')}${todo.length > 5 ? ` and ${todo.length - 5} more` : ''}`;
      throw refuseReadOnly(`${todo.length} image(s) are not in its record cache yet (new, changed or readable again since it was built: ${some}), so they cannot be decoded into it`);
    }

    const loc: StoreLocation = { dir, base, size, channels, recordBytes, perShard, count: old ? old.header.records : 0 };
    /** Records the catalogue on disk vouches for: a failed decode cuts the files back to them. */
    let catalogued = loc.count;
    // Entries of the old catalogue that this listing did not ask for stay (with their bad-image reasons).
    const kept: number[] = [];
    if (old) {
      const hit = new Uint8Array(old.header.entries);
      for (let k = 0; k < n; k++) if (entryOf[k] >= 0) hit[entryOf[k]] = 1;
      for (let e = 0; e < old.header.entries; e++) {
        if (hit[e] || old.record[e] < 0) continue;
        kept.push(e);
        const why = old.header.bad[String(old.record[e])];
        if (why !== undefined) badOut[String(old.record[e])] = why;
      }
      if (kept.length && !oldIds) oldIds = old.idsBlob.toString('utf8').split('\n');
    }
    const writeCatalogue = () => {
      const m = n + kept.length;
      const all = <T extends Float64Array | Int32Array>(mine: T, theirs: T | undefined): T => {
        if (!kept.length) return mine;
        const out = new (mine.constructor as { new (k: number): T })(m);
        out.set(mine);
        kept.forEach((e, i) => (out[n + i] = theirs![e]));
        return out;
      };
      let hashes = hash;
      if (kept.length) {
        hashes = new Uint8Array(m * HASH_BYTES);
        hashes.set(hash);
        kept.forEach((e, i) => hashes.set(old!.hash.subarray(e * HASH_BYTES, (e + 1) * HASH_BYTES), (n + i) * HASH_BYTES));
      }
      const blob = Buffer.from([...(kept.length ? [ids.join('\n'), kept.map((e) => oldIds![e]).join('\n')] : [ids.join('\n')])].join('\n'), 'utf8');
      const cat: Catalogue = {
        header: {
          magic: CATALOG_MAGIC, version: RECORD_VERSION, format: o.format, identity: source.identity, size, channels,
          record_bytes: recordBytes, records_per_shard: perShard, records: loc.count, entries: m, listed: n, ids_hash: listHash, ids_bytes: blob.length, bad: badOut, folders, body_crc32: 0,
          stats_bytes: statsEntryBytes(channels),
        },
        stampA: all(stampA, old?.stampA), stampB: all(stampB, old?.stampB), record: all(record, old?.record), hash: hashes, idsBlob: blob,
      };
      lock!.check();
      replaceFile(path.join(dir, `${base}.catalog`), encodeCatalogue(cat));
      catalogued = loc.count;
      const badList = Object.entries(badOut).map(([r, reason]) => ({ index: Number(r), reason })).sort((a, b) => a.index - b.index);
      const shards = Array.from({ length: Math.ceil(loc.count / perShard) }, (_, s) => path.basename(shardPath(loc, s)));
      const meta = { version: RECORD_VERSION, format: o.format, identity: source.identity, size, channels, record_bytes: recordBytes, records_per_shard: perShard, count: loc.count, images: n, shards, bad: badList, ...(lastDecode ? { last_decode: lastDecode } : {}) };
      replaceFile(path.join(dir, `${base}.json`), Buffer.from(JSON.stringify(meta, null, 1) + '\n'));
    };
    // Small datasets decode in a blink: say nothing then.
    if (todo.length >= 1000) {
      if (!old) log(`decoding ${todo.length} image(s) once into the record cache ${path.join(dir, base)}.* (${size}x${size}x${channels})`);
      else if (todo.length > changed) log(`decoding ${todo.length - changed} image(s) not in the record cache yet`);
    }
    let lastDecode: { images: number; seconds: number } | null = null;
    const foldersMoved = o.verify === 'folders' && JSON.stringify(folders) !== JSON.stringify(old?.header.folders ?? {});
    try {
      if (todo.length) {
        const t0 = performance.now();
        await decodeInto(o, loc, ids, todo, record, hash, badOut, writeCatalogue);
        lastDecode = { images: todo.length, seconds: (performance.now() - t0) / 1000 };
      }
      // Read-only: nothing is rewritten (a listing in another order or with other folder stamps is matched again next time).
      if (!readOnly && (todo.length || !old || old.header.ids_hash !== listHash || old.header.listed !== n || foldersMoved)) writeCatalogue();
    } catch (e) {
      const err = cacheWriteError(e, dir, needBytes);
      // A full disk or a file that cannot be written: records past what the catalogue vouches for go (the lock is still ours).
      if (err instanceof UsageError) truncateStore(loc, catalogued);
      throw err;
    }
    // Decoded again from scratch: the damage is gone.
    if (problem) fs.rmSync(damagedPath(dir, base), { force: true });
    const bad: Synced['bad'] = [];
    for (let k = 0; k < n; k++) {
      const why = badOut[String(record[k])];
      if (why !== undefined) {
        bad.push({ index: k, reason: why });
        record[k] = -1;
      }
    }
    let pending: Promise<number[]> | undefined;
    if (deferredK.length) {
      const job = stampJob(source.files!, deferredK.map((k) => ids[k]), Float64Array.from(deferredK, (k) => stampA[k]), Float64Array.from(deferredK, (k) => stampB[k]));
      pending = changedInBackground(job)
        .catch(() => changedHere(job))
        .then((idx) => idx.map((i) => deferredK[i]));
    }
    return { loc, record, hash, bad, decoded: todo.length, ...(pending ? { pending } : {}) };
  } finally {
    lock?.unlock();
  }
}

/** Whether image `id` can be opened and read now (sources without `head`: assumed not, its skip stands). */
function readableNow(source: ImageSource, id: string): boolean {
  if (!source.head) return false;
  try {
    source.head(id, 1);
    return true;
  } catch {
    return false;
  }
}

/**
 * Cut the store's shards, statistics and checksums back to its first `count`
 * records (what the catalogue on disk vouches for), freeing what a failed
 * decode appended; best effort (a file that cannot be cut stays, unreferenced).
 */
function truncateStore(loc: StoreLocation, count: number): void {
  const cut = (file: string, bytes: number) => {
    try {
      if ((fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0) > bytes) fs.truncateSync(file, bytes);
    } catch {
      // unreferenced bytes: the next decode appends over them
    }
  };
  for (let s = 0; fs.existsSync(shardPath(loc, s)); s++) cut(shardPath(loc, s), Math.min(Math.max(count - s * loc.perShard, 0), loc.perShard) * loc.recordBytes);
  cut(statsPath(loc), count * statsEntryBytes(loc.channels));
  cut(sumsPath(loc), count * 4);
}

/**
 * Decode images `todo` of `ids` into new records appended at `loc.count`,
 * several at once; a failure gets a zero record and a reason in `bad`. Saves
 * the catalogue every so often (records flushed first), so an interrupted
 * first decode keeps its work. Advances `loc.count`.
 */
async function decodeInto(
  o: SyncOptions, loc: StoreLocation, ids: readonly string[], todo: number[], record: Int32Array, hash: Uint8Array, bad: Record<string, string>, checkpoint: () => void,
): Promise<void> {
  const { recordBytes, perShard, channels } = loc;
  const first = loc.count;
  const fds = new Map<number, number>();
  const fd = (shard: number) => {
    let f = fds.get(shard);
    if (f === undefined) {
      const file = shardPath(loc, shard);
      f = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+');
      fds.set(shard, f);
    }
    return f;
  };
  const statsFile = statsPath(loc);
  const statsFd = fs.openSync(statsFile, fs.existsSync(statsFile) ? 'r+' : 'w+');
  const sumsFile = sumsPath(loc);
  let sumsFd = -1;
  try {
    sumsFd = fs.openSync(sumsFile, fs.existsSync(sumsFile) ? 'r+' : 'w+');
  } catch (e) {
    fs.closeSync(statsFd);
    throw e;
  }
  const sum = new Uint32Array(1);
  const statBytes = statsEntryBytes(channels);
  const zeros = new Uint8Array(recordBytes);
  let done = 0;
  let sinceSave = 0;
  let written = first;
  let lastSave = performance.now();
  let lastLog = performance.now();
  const t0 = performance.now();
  const flush = () => {
    for (const f of fds.values()) fs.fdatasyncSync(f);
    fs.fdatasyncSync(statsFd);
    fs.fdatasyncSync(sumsFd);
  };
  try {
    await forEachParallel(todo.length, DECODE_PARALLEL, async (t) => {
      const k = todo[t];
      const r = first + t;
      let px: Uint8Array;
      try {
        const buf = await o.source.read(ids[k]);
        hash.set(Buffer.from(contentHash(buf), 'hex'), k * HASH_BYTES);
        px = await decodeImage(buf, loc.size, channels as 1 | 3);
      } catch (e) {
        bad[String(r)] = (e as Error).message.split('\n')[0];
        px = zeros;
      }
      writeFull(fd(Math.floor(r / perShard)), px.subarray(0, recordBytes), (r % perShard) * recordBytes);
      writeFull(statsFd, statsEntry(recordStats(px, channels)), r * statBytes);
      sum[0] = crc32(px.subarray(0, recordBytes));
      writeFull(sumsFd, new Uint8Array(sum.buffer), r * 4);
      // Only now may a catalogue vouch for it; until then it reads as not decoded.
      record[k] = r;
      written = Math.max(written, r + 1);
      done++;
      sinceSave++;
      const now = performance.now();
      if (now - lastLog > 10_000) {
        o.log(`decoded ${done} of ${todo.length} images (${Math.round(done / ((now - t0) / 1000))} img/s)`);
        lastLog = now;
      }
      if (sinceSave >= 20_000 || (now - lastSave > 30_000 && sinceSave > 0)) {
        flush();
        // Slots below `written` that are still in flight are skipped by the next run (it appends after them).
        loc.count = written;
        checkpoint();
        sinceSave = 0;
        lastSave = performance.now();
      }
    });
    flush();
  } finally {
    for (const f of fds.values()) fs.closeSync(f);
    fs.closeSync(statsFd);
    fs.closeSync(sumsFd);
  }
  loc.count = first + todo.length;
  const secs = (performance.now() - t0) / 1000;
  if (todo.length >= 1000) o.log(`decoded ${todo.length} images in ${secs.toFixed(1)} s (${Math.round(todo.length / secs)} img/s)`);
}

/** One record's entry of <base>.stats (statsEntryBytes): its sums, then their CRC-32. */
function statsEntry(st: Float64Array): Buffer {
  const out = Buffer.alloc(st.byteLength + 8);
  out.set(new Uint8Array(st.buffer, st.byteOffset, st.byteLength));
  out.writeUInt32LE(crc32(out.subarray(0, st.byteLength)), st.byteLength);
  return out;
}

/** Decode caches of granular before records (one <format>-<32 hex>.u8 per file list): name them once. */
function warnOldCaches(dir: string, format: string, log: (l: string) => void): void {
  let old: string[] = [];
  try {
    old = fs.readdirSync(dir).filter((f) => new RegExp(`^${format}-[0-9a-f]{32}\\.u8$`).test(f));
  } catch {
    return;
  }
  if (!old.length) return;
  const bytes = old.reduce((s, f) => s + (fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
  log(`warning: ${old.length} decode cache file(s) of an older granular in '${dir}' (${old.slice(0, 2).join(', ')}${old.length > 2 ? ', ...' : ''}; ${(bytes / 1e6).toFixed(1)} MB) are not used: decoding changed (EXIF orientation, aspect-preserving resize). Delete them to free the space.`);
}

/**
 * Per-channel mean and standard deviation (of pixel values scaled to [0, 1])
 * over the records `rows`, from the per-record sums written at decode time
 * (`<base>.stats`, statsEntryBytes). An entry that fails its CRC-32, is cut
 * off or missing is never used: it is recomputed from its record (which the
 * reader checks against its own checksum), written back where the folder
 * allows, and `log` says how many. A damaged record itself is a UsageError
 * (RecordCacheDamaged's message: the next run decodes the images again).
 */
export function recordMeanStd(loc: StoreLocation, rows: ArrayLike<number>, log: (line: string) => void = (l) => process.stderr.write(`granular: ${l}\n`)): { mean: number[]; std: number[] } {
  const C = loc.channels;
  const per = statsEntryBytes(C);
  const file = statsPath(loc);
  let fd = -1;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    // missing or unreadable: every entry is recomputed below
  }
  const s = new Float64Array(2 * C);
  const entry = new Uint8Array(per);
  const view = Buffer.from(entry.buffer);
  const sums = new Float64Array(entry.buffer, 0, 2 * C);
  let reader: RecordReader | null = null;
  let px: Uint8Array | null = null;
  let writer: number | null = null;
  let repaired = 0;
  let rewritten = 0;
  try {
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      const ok = fd >= 0 && fs.readSync(fd, entry, 0, per, r * per) === per && crc32(entry.subarray(0, 16 * C)) === view.readUInt32LE(16 * C);
      if (!ok) {
        reader ??= new RecordReader(loc);
        px ??= new Uint8Array(loc.recordBytes);
        try {
          reader.read(r, px, 0);
        } catch (e) {
          // Before any run folder exists (the normalisation is settled first): exit 2, the message says what to do.
          if (e instanceof RecordCacheDamaged) throw new UsageError(e.message);
          throw e;
        }
        const fixed = statsEntry(recordStats(px, C));
        entry.set(fixed);
        repaired++;
        if (writer === null) {
          try {
            writer = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+');
          } catch {
            writer = -1; // read-only: recomputed every time, still never read as garbage
          }
        }
        if (writer >= 0) {
          try {
            writeFull(writer, fixed, r * per);
            rewritten++;
          } catch {
            // a full disk: the value used is the recomputed one all the same
          }
        }
      }
      for (let j = 0; j < 2 * C; j++) s[j] += sums[j];
    }
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    if (writer !== null && writer >= 0) fs.closeSync(writer);
    reader?.close();
  }
  if (repaired) {
    log(`warning: ${repaired} entr${repaired === 1 ? 'y' : 'ies'} of the normalisation statistics ${file} failed their checksum or were missing: recomputed from the records${rewritten === repaired ? ' and written back' : ` (${rewritten} written back)`}`);
  }
  const count = rows.length * loc.size * loc.size;
  const mean = Array.from({ length: C }, (_, c) => s[c] / count / 255);
  const std = Array.from({ length: C }, (_, c) => Math.sqrt(Math.max(0, s[C + c] / count / (255 * 255) - mean[c] * mean[c])));
  return { mean, std };
}
