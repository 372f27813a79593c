import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { parseCsv } from '../src/data/formats/csv';
import { decodeImage } from '../src/data/formats/decode';
import { readAll } from '../src/data/cache/store';
import { ZipFile } from '../src/data/formats/zip';
import { UsageError } from '../src/util/errors';
import { tmpDir } from './helpers';
import { writeImage } from './data-fixtures';

test('csv: quoting, "" escapes, CRLF, a byte-order mark, blank lines, ragged rows and trimmed cells', () => {
  assert.deepEqual(parseCsv('\ufeffa,b\r\n"c, d",e\n\n   \n"say ""hi""",f\n g , "h" \nlone\n'), [['a', 'b'], ['c, d', 'e'], ['say "hi"', 'f'], ['g', 'h'], ['lone']]);
  assert.deepEqual(parseCsv('"multi\nline",x'), [['multi\nline', 'x']]);
  assert.deepEqual(parseCsv(',\n'), [['', '']], 'a row of empty cells is a row');
});

test('csv: an unclosed quote is a usage error naming the file and the line', () => {
  assert.throws(() => parseCsv('group,leaf\nG,"x\nH,y\n', '/data/taxonomy.csv'), (e: Error) => e instanceof UsageError && /\/data\/taxonomy\.csv is not valid CSV: .*line [0-9]+/i.test(e.message));
});

/**
 * A zip archive of `files` written as zip64 throughout (as tools write
 * archives past 4 GiB or 65,535 entries): every size and offset 0xffffffff
 * with the 8-byte values in a zip64 extra field, a zip64 end record and its
 * locator (APPNOTE 6.3.10, 4.3.14-4.3.15, 4.5.3). Deflated entries.
 */
function zip64(files: Array<{ name: string; data: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let at = 0;
  for (const f of files) {
    const name = Buffer.from(f.name);
    const packed = zlib.deflateRawSync(f.data);
    const crc = zlib.crc32(f.data);
    const local = Buffer.alloc(30 + name.length + 20);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt16LE(0x0800, 6);
    local.writeUInt16LE(8, 8);
    local.writeUInt16LE(0x21, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(0xffffffff, 18);
    local.writeUInt32LE(0xffffffff, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(20, 28);
    name.copy(local, 30);
    local.writeUInt16LE(1, 30 + name.length);
    local.writeUInt16LE(16, 32 + name.length);
    local.writeBigUInt64LE(BigInt(f.data.length), 34 + name.length);
    local.writeBigUInt64LE(BigInt(packed.length), 42 + name.length);
    const c = Buffer.alloc(46 + name.length + 28);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt16LE(0x0800, 8);
    c.writeUInt16LE(8, 10);
    c.writeUInt16LE(0x21, 14);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(0xffffffff, 20);
    c.writeUInt32LE(0xffffffff, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(28, 30);
    c.writeUInt32LE(0xffffffff, 42);
    name.copy(c, 46);
    c.writeUInt16LE(1, 46 + name.length);
    c.writeUInt16LE(24, 48 + name.length);
    c.writeBigUInt64LE(BigInt(f.data.length), 50 + name.length);
    c.writeBigUInt64LE(BigInt(packed.length), 58 + name.length);
    c.writeBigUInt64LE(BigInt(at), 66 + name.length);
    central.push(c);
    parts.push(local, packed);
    at += local.length + packed.length;
  }
  const cd = Buffer.concat(central);
  const end64 = Buffer.alloc(56);
  end64.writeUInt32LE(0x06064b50, 0);
  end64.writeBigUInt64LE(44n, 4);
  end64.writeUInt16LE(45, 12);
  end64.writeUInt16LE(45, 14);
  end64.writeBigUInt64LE(BigInt(files.length), 24);
  end64.writeBigUInt64LE(BigInt(files.length), 32);
  end64.writeBigUInt64LE(BigInt(cd.length), 40);
  end64.writeBigUInt64LE(BigInt(at), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(at + cd.length), 8);
  locator.writeUInt32LE(1, 16);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(0xffff, 8);
  end.writeUInt16LE(0xffff, 10);
  end.writeUInt32LE(0xffffffff, 12);
  end.writeUInt32LE(0xffffffff, 16);
  return Buffer.concat([...parts, cd, end64, locator, end]);
}

test('zip: a zip64 archive (end record, locator, extra fields) lists and reads every entry; a damaged entry fails its CRC-32', () => {
  const files = [
    { name: 'a/one.txt', data: Buffer.from('first entry '.repeat(50)) },
    { name: 'b/zwei-ü.bin', data: Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256)) },
  ];
  const file = path.join(tmpDir(), 'x64.zip');
  const bytes = zip64(files);
  fs.writeFileSync(file, bytes);
  const z = new ZipFile(file);
  assert.deepEqual(z.entries.map((e) => [e.name, e.size]), files.map((f) => [f.name, f.data.length]));
  z.entries.forEach((e, i) => assert.deepEqual(z.read(e), files[i].data));
  z.close();
  // The first entry's CRC-32 in the central directory no longer matches its (intact, inflatable) bytes.
  const crcAt = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])) + 16;
  bytes[crcAt] ^= 0x01;
  fs.writeFileSync(file, bytes);
  const d = new ZipFile(file);
  assert.throws(() => d.read(d.entries[0]), /'a\/one\.txt' fails its CRC-32 in .*x64\.zip \(a damaged archive\)/);
  assert.deepEqual(d.read(d.entries[1]), files[1].data);
  d.close();
  bytes[crcAt] ^= 0x01;
  // Cut before its end record: not a zip, said as such.
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 30));
  assert.throws(() => new ZipFile(file), (e: Error) => e instanceof UsageError && /x64\.zip/.test(e.message));
});

test('omniglot from a zip64 archive: the images decode as from the PNG files', async () => {
  const dir = tmpDir();
  const files: Array<{ name: string; data: Buffer }> = [];
  let k = 0;
  for (const alphabet of ['Alpha', 'Beta']) {
    for (const drawer of ['01', '02', '16']) {
      const png = path.join(dir, 'png', `${alphabet}${drawer}.png`);
      await writeImage(png, 'png', k, Number(drawer));
      files.push({ name: `images_background/${alphabet}/character01/0${k + 1}01_${drawer}.png`, data: fs.readFileSync(png) });
    }
    k++;
  }
  const zip = path.join(dir, 'images_background.zip');
  fs.writeFileSync(zip, zip64(files));
  const cfg = resolveConfig([parseSets(['data.format=omniglot', `data.root=${zip}`, 'data.image_size=8', `data.cache_dir=${path.join(dir, 'cache')}`, 'data.channels=1'])]);
  const d = await loadDataset(cfg, () => {});
  assert.equal(d.train.ids.length, 4);
  assert.equal(d.test.ids.length, 2);
  const want: number[] = [];
  for (const id of d.train.ids) for (const v of await decodeImage(files.find((f) => f.name === id)!.data, 8, 1)) want.push(Math.fround(v * (1 / 255)));
  assert.deepEqual(Array.from(readAll(d.train.x, true)), want);
});
