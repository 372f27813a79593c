import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EngineInfo, engineMismatch } from '../src/engine';
import { nativeIsa } from '../src/engine/backend';

/** The engine a process has now: the native kernels on `isa`, 1 thread. */
function nativeNow(native: string | undefined): EngineInfo {
  return { backend: 'native', requested: 'native', threads: 1, device: 'cpu', kernels: 'onednn', native, fallbacks: [], capabilities: {}, versions: {} } as unknown as EngineInfo;
}

test('nativeIsa reads the instruction set from the native kernels description; older descriptions name none', () => {
  assert.equal(nativeIsa('oneDNN 2.6.3 (OpenMP, avx2), 2 threads'), 'avx2');
  assert.equal(nativeIsa('oneDNN 3.4.1 (avx512_core_amx), 1 thread'), 'avx512_core_amx');
  assert.equal(nativeIsa('oneDNN 2.6.3 (OpenMP), 2 threads'), null);
  assert.equal(nativeIsa(undefined), null);
});

test('a resume on a CPU whose oneDNN kernels use another instruction set is refused, naming both; the same set or an unrecorded one passes', () => {
  const before = { backend: 'native', threads: 1, kernels: 'onednn', native_kernels: 'oneDNN 2.6.3 (OpenMP, avx512_core), 1 thread' };
  const m = engineMismatch(before, nativeNow('oneDNN 2.6.3 (OpenMP, avx2), 1 thread'));
  assert.ok(m, 'avx512_core then, avx2 now must differ');
  assert.match(m.what, /avx512_core then, avx2 now/);
  assert.match(m.resume, /where oneDNN uses avx512_core/);
  assert.equal(engineMismatch(before, nativeNow('oneDNN 2.6.3 (OpenMP, avx512_core), 1 thread')), null);
  // A run recorded before the set was named, or a process whose description names none: not judged.
  assert.equal(engineMismatch({ ...before, native_kernels: 'oneDNN 2.6.3 (OpenMP), 1 thread' }, nativeNow('oneDNN 2.6.3 (OpenMP, avx2), 1 thread')), null);
  assert.equal(engineMismatch(before, nativeNow(undefined)), null);
});
