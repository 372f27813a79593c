import { UsageError } from '../util/errors';
import { Hierarchy, joinNames } from './tree';

/** One class of a rank table: its names from the coarsest rank down to itself, and the key data refers to it by. */
export interface TaxonRow {
  /** Names per level, coarsest first; the last is the class's own name. */
  names: string[];
  /** What the data calls the class (a folder name, a category id). */
  key: string;
  /** Where the row came from, for messages ("line 7"). */
  where: string;
}

function some(xs: string[], n = 5): string {
  return xs.slice(0, n).join('; ') + (xs.length > n ? `; and ${xs.length - n} more` : '');
}

/**
 * A tree from a rank table (taxonomy.csv, iNat categories). A node is keyed by
 * its list of names from the root (its depth is the column or field the name
 * came from), so a genus name that occurs in two families is two nodes, and a
 * name may hold any character: 'Poaceae/Gramineae' is one family, never two
 * levels. Node ids are the names joined by '/', each escaped as a JSON Pointer
 * token (RFC 6901: '~' -> '~0', '/' -> '~1'), which keeps ids one-to-one with
 * name lists. The same key listed under two different paths is an error, as
 * is a row with an empty name. Level names come from `levels` by depth.
 */
export function taxonomyTree(levels: readonly string[], rows: readonly TaxonRow[], source: string): { hierarchy: Hierarchy; classOfKey: Map<string, string> } {
  const blank = rows.filter((r) => r.names.length !== levels.length || r.names.some((n) => n === ''));
  if (blank.length) {
    throw new UsageError(`${source}: ${blank.length} row(s) do not name all ${levels.length} levels (${levels.join(', ')}): ${some(blank.map((r) => `${r.where}: ${r.names.join(',')}`))}. Fill in every level.`);
  }
  const shown = (names: readonly string[]) => names.map((n) => `'${n}'`).join(' > ');
  const rowOfKey = new Map<string, TaxonRow>();
  const conflicts: string[] = [];
  for (const r of rows) {
    const prev = rowOfKey.get(r.key);
    if (!prev) rowOfKey.set(r.key, r);
    else if (joinNames(prev.names) !== joinNames(r.names)) conflicts.push(`'${r.key}' under ${shown(r.names.slice(0, -1))} (${r.where}) and ${shown(prev.names.slice(0, -1))} (${prev.where})`);
  }
  if (conflicts.length) throw new UsageError(`${source}: ${conflicts.length} class(es) have two different parents: ${some(conflicts, 3)}. Each class must appear under one parent.`);
  const nodes = new Map<string, { id: string; parent: string | null; name: string }>();
  const classOfKey = new Map<string, string>();
  const keysOfPath = new Map<string, number>();
  for (const r of rowOfKey.values()) keysOfPath.set(joinNames(r.names), (keysOfPath.get(joinNames(r.names)) ?? 0) + 1);
  for (const [key, { names }] of rowOfKey) {
    let parent: string | null = null;
    for (let d = 0; d < names.length; d++) {
      let id = joinNames(names.slice(0, d + 1));
      // Two keys with the same names (iNat can list a species twice): keep them apart by key.
      if (d === names.length - 1 && keysOfPath.get(joinNames(names))! > 1) id = `${id}#${key}`;
      if (!nodes.has(id)) nodes.set(id, { id, parent, name: names[d] });
      parent = id;
    }
    classOfKey.set(key, parent!);
  }
  const classes = [...new Set(classOfKey.values())].sort();
  const levelNames = new Map(levels.map((n, i) => [i + 1, n]));
  // The finest level is the classes themselves: `leaf` already names it, but its own name works too.
  return { hierarchy: new Hierarchy('root', [...nodes.values()], classes, levelNames), classOfKey };
}
