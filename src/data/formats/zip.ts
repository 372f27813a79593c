import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { UsageError } from '../../util/errors';

/**
 * A small zip reader: the central directory gives every entry's offset, so an
 * entry is read with one positioned read and inflated on its own. Stored and
 * deflated entries, zip64 (archives and entries past 4 GiB or 65,535
 * entries: the zip64 end-of-central-directory record and extra field, PKWARE
 * APPNOTE 6.3.10 sections 4.3.14-4.3.15 and 4.5.3); no encryption, no
 * multi-disk archives. Names are read as UTF-8.
 *
 * Granular's own rather than yauzl: yauzl's API is asynchronous only (every
 * entry a callback or stream), while a dataset's listing (loadCatalog, used
 * by sweep checks and `granular hierarchy`) and an ImageSource's stamps are
 * synchronous for every format; synchronous libraries (adm-zip) read the
 * whole archive into memory, which an image archive of many GiB must not.
 */
export interface ZipEntry {
  name: string;
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

function u64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} (${v}) is past 2^53`);
  return Number(v);
}

export class ZipFile {
  readonly entries: ZipEntry[] = [];
  private readonly fd: number;

  /** Read the central directory of `file`; a file that is not a readable zip is a UsageError naming it. */
  constructor(readonly file: string) {
    try {
      this.fd = fs.openSync(file, 'r');
    } catch {
      throw new UsageError(`cannot open the zip file '${file}'. Check data.root.`);
    }
    try {
      this.readDirectory();
    } catch (e) {
      fs.closeSync(this.fd);
      if (e instanceof UsageError) throw e;
      throw new UsageError(`'${file}' is not a readable zip file (${(e as Error).message}).`);
    }
  }

  /** Exactly `n` bytes at `pos`, or an error saying the archive is cut off. */
  private bytes(n: number, pos: number): Buffer {
    const buf = Buffer.alloc(n);
    const got = n ? fs.readSync(this.fd, buf, 0, n, pos) : 0;
    if (got !== n) throw new Error(`cut off: ${got} of ${n} bytes at offset ${pos}`);
    return buf;
  }

  private readDirectory(): void {
    const file = this.file;
    const size = fs.fstatSync(this.fd).size;
    // The end-of-central-directory record sits in the last 22 + 65535 bytes.
    const tailLen = Math.min(size, 22 + 65535);
    const tailAt = size - tailLen;
    const tail = this.bytes(tailLen, tailAt);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) if (tail.readUInt32LE(i) === EOCD) { eocd = i; break; }
    if (eocd < 0) throw new UsageError(`'${file}' is not a zip file (no end-of-central-directory record).`);
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      // zip64: a locator just before the end record says where the zip64 end record is.
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== ZIP64_LOCATOR) throw new UsageError(`'${file}': its end record says zip64, but the zip64 locator is missing (a damaged or cut archive).`);
      const recAt = u64(tail, loc + 8, 'zip64 end record offset');
      const rec = this.bytes(56, recAt);
      if (rec.readUInt32LE(0) !== ZIP64_EOCD) throw new UsageError(`'${file}': no zip64 end-of-central-directory record at offset ${recAt} (a damaged archive).`);
      if (rec.readUInt32LE(16) !== 0 || rec.readUInt32LE(20) !== 0) throw new UsageError(`'${file}' is a multi-disk (split) zip archive; join its parts first (zip -s 0 in.zip --out whole.zip).`);
      count = u64(rec, 32, 'entry count');
      cdSize = u64(rec, 40, 'central directory size');
      cdOffset = u64(rec, 48, 'central directory offset');
    }
    const cd = this.bytes(cdSize, cdOffset);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL) throw new UsageError(`'${file}': corrupt central directory at entry ${i}.`);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      const e: ZipEntry = {
        method: cd.readUInt16LE(p + 10),
        crc32: cd.readUInt32LE(p + 16),
        compressedSize: cd.readUInt32LE(p + 20),
        size: cd.readUInt32LE(p + 24),
        localHeaderOffset: cd.readUInt32LE(p + 42),
        name: cd.toString('utf8', p + 46, p + 46 + nameLen),
      };
      if (e.size === U32_MAX || e.compressedSize === U32_MAX || e.localHeaderOffset === U32_MAX) {
        // The zip64 extended information extra field (id 1) holds the 8-byte values, in this order, of those set to 0xffffffff.
        let x = p + 46 + nameLen;
        const end = x + extraLen;
        let found = false;
        while (x + 4 <= end) {
          const id = cd.readUInt16LE(x);
          const len = cd.readUInt16LE(x + 2);
          if (id === 1) {
            let at = x + 4;
            const take = (what: string) => {
              if (at + 8 > x + 4 + len) throw new UsageError(`'${file}': the zip64 extra field of '${e.name}' is too short.`);
              const v = u64(cd, at, what);
              at += 8;
              return v;
            };
            if (e.size === U32_MAX) e.size = take('size');
            if (e.compressedSize === U32_MAX) e.compressedSize = take('compressed size');
            if (e.localHeaderOffset === U32_MAX) e.localHeaderOffset = take('offset');
            found = true;
            break;
          }
          x += 4 + len;
        }
        if (!found) throw new UsageError(`'${file}': entry '${e.name}' needs a zip64 extra field, which is missing (a damaged archive).`);
      }
      this.entries.push(e);
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** The entry's uncompressed bytes, checked against its CRC-32; throws (a plain Error) if the entry is damaged or cut off. */
  read(e: ZipEntry): Buffer {
    const head = this.bytes(30, e.localHeaderOffset);
    if (head.readUInt32LE(0) !== LOCAL) throw new Error(`bad local header for '${e.name}'`);
    const start = e.localHeaderOffset + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    const raw = this.bytes(e.compressedSize, start);
    let out: Buffer;
    if (e.method === 0) out = raw;
    else if (e.method === 8) out = zlib.inflateRawSync(raw);
    else throw new Error(`'${e.name}' uses zip compression method ${e.method}; only stored and deflated entries are supported`);
    // The archive's own check: damaged bytes are never handed on as an image.
    if (zlib.crc32(out) !== e.crc32) throw new Error(`'${e.name}' fails its CRC-32 in ${this.file} (a damaged archive)`);
    return out;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
