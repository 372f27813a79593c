/**
 * Real-world data faults (issue 12; the outside checks are ../shared/cases/NN):
 * each test is the essence of one case, driven through the real loaders and
 * commands on tiny fixtures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { parseSets, readConfigFile, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { taxonomyTree } from '../src/hierarchy/taxonomy';
import { findRunDirs } from '../src/report/runs';
import { loadSweep, steps } from '../src/sweep/run';
import { UsageError } from '../src/util/errors';
import { writeFolderDataset, writeImage } from './data-fixtures';
import { CLI, cli, holdRunLock, metricRows, QUICKSTART, ROOT, slow, tmpDir, TINY } from './helpers';

const quiet = () => {};
const folderCfg = (root: string, ...sets: string[]) =>
  resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', ...sets])]);

// Case 08: a separator character inside a name.
test("a '/' inside a taxon name is part of the name: no phantom level, no merged genera (case 08)", async () => {
  const root = tmpDir();
  const taxonomy = [
    'kingdom,family,genus,species',
    'Plantae,Poaceae/Gramineae,Ammophila,arenaria',
    'Plantae,Poaceae/Gramineae,Elymus,repens',
    'Animalia,Sphecidae,Sphex,funerarius',
    'Animalia,Sphecidae,Ammophila,sabulosa',
  ].join('\n');
  await writeFolderDataset(root, { taxonomy, leaves: { arenaria: [2, 1], repens: [2, 1], funerarius: [2, 1], sabulosa: [2, 1] } });
  const h = (await loadDataset(folderCfg(root), quiet)).hierarchy;
  assert.equal(h.maxDepth, 4, 'the four columns are the four levels');
  assert.equal(h.resolveLevel('family').classes.length, 2);
  const genus = h.resolveLevel('genus');
  assert.deepEqual(genus.classes.map((c) => h.path(c)), [
    'Animalia/Sphecidae/Ammophila',
    'Animalia/Sphecidae/Sphex',
    'Plantae/Poaceae~1Gramineae/Ammophila',
    'Plantae/Poaceae~1Gramineae/Elymus',
  ]);
  assert.equal(h.node(genus.classes[3]).name, 'Elymus');
  assert.equal(h.node(h.node(genus.classes[3]).parent!).name, 'Poaceae/Gramineae');
  // The name selects the family; its escaped path does too.
  for (const spec of ['Poaceae/Gramineae', 'Plantae/Poaceae~1Gramineae']) {
    const d = await loadDataset(folderCfg(root, `data.include=[${JSON.stringify(spec)}]`), quiet);
    assert.deepEqual(d.hierarchy.classes.map((c) => d.hierarchy.node(c).name), ['arenaria', 'repens'], spec);
  }
});

test('taxonomy rows are keyed by their list of names, for every source of rows (iNat fields too)', () => {
  const levels = ['a', 'b', 'c'];
  const rows = [
    { names: ['X/Y', 'Z', 'k1'], key: 'k1', where: 'row 1' },
    { names: ['X', 'Y/Z', 'k2'], key: 'k2', where: 'row 2' },
    { names: ['X', 'Y', 'Z/k3'], key: 'Z/k3', where: 'row 3' },
    { names: ['X~1Y', 'Z', 'k4'], key: 'k4', where: 'row 4' },
  ];
  const { hierarchy: h, classOfKey } = taxonomyTree(levels, rows, 'test');
  assert.equal(h.maxDepth, 3);
  assert.equal(h.resolveLevel('a').classes.length, 3, "'X/Y', 'X' and 'X~1Y' are three top-level taxa");
  assert.equal(new Set(classOfKey.values()).size, 4);
  assert.equal(h.path(classOfKey.get('Z/k3')!), 'X/Y/Z~1k3');
  // nodes:FILE takes a whole line as a node id (names may hold spaces), else its first word.
  const spaced = taxonomyTree(['g', 's'], [{ names: ['Alpha', 'Alpha one'], key: 'a1', where: 'r1' }, { names: ['Beta', 'Beta two'], key: 'b2', where: 'r2' }], 'test').hierarchy;
  const list = path.join(tmpDir(), 'nodes.txt');
  fs.writeFileSync(list, 'Alpha/Alpha one\nBeta  the second genus\n');
  const lv = spaced.resolveLevel(`nodes:${list}`);
  assert.deepEqual(lv.classes, ['Alpha/Alpha one', 'Beta']);
  // The same key under two name lists that join to the same string with '/' is still a conflict.
  assert.throws(
    () => taxonomyTree(levels, [rows[0], { names: ['X', 'Y/Z', 'k1'], key: 'k1', where: 'row 9' }], 'test'),
    (e: Error) => e instanceof UsageError && /'k1' under 'X' > 'Y\/Z' \(row 9\) and 'X\/Y' > 'Z' \(row 1\)/.test(e.message),
  );
});

// Case 12: YAML syntax inside a --set value.
test("--set: '=' inside a value is kept; text YAML would drop is refused with the quoted form (case 12)", () => {
  assert.deepEqual(parseSets(['data.root=/d/epoch=3/data']), { data: { root: '/d/epoch=3/data' } });
  assert.deepEqual(parseSets(['data.root="/d/inat #2"']), { data: { root: '/d/inat #2' } });
  assert.deepEqual(parseSets(['data.root=/d/inat#2']), { data: { root: '/d/inat#2' } }, "'#' without a space before it is text in YAML");
  const refused = (item: string, re: RegExp) =>
    assert.throws(() => parseSets([item]), (e: Error) => e instanceof UsageError && re.test(e.message), item);
  refused('data.root=/d/inat #2', /reads '#2' in the value as a comment.*Quote it.*--set 'data\.root="\/d\/inat #2"'/);
  refused('name=---', /document marker.*--set 'name="---"'/);
  refused('name=&a x', /an anchor/);
  refused('data.root=@mine', /not valid YAML: Plain value cannot start with reserved character @ \(at character 1 of the value\)\. Quote it to pass it as text: --set 'data\.root="@mine"'/);
  refused('data.root=`x', /reserved character `/);
});

test('every command that takes --set refuses a value YAML would cut, and writes nothing (case 12)', () => {
  const dir = tmpDir();
  const item = `data.root=${dir}/inat #2`;
  for (const args of [
    ['pretrain', '--config', QUICKSTART, ...TINY, '--set', item, '--run-dir', path.join(dir, 'p')],
    ['finetune', '--config', QUICKSTART, ...TINY, '--set', item, '--run-dir', path.join(dir, 'f')],
    ['hierarchy', '--set', item],
  ]) {
    const r = cli(args, { cwd: dir });
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /as a comment.*Quote it/, args[0]);
  }
  assert.deepEqual(fs.readdirSync(dir), []);
});

// Case 16: Unicode normalization.
const NFD = (s: string) => s.normalize('NFD');
const NFC = (s: string) => s.normalize('NFC');

test('names are compared in NFC: NFD folders match NFC taxonomy rows, include specs and iNat file names; files are read by their on-disk names (case 16)', async () => {
  const root = tmpDir();
  const leaves = ['Pâquerette', 'Scheltopusik_Ü', 'plain'];
  await writeFolderDataset(root, { taxonomy: `family,species\nAsteraceae,${NFC(leaves[0])}\nAnguidae,${NFC(leaves[1])}\nAnguidae,plain\n`, leaves: Object.fromEntries(leaves.map((l) => [NFD(l), [2, 1]])) });
  assert.ok(fs.readdirSync(path.join(root, 'train')).includes(NFD('Pâquerette')), 'the fixture folders are NFD on disk');
  const ds = await loadDataset(folderCfg(root, `data.exclude=[${NFD('Scheltopusik_Ü')}]`), quiet);
  assert.deepEqual(ds.hierarchy.classes.map((c) => ds.hierarchy.path(c)), ['Anguidae/plain', NFC('Asteraceae/Pâquerette')]);
  assert.equal(ds.skipped, 0, 'every image was read through its on-disk (NFD) path');
  assert.ok(ds.train.ids.includes(`train/${NFC('Pâquerette')}/img0.png`), 'ids are NFC');
  assert.equal(ds.train.y.length, 4);

  // Two folders whose names differ only in normalization would be one class: refused, naming both.
  fs.mkdirSync(path.join(root, 'train', NFC('Pâquerette')));
  await assert.rejects(loadDataset(folderCfg(root), quiet), (e: Error) => e instanceof UsageError && /differ only in Unicode normalization/.test(e.message));
});

test('iNat file names in NFC find NFD files on disk (case 16)', async () => {
  const root = tmpDir();
  const cats = [{ id: 0, kingdom: 'K', phylum: 'P', class: 'C', order: 'O', family: 'F', genus: 'G', name: NFC('Pâquerette') }, { id: 1, kingdom: 'K', phylum: 'P', class: 'C', order: 'O', family: 'F', genus: 'H', name: 'x' }];
  for (const [part, n] of [['train', 2], ['val', 1]] as const) {
    const images: Array<{ id: number; file_name: string }> = [];
    const annotations: Array<{ id: number; image_id: number; category_id: number }> = [];
    for (let k = 0; k < 2; k++) {
      for (let i = 0; i < n; i++) {
        const id: number = images.length;
        const rel = `${part}/${NFC('dossier_é')}/${k}_${i}.png`;
        await writeImage(path.join(root, NFD(rel)), 'png', k, i);
        images.push({ id, file_name: rel });
        annotations.push({ id, image_id: id, category_id: k });
      }
    }
    fs.writeFileSync(path.join(root, `${part}.json`), JSON.stringify({ images, annotations, categories: cats }));
  }
  const cfg = resolveConfig([parseSets(['data.format=inat2021', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', 'data.duplicates=keep'])]);
  const ds = await loadDataset(cfg, quiet);
  assert.equal(ds.train.y.length, 4);
  assert.equal(ds.skipped, 0);
  assert.equal(ds.hierarchy.resolveLevel(NFD('species')).classes.length, 2);
});

// Case 20: symbolic links.
test('symlinked class folders are followed like image files, in imagefolder and wordnet data; a dangling one is named (case 20)', async () => {
  const dir = tmpDir();
  const pool = path.join(dir, 'pool');
  await writeFolderDataset(pool, { taxonomy: null, leaves: { a: [2, 1], b: [2, 1], c: [2, 1] } });
  const root = path.join(dir, 'data');
  for (const part of ['train', 'test']) {
    fs.mkdirSync(path.join(root, part), { recursive: true });
    fs.cpSync(path.join(pool, part, 'a'), path.join(root, part, 'a'), { recursive: true });
    fs.cpSync(path.join(pool, part, 'b'), path.join(root, part, 'b'), { recursive: true });
    fs.symlinkSync(`../../pool/${part}/c`, path.join(root, part, 'c'));
  }
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,leaf\nG,a\nG,b\nH,c\n');
  fs.writeFileSync(path.join(root, 'is_a.txt'), 'top G\ntop H\nG a\nG b\nH c\n');
  const imf = await loadDataset(folderCfg(root), quiet);
  assert.equal(imf.hierarchy.classes.length, 3);
  assert.equal(imf.train.y.length, 6);
  const wn = await loadDataset(resolveConfig([parseSets(['data.format=wordnet', `data.root=${root}`, `data.is_a=${root}/is_a.txt`, 'data.image_size=8', 'data.cache_dir=null'])]), quiet);
  assert.deepEqual([...wn.hierarchy.classes].sort(), ['a', 'b', 'c']);

  // An image link that cannot be followed is an unreadable image: counted, never silently dropped.
  fs.symlinkSync('nowhere.png', path.join(root, 'train', 'a', 'gone.png'));
  const lines: string[] = [];
  const withGone = await loadDataset(folderCfg(root), (l) => lines.push(l));
  assert.equal(withGone.skipped, 1);
  assert.match(lines.join('\n'), /train\/a\/gone\.png/);
  // A class folder link that cannot be followed is refused, naming the link and its target.
  fs.symlinkSync('../../pool/train/missing', path.join(root, 'train', 'd'));
  await assert.rejects(loadDataset(folderCfg(root), quiet), (e: Error) => e instanceof UsageError && /train\/d' is a symbolic link to '..\/..\/pool\/train\/missing', which cannot be followed \(ENOENT\)/.test(e.message));
});

test('report finds run folders behind symbolic links, once each, even through a link loop (case 20)', () => {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'elsewhere', 'run1'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'elsewhere', 'run1', 'config.yaml'), 'name: x\n');
  fs.mkdirSync(path.join(dir, 'runs'));
  fs.symlinkSync('../elsewhere', path.join(dir, 'runs', 'linked'));
  fs.symlinkSync('..', path.join(dir, 'runs', 'loop'));
  assert.deepEqual(findRunDirs([path.join(dir, 'runs')]).map((d) => path.relative(dir, d)), ['runs/linked/run1']);
});

// Case 23: names claimed to the second.
const DIST = path.resolve(__dirname, '..');

/** Run `script` (CommonJS, with `dist` bound to dist/) in `n` processes at once; their stdout lines. */
async function race(n: number, script: string): Promise<string[]> {
  const go = Date.now() + 400; // every process waits for the same instant, so their calls collide
  const one = () =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', `const dist = ${JSON.stringify(DIST)}; while (Date.now() < ${go}); ${script}`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}`))));
    });
  return Promise.all(Array.from({ length: n }, one));
}

test('output folders are claimed atomically: one each for processes asking for the same name at once (case 23)', async () => {
  const base = path.join(tmpDir(), 'runs', 'pretrain-x-20250101-000000');
  const got = await race(6, `console.log(require(dist + '/src/util/fsx').claimNewDir(${JSON.stringify(base)}))`);
  assert.deepEqual([...got].sort(), [base, ...[2, 3, 4, 5, 6].map((n) => `${base}-${n}`)].sort());
});

test('run.lock is taken by exactly one of several processes, fresh or stale (case 23)', async () => {
  for (const stale of [null, 'run.lock.d', 'run.lock'] as const) {
    const dir = tmpDir();
    if (stale) {
      // A lock whose holder died a minute ago: its heartbeat (the folder's mtime) stopped then. Either
      // today's layout (run.lock.d, and run.lock with a PID that is alive here and decides nothing) or
      // that of granular between #22 and it (run.lock a heartbeat folder).
      fs.mkdirSync(path.join(dir, stale));
      if (stale === 'run.lock.d') fs.writeFileSync(path.join(dir, 'run.lock'), '1\n');
      fs.writeFileSync(path.join(dir, 'run.lock.info'), JSON.stringify({ host: 'elsewhere', pid: 1, started: '2025-01-01T00:00:00Z' }));
      const then = new Date(Date.now() - 60_000);
      fs.utimesSync(path.join(dir, stale), then, then);
    }
    const script = `const rd = require(dist + '/src/runs/rundir');
      try { rd.acquireLock(${JSON.stringify(dir)}); const t0 = Date.now(); const mine = require('fs').readFileSync(${JSON.stringify(path.join(dir, 'run.lock'))}, 'utf8') === process.pid + '\\n'; Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500); const t1 = Date.now(); rd.releaseLock(${JSON.stringify(dir)}); console.log((mine ? 'got ' : 'run.lock is not mine ') + t0 + ' ' + t1); }
      catch (e) { console.log(/is in use by/.test(e.message) ? 'refused' : e.message); }`;
    const got = await race(5, script);
    // Never two holders at once; those that do not get it are refused (a process that starts late, after
    // the holder released the lock, may take it in its turn). A holder that lost its lock would have been killed (race rejects).
    const held = got.filter((g) => g.startsWith('got ')).map((g) => g.split(' ').slice(1).map(Number)).sort((a, b) => a[0] - b[0]);
    assert.ok(held.length >= 1 && got.every((g) => g === 'refused' || g.startsWith('got ')), `stale=${stale}: ${got}`);
    for (let i = 1; i < held.length; i++) assert.ok(held[i][0] >= held[i - 1][1], `stale=${stale}: two holders at once: ${got}`);
    assert.ok(got.filter((g) => g === 'refused').length >= 2, `stale=${stale}: processes starting together are refused: ${got}`);
    assert.equal(fs.existsSync(path.join(dir, 'run.lock')), false, 'released by its owner');
    assert.deepEqual(fs.readdirSync(dir), [], 'no temp or takeover files left');
  }
});

test('runs and evals started together without --run-dir each get their own folder (case 23)', async () => {
  const cwd = tmpDir();
  const start = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, GRANULAR_THREADS: '1' } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  const runs = await Promise.all([0, 1, 2].map((s) => start(['pretrain', '--config', QUICKSTART, ...TINY, '--set', 'train.epochs=1', '--set', 'eval.dynamics_every=0', '--set', `seed=${s}`, '--quiet'])));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const dirs = fs.readdirSync(path.join(cwd, 'runs'));
  assert.equal(dirs.length, 3, dirs.join(', '));
  for (const d of dirs) {
    const rows = metricRows(path.join(cwd, 'runs', d)).filter((r) => r.kind === 'epoch');
    assert.equal(rows.length, 2, `${d}: epoch 0 and 1 only, written by one process`);
  }
  const run = path.join('runs', dirs[0]);
  const evals = await Promise.all([start(['eval', run]), start(['eval', run])]);
  for (const r of evals) assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.readdirSync(path.join(cwd, run, 'eval')).length, 2);
  // eval takes --set too: a value YAML would cut is refused there as well (case 12).
  const cut = cli(['eval', run, '--set', 'eval.ood_root=/d/ood #2'], { cwd });
  assert.equal(cut.code, 2, cut.stderr);
  assert.match(cut.stderr, /as a comment.*Quote it/);
});

// Case 17: commands interpreted twice.
/** Every `granular sweep ... --dry-run | ...` recipe in the docs and in `sweep --help`. */
function documentedRecipes(): Array<{ where: string; line: string }> {
  const out: Array<{ where: string; line: string }> = [];
  const take = (where: string, text: string) => {
    for (const raw of text.split('\n')) {
      const m = raw.match(/^\s*(granular sweep \S+ .*--dry-run.*\|.*?)(\s{2,}#.*)?$/);
      if (m) out.push({ where, line: m[1].trim() });
    }
  };
  for (const doc of ['README.md', 'examples/README.md']) take(doc, fs.readFileSync(path.join(ROOT, doc), 'utf8'));
  take('granular sweep --help', cli(['sweep', '--help']).stdout);
  return out;
}

// Slow (~1 min on 2 quiet cores: ~40 CLI processes per recipe); CI runs it (GRANULAR_SLOW=1).
test('every documented --dry-run recipe runs each printed command exactly as printed (case 17)', slow, () => {
  const recipes = documentedRecipes();
  assert.ok(recipes.length >= 4, `found ${recipes.length} recipes`);
  for (const { line } of recipes) assert.doesNotMatch(line, /-I\s*\{\}|-i\b|parallel/, `${line}: a recipe that interprets a command twice, or one this test cannot run`);
  const dir = tmpDir();
  const values = ['/d/a b', "/d/it's", '/d/x;y', '/d/$HOME', '/d/back\\slash', '/d/*', '/d/q"d', '/d/h #2', '/d/`id`', '-x', '/d/two\nlines', "/d/it's $HOME", '/d/!bang'];
  const sweep = path.join(dir, 's.yaml');
  fs.writeFileSync(sweep, YAML.stringify({ name: 'quoting', base: QUICKSTART, stages: { pretrain: { grid: { 'data.cache_dir': values } }, finetune: { from: 'pretrain', grid: { 'data.cache_dir': ['/o/a b', '/o/$x'] } } } }));
  // `granular` on PATH (and GRANULAR=granular, so the printed lines call it): the real CLI for `sweep`,
  // a recorder of its arguments for the printed commands; bin/granular.js in the working folder records too.
  // (test/printed-commands.test.ts runs the default prefix for real.)
  const record = path.join(dir, 'record.js');
  fs.writeFileSync(record, `require('fs').appendFileSync(process.env.RECORD, JSON.stringify(process.argv.slice(2)) + '\\n');\n`);
  fs.mkdirSync(path.join(dir, 'shim'));
  fs.writeFileSync(path.join(dir, 'shim', 'granular'), `#!/bin/sh\nif [ "$1" = sweep ]; then exec "${process.execPath}" "${CLI}" "$@"; fi\nexec "${process.execPath}" "${record}" "$@"\n`, { mode: 0o755 });
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.copyFileSync(record, path.join(dir, 'bin', 'granular.js'));
  const loaded = loadSweep(sweep, 'runs', dir);
  const planned = (stage?: string) => steps(loaded, false, dir).filter((s) => !stage || s.run.stage === stage).map((s) => JSON.stringify([...s.args!, '--quiet']));
  for (const { where, line } of recipes) {
    const out = path.join(dir, 'record.jsonl');
    fs.rmSync(out, { force: true });
    const cmd = line.replace(/^granular sweep \S+/, `granular sweep ${sweep}`);
    const r = spawnSync('bash', ['-c', cmd], { cwd: dir, encoding: 'utf8', env: { ...process.env, RECORD: out, GRANULAR: 'granular', PATH: `${path.join(dir, 'shim')}:${process.env.PATH}` } });
    assert.equal(r.status, 0, `${where}: ${line}\n${r.stderr}`);
    const got = fs.readFileSync(out, 'utf8').trim().split('\n').sort();
    const stage = line.match(/--stage (\S+)/)?.[1];
    assert.deepEqual(got, planned(stage).sort(), `${where}: ${line}`);
  }
  // Values travel as YAML (a line break in one is written '\n'), but a path with a line break
  // cannot be one line of --dry-run: refused, nothing printed.
  const odd = path.join(dir, 'two\nlines');
  fs.mkdirSync(odd);
  fs.copyFileSync(QUICKSTART, path.join(odd, 'base.yaml'));
  fs.writeFileSync(sweep, YAML.stringify({ name: 'odd', base: 'two\nlines/base.yaml', stages: { pretrain: { grid: { seed: [0] } } } }));
  const r = cli(['sweep', sweep, '--dry-run'], { cwd: dir });
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /line break.*--emit shell/);
});

// Also seen: a cycle message named a node below the cycle and not the file.
test('an is-a cycle is reported with the file, the nodes on it in order and their lines, not the nodes below it', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: null, leaves: { n1: [1, 1], n2: [1, 1] } });
  const isA = path.join(root, 'wordnet.is_a.txt');
  const cfg = resolveConfig([parseSets(['data.format=wordnet', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null'])]);
  const refused = async (edges: string, re: RegExp) => {
    fs.writeFileSync(isA, edges);
    await assert.rejects(loadDataset(cfg, quiet), (e: Error) => {
      assert.ok(e instanceof UsageError, e.message);
      assert.match(e.message, re);
      assert.ok(e.message.startsWith(isA), `names the file first: ${e.message}`);
      assert.doesNotMatch(e.message, /n1|n2/, 'the classes below the cycle are not on it');
      return true;
    });
  };
  // Below a root: a -> b -> c -> a, class n1 under c.
  await refused('r a\na b\nb c\nc a\nc n1\nr n2\n', /has a cycle: b -> c -> a -> b \(lines 3, 4, 2\)\. Remove one edge/);
  // No root at all.
  await refused('# comment\nx y\ny x\ny n1\nx n2\n', /no node without a parent\): x -> y -> x \(lines 2, 3\)/);
});

// Also seen: a SIGKILLed sweep left its child running, and the next sweep blocked the child's dependents.
test('a SIGKILLed sweep takes its runs down (resumably); the next sweep adopts a live run by its lock and waits for it', async () => {
  const dir = tmpDir();
  const sweep = {
    name: 'kill',
    base: QUICKSTART,
    stages: {
      // Enough epochs left after the kill for the watchdog's 0.5 s poll to land mid-run on a fast machine.
      pretrain: { grid: { seed: [0] }, set: { 'data.synthetic.train_samples': 240, 'data.synthetic.test_samples': 60, 'train.epochs': 40, 'eval.dynamics_every': 0 } },
      finetune: { from: 'pretrain', set: { 'train.level': 'top', 'train.epochs': 1 } },
    },
  };
  fs.writeFileSync(path.join(dir, 's.yaml'), YAML.stringify(sweep));
  const runDir = path.join(dir, 'runs', 'kill', 'pretrain-seed=0');
  const ftDir = path.join(dir, 'runs', 'kill', 'finetune-seed=0');
  const until = async (what: string, ok: () => boolean, ms = 60_000) => {
    for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 100))) if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
  };
  const epochs = () => (fs.existsSync(path.join(runDir, 'metrics.jsonl')) ? metricRows(runDir).filter((r) => r.kind === 'epoch').length : 0);
  const status = () => (fs.existsSync(path.join(runDir, 'summary.json')) ? JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8')).status : null);

  // 1. SIGKILL the sweep mid-run: its child notices within a poll and stops at a step boundary.
  const first = spawn(process.execPath, [CLI, 'sweep', 's.yaml'], { cwd: dir, stdio: 'ignore', env: { ...process.env, GRANULAR_THREADS: '1' } });
  await until('the first epoch', () => epochs() >= 2);
  first.kill('SIGKILL');
  await until('the orphaned run to stop', () => status() !== null && !fs.existsSync(path.join(runDir, 'run.lock')), 20_000);
  assert.equal(status(), 'interrupted');
  assert.ok(epochs() < 41, 'it stopped before finishing');

  // 2. A live process holds the run (its lock): the next sweep waits for it instead of blocking
  //    the fine-tuning run, and resumes the run itself once that process is gone.
  // Its heartbeat stops when it is killed below; 2 s later the lock is stale (GRANULAR_LOCK_STALE_MS).
  const holder = await holdRunLock(runDir, { GRANULAR_LOCK_STALE_MS: '2000' });
  let log = '';
  const second = spawn(process.execPath, [CLI, 'sweep', 's.yaml'], { cwd: dir, env: { ...process.env, GRANULAR_THREADS: '1', GRANULAR_LOCK_STALE_MS: '2000' } });
  second.stderr.on('data', (d) => (log += d));
  second.stdout.on('data', (d) => (log += d));
  const done = new Promise<number | null>((resolve) => second.on('exit', (code) => resolve(code)));
  await until('the sweep to adopt the run', () => /waiting for pretrain-seed=0: it is running in process/.test(log));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(fs.existsSync(ftDir), false, 'the fine-tuning run waits for its adopted source');
  holder.kill('SIGKILL');
  assert.equal(await done, 0, log);
  assert.match(log, /adopted pretrain-seed=0: interrupted; resuming it/);
  assert.equal(status(), 'completed');
  assert.equal(JSON.parse(fs.readFileSync(path.join(ftDir, 'summary.json'), 'utf8')).status, 'completed');
});

// Case 22: relative paths saved in a run.
test('paths: a --config file is read relative to its folder, --set relative to the working folder; config.yaml stores them absolute (case 22)', () => {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'proj', 'configs'), { recursive: true });
  const file = path.join(dir, 'proj', 'configs', 'c.yaml');
  fs.writeFileSync(file, 'data: {root: ../data, taxonomy: tax.csv, cache_dir: cache, is_a: /abs/is_a.txt}\neval: {ood_root: ood}\ntrain: {level: "nodes:list.txt"}\n');
  const fromFile = resolveConfig([readConfigFile(path.relative(process.cwd(), file))]);
  assert.equal(fromFile.data.root, path.join(dir, 'proj', 'data'));
  assert.equal(fromFile.data.taxonomy, path.join(dir, 'proj', 'configs', 'tax.csv'));
  assert.equal(fromFile.data.cache_dir, path.join(dir, 'proj', 'configs', 'cache'));
  assert.equal(fromFile.data.is_a, '/abs/is_a.txt');
  assert.equal(fromFile.eval.ood_root, path.join(dir, 'proj', 'configs', 'ood'));
  assert.equal(fromFile.train.level, `nodes:${path.join(dir, 'proj', 'configs', 'list.txt')}`);
  const fromSets = resolveConfig([parseSets(['data.root=d', 'train.level=nodes:n.txt'], dir)]);
  assert.equal(fromSets.data.root, path.join(dir, 'd'));
  assert.equal(fromSets.train.level, `nodes:${path.join(dir, 'n.txt')}`);
  assert.equal(resolveConfig([]).data.cache_dir, path.resolve('datasets/cache'), 'a default is the working folder\'s');
  assert.equal(resolveConfig([parseSets(['data.annotations.train=t.json'], dir)]).data.annotations.train, 't.json', 'annotations stay relative to data.root');
});

/** Two project folders with data/ of the same layout and file names but colours swapped between the classes. */
async function twoProjects(): Promise<string> {
  const dir = tmpDir();
  for (const [proj, shift] of [['A', 0], ['B', 1]] as const) {
    const root = path.join(dir, proj, 'data');
    for (const [k, cls] of ['cat', 'dog'].entries()) {
      for (let i = 0; i < 4; i++) await writeImage(path.join(root, 'train', cls, `img${i}.png`), 'png', (k + shift) % 2 ? 3 : 0, i);
      for (let i = 0; i < 2; i++) await writeImage(path.join(root, 'test', cls, `img${i}.png`), 'png', (k + shift) % 2 ? 3 : 0, i + 50);
    }
    fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'leaf\ncat\ndog\n');
  }
  fs.writeFileSync(path.join(dir, 'A', 'cfg.yaml'), 'data: {format: imagefolder, root: data, image_size: 8, val_fraction: 0, cache_dir: null}\nmodel: {arch: cnn-small, width: 0.5}\ntrain: {epochs: 15, batch_size: 4, lr: 0.01, optimizer: adam, schedule: constant}\neval: {dynamics_every: 0}\n');
  return dir;
}

test('a run made with a relative data.root reads its own images from any folder: eval, finetune --from (case 22)', async () => {
  const dir = await twoProjects();
  const A = path.join(dir, 'A');
  const B = path.join(dir, 'B');
  const pre = cli(['pretrain', '--config', 'cfg.yaml', '--run-dir', 'runs/src', '--quiet'], { cwd: A });
  assert.equal(pre.code, 0, pre.stderr);
  const stored = YAML.parse(fs.readFileSync(path.join(A, 'runs', 'src', 'config.yaml'), 'utf8'));
  assert.equal(stored.data.root, path.join(A, 'data'));
  const acc = (out: string) => Number(out.match(/test_acc=([\d.]+)/)![1]);
  const ea = cli(['eval', 'runs/src'], { cwd: A });
  const eb = cli(['eval', '../A/runs/src'], { cwd: B });
  assert.equal(eb.code, 0, eb.stderr);
  assert.equal(acc(ea.stdout), 1, 'A\'s images are learned (B\'s, colours swapped, would score 0)');
  assert.equal(acc(eb.stdout), acc(ea.stdout), 'the same run scores the same from any folder');
  const ft = cli(['finetune', '--from', '../A/runs/src', '--level', 'leaf', '--freeze', 'all', '--set', 'train.epochs=1', '--run-dir', 'runs/ft', '--quiet'], { cwd: B });
  assert.equal(ft.code, 0, ft.stderr);
  assert.equal(YAML.parse(fs.readFileSync(path.join(B, 'runs', 'ft', 'config.yaml'), 'utf8')).data.root, path.join(A, 'data'));
});

test('the images of a saved split are checked against the content hashes the run recorded: eval and --resume refuse other pictures under the same names (case 22)', async () => {
  const dir = await twoProjects();
  const A = path.join(dir, 'A');
  const run = path.join(A, 'runs', 'src');
  assert.equal(cli(['pretrain', '--config', 'cfg.yaml', '--set', 'train.epochs=1', '--run-dir', 'runs/src', '--quiet'], { cwd: A }).code, 0);
  const rec = JSON.parse(fs.readFileSync(path.join(run, 'split.json'), 'utf8'));
  assert.equal(rec.hashes.test.length, rec.test.length, 'split.json records a content hash per image');
  // A config.yaml that points at B's data (as a relative data.root read from B did): same names, other pictures.
  const cfgFile = path.join(run, 'config.yaml');
  fs.writeFileSync(cfgFile, fs.readFileSync(cfgFile, 'utf8').replace(path.join(A, 'data'), path.join(dir, 'B', 'data')));
  const ev = cli(['eval', run]);
  assert.equal(ev.code, 2, ev.stderr);
  assert.match(ev.stderr, /12 of its 12 images have other content than when the run recorded them \(split\.json content hashes\): train\/cat\/img0\.png/);
  assert.equal(fs.existsSync(path.join(run, 'eval')), false);
  // --resume of a crashed run whose data changed since.
  fs.writeFileSync(cfgFile, fs.readFileSync(cfgFile, 'utf8').replace(path.join(dir, 'B', 'data'), path.join(A, 'data')));
  fs.rmSync(path.join(run, 'summary.json'));
  fs.copyFileSync(path.join(dir, 'B', 'data', 'test', 'dog', 'img1.png'), path.join(A, 'data', 'test', 'dog', 'img1.png'));
  const res = cli(['pretrain', '--resume', run, '--quiet']);
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /--resume '.*src': 1 of its 12 images have other content.*: test\/dog\/img1\.png\./);
});

// Case 18: test images the source trained on.
test('a fine-tuning test set that overlaps the source training set is refused naming the images, however it was made (case 18)', async () => {
  const dir = tmpDir();
  const data = path.join(dir, 'data');
  await writeFolderDataset(data, { taxonomy: 'group,leaf\nwarm,red\nwarm,yellow\ncool,green\ncool,blue\n', leaves: { red: [6, 0], yellow: [6, 0], green: [6, 0], blue: [6, 0] }, flat: true });
  fs.writeFileSync(path.join(dir, 'cfg.yaml'), 'data: {format: imagefolder, root: data, test_fraction: 0.5, image_size: 8, val_fraction: 0, cache_dir: null}\nmodel: {arch: cnn-small, width: 0.25}\ntrain: {epochs: 1, batch_size: 8}\neval: {dynamics_every: 0}\n');
  assert.equal(cli(['pretrain', '--config', 'cfg.yaml', '--run-dir', 'runs/src', '--quiet'], { cwd: dir }).code, 0);
  const ft = (name: string, ...sets: string[]) => cli(['finetune', '--from', 'runs/src', '--level', 'top', '--freeze', 'all', ...sets.flatMap((s) => ['--set', s]), '--run-dir', `runs/${name}`, '--quiet'], { cwd: dir });
  // The source's own data: its split is reused, and nothing overlaps.
  const same = ft('same');
  assert.equal(same.code, 0, same.stderr);
  // A split made again (another seed, a larger test fraction), or the same pictures copied under
  // another folder name: the new test set holds images the source trained on.
  fs.cpSync(data, path.join(dir, 'copy'), { recursive: true });
  for (const [name, sets] of [['seed', ['data.seed=1']], ['fraction', ['data.test_fraction=0.7']], ['copy', [`data.root=${path.join(dir, 'copy')}`, 'data.seed=1']]] as const) {
    const r = ft(name, ...sets);
    assert.equal(r.code, 2, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /\d+ of the \d+ fine-tuning test images are images the source run 'runs\/src' trained on \(same file content\): (red|yellow|green|blue)\/img\d+\.png/, name);
    assert.equal(fs.existsSync(path.join(dir, 'runs', name)), false, `${name}: nothing written`);
  }
  // The same pictures under another folder name with the source's own seed: the same test set, allowed.
  const copy = ft('copy-same', `data.root=${path.join(dir, 'copy')}`);
  assert.equal(copy.code, 0, copy.stderr);
});
