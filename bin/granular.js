#!/usr/bin/env node
// The CLI is written in TypeScript and compiled to dist/ by `npm ci` (the
// `prepare` script). This shim only finds it.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'bin', 'granular.js');
if (!fs.existsSync(entry)) {
  process.stderr.write("granular: not built yet. Run 'npm ci' (or 'npm run build') in " + path.join(__dirname, '..') + '\n');
  process.exit(2);
}
require(entry);
