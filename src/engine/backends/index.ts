/**
 * Every backend granular can run on, one module each, in the order
 * `--backend auto` tries them (DESIGN.md: a hardware GPU, else TensorFlow,
 * else the native oneDNN kernels, else wasm, else cpu). A new backend is a
 * module implementing EngineModule (../types) and one line here.
 */
import { EngineModule } from '../types';
import { cpu } from './cpu';
import { native } from './native';
import { tensorflow } from './tensorflow';
import { wasm } from './wasm';
import { webgpu } from './webgpu';

export const BACKENDS: readonly EngineModule[] = [webgpu, tensorflow, native, wasm, cpu];
