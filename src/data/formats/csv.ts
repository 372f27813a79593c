import { parse } from 'csv-parse/sync';
import { UsageError } from '../../util/errors';

/**
 * Parse CSV text with csv-parse (RFC 4180: comma separated, "quoted" fields
 * with "" for a quote, LF, CRLF or CR line ends, a byte-order mark ignored).
 * Rows may differ in length; cells are trimmed; rows whose only cell is blank
 * are skipped. Malformed text (an unclosed quote, a quote followed by text)
 * is a UsageError naming `file` and the line.
 */
export function parseCsv(text: string, file = 'CSV text'): string[][] {
  let rows: string[][];
  try {
    rows = parse(text, { bom: true, record_delimiter: ['\r\n', '\n', '\r'], relax_column_count: true, relax_quotes: true, skip_empty_lines: true, trim: true }) as string[][];
  } catch (e) {
    throw new UsageError(`${file} is not valid CSV: ${(e as Error).message}. Fix the quoting (a quote inside a quoted field is written "").`);
  }
  return rows.map((r) => r.map((c) => c.trim())).filter((r) => r.length > 1 || r[0] !== '');
}
