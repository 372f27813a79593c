import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers';

test('skipUnless: no skip when nothing is missing; the reason when something is; a failure instead when CI requires it', () => {
  const saved = process.env.GRANULAR_REQUIRE_WEBGPU;
  try {
    delete process.env.GRANULAR_REQUIRE_WEBGPU;
    assert.equal(skipUnless(null), false);
    assert.equal(skipUnless('no WebGPU adapter'), 'no WebGPU adapter');
    process.env.GRANULAR_REQUIRE_WEBGPU = '1';
    assert.equal(skipUnless(null), false);
    assert.throws(() => skipUnless('no WebGPU adapter'), /GRANULAR_REQUIRE_WEBGPU=1, but the tests here cannot run: no WebGPU adapter/);
    assert.equal(skipUnless('no zip', 'GRANULAR_REQUIRE_OTHER'), 'no zip');
  } finally {
    if (saved === undefined) delete process.env.GRANULAR_REQUIRE_WEBGPU;
    else process.env.GRANULAR_REQUIRE_WEBGPU = saved;
  }
});
