import * as fs from 'node:fs';
import { UsageError } from '../../util/errors';

const LBRACE = 0x7b, RBRACE = 0x7d, LBRACK = 0x5b, RBRACK = 0x5d, QUOTE = 0x22, BSLASH = 0x5c, COLON = 0x3a, COMMA = 0x2c;

/** Bare NaN / Infinity (Python's json.dump writes them) become null, so JSON.parse accepts the text. */
export function parseLenientJson(text: string): unknown {
  return JSON.parse(text.replace(/([:[,]\s*)-?(?:NaN|Infinity)(?=\s*[,}\]])/g, '$1null'));
}

/**
 * Stream the elements of chosen top-level arrays of a JSON object file
 * (`{"images": [...], "annotations": [...]}`) to `onElement`, one parsed
 * element at a time. The file is read in chunks and never held whole, so a
 * multi-gigabyte COCO file costs only what the caller keeps; NaN is accepted.
 */
export function scanTopLevelArrays(file: string, wanted: ReadonlySet<string>, onElement: (key: string, element: unknown) => void): { bytes: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new UsageError(`cannot read the annotation file '${file}'. Check data.root and data.annotations.*.`);
  }
  const chunk = Buffer.alloc(16 << 20);
  let depth = 0;
  let inString = false;
  let escaped = false;
  let expectKey = false;
  let keyBytes: number[] | null = null;
  let key = '';
  let active: string | null = null;
  let pieces: Buffer[] | null = null;
  let elemStart = -1;
  let elemDepth = 0;
  let bytes = 0;
  let sawObject = false;
  let bare = false; // the element holds a bare word other than true/false/null (NaN, Infinity)
  const finish = (buf: Buffer, start: number, end: number) => {
    const text = pieces!.length ? Buffer.concat([...pieces!, buf.subarray(start, end)]).toString('utf8') : buf.toString('utf8', start, end);
    pieces = null;
    let value: unknown;
    try {
      // A failed JSON.parse costs more than the element: only text with NaN takes the slow path.
      value = bare ? parseLenientJson(text) : JSON.parse(text);
    } catch (e) {
      throw new UsageError(`${file}: an element of '${active}' is not valid JSON (${(e as Error).message}) near byte ${bytes}.`);
    }
    onElement(active!, value);
  };
  try {
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      elemStart = pieces ? 0 : -1;
      for (let i = 0; i < n; i++) {
        const b = chunk[i];
        if (inString) {
          if (escaped) escaped = false;
          else if (b === BSLASH) escaped = true;
          else if (b === QUOTE) {
            inString = false;
            if (keyBytes) {
              key = Buffer.from(keyBytes).toString('utf8');
              keyBytes = null;
            }
          } else if (keyBytes) keyBytes.push(b);
          continue;
        }
        if (b === QUOTE) {
          inString = true;
          if (depth === 1 && expectKey) keyBytes = [];
        } else if (b === LBRACE || b === LBRACK) {
          depth++;
          if (depth === 1) {
            if (b !== LBRACE) throw new UsageError(`${file}: expected a JSON object at the top level.`);
            sawObject = true;
            expectKey = true;
          } else if (depth === 2 && b === LBRACK && wanted.has(key)) {
            active = key;
          } else if (active && depth === 3) {
            pieces = [];
            elemStart = i;
            elemDepth = 3;
            bare = false;
          }
        } else if (b === RBRACE || b === RBRACK) {
          if (pieces && depth === elemDepth) {
            finish(chunk, elemStart, i + 1);
            elemStart = -1;
          }
          depth--;
          if (depth === 1) active = null;
        } else if (depth === 1) {
          if (b === COLON) expectKey = false;
          else if (b === COMMA) expectKey = true;
        } else if (b === 0x4e || b === 0x49) bare = true; // 'N'aN, 'I'nfinity outside strings
      }
      if (pieces && elemStart >= 0) pieces.push(Buffer.from(chunk.subarray(elemStart, n)));
      bytes += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  if (!sawObject || depth !== 0) throw new UsageError(`${file}: not a complete JSON object (truncated file?).`);
  return { bytes };
}
