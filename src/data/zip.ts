import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { UsageError } from '../util/errors';

/**
 * A minimal zip reader: the central directory gives every entry's offset, so an
 * entry is read with one positioned read and inflated on its own. Enough for
 * dataset archives (stored or deflated entries, no encryption, no zip64).
 */
export interface ZipEntry {
  name: string;
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

export class ZipFile {
  readonly entries: ZipEntry[] = [];
  private readonly fd: number;

  constructor(readonly file: string) {
    try {
      this.fd = fs.openSync(file, 'r');
    } catch {
      throw new UsageError(`cannot open the zip file '${file}'. Check data.root.`);
    }
    const size = fs.fstatSync(this.fd).size;
    // The end-of-central-directory record sits in the last 22 + 65535 bytes.
    const tailLen = Math.min(size, 22 + 65535);
    const tail = Buffer.alloc(tailLen);
    fs.readSync(this.fd, tail, 0, tailLen, size - tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
    if (eocd < 0) throw new UsageError(`'${file}' is not a zip file (no end-of-central-directory record).`);
    const count = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    if (cdOffset === 0xffffffff || count === 0xffff) throw new UsageError(`'${file}' is a zip64 archive, which granular cannot read; unpack it and use data.format=imagefolder.`);
    const cd = Buffer.alloc(cdSize);
    fs.readSync(this.fd, cd, 0, cdSize, cdOffset);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new UsageError(`'${file}': corrupt central directory at entry ${i}.`);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      this.entries.push({
        method: cd.readUInt16LE(p + 10),
        crc32: cd.readUInt32LE(p + 16),
        compressedSize: cd.readUInt32LE(p + 20),
        size: cd.readUInt32LE(p + 24),
        localHeaderOffset: cd.readUInt32LE(p + 42),
        name: cd.toString('utf8', p + 46, p + 46 + nameLen),
      });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** The entry's uncompressed bytes; throws (a plain Error) if the entry is damaged. */
  read(e: ZipEntry): Buffer {
    const head = Buffer.alloc(30);
    fs.readSync(this.fd, head, 0, 30, e.localHeaderOffset);
    if (head.readUInt32LE(0) !== 0x04034b50) throw new Error(`bad local header for '${e.name}'`);
    const start = e.localHeaderOffset + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    const raw = Buffer.alloc(e.compressedSize);
    fs.readSync(this.fd, raw, 0, e.compressedSize, start);
    if (e.method === 0) return raw;
    if (e.method === 8) return zlib.inflateRawSync(raw);
    throw new Error(`'${e.name}' uses zip compression method ${e.method}; only stored and deflated entries are supported`);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
