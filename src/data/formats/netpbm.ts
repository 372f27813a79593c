/**
 * Netpbm (PBM/PGM/PPM, plain and binary) to raw 8-bit pixels: sharp's loader
 * for these reads only from files, and datasets hand us buffers.
 */
export interface RawImage {
  data: Buffer;
  width: number;
  height: number;
  channels: 1 | 3;
}

export function isNetpbm(buf: Buffer): boolean {
  return buf.length > 2 && buf[0] === 0x50 && buf[1] >= 0x31 && buf[1] <= 0x36; // 'P1'..'P6'
}

export function decodeNetpbm(buf: Buffer): RawImage {
  const kind = buf[1] - 0x30;
  let p = 2;
  const token = (): number => {
    for (;;) {
      while (p < buf.length && /\s/.test(String.fromCharCode(buf[p]))) p++;
      if (buf[p] === 0x23) while (p < buf.length && buf[p] !== 0x0a) p++; // '#' comment
      else break;
    }
    const start = p;
    while (p < buf.length && buf[p] >= 0x30 && buf[p] <= 0x39) p++;
    if (p === start) throw new Error('truncated netpbm header');
    return Number(buf.toString('latin1', start, p));
  };
  const width = token();
  const height = token();
  const bitmap = kind === 1 || kind === 4;
  const maxval = bitmap ? 1 : token();
  if (!width || !height || !maxval || maxval > 65535) throw new Error('bad netpbm header');
  const channels: 1 | 3 = kind === 3 || kind === 6 ? 3 : 1;
  const n = width * height * channels;
  const out = Buffer.alloc(n);
  const scale = (v: number) => (bitmap ? (v ? 0 : 255) : Math.round((v * 255) / maxval)); // PBM: 1 = black
  if (kind <= 3) {
    for (let i = 0; i < n; i++) {
      if (kind === 1) {
        while (p < buf.length && (buf[p] < 0x30 || buf[p] > 0x31)) p++;
        if (p >= buf.length) throw new Error('truncated netpbm data');
        out[i] = scale(buf[p++] - 0x30);
      } else out[i] = scale(token());
    }
  } else {
    p++; // the single whitespace after the header
    if (kind === 4) {
      const row = Math.ceil(width / 8);
      if (buf.length < p + row * height) throw new Error('truncated netpbm data');
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) out[y * width + x] = scale((buf[p + y * row + (x >> 3)] >> (7 - (x & 7))) & 1);
    } else {
      const bytes = maxval > 255 ? 2 : 1;
      if (buf.length < p + n * bytes) throw new Error('truncated netpbm data');
      for (let i = 0; i < n; i++) out[i] = scale(bytes === 2 ? buf.readUInt16BE(p + 2 * i) : buf[p + i]);
    }
  }
  return { data: out, width, height, channels };
}
