/** Checks file stamps off the main thread (see ./stamp.ts, changedInBackground). */
import { parentPort, workerData } from 'node:worker_threads';
import { changedHere, StampJob } from './stamp';

parentPort!.postMessage(changedHere(workerData as StampJob));
