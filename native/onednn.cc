// granular_onednn: convolution and matrix-multiply kernels from oneDNN (the
// CPU kernel library PyTorch uses), plus multi-threaded pooling, batch-norm,
// reduction and elementwise loops, for granular's `native` tfjs backend
// (src/engine/native-backend.ts) and over the tfjs wasm backend.
//
// Every function works in place on the Float32Arrays the caller passes: the
// native backend's tensor storage, or views of the wasm heap
// (backend.typedArrayFromHeap). No tensor data is copied between JavaScript
// and C++. Layouts are what tfjs uses: activations NHWC,
// filters HWIO. oneDNN primitives are expensive to create, so each is built
// once per shape and kept in a map keyed by the op and its geometry.
//
// Build: native/build.js (npm run build:native). Loaded by src/engine/native-kernels.ts.
#include <node_api.h>
#include <omp.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using dnnl::algorithm;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// ---- N-API helpers ---------------------------------------------------------

struct JsError {
  std::string message;
};

void check(napi_env env, napi_status status, const char* what) {
  if (status != napi_ok) throw JsError{std::string("granular_onednn: ") + what};
}

// A size argument of kernel `fn`: an integer > 0, else a JsError naming the kernel and the argument.
int64_t positiveSize(napi_env env, napi_value v, const char* fn, const char* what) {
  int64_t n = 0;
  if (napi_get_value_int64(env, v, &n) != napi_ok || n <= 0) throw JsError{std::string("granular_onednn: ") + fn + ": " + what + " must be a positive integer"};
  return n;
}

float* floatData(napi_env env, napi_value v, size_t minLength, const char* name) {
  bool isTyped = false;
  check(env, napi_is_typedarray(env, v, &isTyped), "napi_is_typedarray");
  if (!isTyped) throw JsError{std::string("granular_onednn: ") + name + " must be a Float32Array"};
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  check(env, napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr), "napi_get_typedarray_info");
  if (type != napi_float32_array) throw JsError{std::string("granular_onednn: ") + name + " must be a Float32Array"};
  if (length < minLength) {
    throw JsError{std::string("granular_onednn: ") + name + " holds " + std::to_string(length) + " floats, needs " +
                  std::to_string(minLength)};
  }
  if (data == nullptr && minLength > 0) throw JsError{std::string("granular_onednn: ") + name + " has no data pointer"};
  return static_cast<float*>(data);
}

std::vector<int64_t> intArray(napi_env env, napi_value v, size_t expected, const char* name) {
  bool isArray = false;
  check(env, napi_is_array(env, v, &isArray), "napi_is_array");
  if (!isArray) throw JsError{std::string("granular_onednn: ") + name + " must be an array of integers"};
  uint32_t n = 0;
  check(env, napi_get_array_length(env, v, &n), "napi_get_array_length");
  if (n != expected) {
    throw JsError{std::string("granular_onednn: ") + name + " needs " + std::to_string(expected) + " integers, got " +
                  std::to_string(n)};
  }
  std::vector<int64_t> out(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    check(env, napi_get_element(env, v, i, &e), "napi_get_element");
    check(env, napi_get_value_int64(env, e, &out[i]), "napi_get_value_int64");
  }
  return out;
}

std::vector<napi_value> args(napi_env env, napi_callback_info info, size_t n) {
  std::vector<napi_value> argv(n);
  size_t argc = n;
  check(env, napi_get_cb_info(env, info, &argc, argv.data(), nullptr, nullptr), "napi_get_cb_info");
  if (argc < n) throw JsError{"granular_onednn: expected " + std::to_string(n) + " arguments, got " + std::to_string(argc)};
  return argv;
}

bool isNullish(napi_env env, napi_value v) {
  napi_valuetype t;
  check(env, napi_typeof(env, v, &t), "napi_typeof");
  return t == napi_null || t == napi_undefined;
}

// Wraps a function body: C++ and oneDNN exceptions become JavaScript errors.
template <typename F>
napi_value guarded(napi_env env, F body) {
  try {
    return body();
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.message.c_str());
  } catch (const dnnl::error& e) {
    napi_throw_error(env, nullptr, (std::string("granular_onednn: oneDNN: ") + e.what()).c_str());
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, (std::string("granular_onednn: ") + e.what()).c_str());
  }
  return nullptr;
}

napi_value undefinedValue(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// ---- oneDNN state ------------------------------------------------------------

dnnl::engine& cpuEngine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& cpuStream() {
  static dnnl::stream s(cpuEngine());
  return s;
}

// The geometry of one NHWC/HWIO convolution, as tfjs's Conv2DInfo gives it.
struct Conv {
  int64_t n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, pt, pl, pb, pr;

  static Conv from(const std::vector<int64_t>& p) {
    Conv c{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14]};
    return c;
  }
  std::string key() const {
    std::string k;
    for (int64_t v : {n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, pt, pl, pb, pr}) k += std::to_string(v) + ",";
    return k;
  }
  int64_t srcSize() const { return n * ih * iw * ic; }
  int64_t dstSize() const { return n * oh * ow * oc; }
  int64_t weightsSize() const { return kh * kw * ic * oc; }
  // Logical dims are NCHW / OIHW whatever the layout; the tag gives the layout.
  memory::desc src(tag t) const { return memory::desc({n, ic, ih, iw}, dt::f32, t); }
  memory::desc dst(tag t) const { return memory::desc({n, oc, oh, ow}, dt::f32, t); }
  memory::desc weights(tag t) const { return memory::desc({oc, ic, kh, kw}, dt::f32, t); }
  memory::desc bias() const { return memory::desc({oc}, dt::f32, tag::x); }
  memory::dims strides() const { return {sh, sw}; }
  memory::dims padL() const { return {pt, pl}; }
  memory::dims padR() const { return {pb, pr}; }

  // Activations stay NHWC (reordering them would cost as much as the conv);
  // the weights are tiny, so oneDNN picks their layout and we reorder.
  // oneDNN 3 dropped the operation descriptors of 2.x: one builder per API.
  dnnl::convolution_forward::primitive_desc forward(bool withBias, const dnnl::primitive_attr& attr) const {
    auto& eng = cpuEngine();
    const auto kind = dnnl::prop_kind::forward_training;
    const auto alg = algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
    if (withBias) {
      return {eng, kind, alg, src(tag::nhwc), weights(tag::any), bias(), dst(tag::nhwc), strides(), padL(), padR(), attr};
    }
    return {eng, kind, alg, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR(), attr};
#else
    if (withBias) {
      return {{kind, alg, src(tag::nhwc), weights(tag::any), bias(), dst(tag::nhwc), strides(), padL(), padR()}, attr, eng};
    }
    return {{kind, alg, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR()}, attr, eng};
#endif
  }

  dnnl::convolution_backward_data::primitive_desc backwardData() const {
    auto hint = forward(false, dnnl::primitive_attr());
#if DNNL_VERSION_MAJOR >= 3
    return {cpuEngine(), algorithm::convolution_direct, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR(), hint};
#else
    return {{algorithm::convolution_direct, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR()}, cpuEngine(), hint};
#endif
  }

  dnnl::convolution_backward_weights::primitive_desc backwardWeights() const {
    auto hint = forward(false, dnnl::primitive_attr());
#if DNNL_VERSION_MAJOR >= 3
    return {cpuEngine(), algorithm::convolution_direct, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR(), hint};
#else
    return {{algorithm::convolution_direct, src(tag::nhwc), weights(tag::any), dst(tag::nhwc), strides(), padL(), padR()}, cpuEngine(), hint};
#endif
  }
};

// A primitive with the weight layout it wants and, where that is not HWIO,
// the reorder between HWIO and it (and a buffer of that layout).
struct Prepared {
  dnnl::primitive prim;
  std::string impl;
  memory::desc weightsDesc;
  bool weightsReorder = false;
  dnnl::reorder reorder;
  std::vector<float> weightsBuffer;
};

std::unordered_map<std::string, std::unique_ptr<Prepared>> cache;

void prepareWeights(Prepared& p, const Conv& c, const memory::desc& want, bool toHwio) {
  p.weightsDesc = want;
  memory::desc hwio = c.weights(tag::hwio);
  p.weightsReorder = want != hwio;
  if (!p.weightsReorder) return;
  p.weightsBuffer.resize(want.get_size() / sizeof(float) + 16);
  auto& eng = cpuEngine();
  if (toHwio) {
    p.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, want, eng, hwio));
  } else {
    p.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, hwio, eng, want));
  }
}

// The cached primitive under `key`, made on first use by `make` (which returns
// its primitive descriptor), with its weights reorder prepared.
template <typename Primitive, typename Make>
Prepared& cachedPrimitive(const std::string& key, const Conv& c, bool diffWeights, Make make) {
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto pd = make();
  auto p = std::make_unique<Prepared>();
  p->prim = Primitive(pd);
  p->impl = pd.impl_info_str();
  prepareWeights(*p, c, diffWeights ? pd.diff_weights_desc() : pd.weights_desc(), diffWeights);
  return *cache.emplace(key, std::move(p)).first->second;
}

Prepared& forwardPrimitive(const Conv& c, bool withBias, bool relu) {
  std::string key = std::string("fwd:") + (withBias ? "b" : "") + (relu ? "r" : "") + ":" + c.key();
  return cachedPrimitive<dnnl::convolution_forward>(key, c, false, [&] {
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
#if DNNL_VERSION_MAJOR >= 3
      ops.append_eltwise(algorithm::eltwise_relu, 0.f, 0.f);
#else
      ops.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
#endif
      attr.set_post_ops(ops);
    }
    return c.forward(withBias, attr);
  });
}

Prepared& backwardDataPrimitive(const Conv& c) {
  return cachedPrimitive<dnnl::convolution_backward_data>("bwd_data:" + c.key(), c, false, [&] { return c.backwardData(); });
}

Prepared& backwardWeightsPrimitive(const Conv& c) {
  return cachedPrimitive<dnnl::convolution_backward_weights>("bwd_weights:" + c.key(), c, true, [&] { return c.backwardWeights(); });
}

Conv convArg(napi_env env, napi_value v) {
  Conv c = Conv::from(intArray(env, v, 15, "conv geometry"));
  for (int64_t x : {c.n, c.ih, c.iw, c.ic, c.oh, c.ow, c.oc, c.kh, c.kw, c.sh, c.sw}) {
    if (x <= 0) throw JsError{"granular_onednn: conv geometry has a non-positive size"};
  }
  for (int64_t x : {c.pt, c.pl, c.pb, c.pr}) {
    if (x < 0) throw JsError{"granular_onednn: conv geometry has a negative padding"};
  }
  return c;
}

// The weights handed to a primitive: the HWIO array itself, or its reorder.
memory weightsIn(Prepared& p, const Conv& c, float* hwio) {
  auto& eng = cpuEngine();
  memory user(c.weights(tag::hwio), eng, hwio);
  if (!p.weightsReorder) return user;
  memory mine(p.weightsDesc, eng, p.weightsBuffer.data());
  p.reorder.execute(cpuStream(), user, mine);
  return mine;
}

// conv2d(x, filter, bias | null, y, geometry, relu): y = relu?(conv(x, filter) + bias)
napi_value Conv2D(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 6);
    Conv c = convArg(env, a[4]);
    bool withBias = !isNullish(env, a[2]);
    bool relu = false;
    check(env, napi_get_value_bool(env, a[5], &relu), "relu must be a boolean");
    float* x = floatData(env, a[0], c.srcSize(), "x");
    float* w = floatData(env, a[1], c.weightsSize(), "filter");
    float* b = withBias ? floatData(env, a[2], c.oc, "bias") : nullptr;
    float* y = floatData(env, a[3], c.dstSize(), "y");
    Prepared& p = forwardPrimitive(c, withBias, relu);
    auto& eng = cpuEngine();
    std::unordered_map<int, memory> m{{DNNL_ARG_SRC, memory(c.src(tag::nhwc), eng, x)},
                                      {DNNL_ARG_WEIGHTS, weightsIn(p, c, w)},
                                      {DNNL_ARG_DST, memory(c.dst(tag::nhwc), eng, y)}};
    if (withBias) m.emplace(DNNL_ARG_BIAS, memory(c.bias(), eng, b));
    p.prim.execute(cpuStream(), m);
    cpuStream().wait();
    return undefinedValue(env);
  });
}

// conv2dBackpropInput(dy, filter, dx, geometry): dx = the gradient of conv(x, filter) wrt x
napi_value Conv2DBackpropInput(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    Conv c = convArg(env, a[3]);
    float* dy = floatData(env, a[0], c.dstSize(), "dy");
    float* w = floatData(env, a[1], c.weightsSize(), "filter");
    float* dx = floatData(env, a[2], c.srcSize(), "dx");
    Prepared& p = backwardDataPrimitive(c);
    auto& eng = cpuEngine();
    p.prim.execute(cpuStream(), {{DNNL_ARG_DIFF_DST, memory(c.dst(tag::nhwc), eng, dy)},
                                 {DNNL_ARG_WEIGHTS, weightsIn(p, c, w)},
                                 {DNNL_ARG_DIFF_SRC, memory(c.src(tag::nhwc), eng, dx)}});
    cpuStream().wait();
    return undefinedValue(env);
  });
}

// conv2dBackpropFilter(x, dy, dw, geometry): dw = the gradient of conv(x, filter) wrt filter, HWIO
napi_value Conv2DBackpropFilter(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    Conv c = convArg(env, a[3]);
    float* x = floatData(env, a[0], c.srcSize(), "x");
    float* dy = floatData(env, a[1], c.dstSize(), "dy");
    float* dw = floatData(env, a[2], c.weightsSize(), "dw");
    // oneDNN 2.6's 1x1 weight gradient with a stride (jit_1x1, which copies
    // the strided pixels into a scratch buffer itself) corrupts the heap on
    // 2 threads at batch 1 when the input channels are not a multiple of 16.
    // We take the pixels the filter sees ourselves, so oneDNN only ever
    // sees unit-stride 1x1 convolutions. Padded strided 1x1 convolutions
    // never reach here (src/engine/native-kernels.ts passes them on).
    if (c.kh == 1 && c.kw == 1 && (c.sh > 1 || c.sw > 1)) {
      if (c.pt || c.pl || c.pb || c.pr) throw JsError{"granular_onednn: a padded strided 1x1 weight gradient is not supported"};
      static std::vector<float> picked;
      picked.resize(static_cast<size_t>(c.n * c.oh * c.ow * c.ic));
#pragma omp parallel for schedule(static) if (picked.size() >= 32768)
      for (int64_t r = 0; r < c.n * c.oh; r++) {
        const int64_t b = r / c.oh, y = r % c.oh;
        for (int64_t xo = 0; xo < c.ow; xo++) {
          std::memcpy(picked.data() + (r * c.ow + xo) * c.ic, x + ((b * c.ih + y * c.sh) * c.iw + xo * c.sw) * c.ic, sizeof(float) * c.ic);
        }
      }
      c = Conv{c.n, c.oh, c.ow, c.ic, c.oh, c.ow, c.oc, 1, 1, 1, 1, 0, 0, 0, 0};
      x = picked.data();
    }
    Prepared& p = backwardWeightsPrimitive(c);
    auto& eng = cpuEngine();
    memory user(c.weights(tag::hwio), eng, dw);
    memory out = p.weightsReorder ? memory(p.weightsDesc, eng, p.weightsBuffer.data()) : user;
    p.prim.execute(cpuStream(), {{DNNL_ARG_SRC, memory(c.src(tag::nhwc), eng, x)},
                                 {DNNL_ARG_DIFF_DST, memory(c.dst(tag::nhwc), eng, dy)},
                                 {DNNL_ARG_DIFF_WEIGHTS, out}});
    if (p.weightsReorder) p.reorder.execute(cpuStream(), out, user);
    cpuStream().wait();
    return undefinedValue(env);
  });
}

// implementation(kind, geometry): the oneDNN implementation a conv runs ("jit:avx2", ...), for the bench.
napi_value Implementation(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 2);
    size_t len = 0;
    char kind[32] = {0};
    check(env, napi_get_value_string_utf8(env, a[0], kind, sizeof(kind), &len), "kind must be a string");
    Conv c = convArg(env, a[1]);
    std::string k(kind);
    const Prepared& p = k == "forward" ? forwardPrimitive(c, false, false)
                        : k == "backward_data" ? backwardDataPrimitive(c)
                                               : backwardWeightsPrimitive(c);
    napi_value s;
    check(env, napi_create_string_utf8(env, p.impl.c_str(), p.impl.size(), &s), "napi_create_string_utf8");
    return s;
  });
}

// maxPoolGrad(x, dy, dx, [n, ih, iw, c, oh, ow, fh, fw, sh, sw, pt, pl]):
// dx = dy scattered to the first maximum (row-major window order) of each
// window, as tfjs's cpu backend picks it. Images are independent, so they
// are split over the threads; within one image the order is serial.
napi_value MaxPoolGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    auto g = intArray(env, a[3], 12, "pool geometry");
    const int64_t n = g[0], ih = g[1], iw = g[2], C = g[3], oh = g[4], ow = g[5], fh = g[6], fw = g[7], sh = g[8], sw = g[9],
                  pt = g[10], pl = g[11];
    const float* x = floatData(env, a[0], n * ih * iw * C, "x");
    const float* dy = floatData(env, a[1], n * oh * ow * C, "dy");
    float* dx = floatData(env, a[2], n * ih * iw * C, "dx");
    if (ih * iw * C > INT32_MAX) throw JsError{"granular_onednn: maxPoolGrad: an image over 2^31 elements"};
#pragma omp parallel
    {
      std::vector<float> best(C);
      std::vector<int32_t> where(C);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < n; b++) {
        const float* xb = x + b * ih * iw * C;
        float* dxb = dx + b * ih * iw * C;
        std::memset(dxb, 0, sizeof(float) * ih * iw * C);
        for (int64_t y = 0; y < oh; y++) {
          const int64_t h0 = y * sh - pt, hBegin = std::max<int64_t>(0, h0), hEnd = std::min<int64_t>(ih, h0 + fh);
          for (int64_t xo = 0; xo < ow; xo++) {
            const int64_t w0 = xo * sw - pl, wBegin = std::max<int64_t>(0, w0), wEnd = std::min<int64_t>(iw, w0 + fw);
            float* bv = best.data();
            int32_t* wv = where.data();
            for (int64_t ch = 0; ch < C; ch++) {
              bv[ch] = -INFINITY;
              wv[ch] = -1;
            }
            for (int64_t h = hBegin; h < hEnd; h++) {
              for (int64_t w = wBegin; w < wEnd; w++) {
                const int32_t base = static_cast<int32_t>((h * iw + w) * C);
                const float* xr = xb + base;
                // Branch-free (masks), so no mispredictions on random data and
                // the channel loop vectorises; '>' keeps the first maximum.
                for (int64_t ch = 0; ch < C; ch++) {
                  const float v = xr[ch];
                  const int32_t m = -static_cast<int32_t>(v > bv[ch]);
                  int32_t vb, bb;
                  std::memcpy(&vb, &v, 4);
                  std::memcpy(&bb, &bv[ch], 4);
                  bb ^= (bb ^ vb) & m;
                  std::memcpy(&bv[ch], &bb, 4);
                  wv[ch] ^= (wv[ch] ^ (base + static_cast<int32_t>(ch))) & m;
                }
              }
            }
            const float* g0 = dy + ((b * oh + y) * ow + xo) * C;
            for (int64_t ch = 0; ch < C; ch++) {
              if (wv[ch] >= 0) dxb[wv[ch]] += g0[ch];
            }
          }
        }
      }
    }
    return undefinedValue(env);
  });
}

// sumAxes(x, out, outer, mid, inner, scale): x viewed as [outer, mid, inner];
// out[o*inner + j] = scale * sum_m x[(o*mid + m)*inner + j], accumulated in
// float64 (as tfjs's cpu backend does). Leading axes (outer 1, batch-norm
// statistics): each thread sums a fixed range of rows (static split, so the
// result depends only on the thread count), then the partial sums are added
// in thread order. Middle axes (outer > 1, global average pooling): the
// outer rows are split over the threads, each summed in order.
napi_value SumAxes(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 6);
    int64_t outer = 0, mid = 0, inner = 0;
    double scale = 1;
    check(env, napi_get_value_int64(env, a[2], &outer), "outer must be an integer");
    check(env, napi_get_value_int64(env, a[3], &mid), "mid must be an integer");
    check(env, napi_get_value_int64(env, a[4], &inner), "inner must be an integer");
    check(env, napi_get_value_double(env, a[5], &scale), "scale must be a number");
    if (outer <= 0 || mid <= 0 || inner <= 0) throw JsError{"granular_onednn: sumAxes: sizes must be positive"};
    const float* x = floatData(env, a[0], outer * mid * inner, "x");
    float* out = floatData(env, a[1], outer * inner, "out");
    if (outer > 1) {
#pragma omp parallel
      {
        std::vector<double> acc(inner);
#pragma omp for schedule(static)
        for (int64_t o = 0; o < outer; o++) {
          std::fill(acc.begin(), acc.end(), 0.0);
          const float* xo = x + o * mid * inner;
          for (int64_t m = 0; m < mid; m++) {
            const float* row = xo + m * inner;
            for (int64_t j = 0; j < inner; j++) acc[j] += row[j];
          }
          for (int64_t j = 0; j < inner; j++) out[o * inner + j] = static_cast<float>(acc[j] * scale);
        }
      }
      return undefinedValue(env);
    }
    const int threads = omp_get_max_threads();
    std::vector<double> partial(static_cast<size_t>(threads) * inner, 0.0);
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t begin = mid * t / nt, end = mid * (t + 1) / nt;
      double* acc = partial.data() + static_cast<size_t>(t) * inner;
      for (int64_t i = begin; i < end; i++) {
        const float* row = x + i * inner;
        for (int64_t j = 0; j < inner; j++) acc[j] += row[j];
      }
    }
    for (int64_t j = 0; j < inner; j++) {
      double s = 0;
      for (int t = 0; t < threads; t++) s += partial[static_cast<size_t>(t) * inner + j];
      out[j] = static_cast<float>(s * scale);
    }
    return undefinedValue(env);
  });
}

// broadcastBinary(op, a, b, out, shape, aStrides, bStrides): out = a op b
// elementwise over an output of `shape` (row-major, at most 8 axes), reading
// a and b through their strides (0 along a broadcast axis). Ops: 0 add, 1 sub,
// 2 mul, 3 div, 4 squared difference, 5 maximum, 6 minimum. Each element is one
// float32 operation (for + - * / the same value tfjs's cpu backend gets by
// rounding its float64 result), so results do not depend on the threads.
template <int Op>
inline float apply(float a, float b) {
  if (Op == 0) return a + b;
  if (Op == 1) return a - b;
  if (Op == 2) return a * b;
  if (Op == 3) return a / b;
  if (Op == 4) {
    const float d = a - b;
    return d * d;
  }
  if (Op == 5) return (a != a || b != b) ? NAN : (a > b ? a : b);
  return (a != a || b != b) ? NAN : (a < b ? a : b);
}

template <int Op>
void binaryLoop(const float* a, const float* b, float* out, const std::vector<int64_t>& shape, const std::vector<int64_t>& as,
                const std::vector<int64_t>& bs) {
  const int r = static_cast<int>(shape.size());
  const int64_t inner = shape[r - 1], sa = as[r - 1], sb = bs[r - 1];
  int64_t rows = 1;
  for (int i = 0; i < r - 1; i++) rows *= shape[i];
  const int64_t n = rows * inner;
#pragma omp parallel for schedule(static) if (n >= 32768)
  for (int64_t row = 0; row < rows; row++) {
    // The offsets of this row in a and b, from its multi-index.
    int64_t rem = row, oa = 0, ob = 0;
    for (int i = r - 2; i >= 0; i--) {
      const int64_t k = rem % shape[i];
      rem /= shape[i];
      oa += k * as[i];
      ob += k * bs[i];
    }
    const float* ar = a + oa;
    const float* br = b + ob;
    float* o = out + row * inner;
    if (sa == 1 && sb == 1) {
#pragma omp simd
      for (int64_t j = 0; j < inner; j++) o[j] = apply<Op>(ar[j], br[j]);
    } else if (sa == 1) {
      const float bv = br[0];
#pragma omp simd
      for (int64_t j = 0; j < inner; j++) o[j] = apply<Op>(ar[j], bv);
    } else if (sb == 1) {
      const float av = ar[0];
#pragma omp simd
      for (int64_t j = 0; j < inner; j++) o[j] = apply<Op>(av, br[j]);
    } else {
      for (int64_t j = 0; j < inner; j++) o[j] = apply<Op>(ar[j * sa], br[j * sb]);
    }
  }
}

napi_value BroadcastBinary(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 7);
    int32_t op = 0;
    check(env, napi_get_value_int32(env, a[0], &op), "op must be an integer");
    uint32_t rank = 0;
    check(env, napi_get_array_length(env, a[4], &rank), "shape must be an array");
    if (rank < 1 || rank > 8 || op < 0 || op > 6) throw JsError{"granular_onednn: broadcastBinary: rank 1..8 and op 0..6"};
    auto shape = intArray(env, a[4], rank, "shape");
    auto as = intArray(env, a[5], rank, "aStrides");
    auto bs = intArray(env, a[6], rank, "bStrides");
    int64_t n = 1, aSpan = 1, bSpan = 1;
    for (uint32_t i = 0; i < rank; i++) {
      if (shape[i] <= 0 || as[i] < 0 || bs[i] < 0) throw JsError{"granular_onednn: broadcastBinary: bad shape or strides"};
      n *= shape[i];
      aSpan += (shape[i] - 1) * as[i];
      bSpan += (shape[i] - 1) * bs[i];
    }
    const float* x = floatData(env, a[1], aSpan, "a");
    const float* y = floatData(env, a[2], bSpan, "b");
    float* out = floatData(env, a[3], n, "out");
    switch (op) {
      case 0: binaryLoop<0>(x, y, out, shape, as, bs); break;
      case 1: binaryLoop<1>(x, y, out, shape, as, bs); break;
      case 2: binaryLoop<2>(x, y, out, shape, as, bs); break;
      case 3: binaryLoop<3>(x, y, out, shape, as, bs); break;
      case 4: binaryLoop<4>(x, y, out, shape, as, bs); break;
      case 5: binaryLoop<5>(x, y, out, shape, as, bs); break;
      default: binaryLoop<6>(x, y, out, shape, as, bs); break;
    }
    return undefinedValue(env);
  });
}

// unary(op, x, out, n, alpha): out[i] = f(x[i]). Ops: 0 relu, 1 step
// (x > 0 ? 1 : alpha, NaN stays NaN; ReLU's gradient mask), 2 neg, 3 square,
// 4 sqrt, 5 rsqrt, 6 exp, 7 log, 8 abs, 9 relu6, 10 sigmoid. The
// transcendental ones are computed in float64 and rounded once, as tfjs's cpu
// backend computes them in JavaScript numbers.
template <int Op>
inline float unaryApply(float x, float alpha) {
  if (Op == 0) return x > 0 ? x : (x != x ? x : 0.f);
  if (Op == 1) return x > 0 ? 1.f : (x != x ? x : alpha);
  if (Op == 2) return -x;
  if (Op == 3) return x * x;
  if (Op == 4) return static_cast<float>(std::sqrt(static_cast<double>(x)));
  if (Op == 5) return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x)));
  if (Op == 6) return static_cast<float>(std::exp(static_cast<double>(x)));
  if (Op == 7) return static_cast<float>(std::log(static_cast<double>(x)));
  if (Op == 8) return std::fabs(x);
  if (Op == 9) return x != x ? x : std::min(std::max(x, 0.f), 6.f);
  if (Op == 11) return static_cast<float>(std::erf(static_cast<double>(x)));
  return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
}

template <int Op>
void unaryLoop(const float* x, float* out, int64_t n, float alpha) {
#pragma omp parallel for simd schedule(static) if (n >= 32768)
  for (int64_t i = 0; i < n; i++) out[i] = unaryApply<Op>(x[i], alpha);
}

napi_value Unary(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 5);
    int32_t op = 0;
    int64_t n = 0;
    double alpha = 0;
    check(env, napi_get_value_int32(env, a[0], &op), "op must be an integer");
    check(env, napi_get_value_int64(env, a[3], &n), "n must be an integer");
    check(env, napi_get_value_double(env, a[4], &alpha), "alpha must be a number");
    if (n <= 0 || op < 0 || op > 11) throw JsError{"granular_onednn: unary: n > 0 and op 0..11"};
    const float* x = floatData(env, a[1], n, "x");
    float* out = floatData(env, a[2], n, "out");
    const float al = static_cast<float>(alpha);
    switch (op) {
      case 0: unaryLoop<0>(x, out, n, al); break;
      case 1: unaryLoop<1>(x, out, n, al); break;
      case 2: unaryLoop<2>(x, out, n, al); break;
      case 3: unaryLoop<3>(x, out, n, al); break;
      case 4: unaryLoop<4>(x, out, n, al); break;
      case 5: unaryLoop<5>(x, out, n, al); break;
      case 6: unaryLoop<6>(x, out, n, al); break;
      case 7: unaryLoop<7>(x, out, n, al); break;
      case 8: unaryLoop<8>(x, out, n, al); break;
      case 9: unaryLoop<9>(x, out, n, al); break;
      case 11: unaryLoop<11>(x, out, n, al); break;
      default: unaryLoop<10>(x, out, n, al); break;
    }
    return undefinedValue(env);
  });
}

// maxPool(x, y, [n, ih, iw, c, oh, ow, fh, fw, sh, sw, pt, pl]): NHWC max
// pooling; window cells outside the image are skipped (tfjs's rule). Images
// and output rows are split over the threads.
napi_value MaxPool(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 3);
    auto g = intArray(env, a[2], 12, "pool geometry");
    const int64_t n = g[0], ih = g[1], iw = g[2], C = g[3], oh = g[4], ow = g[5], fh = g[6], fw = g[7], sh = g[8], sw = g[9],
                  pt = g[10], pl = g[11];
    const float* x = floatData(env, a[0], n * ih * iw * C, "x");
    float* y = floatData(env, a[1], n * oh * ow * C, "y");
#pragma omp parallel for schedule(static) if (n * oh * ow * C >= 32768)
    for (int64_t r = 0; r < n * oh; r++) {
      const int64_t b = r / oh, yo = r % oh;
      const int64_t h0 = yo * sh - pt, hBegin = std::max<int64_t>(0, h0), hEnd = std::min<int64_t>(ih, h0 + fh);
      const float* xb = x + b * ih * iw * C;
      for (int64_t xo = 0; xo < ow; xo++) {
        const int64_t w0 = xo * sw - pl, wBegin = std::max<int64_t>(0, w0), wEnd = std::min<int64_t>(iw, w0 + fw);
        float* out = y + ((b * oh + yo) * ow + xo) * C;
        for (int64_t ch = 0; ch < C; ch++) out[ch] = -INFINITY;
        for (int64_t h = hBegin; h < hEnd; h++) {
          for (int64_t w = wBegin; w < wEnd; w++) {
            const float* xr = xb + (h * iw + w) * C;
            // NaN propagates, as in tfjs's cpu kernel (value > max || isNaN(value)).
            for (int64_t ch = 0; ch < C; ch++) out[ch] = (xr[ch] > out[ch] || xr[ch] != xr[ch]) ? xr[ch] : out[ch];
          }
        }
      }
    }
    return undefinedValue(env);
  });
}

// gemm(a, b, out, bias | null, [batch, m, n, k, transA, transB, aBatchStride, bBatchStride], relu):
// out[i] = relu?(op(a[i]) @ op(b[i]) + bias) for each of `batch` row-major
// matrices, op = transpose when asked (tfjs's BatchMatMul / _FusedMatMul);
// a batch stride of 0 broadcasts that operand. oneDNN's sgemm (float32
// accumulation, threaded).
napi_value Gemm(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 6);
    auto g = intArray(env, a[4], 8, "gemm geometry");
    const int64_t batch = g[0], M = g[1], N = g[2], K = g[3], sa = g[6], sb = g[7];
    const bool ta = g[4] != 0, tb = g[5] != 0;
    bool relu = false;
    check(env, napi_get_value_bool(env, a[5], &relu), "relu must be a boolean");
    if (batch <= 0 || M <= 0 || N <= 0 || K <= 0) throw JsError{"granular_onednn: gemm: sizes must be positive"};
    const float* A = floatData(env, a[0], (batch - 1) * sa + M * K, "a");
    const float* B = floatData(env, a[1], (batch - 1) * sb + K * N, "b");
    float* C = floatData(env, a[2], batch * M * N, "out");
    const float* bias = isNullish(env, a[3]) ? nullptr : floatData(env, a[3], N, "bias");
    for (int64_t i = 0; i < batch; i++) {
      float* Ci = C + i * M * N;
      if (bias) {
        for (int64_t r = 0; r < M; r++) std::memcpy(Ci + r * N, bias, sizeof(float) * N);
      }
      const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.f, A + i * sa, ta ? M : K, B + i * sb, tb ? K : N,
                                          bias ? 1.f : 0.f, Ci, N);
      if (st != dnnl_success) throw JsError{"granular_onednn: dnnl_sgemm failed with status " + std::to_string(st)};
      if (relu) {
        for (int64_t j = 0; j < M * N; j++) Ci[j] = Ci[j] > 0 ? Ci[j] : (Ci[j] != Ci[j] ? Ci[j] : 0.f);
      }
    }
    return undefinedValue(env);
  });
}

// Per-channel float64 sums over rows of an [rows, C] array, split over the
// threads in fixed ranges and added in thread order (deterministic for a
// thread count). `term(row, c)` gives the value summed; `S` sums at once.
template <int S, typename Term>
void channelSums(int64_t rows, int64_t C, std::vector<double>* sums, Term term) {
  const int threads = omp_get_max_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * C * S, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    double* acc = partial.data() + static_cast<size_t>(t) * C * S;
    double v[S];
    for (int64_t r = begin; r < end; r++) {
      for (int64_t c = 0; c < C; c++) {
        term(r, c, v);
        for (int s = 0; s < S; s++) acc[s * C + c] += v[s];
      }
    }
  }
  for (int s = 0; s < S; s++) {
    sums[s].assign(C, 0.0);
    for (int t = 0; t < threads; t++) {
      const double* p = partial.data() + (static_cast<size_t>(t) * S + s) * C;
      for (int64_t c = 0; c < C; c++) sums[s][c] += p[c];
    }
  }
}

// batchNormTrain(x, gamma | null, beta | null, residual | null, y, mean, variance, invStd, rows, channels, epsilon, relu):
// training-mode batch normalisation over the rows of an [rows, C] array
// (NHWC flattened): mean and biased variance per channel in float64 (two
// passes), invStd = 1 / sqrt(variance + epsilon), then
// y = relu?((x - mean) * invStd * gamma + beta + residual). Saves what the
// backward pass needs, as PyTorch's batch norm does: x, mean, invStd (and y
// for the ReLU mask); no normalised copy of x. (Ioffe & Szegedy 2015.)
napi_value BatchNormTrain(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 12);
    int64_t rows = 0, C = 0;
    double eps = 0;
    bool relu = false;
    check(env, napi_get_value_int64(env, a[8], &rows), "rows must be an integer");
    check(env, napi_get_value_int64(env, a[9], &C), "channels must be an integer");
    check(env, napi_get_value_double(env, a[10], &eps), "epsilon must be a number");
    check(env, napi_get_value_bool(env, a[11], &relu), "relu must be a boolean");
    if (rows <= 0 || C <= 0) throw JsError{"granular_onednn: batchNormTrain: sizes must be positive"};
    const int64_t n = rows * C;
    const float* x = floatData(env, a[0], n, "x");
    const float* gamma = isNullish(env, a[1]) ? nullptr : floatData(env, a[1], C, "gamma");
    const float* beta = isNullish(env, a[2]) ? nullptr : floatData(env, a[2], C, "beta");
    const float* res = isNullish(env, a[3]) ? nullptr : floatData(env, a[3], n, "residual");
    float* y = floatData(env, a[4], n, "y");
    float* meanOut = floatData(env, a[5], C, "mean");
    float* varOut = floatData(env, a[6], C, "variance");
    float* invOut = floatData(env, a[7], C, "invStd");
    std::vector<double> s[1];
    channelSums<1>(rows, C, s, [&](int64_t r, int64_t c, double* v) { v[0] = x[r * C + c]; });
    std::vector<double> mean(C);
    for (int64_t c = 0; c < C; c++) mean[c] = s[0][c] / rows;
    channelSums<1>(rows, C, s, [&](int64_t r, int64_t c, double* v) {
      const double d = x[r * C + c] - mean[c];
      v[0] = d * d;
    });
    std::vector<float> k(C), m(C), o(C);
    for (int64_t c = 0; c < C; c++) {
      const double inv = 1.0 / std::sqrt(s[0][c] / rows + eps);
      meanOut[c] = static_cast<float>(mean[c]);
      varOut[c] = static_cast<float>(s[0][c] / rows);
      invOut[c] = static_cast<float>(inv);
      k[c] = static_cast<float>(inv * (gamma ? gamma[c] : 1.0));
      m[c] = static_cast<float>(mean[c]);
      o[c] = beta ? beta[c] : 0.f;
    }
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      const float* rr = res ? res + r * C : nullptr;
      for (int64_t c = 0; c < C; c++) {
        float v = (xr[c] - m[c]) * k[c] + o[c];
        if (rr) v += rr[c];
        yr[c] = relu ? (v > 0 ? v : (v != v ? v : 0.f)) : v;
      }
    }
    return undefinedValue(env);
  });
}

// The ReLU-masked upstream gradient: where the forward output was not
// positive it gets 0 (a select, so the loops vectorise).
template <bool HasY>
inline float masked(const float* dy, const float* y, int64_t i) {
  const float d = dy[i];
  if (!HasY) return d;
  // Bitwise: d where y > 0, else +0 (no branch the predictor could miss).
  uint32_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  bits &= -static_cast<uint32_t>(y[i] > 0.f);
  float g;
  std::memcpy(&g, &bits, sizeof g);
  return g;
}

template <bool HasY, bool HasRes>
void bnGrad(const float* dy, const float* x, const float* mean, const float* inv, const float* gamma, const float* y, float* dx, float* dGamma,
            float* dBeta, float* dRes, int64_t rows, int64_t C) {
  const int threads = omp_get_max_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * C * 2, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    double* sg = partial.data() + static_cast<size_t>(t) * C * 2;
    double* sgx = sg + C;
    for (int64_t r = begin; r < end; r++) {
      const int64_t o = r * C;
      for (int64_t c = 0; c < C; c++) {
        const float g = masked<HasY>(dy, y, o + c);
        sg[c] += g;
        sgx[c] += static_cast<double>(g) * ((static_cast<double>(x[o + c]) - mean[c]) * inv[c]);
      }
    }
  }
  std::vector<float> kg(C), kb(C), kx(C);
  for (int64_t c = 0; c < C; c++) {
    double sumG = 0, sumGx = 0;
    for (int t = 0; t < threads; t++) {
      sumG += partial[(static_cast<size_t>(t) * 2) * C + c];
      sumGx += partial[(static_cast<size_t>(t) * 2 + 1) * C + c];
    }
    dBeta[c] = static_cast<float>(sumG);
    dGamma[c] = static_cast<float>(sumGx);
    const double scale = (gamma ? gamma[c] : 1.0) * inv[c];
    kg[c] = static_cast<float>(scale);
    kb[c] = static_cast<float>(scale * sumG / rows);
    kx[c] = static_cast<float>(scale * sumGx / rows * inv[c]);
  }
  const int64_t n = rows * C;
#pragma omp parallel for schedule(static) if (n >= 32768)
  for (int64_t r = 0; r < rows; r++) {
    const int64_t o = r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) {
      const float g = masked<HasY>(dy, y, o + c);
      dx[o + c] = kg[c] * g - kb[c] - kx[c] * (x[o + c] - mean[c]);
      if (HasRes) dRes[o + c] = g;
    }
  }
}

// batchNormTrainGrad(dy, x, mean, invStd, gamma | null, y | null, dx, dGamma, dBeta, dResidual | null, rows, channels):
// the gradient of batchNormTrain. With y given (the forward had a ReLU),
// g = dy where y > 0, else 0; otherwise g = dy. Then, per channel, with
// xhat = (x - mean) * invStd (recomputed) and sums in float64:
//   dBeta = sum g,  dGamma = sum g * xhat,
//   dx = gamma * invStd * (g - dBeta / rows - xhat * dGamma / rows),
//   dResidual = g.
napi_value BatchNormTrainGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 12);
    int64_t rows = 0, C = 0;
    check(env, napi_get_value_int64(env, a[10], &rows), "rows must be an integer");
    check(env, napi_get_value_int64(env, a[11], &C), "channels must be an integer");
    if (rows <= 0 || C <= 0) throw JsError{"granular_onednn: batchNormTrainGrad: sizes must be positive"};
    const int64_t n = rows * C;
    const float* dy = floatData(env, a[0], n, "dy");
    const float* x = floatData(env, a[1], n, "x");
    const float* mean = floatData(env, a[2], C, "mean");
    const float* inv = floatData(env, a[3], C, "invStd");
    const float* gamma = isNullish(env, a[4]) ? nullptr : floatData(env, a[4], C, "gamma");
    const float* y = isNullish(env, a[5]) ? nullptr : floatData(env, a[5], n, "y");
    float* dx = floatData(env, a[6], n, "dx");
    float* dGamma = floatData(env, a[7], C, "dGamma");
    float* dBeta = floatData(env, a[8], C, "dBeta");
    float* dRes = isNullish(env, a[9]) ? nullptr : floatData(env, a[9], n, "dResidual");
    if (y) {
      if (dRes) bnGrad<true, true>(dy, x, mean, inv, gamma, y, dx, dGamma, dBeta, dRes, rows, C);
      else bnGrad<true, false>(dy, x, mean, inv, gamma, y, dx, dGamma, dBeta, dRes, rows, C);
    } else {
      if (dRes) bnGrad<false, true>(dy, x, mean, inv, gamma, y, dx, dGamma, dBeta, dRes, rows, C);
      else bnGrad<false, false>(dy, x, mean, inv, gamma, y, dx, dGamma, dBeta, dRes, rows, C);
    }
    return undefinedValue(env);
  });
}

// batchNorm(x, mean, variance, offset | null, scale | null, out, n, channels, epsilon):
// out = offset + (x - mean) * scale / sqrt(variance + epsilon) per channel
// (innermost axis), in float64 like tfjs's cpu backend, rounded once.
napi_value BatchNorm(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 9);
    int64_t n = 0, C = 0;
    double eps = 0;
    check(env, napi_get_value_int64(env, a[6], &n), "n must be an integer");
    check(env, napi_get_value_int64(env, a[7], &C), "channels must be an integer");
    check(env, napi_get_value_double(env, a[8], &eps), "epsilon must be a number");
    if (C <= 0 || n % C) throw JsError{"granular_onednn: batchNorm: the size is not a multiple of the channels"};
    const float* x = floatData(env, a[0], n, "x");
    const float* mean = floatData(env, a[1], C, "mean");
    const float* var = floatData(env, a[2], C, "variance");
    const float* offset = isNullish(env, a[3]) ? nullptr : floatData(env, a[3], C, "offset");
    const float* scale = isNullish(env, a[4]) ? nullptr : floatData(env, a[4], C, "scale");
    float* out = floatData(env, a[5], n, "out");
    std::vector<double> k(C), m(C), o(C);
    for (int64_t c = 0; c < C; c++) {
      k[c] = (scale ? scale[c] : 1.0) / std::sqrt(static_cast<double>(var[c]) + eps);
      m[c] = mean[c];
      o[c] = offset ? offset[c] : 0.0;
    }
    const int64_t rows = n / C;
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * C;
      float* outr = out + r * C;
      for (int64_t c = 0; c < C; c++) outr[c] = static_cast<float>(o[c] + (xr[c] - m[c]) * k[c]);
    }
    return undefinedValue(env);
  });
}

// The ArrayBuffer behind a typed array, the view's first element and its byte
// offset in the buffer. Throws a JsError naming `what` for anything else.
struct Viewed {
  napi_value buffer;
  void* data;
  size_t offset;
};
Viewed viewedBuffer(napi_env env, napi_value value, const char* what) {
  bool isTyped = false;
  check(env, napi_is_typedarray(env, value, &isTyped), "napi_is_typedarray");
  if (!isTyped) throw JsError{std::string("granular_onednn: ") + what + " needs a typed array"};
  Viewed v{nullptr, nullptr, 0};
  check(env, napi_get_typedarray_info(env, value, nullptr, nullptr, &v.data, &v.buffer, &v.offset), "napi_get_typedarray_info");
  return v;
}

// release(typedArray): detaches its ArrayBuffer, which frees the memory at
// once instead of at some later garbage collection; every view of it then has
// length 0. src/engine/native-backend.ts calls it for buffers no tensor holds.
napi_value Release(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 1);
    const napi_value buffer = viewedBuffer(env, a[0], "release").buffer;
    bool detached = false;
    check(env, napi_is_detached_arraybuffer(env, buffer, &detached), "napi_is_detached_arraybuffer");
    if (!detached) check(env, napi_detach_arraybuffer(env, buffer), "napi_detach_arraybuffer (is it a SharedArrayBuffer or wasm memory?)");
    return undefinedValue(env);
  });
}

// adviseHugePages(typedArray): asks the kernel to back the buffer's whole
// 2 MiB-aligned pages with transparent huge pages (madvise MADV_HUGEPAGE),
// before anything has touched them. Returns the bytes advised: 0 where the
// buffer spans no aligned 2 MiB page, the platform has no MADV_HUGEPAGE, or the
// kernel refuses. (With THP set to "never" the advice is taken and has no
// effect.) Why: a tensor's first write faults in its
// pages one 4 KiB page at a time; measured on the 2-core VM, 11.6 us per page
// (190 ms for 64 MiB) against 0.6 us with huge pages, and a first evaluation
// or training step writes every activation fresh. Source of the idea: PyTorch's
// CPU allocator (c10/core/impl/alloc_cpu.cpp, THP_MEM_ALLOC_ENABLE) does the same.
napi_value AdviseHugePages(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 1);
    const Viewed v = viewedBuffer(env, a[0], "adviseHugePages");
    size_t bytes = 0;
    check(env, napi_get_arraybuffer_info(env, v.buffer, nullptr, &bytes), "napi_get_arraybuffer_info");
    double advised = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // The whole ArrayBuffer (data points at the view's first element, offset bytes in).
    const uintptr_t start = reinterpret_cast<uintptr_t>(v.data) - v.offset;
    const uintptr_t huge = uintptr_t(2) << 20;
    const uintptr_t from = (start + huge - 1) & ~(huge - 1);
    const uintptr_t to = (start + bytes) & ~(huge - 1);
    if (to > from && madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE) == 0) advised = static_cast<double>(to - from);
#else
    (void)v;
    (void)bytes;
#endif
    napi_value r;
    check(env, napi_create_double(env, advised, &r), "napi_create_double");
    return r;
  });
}

// Vector math for GELU and softmax, our own code because libm's exp and erf
// are scalar calls (about 5 ns each here) and these loops vectorize (about
// 1 ns an element with AVX2). VECTOR_MATH(suffix) defines the loops; they are
// compiled twice, for AVX2+FMA and for any x86-64 (SSE2), and the AVX2 ones
// run where the CPU has them (vectorMath() picks once; GRANULAR_VECTOR_MATH=generic
// in the environment forces the plain ones, for the tests).
//
// expd: exp(x) in float64, branch-free: x = n ln2 + r, |r| <= ln2/2 (ln2 in
//   two parts, fdlibm's constants), e^r by its Taylor series to r^10
//   (relative error < 1e-11, far below float32's 6e-8), times 2^n built in the
//   exponent bits; x clamped to [-708, 709] (float32 results there are 0 or
//   inf anyway), NaN stays NaN. Rounded to float32 it equals std::exp.
// expf_: the same in float32 (Cephes expf's polynomial, ~1 ulp), for GELU.
// erfAS: erf as tfjs's kernels compute it (Abramowitz & Stegun 7.1.26,
//   absolute error < 1.5e-7; backend_util.ERF_*), in float32 here.
// GELU in float32 is within 5e-7 of the exact x * Phi(x) for |x| <= 6 (and
//   |x| * 1e-7 beyond), the size of the A&S approximation tfjs itself uses.
#define VECTOR_MATH(S)                                                                                               \
  static inline double expd##S(double x) {                                                                           \
    x = std::min(std::max(x, -708.0), 709.0);                                                                        \
    const double magic = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */                        \
    const double t = x * 1.4426950408889634 + magic;                                                                 \
    const double n = t - magic;                                                                                      \
    const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;                          \
    double p = 1.0 / 3628800.0;                                                                                      \
    p = p * r + 1.0 / 362880.0;                                                                                      \
    p = p * r + 1.0 / 40320.0;                                                                                       \
    p = p * r + 1.0 / 5040.0;                                                                                        \
    p = p * r + 1.0 / 720.0;                                                                                         \
    p = p * r + 1.0 / 120.0;                                                                                         \
    p = p * r + 1.0 / 24.0;                                                                                          \
    p = p * r + 1.0 / 6.0;                                                                                           \
    p = p * r + 0.5;                                                                                                 \
    p = p * r + 1.0;                                                                                                 \
    p = p * r + 1.0;                                                                                                 \
    int64_t bits;                                                                                                    \
    std::memcpy(&bits, &t, sizeof bits);                                                                             \
    const int64_t sbits = (bits - 0x4338000000000000LL + 1023) << 52; /* 2^n */                                      \
    double scale;                                                                                                    \
    std::memcpy(&scale, &sbits, sizeof scale);                                                                       \
    return p * scale;                                                                                                \
  }                                                                                                                  \
  static inline float expf_##S(float x) {                                                                            \
    x = std::min(std::max(x, -87.3f), 88.7f);                                                                        \
    const float magic = 12582912.f; /* 1.5 * 2^23 */                                                                 \
    const float t = x * 1.44269504f + magic;                                                                         \
    const float n = t - magic;                                                                                       \
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;                                                     \
    float p = 1.9875691500e-4f;                                                                                      \
    p = p * r + 1.3981999507e-3f;                                                                                    \
    p = p * r + 8.3334519073e-3f;                                                                                    \
    p = p * r + 4.1665795894e-2f;                                                                                    \
    p = p * r + 1.6666665459e-1f;                                                                                    \
    p = p * r + 5.0000001201e-1f;                                                                                    \
    p = p * r * r + r + 1.f;                                                                                         \
    int32_t bits;                                                                                                    \
    std::memcpy(&bits, &t, sizeof bits);                                                                             \
    const int32_t sbits = (bits - 0x4B400000 + 127) << 23;                                                           \
    float scale;                                                                                                     \
    std::memcpy(&scale, &sbits, sizeof scale);                                                                       \
    return p * scale;                                                                                                \
  }                                                                                                                  \
  static inline float phi##S(float x) { /* Phi(x) = (1 + erf(x / sqrt 2)) / 2 */                                     \
    const float v = x * 0.70710678f, a = std::fabs(v);                                                               \
    const float t = 1.f / (1.f + 0.3275911f * a);                                                                    \
    const float e = 1.f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t +       \
                           0.254829592f) * t * expf_##S(-a * a);                                                     \
    return 0.5f * (1.f + std::copysign(e, v));                                                                       \
  }                                                                                                                  \
  void geluLoop##S(const float* x, float* y, int64_t begin, int64_t end) {                                          \
    for (int64_t i = begin; i < end; i++) y[i] = x[i] * phi##S(x[i]);                                                \
  }                                                                                                                  \
  void geluGradLoop##S(const float* dy, const float* x, float* dx, int64_t begin, int64_t end) {                    \
    for (int64_t i = begin; i < end; i++) {                                                                          \
      const float v = x[i];                                                                                          \
      dx[i] = dy[i] * (phi##S(v) + v * 0.39894228f * expf_##S(-0.5f * v * v));                                       \
    }                                                                                                                \
  }                                                                                                                  \
  void expShiftedLoop##S(const float* x, float* y, int64_t n, float m) {                                            \
    for (int64_t j = 0; j < n; j++) y[j] = static_cast<float>(expd##S(static_cast<double>(x[j]) - m));              \
  }

VECTOR_MATH(Generic)
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
VECTOR_MATH(Avx2)
#pragma GCC pop_options
#endif

struct VectorMath {
  void (*gelu)(const float*, float*, int64_t, int64_t);
  void (*geluGrad)(const float*, const float*, float*, int64_t, int64_t);
  void (*expShifted)(const float*, float*, int64_t, float);
};

const VectorMath& vectorMath() {
  static const VectorMath m = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    const char* forced = std::getenv("GRANULAR_VECTOR_MATH");  // "generic": the plain x86-64 loops (tests)
    const bool generic = forced && std::string(forced) == "generic";
    if (!generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return VectorMath{geluLoopAvx2, geluGradLoopAvx2, expShiftedLoopAvx2};
#endif
    return VectorMath{geluLoopGeneric, geluGradLoopGeneric, expShiftedLoopGeneric};
  }();
  return m;
}

// y[j] = exp(x[j] - m) for j < n (float64, rounded to float32); returns their
// float64 sum (a second loop: an ordered float64 sum does not vectorize).
double expShifted(const float* x, float* y, int64_t n, float m) {
  vectorMath().expShifted(x, y, n, m);
  double s[4] = {0, 0, 0, 0};  // four running sums: the adds overlap instead of waiting on one another
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int k = 0; k < 4; k++) s[k] += y[j + k];
  }
  for (; j < n; j++) s[0] += y[j];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// The threads' share of [0, n): static ranges, as `omp for schedule(static)`.
template <typename F>
void parallelRanges(int64_t n, F f) {
#pragma omp parallel if (n >= 32768)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    f(n * t / nt, n * (t + 1) / nt);
  }
}

// gelu(x, y, n): y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 (GELU,
// Hendrycks & Gimpel 2016; tfjs-layers' 'gelu', torch's nn.GELU()), erf as
// tfjs computes it, in float32 (VECTOR_MATH). Split over threads.
napi_value Gelu(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 3);
    const int64_t n = positiveSize(env, a[2], "gelu", "n");
    const float* x = floatData(env, a[0], n, "x");
    float* y = floatData(env, a[1], n, "y");
    parallelRanges(n, [&](int64_t b, int64_t e) { vectorMath().gelu(x, y, b, e); });
    return undefinedValue(env);
  });
}

// geluGrad(dy, x, dx, n): dx = dy * (Phi(x) + x * phi(x)), phi(x) =
// exp(-x^2 / 2) / sqrt(2 pi): the derivative of x * Phi(x), as tfjs's
// gradients of the composed ops give it (Erf's gradient is the exact
// 2/sqrt(pi) exp(-x^2)), in float32 (VECTOR_MATH).
napi_value GeluGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    const int64_t n = positiveSize(env, a[3], "geluGrad", "n");
    const float* dy = floatData(env, a[0], n, "dy");
    const float* x = floatData(env, a[1], n, "x");
    float* dx = floatData(env, a[2], n, "dx");
    parallelRanges(n, [&](int64_t b, int64_t e) { vectorMath().geluGrad(dy, x, dx, b, e); });
    return undefinedValue(env);
  });
}

// softmaxGrad(dy, y, dx, rows, cols): the gradient of a softmax over the last
// axis given its output y: dx = y * (dy - sum_j dy_j y_j) per row, the sum in
// float64 (tfjs's gradient: dy*y - sum(dy*y) * y as float32 ops). Rows split over threads.
napi_value SoftmaxGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 5);
    const int64_t rows = positiveSize(env, a[3], "softmaxGrad", "rows"), cols = positiveSize(env, a[4], "softmaxGrad", "cols");
    const float* dy = floatData(env, a[0], rows * cols, "dy");
    const float* y = floatData(env, a[1], rows * cols, "y");
    float* dx = floatData(env, a[2], rows * cols, "dx");
#pragma omp parallel for schedule(static) if (rows * cols >= 32768)
    for (int64_t r = 0; r < rows; r++) {
      const float* g = dy + r * cols;
      const float* yr = y + r * cols;
      float* d = dx + r * cols;
      double s = 0;
      for (int64_t j = 0; j < cols; j++) s += static_cast<double>(g[j]) * yr[j];
      const float sf = static_cast<float>(s);
      for (int64_t j = 0; j < cols; j++) d[j] = g[j] * yr[j] - sf * yr[j];
    }
    return undefinedValue(env);
  });
}

// transpose(x, out, shape, perm): out = x with its axes permuted (out axis i
// is x axis perm[i]), 4-byte elements (float32 or int32), any rank up to 8.
// When the last axis stays last, whole runs are copied with memcpy; else
// element by element. Output rows split over threads.
napi_value Transpose(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    auto words = [&](napi_value v, const char* name, size_t* length) {
      bool isTyped = false;
      check(env, napi_is_typedarray(env, v, &isTyped), "napi_is_typedarray");
      napi_typedarray_type type;
      void* data = nullptr;
      if (isTyped) check(env, napi_get_typedarray_info(env, v, &type, length, &data, nullptr, nullptr), "napi_get_typedarray_info");
      if (!isTyped || (type != napi_float32_array && type != napi_int32_array)) {
        throw JsError{std::string("granular_onednn: transpose: ") + name + " must be a Float32Array or Int32Array"};
      }
      return static_cast<uint32_t*>(data);
    };
    bool isArray = false;
    uint32_t rank = 0;
    check(env, napi_is_array(env, a[2], &isArray), "napi_is_array");
    if (isArray) check(env, napi_get_array_length(env, a[2], &rank), "napi_get_array_length");
    if (!isArray || rank < 1 || rank > 8) throw JsError{"granular_onednn: transpose: shape must be an array of 1 to 8 sizes"};
    auto shape = intArray(env, a[2], rank, "transpose shape");
    auto perm = intArray(env, a[3], rank, "transpose perm");
    int64_t n = 1;
    std::vector<bool> seen(rank, false);
    for (uint32_t i = 0; i < rank; i++) {
      if (shape[i] <= 0) throw JsError{"granular_onednn: transpose: sizes must be positive"};
      if (perm[i] < 0 || perm[i] >= rank || seen[perm[i]]) throw JsError{"granular_onednn: transpose: perm must be a permutation of 0..rank-1"};
      seen[perm[i]] = true;
      n *= shape[i];
    }
    size_t lx = 0, lo = 0;
    const uint32_t* x = words(a[0], "x", &lx);
    uint32_t* out = words(a[1], "out", &lo);
    if (static_cast<int64_t>(lx) < n || static_cast<int64_t>(lo) < n) throw JsError{"granular_onednn: transpose: x and out must hold the product of shape"};
    std::vector<int64_t> inStride(rank), outShape(rank), st(rank);
    for (int64_t i = rank - 1, acc = 1; i >= 0; i--) {
      inStride[i] = acc;
      acc *= shape[i];
    }
    for (uint32_t i = 0; i < rank; i++) {
      outShape[i] = shape[perm[i]];
      st[i] = inStride[perm[i]];
    }
    const int64_t inner = outShape[rank - 1], innerStride = st[rank - 1];
    const int64_t rows = n / inner;
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t row = 0; row < rows; row++) {
      // The input offset of this output row: its outer indices times their strides.
      int64_t rem = row, base = 0;
      for (int64_t ax = static_cast<int64_t>(rank) - 2; ax >= 0; ax--) {
        base += (rem % outShape[ax]) * st[ax];
        rem /= outShape[ax];
      }
      uint32_t* o = out + row * inner;
      if (innerStride == 1) {
        std::memcpy(o, x + base, sizeof(uint32_t) * inner);
      } else {
        for (int64_t k = 0; k < inner; k++) o[k] = x[base + k * innerStride];
      }
    }
    return undefinedValue(env);
  });
}

// softmax(x, out, rows, cols): softmax over the last axis of a row-major
// [rows, cols] matrix, max-subtracted; exp in float64 (expd), rounded, and the row sum in
// float64 (tfjs's Softmax kernel on its cpu backend computes
// max, exp, sum and division as separate float32 ops). Rows split over threads.
napi_value Softmax(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    const int64_t rows = positiveSize(env, a[2], "softmax", "rows"), cols = positiveSize(env, a[3], "softmax", "cols");
    const float* x = floatData(env, a[0], rows * cols, "x");
    float* y = floatData(env, a[1], rows * cols, "out");
#pragma omp parallel for schedule(static) if (rows * cols >= 32768)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      // The row maximum in four running maxima (independent compares; NaN is skipped here and propagates through exp).
      float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
      int64_t j = 0;
      for (; j + 4 <= cols; j += 4) {
        for (int k = 0; k < 4; k++) mx[k] = std::max(mx[k], xr[j + k]);
      }
      for (; j < cols; j++) mx[0] = std::max(mx[0], xr[j]);
      const float m = std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3]));
      const double sum = expShifted(xr, yr, cols, m);
      const double inv = 1.0 / sum;
      for (int64_t j = 0; j < cols; j++) yr[j] = static_cast<float>(yr[j] * inv);
    }
    return undefinedValue(env);
  });
}

// The Float32Arrays of a JS array, each checked to hold at least widths[i] * outer floats.
std::vector<float*> floatArrays(napi_env env, napi_value v, const std::vector<int64_t>& widths, int64_t outer, const char* name) {
  bool isArray = false;
  check(env, napi_is_array(env, v, &isArray), "napi_is_array");
  uint32_t n = 0;
  if (isArray) check(env, napi_get_array_length(env, v, &n), "napi_get_array_length");
  if (!isArray || n != widths.size()) throw JsError{std::string("granular_onednn: ") + name + " must be an array of " + std::to_string(widths.size()) + " Float32Arrays"};
  std::vector<float*> out(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    check(env, napi_get_element(env, v, i, &e), "napi_get_element");
    out[i] = floatData(env, e, widths[i] * outer, name);
  }
  return out;
}

// concatRows(inputs, widths, out, outer) / splitRows(x, outputs, widths, outer):
// concatenation along an axis as rows: with outer = the product of the axes
// before it and widths[i] = the product of input i's axes from it on, row r of
// the output is row r of every input in order (tfjs's Concat; SplitV, its
// gradient, the other way). Rows split over threads; memcpy within a row.
napi_value ConcatRows(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    uint32_t k = 0;
    check(env, napi_get_array_length(env, a[1], &k), "widths must be an array");
    auto widths = intArray(env, a[1], k, "widths");
    int64_t outer = 0;
    check(env, napi_get_value_int64(env, a[3], &outer), "outer must be an integer");
    int64_t total = 0;
    std::vector<int64_t> at(k);
    for (uint32_t i = 0; i < k; i++) at[i] = total, total += widths[i];
    auto ins = floatArrays(env, a[0], widths, outer, "inputs");
    float* y = floatData(env, a[2], total * outer, "out");
#pragma omp parallel for schedule(static) if (total * outer >= 65536)
    for (int64_t r = 0; r < outer; r++)
      for (uint32_t i = 0; i < k; i++) std::memcpy(y + r * total + at[i], ins[i] + r * widths[i], widths[i] * sizeof(float));
    return undefinedValue(env);
  });
}

napi_value SplitRows(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 4);
    uint32_t k = 0;
    check(env, napi_get_array_length(env, a[2], &k), "widths must be an array");
    auto widths = intArray(env, a[2], k, "widths");
    int64_t outer = 0;
    check(env, napi_get_value_int64(env, a[3], &outer), "outer must be an integer");
    int64_t total = 0;
    std::vector<int64_t> at(k);
    for (uint32_t i = 0; i < k; i++) at[i] = total, total += widths[i];
    const float* x = floatData(env, a[0], total * outer, "x");
    auto outs = floatArrays(env, a[1], widths, outer, "outputs");
#pragma omp parallel for schedule(static) if (total * outer >= 65536)
    for (int64_t r = 0; r < outer; r++)
      for (uint32_t i = 0; i < k; i++) std::memcpy(outs[i] + r * widths[i], x + r * total + at[i], widths[i] * sizeof(float));
    return undefinedValue(env);
  });
}

// avgPoolGrad(dy, dx, [n, ih, iw, c, oh, ow, fh, fw, sh, sw]): the gradient
// of an unpadded NHWC average pool (every window inside the image, so tfjs's
// 1 / (fh * fw) is the exact weight): each output cell's gradient spread over
// its window. Images split over threads (windows of one image may overlap).
napi_value AvgPoolGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 3);
    auto g = intArray(env, a[2], 10, "pool geometry");
    const int64_t n = g[0], ih = g[1], iw = g[2], C = g[3], oh = g[4], ow = g[5], fh = g[6], fw = g[7], sh = g[8], sw = g[9];
    const float* dy = floatData(env, a[0], n * oh * ow * C, "dy");
    float* dx = floatData(env, a[1], n * ih * iw * C, "dx");
    const float w = 1.f / static_cast<float>(fh * fw);
#pragma omp parallel for schedule(static) if (n * ih * iw * C >= 32768)
    for (int64_t b = 0; b < n; b++) {
      float* xb = dx + b * ih * iw * C;
      std::fill(xb, xb + ih * iw * C, 0.f);
      for (int64_t yo = 0; yo < oh; yo++)
        for (int64_t xo = 0; xo < ow; xo++) {
          const float* d = dy + ((b * oh + yo) * ow + xo) * C;
          for (int64_t h = yo * sh; h < yo * sh + fh; h++)
            for (int64_t x = xo * sw; x < xo * sw + fw; x++) {
              float* o = xb + (h * iw + x) * C;
              for (int64_t ch = 0; ch < C; ch++) o[ch] += d[ch] * w;
            }
        }
    }
    return undefinedValue(env);
  });
}

// sum_{j < n} term(j) in float64 as four running sums (j mod 4) added pairwise at
// the end: the adds of one row overlap instead of waiting on one another.
template <typename Term>
inline double sum4(int64_t n, Term term) {
  double s[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int k = 0; k < 4; k++) s[k] += term(j + k);
  }
  for (; j < n; j++) s[j & 3] += term(j);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// layerNorm(x, gamma | null, beta | null, y, mean, invStd, rows, cols, epsilon):
// layer normalisation over the last axis of a row-major [rows, cols] array
// (Ba et al. 2016; nn.LayerNorm): per row the mean and biased variance in
// float64 (two passes, each as four running sums, sum4), invStd = 1 / sqrt(variance + epsilon), then
// y = (x - mean) * invStd * gamma + beta. Saves x, mean and invStd for the
// backward pass, no normalised copy (as PyTorch's native_layer_norm). Rows
// split over threads; each row is computed by one thread, so results do not
// depend on the thread count. Loops rather than oneDNN's
// layer_normalization primitive: float64 statistics like the batch-norm
// kernels above, no primitive per shape, and row-independent results.
napi_value LayerNorm(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 9);
    const int64_t rows = positiveSize(env, a[6], "layerNorm", "rows"), D = positiveSize(env, a[7], "layerNorm", "cols");
    double eps = 0;
    check(env, napi_get_value_double(env, a[8], &eps), "epsilon must be a number");
    const float* x = floatData(env, a[0], rows * D, "x");
    const float* gamma = isNullish(env, a[1]) ? nullptr : floatData(env, a[1], D, "gamma");
    const float* beta = isNullish(env, a[2]) ? nullptr : floatData(env, a[2], D, "beta");
    float* y = floatData(env, a[3], rows * D, "y");
    float* meanOut = floatData(env, a[4], rows, "mean");
    float* invOut = floatData(env, a[5], rows, "invStd");
#pragma omp parallel for schedule(static) if (rows * D >= 16384)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * D;
      float* yr = y + r * D;
      // Row sums in four running float64 sums (independent adds instead of one chain).
      const double mean = sum4(D, [&](int64_t j) { return static_cast<double>(xr[j]); }) / D;
      const double v = sum4(D, [&](int64_t j) {
        const double d = xr[j] - mean;
        return d * d;
      });
      const double inv = 1.0 / std::sqrt(v / D + eps);
      meanOut[r] = static_cast<float>(mean);
      invOut[r] = static_cast<float>(inv);
      const float m = static_cast<float>(mean), k = static_cast<float>(inv);
      for (int64_t j = 0; j < D; j++) {
        float t = (xr[j] - m) * k;
        if (gamma) t *= gamma[j];
        if (beta) t += beta[j];
        yr[j] = t;
      }
    }
    return undefinedValue(env);
  });
}

// layerNormGrad(dy, x, mean, invStd, gamma | null, dx, dGamma, dBeta, rows, cols):
// the gradient of layerNorm. Per row, with xhat = (x - mean) * invStd
// (recomputed) and g = dy * gamma, in float64:
//   dx = invStd * (g - mean_j(g) - xhat * mean_j(g * xhat));
// over all rows (float64 partial sums per thread in fixed row ranges, added in
// thread order): dGamma = sum dy * xhat, dBeta = sum dy.
napi_value LayerNormGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 10);
    const int64_t rows = positiveSize(env, a[8], "layerNormGrad", "rows"), D = positiveSize(env, a[9], "layerNormGrad", "cols");
    const float* dy = floatData(env, a[0], rows * D, "dy");
    const float* x = floatData(env, a[1], rows * D, "x");
    const float* mean = floatData(env, a[2], rows, "mean");
    const float* inv = floatData(env, a[3], rows, "invStd");
    const float* gamma = isNullish(env, a[4]) ? nullptr : floatData(env, a[4], D, "gamma");
    float* dx = floatData(env, a[5], rows * D, "dx");
    float* dGamma = floatData(env, a[6], D, "dGamma");
    float* dBeta = floatData(env, a[7], D, "dBeta");
    const int threads = omp_get_max_threads();
    std::vector<double> partial(static_cast<size_t>(threads) * D * 2, 0.0);
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
      double* sb = partial.data() + static_cast<size_t>(t) * D * 2;
      double* sg = sb + D;
      for (int64_t r = begin; r < end; r++) {
        const float* dyr = dy + r * D;
        const float* xr = x + r * D;
        const double m = mean[r], k = inv[r];
        double s1 = 0, s2 = 0;
        for (int64_t j = 0; j < D; j++) {
          const double xh = (xr[j] - m) * k;
          const double g = static_cast<double>(dyr[j]) * (gamma ? gamma[j] : 1.0);
          s1 += g;
          s2 += g * xh;
          sb[j] += dyr[j];
          sg[j] += dyr[j] * xh;
        }
        const double c1 = s1 / D, c2 = s2 / D;
        float* dxr = dx + r * D;
        for (int64_t j = 0; j < D; j++) {
          const double xh = (xr[j] - m) * k;
          const double g = static_cast<double>(dyr[j]) * (gamma ? gamma[j] : 1.0);
          dxr[j] = static_cast<float>(k * (g - c1 - xh * c2));
        }
      }
    }
    for (int64_t j = 0; j < D; j++) {
      double b = 0, g = 0;
      for (int t = 0; t < threads; t++) {
        b += partial[(static_cast<size_t>(t) * 2) * D + j];
        g += partial[(static_cast<size_t>(t) * 2 + 1) * D + j];
      }
      dBeta[j] = static_cast<float>(b);
      dGamma[j] = static_cast<float>(g);
    }
    return undefinedValue(env);
  });
}

// setThreads(n): the OpenMP threads oneDNN and the loops above use; returns the count in effect.
napi_value SetThreads(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() {
    auto a = args(env, info, 1);
    int32_t n = 1;
    check(env, napi_get_value_int32(env, a[0], &n), "threads must be an integer");
    omp_set_num_threads(n < 1 ? 1 : n);
    napi_value r;
    check(env, napi_create_int32(env, omp_get_max_threads(), &r), "napi_create_int32");
    return r;
  });
}

// The instruction set oneDNN's kernels were generated for on this CPU (dnnl_get_effective_cpu_isa):
// the same build is about twice as fast with avx512_core as with avx2, so speed figures name it.
static std::string EffectiveIsa() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "isa " + std::to_string(static_cast<int>(dnnl_get_effective_cpu_isa()));
  }
}

// version(): "oneDNN <major>.<minor>.<patch> (<cpu runtime>, <effective isa>)", e.g. "oneDNN 2.6.3 (OpenMP, avx2)"
napi_value Version(napi_env env, napi_callback_info) {
  return guarded(env, [&]() {
    const dnnl_version_t* v = dnnl_version();
    std::string s = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " (" +
                    (v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP, " : "") + EffectiveIsa() + ")";
    napi_value r;
    check(env, napi_create_string_utf8(env, s.c_str(), s.size(), &r), "napi_create_string_utf8");
    return r;
  });
}

// primitives(): how many oneDNN primitives are cached (one per op and shape).
napi_value Primitives(napi_env env, napi_callback_info) {
  napi_value r;
  napi_create_int32(env, static_cast<int32_t>(cache.size()), &r);
  return r;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"conv2d", nullptr, Conv2D, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv2dBackpropInput", nullptr, Conv2DBackpropInput, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv2dBackpropFilter", nullptr, Conv2DBackpropFilter, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"implementation", nullptr, Implementation, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"maxPoolGrad", nullptr, MaxPoolGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"broadcastBinary", nullptr, BroadcastBinary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unary", nullptr, Unary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"maxPool", nullptr, MaxPool, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gemm", nullptr, Gemm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"batchNormTrain", nullptr, BatchNormTrain, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"batchNormTrainGrad", nullptr, BatchNormTrainGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"batchNorm", nullptr, BatchNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sumAxes", nullptr, SumAxes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adviseHugePages", nullptr, AdviseHugePages, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"version", nullptr, Version, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"primitives", nullptr, Primitives, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmax", nullptr, Softmax, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"concatRows", nullptr, ConcatRows, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"splitRows", nullptr, SplitRows, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"avgPoolGrad", nullptr, AvgPoolGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNorm", nullptr, LayerNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNormGrad", nullptr, LayerNormGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"geluGrad", nullptr, GeluGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmaxGrad", nullptr, SoftmaxGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"transpose", nullptr, Transpose, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
