/**
 * A granular network as an ONNX model (the inference graph: batch norm with
 * its moving statistics; opset 17, IR version 8), so that onnxruntime or any
 * ONNX runtime can run a trained run (commands/export.ts).
 *
 * The graph is translated layer by layer from the network's saved tfjs graph
 * (Network.layersModel(), the graph that model/model.json stores), so every
 * architecture granular builds from these layers exports: Conv2D, TorchConv2D,
 * BatchNormalization, ReLU, SmoothReLU, MaxPooling2D, TorchMaxPool2D,
 * AveragePooling2D, GlobalAveragePooling2D, Add, Concatenate, Dense (linear,
 * relu, gelu), TokenEmbedding, MultiHeadSelfAttention, TorchLayerNorm,
 * TokenPool. A layer of another class is refused by name, never skipped.
 *
 * Layout: the input is NCHW ([N, C, H, W], as torch.onnx.export of the
 * matching torchvision/timm model takes it) or, with layout 'nhwc', granular's
 * own [N, H, W, C] followed by one Transpose. Inside, 4-D tensors are NCHW
 * (ONNX's Conv, pooling and BatchNormalization need channels first): kernels
 * go HWIO -> OIHW and channel-axis concatenations to axis 1. The batch
 * dimension is symbolic ('N'). Outputs: `logits` [N, classes] of the primary
 * head (a multi-level network's extra heads are not exported).
 *
 * The protobuf is written by `onnx-proto` (ONNX's onnx.proto compiled for
 * protobufjs); the operator definitions are ONNX's (onnx/docs/Operators.md).
 */
import * as tf from '@tensorflow/tfjs';
import { onnx } from 'onnx-proto';
import { UsageError } from '../util/errors';
import { Network } from './network';

export const ONNX_OPSET = 17;
/** IR version 8 goes with opset 17 (onnx 1.12). */
const IR_VERSION = 8;

export type OnnxLayout = 'nchw' | 'nhwc';

export interface OnnxOptions {
  /** Layout of the model's input; 'nchw' (PyTorch's) by default. */
  layout?: OnnxLayout;
  /** The model's doc_string (what the input is: size, normalisation, layout). */
  docString?: string;
  /** metadata_props of the model (string values). */
  metadata?: Record<string, string>;
}

type Node = { input: string[]; output: string[]; opType: string; name: string; attribute: object[] };
type Shape = Array<number | null>;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

/** An NHWC axis of a 4-D tensor as its NCHW axis. */
const NCHW_AXIS = [0, 2, 3, 1];

/** Builds the node list and initializers of one graph; names are unique by construction. */
class GraphBuilder {
  readonly nodes: Node[] = [];
  readonly initializers: object[] = [];
  private n = 0;

  private unique(base: string): string {
    return `${base}_${this.n++}`;
  }

  /** One node with `attrs` (number -> int, float via {f}, number[] -> ints, string -> s); returns its single output. */
  op(opType: string, inputs: string[], attrs: Record<string, number | number[] | string | { f: number }> = {}, out?: string): string {
    const output = out ?? this.unique(opType.toLowerCase());
    const attribute = Object.entries(attrs).map(([name, v]) => {
      if (Array.isArray(v)) return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: v };
      if (typeof v === 'string') return { name, type: onnx.AttributeProto.AttributeType.STRING, s: Buffer.from(v, 'utf8') };
      if (typeof v === 'object') return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v.f };
      return { name, type: onnx.AttributeProto.AttributeType.INT, i: v };
    });
    this.nodes.push({ input: inputs, output: [output], opType, name: `${opType}_${this.nodes.length}`, attribute });
    return output;
  }

  /** A float32 initializer. */
  f32(name: string, dims: number[], data: Float32Array): string {
    const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.initializers.push({ name, dims, dataType: FLOAT, rawData: Buffer.from(raw) });
    return name;
  }

  /** An int64 initializer (shapes, axes, indices); `dims` [] for a scalar. */
  i64(values: number[], dims: number[] = [values.length]): string {
    const name = this.unique('const');
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims, dataType: INT64, rawData: Buffer.from(data.buffer) });
    return name;
  }

  /** A float32 scalar initializer. */
  scalar(v: number): string {
    return this.f32(this.unique('scalar'), [], Float32Array.of(v));
  }
}

/** A layer's weights by their short name (`kernel`, `gamma`, ...), as float32 values and shapes. */
async function layerWeights(layer: tf.layers.Layer): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const w of layer.weights) {
    const v = w.read();
    // await data(): a GPU backend has no synchronous readback.
    out.set(w.originalName.split('/').pop()!, { shape: v.shape.slice(), data: (await v.data()) as Float32Array });
  }
  return out;
}

/** HWIO [kh, kw, in, out] -> OIHW [out, in, kh, kw]. */
function oihw(w: { shape: number[]; data: Float32Array }): { shape: number[]; data: Float32Array } {
  const [kh, kw, ci, co] = w.shape;
  const out = new Float32Array(w.data.length);
  for (let h = 0; h < kh; h++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < ci; i++)
        for (let o = 0; o < co; o++) out[((o * ci + i) * kh + h) * kw + x] = w.data[((h * kw + x) * ci + i) * co + o];
  return { shape: [co, ci, kh, kw], data: out };
}

/** TensorFlow's 'same' padding of one spatial axis: [before, after] (the odd pixel after). */
function samePads(size: number, k: number, stride: number): [number, number] {
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + k - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

const pair = (v: number | number[]): [number, number] => (Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]);

/** ONNX pads [top, left, bottom, right] of a 2-D window on an NHWC input shape. */
function windowPads(padding: string, shape: Shape, k: [number, number], s: [number, number], where: string): number[] {
  if (padding === 'valid') return [0, 0, 0, 0];
  if (padding !== 'same') throw new UsageError(`${where}: padding '${padding}' has no ONNX export.`);
  const [t, b] = samePads(shape[1]!, k[0], s[0]);
  const [l, r] = samePads(shape[2]!, k[1], s[1]);
  return [t, l, b, r];
}

/**
 * The ONNX model of `net` (see the file comment) as protobuf bytes. Reads the
 * weights from the network's variables. Throws UsageError for a layer (or a
 * layer option) with no translation here, naming it.
 */
export async function networkToOnnx(net: Network, opts: OnnxOptions = {}): Promise<Uint8Array> {
  const layout = opts.layout ?? 'nchw';
  const model = net.layersModel();
  const g = new GraphBuilder();
  const [H, W, C] = net.inputShape;
  const names = new Map<number, string>();
  let inputName = '';

  const translate = async (t: tf.SymbolicTensor): Promise<string> => {
    const known = names.get(t.id);
    if (known !== undefined) return known;
    const layer = t.sourceLayer;
    const ins: string[] = [];
    for (const i of t.inputs) ins.push(await translate(i));
    const name = await emit(layer, ins, t.inputs.map((i) => i.shape), t.shape);
    names.set(t.id, name);
    return name;
  };

  const emit = async (layer: tf.layers.Layer, ins: string[], inShapes: Shape[], outShape: Shape): Promise<string> => {
    const cls = layer.getClassName();
    const cfg = layer.getConfig() as Record<string, unknown>;
    const where = `layer '${layer.name}' (${cls})`;
    const w = await layerWeights(layer);
    const weight = (k: string) => {
      const v = w.get(k);
      if (!v) throw new UsageError(`${where} has no '${k}' weight; cannot export it.`);
      return v;
    };
    const init = (k: string, v: { shape: number[]; data: Float32Array }) => g.f32(`${layer.name}.${k}`, v.shape, v.data);
    const x = ins[0];
    const activation = (y: string, act: unknown): string => {
      switch (act ?? 'linear') {
        case 'linear':
          return y;
        case 'relu':
          return g.op('Relu', [y]);
        case 'gelu': {
          // tfjs-layers' gelu: x * 0.5 * (1 + erf(x / sqrt(2))).
          const erf = g.op('Erf', [g.op('Div', [y, g.scalar(Math.SQRT2)])]);
          return g.op('Mul', [y, g.op('Mul', [g.scalar(0.5), g.op('Add', [g.scalar(1), erf])])]);
        }
        default:
          throw new UsageError(`${where}: activation '${String(act)}' has no ONNX export.`);
      }
    };
    switch (cls) {
      case 'InputLayer':
        inputName = 'image';
        return layout === 'nchw' ? inputName : g.op('Transpose', [inputName], { perm: [0, 3, 1, 2] });
      case 'Conv2D': {
        if (cfg.dataFormat !== 'channelsLast' || pair(cfg.dilationRate as number).some((d) => d !== 1)) throw new UsageError(`${where}: only undilated channels-last convolutions export.`);
        const k = pair(cfg.kernelSize as number);
        const s = pair(cfg.strides as number);
        const kernel = oihw(weight('kernel'));
        const inputs = [x, init('kernel', kernel), ...(cfg.useBias ? [init('bias', weight('bias'))] : [])];
        const y = g.op('Conv', inputs, { kernel_shape: k, strides: s, pads: windowPads(String(cfg.padding), inShapes[0], k, s, where) });
        return activation(y, cfg.activation);
      }
      case 'TorchConv2D': {
        const k = cfg.kernelSize as number;
        const p = cfg.pad as number;
        const inputs = [x, init('kernel', oihw(weight('kernel'))), ...(cfg.useBias ? [init('bias', weight('bias'))] : [])];
        return g.op('Conv', inputs, { kernel_shape: [k, k], strides: [cfg.strides as number, cfg.strides as number], pads: [p, p, p, p] });
      }
      case 'BatchNormalization': {
        const axis = cfg.axis as number;
        if (inShapes[0].length !== 4 || (axis !== -1 && axis !== 3)) throw new UsageError(`${where}: only a batch norm over the channels of an image exports.`);
        const c = outShape[3]!;
        const scale = cfg.scale === false ? new Float32Array(c).fill(1) : weight('gamma').data;
        const bias = cfg.center === false ? new Float32Array(c) : weight('beta').data;
        const ws = [
          g.f32(`${layer.name}.gamma`, [c], scale),
          g.f32(`${layer.name}.beta`, [c], bias),
          init('moving_mean', weight('moving_mean')),
          init('moving_variance', weight('moving_variance')),
        ];
        return g.op('BatchNormalization', [x, ...ws], { epsilon: { f: cfg.epsilon as number } });
      }
      case 'ReLU':
        if (cfg.maxValue != null || cfg.negativeSlope || cfg.threshold) throw new UsageError(`${where}: only a plain ReLU exports.`);
        return g.op('Relu', [x]);
      case 'SmoothReLU': {
        // models/smooth-relu.ts: relu(z) clipped at rho, to the power q, over q rho^(q-1); plus relu(relu(z) - rho).
        const { q, rho } = cfg as { q: number; rho: number };
        const pos = g.op('Relu', [x]);
        const poly = g.op('Div', [g.op('Pow', [g.op('Min', [pos, g.scalar(rho)]), g.scalar(q)]), g.scalar(q * Math.pow(rho, q - 1))]);
        return g.op('Add', [poly, g.op('Relu', [g.op('Sub', [pos, g.scalar(rho)])])]);
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const k = pair(cfg.poolSize as number);
        const s = pair((cfg.strides as number | null) ?? (cfg.poolSize as number));
        // ONNX's AveragePool leaves padding out of the count by default, as TensorFlow's 'same' does.
        return g.op(cls === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [x], { kernel_shape: k, strides: s, pads: windowPads(String(cfg.padding), inShapes[0], k, s, where) });
      }
      case 'TorchMaxPool2D': {
        const { poolSize: k, strides: s, pad: p } = cfg as { poolSize: number; strides: number; pad: number };
        return g.op('MaxPool', [x], { kernel_shape: [k, k], strides: [s, s], pads: [p, p, p, p] });
      }
      case 'GlobalAveragePooling2D':
        return g.op('ReduceMean', [x], { axes: [2, 3], keepdims: 0 });
      case 'Add':
        return ins.slice(1).reduce((a, b) => g.op('Add', [a, b]), x);
      case 'Concatenate': {
        const rank = outShape.length;
        let axis = cfg.axis as number;
        if (axis < 0) axis += rank;
        return g.op('Concat', ins, { axis: rank === 4 ? NCHW_AXIS[axis] : axis });
      }
      case 'Dense': {
        const kernel = init('kernel', weight('kernel'));
        const bias = cfg.useBias === false ? null : init('bias', weight('bias'));
        let y: string;
        if (inShapes[0].length === 2) y = g.op('Gemm', bias ? [x, kernel, bias] : [x, kernel]);
        else {
          y = g.op('MatMul', [x, kernel]);
          if (bias) y = g.op('Add', [y, bias]);
        }
        return activation(y, cfg.activation);
      }
      case 'TokenEmbedding': {
        // [N, D, gh, gw] -> [N, D, T] -> [N, T, D]: the NHWC grid's row-major order (timm's flatten(2).transpose(1, 2)).
        const [, gh, gw, d] = inShapes[0] as number[];
        let t = g.op('Transpose', [g.op('Reshape', [x, g.i64([0, d, gh * gw])])], { perm: [0, 2, 1] });
        if (cfg.classToken) {
          const batch = g.op('Slice', [g.op('Shape', [x]), g.i64([0]), g.i64([1])]);
          const cls = g.op('Expand', [init('cls_token', weight('cls_token')), g.op('Concat', [batch, g.i64([1, d])], { axis: 0 })]);
          t = g.op('Concat', [cls, t], { axis: 1 });
        }
        return g.op('Add', [t, init('pos_embed', weight('pos_embed'))]);
      }
      case 'MultiHeadSelfAttention': {
        // models/torch-layers.ts MultiHeadSelfAttention: qkv [N, T, 3, h, hd] -> [3, N, h, T, hd].
        const [, T, d] = inShapes[0] as number[];
        const h = cfg.heads as number;
        const hd = d / h;
        const qkv = g.op('Add', [g.op('MatMul', [x, init('qkv_kernel', weight('qkv_kernel'))]), init('qkv_bias', weight('qkv_bias'))]);
        const heads = g.op('Transpose', [g.op('Reshape', [qkv, g.i64([0, T, 3, h, hd])])], { perm: [2, 0, 3, 1, 4] });
        const [q, k, v] = [0, 1, 2].map((i) => g.op('Gather', [heads, g.i64([i], [])], { axis: 0 }));
        const scores = g.op('MatMul', [g.op('Mul', [q, g.scalar(1 / Math.sqrt(hd))]), g.op('Transpose', [k], { perm: [0, 1, 3, 2] })]);
        const o = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v]);
        const merged = g.op('Reshape', [g.op('Transpose', [o], { perm: [0, 2, 1, 3] }), g.i64([0, T, d])]);
        return g.op('Add', [g.op('MatMul', [merged, init('proj_kernel', weight('proj_kernel'))]), init('proj_bias', weight('proj_bias'))]);
      }
      case 'TorchLayerNorm':
        return g.op('LayerNormalization', [x, init('gamma', weight('gamma')), init('beta', weight('beta'))], { axis: -1, epsilon: { f: cfg.epsilon as number } });
      case 'TokenPool':
        return cfg.mode === 'avg' ? g.op('ReduceMean', [x], { axes: [1], keepdims: 0 }) : g.op('Gather', [x, g.i64([0], [])], { axis: 1 });
      default:
        throw new UsageError(`${where} has no ONNX translation; granular exports ${SUPPORTED.join(', ')}.`);
    }
  };

  const outputs = model.outputs;
  const logits = await translate(outputs[0]);
  // The graph's output gets its public name through an Identity.
  g.op('Identity', [logits], {}, 'logits');
  const dims = (shape: Array<number | string>) => ({ dim: shape.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) });
  const valueInfo = (name: string, shape: Array<number | string>) => ({ name, type: { tensorType: { elemType: FLOAT, shape: dims(shape) } } });
  const graph = {
    name: net.arch,
    node: g.nodes,
    initializer: g.initializers,
    input: [valueInfo(inputName, layout === 'nchw' ? ['N', C, H, W] : ['N', H, W, C])],
    output: [valueInfo('logits', ['N', net.numClasses])],
  };
  const message = onnx.ModelProto.fromObject({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    producerName: 'granular',
    graph,
    docString: opts.docString ?? '',
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  });
  return onnx.ModelProto.encode(message).finish();
}

const SUPPORTED = [
  'Conv2D', 'TorchConv2D', 'BatchNormalization', 'ReLU', 'SmoothReLU', 'MaxPooling2D', 'TorchMaxPool2D', 'AveragePooling2D', 'GlobalAveragePooling2D',
  'Add', 'Concatenate', 'Dense', 'TokenEmbedding', 'MultiHeadSelfAttention', 'TorchLayerNorm', 'TokenPool',
];
