import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';

/** A small image whose brightness depends on class `k` and picture `i` (distinct for i < 256), with some texture. */
function pixels(size: number, channels: number, k: number, i: number): Buffer {
  const b = Buffer.alloc(size * size * channels);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++)
      for (let c = 0; c < channels; c++) b[(y * size + x) * channels + c] = (k * 50 + ((x + y) % 4) * 10 + i * 31 + c * 20) % 256;
  return b;
}

export type Kind = 'png' | 'jpg' | 'ppm' | 'png1';

/** Write one image file of `kind`: PNG (RGB), JPEG, binary PPM, or a 1-bit palette PNG. */
export async function writeImage(file: string, kind: Kind, k = 0, i = 0, size = 12): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (kind === 'ppm') {
    const raw = pixels(size, 3, k, i);
    fs.writeFileSync(file, Buffer.concat([Buffer.from(`P6\n${size} ${size}\n255\n`), raw]));
    return;
  }
  const img = sharp(pixels(size, 3, k, i), { raw: { width: size, height: size, channels: 3 } });
  if (kind === 'jpg') await img.jpeg().toFile(file);
  else if (kind === 'png1') await img.threshold(128).png({ palette: true, colours: 2 }).toFile(file);
  else await img.png().toFile(file);
}

export interface FolderSpec {
  /** taxonomy.csv text, or null to write none. */
  taxonomy: string | null;
  /** leaf folder -> [train count, test count] */
  leaves: Record<string, [number, number]>;
  kind?: Kind;
  /** Put the class folders straight in the root (for data.test_fraction). */
  flat?: boolean;
}

/** An imagefolder (or wordnet) dataset in `root`. */
export async function writeFolderDataset(root: string, spec: FolderSpec): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  if (spec.taxonomy !== null) fs.writeFileSync(path.join(root, 'taxonomy.csv'), spec.taxonomy);
  let k = 0;
  for (const [leaf, [nTrain, nTest]] of Object.entries(spec.leaves)) {
    const kind = spec.kind ?? 'png';
    const ext = kind === 'png1' ? 'png' : kind;
    if (spec.flat) {
      for (let i = 0; i < nTrain + nTest; i++) await writeImage(path.join(root, leaf, `img${i}.${ext}`), kind, k, i);
    } else {
      for (let i = 0; i < nTrain; i++) await writeImage(path.join(root, 'train', leaf, `img${i}.${ext}`), kind, k, i);
      for (let i = 0; i < nTest; i++) await writeImage(path.join(root, 'test', leaf, `img${i}.${ext}`), kind, k, i + 100);
      if (nTrain === 0) fs.mkdirSync(path.join(root, 'train', leaf), { recursive: true });
    }
    k++;
  }
}

/** family,genus,species with a genus name ('Alpha') that occurs in two families. */
export const TAXONOMY = 'family,genus,species\nF1,Alpha,a1\nF1,Alpha,a2\nF1,Beta,b1\nF2,Alpha,c1\nF2,Gamma,g1\nF2,Gamma,g2\n';
export const LEAVES: Record<string, [number, number]> = { a1: [6, 3], a2: [6, 3], b1: [6, 3], c1: [6, 3], g1: [6, 3], g2: [6, 3] };
