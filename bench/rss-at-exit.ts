/**
 * Preloaded into a benchmarked granular process (node --require): at exit,
 * writes the peak resident set size of the whole process (worker threads
 * included) to $GRANULAR_RSS_FILE as {"maxRssKb": N}.
 */
import * as fs from 'node:fs';

process.on('exit', () => {
  const file = process.env.GRANULAR_RSS_FILE;
  if (file) fs.writeFileSync(file, JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS }));
});
