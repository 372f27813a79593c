/**
 * data.channels: auto — whether a dataset's training images are stored in
 * colour, read from their file headers (the bytes a listing can afford: no
 * pixel is decoded), so RGB photos train as RGB without the user knowing
 * the key, and grey scans stay one channel.
 */
import sharp from 'sharp';
import { Config } from '../../config/schema';
import { UsageError } from '../../util/errors';

/** How data.channels was settled for a run: the value, and why (start line, config.yaml, split.json). */
export interface ChannelsDecision {
  channels: 1 | 3;
  /** True when data.channels was `auto`. */
  auto: boolean;
  /** One clause saying why, e.g. "train/cat/1.jpg is stored in colour (a 3-component JPEG)". */
  reason: string;
}

/** The resolved channel count of a config; `auto` must have been settled by loadDataset first. */
export function channelsOf(cfg: Config): 1 | 3 {
  const c = cfg.data.channels;
  if (c === 'auto') throw new Error('data.channels is still auto: loadDataset settles it before anything reads it');
  return c;
}

/** What a file header says about colour: true/false, or null when the header is not enough (then the caller asks sharp). */
export type HeaderColour = { colour: boolean; what: string } | null;

const greyTriples = (b: Buffer, from: number, to: number): boolean => {
  for (let p = from; p + 2 < to; p += 3) if (b[p] !== b[p + 1] || b[p + 1] !== b[p + 2]) return false;
  return true;
};

/**
 * Colour from the first bytes of an image file, without decoding it:
 * PNG (IHDR colour type; a palette counts as grey when every entry has
 * R = G = B), JPEG (components of the SOF segment: 1 grey, 3 or 4 colour),
 * GIF (the global colour table), Netpbm (P1/P2/P4/P5 grey, P3/P6 colour).
 * A file stored as RGB counts as colour even if its pixels happen to be grey
 * (the header cannot tell; data.channels: 1 says so). Null for other formats
 * or headers cut off before the answer. Formats: the PNG specification
 * (W3C, 2003) section 11.2, ITU T.81 (JPEG) B.2.2, GIF89a section 18.
 */
export function colourFromHeader(b: Buffer): HeaderColour {
  if (b.length >= 26 && b.readUInt32BE(0) === 0x89504e47 && b.toString('latin1', 12, 16) === 'IHDR') {
    const type = b[25];
    if (type === 0 || type === 4) return { colour: false, what: 'a grey PNG' };
    if (type === 2 || type === 6) return { colour: true, what: 'an RGB PNG' };
    if (type !== 3) return null;
    // Palette: find PLTE among the chunks.
    let p = 8;
    while (p + 8 <= b.length) {
      const len = b.readUInt32BE(p);
      const kind = b.toString('latin1', p + 4, p + 8);
      if (kind === 'PLTE') {
        if (p + 8 + len > b.length) return null;
        const grey = greyTriples(b, p + 8, p + 8 + len);
        return { colour: !grey, what: grey ? 'a PNG with a grey palette' : 'a PNG with a colour palette' };
      }
      if (kind === 'IDAT' || kind === 'IEND') return null;
      p += 12 + len;
    }
    return null;
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let p = 2;
    while (p + 4 <= b.length) {
      if (b[p] !== 0xff) return null;
      const m = b[p + 1];
      if (m === 0xff) {
        p++; // fill byte
        continue;
      }
      if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
        p += 2;
        continue;
      }
      const len = b.readUInt16BE(p + 2);
      const sof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
      if (sof) {
        if (p + 9 >= b.length) return null;
        const n = b[p + 9];
        return { colour: n >= 3, what: `a ${n}-component JPEG` };
      }
      if (m === 0xda || m === 0xd9) return null;
      p += 2 + len;
    }
    return null;
  }
  if (b.length >= 13 && b.toString('latin1', 0, 4) === 'GIF8') {
    const packed = b[10];
    if (!(packed & 0x80)) return null;
    const end = 13 + 3 * (1 << ((packed & 7) + 1));
    if (end > b.length) return null;
    const grey = greyTriples(b, 13, end);
    return { colour: !grey, what: grey ? 'a GIF with a grey colour table' : 'a GIF with a colour table' };
  }
  if (b.length >= 2 && b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x36) {
    const colour = b[1] === 0x33 || b[1] === 0x36;
    return { colour, what: colour ? 'a PPM' : 'a PBM/PGM' };
  }
  return null;
}

/** Colour of a whole image file: its header, else what sharp reads of it (WebP, TIFF, ...); null when neither can tell. */
export async function fileColour(b: Buffer): Promise<HeaderColour> {
  const h = colourFromHeader(b);
  if (h) return h;
  try {
    const m = await sharp(b).metadata();
    const grey = m.space === 'b-w' || (m.channels ?? 3) <= 2;
    return { colour: !grey, what: `${grey ? 'a grey' : 'a colour'} ${m.format ?? 'image'}` };
  } catch {
    return null; // unreadable: the decode step names it
  }
}

/**
 * data.channels: auto, from the training images (`ids`, in listing order):
 * 3 at the first one stored in colour, 1 when none is. `head(id)` gives the
 * first bytes of a file (enough for PNG, JPEG, GIF and Netpbm headers);
 * `whole(id)` the file, for formats whose header says less. Unreadable
 * files are left to the decode step (they are skipped or fail there).
 */
export async function decideChannels(ids: readonly string[], head: (id: string) => Buffer | Promise<Buffer>, whole: (id: string) => Buffer | Promise<Buffer>): Promise<ChannelsDecision> {
  let told = 0;
  for (const id of ids) {
    let c: HeaderColour = null;
    try {
      c = colourFromHeader(await head(id)) ?? (await fileColour(await whole(id)));
    } catch {
      continue;
    }
    if (!c) continue;
    told++;
    if (c.colour) return { channels: 3, auto: true, reason: `${id} is stored in colour (${c.what})` };
  }
  if (told === 0 && ids.length) {
    throw new UsageError(`data.channels is auto, but none of the ${ids.length} training images could be read to tell grey from colour. Check the image files, or set data.channels=1 or 3.`);
  }
  return { channels: 1, auto: true, reason: `none of the ${ids.length.toLocaleString('en-US')} training images is stored in colour` };
}
