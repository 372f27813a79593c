#!/usr/bin/env node
// Builds the optional oneDNN kernels: native/onednn.cc -> native/build/granular_onednn.node
// (`npm run build:native`; `npm ci` runs it too, through `prepare`).
//
// Optional on purpose: when the compiler, Node's headers or oneDNN are
// missing, it says what to install and exits 0, and granular runs on its
// wasm kernels alone. GRANULAR_NATIVE_STRICT=1 makes a missing piece an error;
// GRANULAR_NATIVE=0 skips the build. Overrides: CXX, NODE_INCLUDE, DNNL_INCLUDE, DNNL_LIB.
'use strict';
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const out = path.join(here, 'build', 'granular_onednn.node');
const strict = process.env.GRANULAR_NATIVE_STRICT === '1';

function skip(why) {
  console.error(`build:native: skipped, ${why}`);
  console.error('build:native: granular will use its wasm kernels (the native oneDNN kernels are optional)');
  process.exit(strict ? 1 : 0);
}

if (process.env.GRANULAR_NATIVE === '0') skip('GRANULAR_NATIVE=0');
if (process.platform !== 'linux' && process.platform !== 'darwin') skip(`no build recipe for ${process.platform}`);

const cxx = process.env.CXX || 'g++';
if (spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status !== 0) skip(`no C++ compiler (${cxx}); install g++ or set CXX`);

// Node's own headers: beside the running node binary, else the system's.
const prefix = path.dirname(path.dirname(process.execPath));
const nodeInclude = [process.env.NODE_INCLUDE, path.join(prefix, 'include', 'node'), '/usr/include/node', '/usr/local/include/node'].find(
  (d) => d && fs.existsSync(path.join(d, 'node_api.h')),
);
if (!nodeInclude) skip("no node_api.h (Node's headers); install them (Debian/Ubuntu: libnode-dev) or set NODE_INCLUDE");

const dnnlInclude = process.env.DNNL_INCLUDE || '/usr/include';
if (!fs.existsSync(path.join(dnnlInclude, 'oneapi', 'dnnl', 'dnnl.hpp'))) {
  skip(`no oneDNN headers (${dnnlInclude}/oneapi/dnnl/dnnl.hpp); install oneDNN (Debian/Ubuntu: apt-get install libdnnl-dev) or set DNNL_INCLUDE and DNNL_LIB`);
}
const libFlags = process.env.DNNL_LIB ? [`-L${process.env.DNNL_LIB}`, `-Wl,-rpath,${process.env.DNNL_LIB}`] : [];

fs.mkdirSync(path.dirname(out), { recursive: true });
const tmp = `${out}.tmp`;
// -fno-trapping-math: nothing here enables floating-point traps; it lets GCC
// vectorize the clamps and selects in expd's loops (same results).
const args = ['-std=c++17', '-O3', '-fno-trapping-math', '-fPIC', '-shared', '-fopenmp', '-DNODE_GYP_MODULE_NAME=granular_onednn', `-I${nodeInclude}`, `-I${dnnlInclude}`,
  path.join(here, 'onednn.cc'), '-o', tmp, ...libFlags, '-ldnnl'];
// What the addon is built from: the source, the command, Node's ABI and oneDNN's
// version header. When the addon on disk was built from the same, there is
// nothing to do (the first `npx granular` in a fresh clone runs `prepare` again).
const recipe = crypto.createHash('sha256');
for (const part of [fs.readFileSync(path.join(here, 'onednn.cc')), cxx, JSON.stringify(args.map((a) => (a === tmp ? '<out>' : a))), process.versions.modules, process.arch]) recipe.update(part).update('\0');
const versionHeader = path.join(dnnlInclude, 'oneapi', 'dnnl', 'dnnl_version.h');
if (fs.existsSync(versionHeader)) recipe.update(fs.readFileSync(versionHeader));
const recipeFile = `${out}.recipe`;
const key = recipe.digest('hex');
if (fs.existsSync(out) && fs.existsSync(recipeFile) && fs.readFileSync(recipeFile, 'utf8') === key) {
  console.error('build:native: up to date (native/build/granular_onednn.node)');
  process.exit(0);
}
console.error(`build:native: ${cxx} onednn.cc -> native/build/granular_onednn.node (Node headers ${nodeInclude}, oneDNN ${dnnlInclude})`);
const r = spawnSync(cxx, args, { stdio: 'inherit' });
if (r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  skip('compiling or linking onednn.cc failed (see above)');
}
// A rename, so a running process that loaded the old addon keeps its file.
fs.renameSync(tmp, out);
fs.writeFileSync(recipeFile, key);
console.error('build:native: ok');
