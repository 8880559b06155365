// y = x W^T for decoding with bfloat16 weights, on the GPU: x float32 [M, K] (M = 1..8),
// W [N, K] stored as bfloat16 (the top 16 bits of a float32), y float32 [M, N], every product and
// sum in float32:
//
//     y[m, n] = sum_k x[m, k] w[n, k],    w = bfloat16 bits << 16 read as a float32 (exact)
//
// Mirrored line by line in NumPy by tinyphi3_gpu/linear_emulation.py (`bf16_matvec`) and launched
// by tinyphi3_gpu/linear.py (`bf16_linear`).
//
// Shape. Decoding reads each weight once: the kernel is bound by memory bandwidth, so it must
// read whole sectors and keep many bytes in flight. A warp owns 4 rows of W; its lanes walk K
// together, lane `lane` taking the values k = VEC (lane + 32 step) .. + VEC - 1 of each row:
//   - VEC = 8 (K a multiple of 8, 16-byte aligned rows): one 16-byte load per row and step, a
//     warp reads 512 contiguous bytes of each row, a lane has 4 rows x 16 bytes in flight;
//   - VEC = 1 (any K): one 2-byte load per row and step, 64 contiguous bytes per warp.
// x's M rows (a template parameter) are read through the read-only cache, once per step for all
// 4 rows, so W is read once for the whole batch and x's traffic is a quarter of what a warp per
// row would need. 4 warps per CTA, 16 rows: grid ceil(N / 16), 192 CTAs at N = 3072.
//
// Sums: each lane adds its products in order of k with fmaf (one rounding each, the compiler
// contracts nothing on its own: the products are written as fmaf), then the warp adds its 32
// lanes by a butterfly of shuffles (lane ^ 16, ^ 8, ^ 4, ^ 2, ^ 1). No shared memory.

#include <cuda_bf16.h>

constexpr int BF16_WARPS = 4;              // warps per CTA
constexpr int BF16_ROWS = 4;               // rows of W per warp
constexpr int BF16_THREADS = 32 * BF16_WARPS;
constexpr int BF16_MAX_M = 8;

__device__ __forceinline__ float bf16_low(unsigned int pair) {     // element 2e of a pair
    return __uint_as_float(pair << 16);
}

__device__ __forceinline__ float bf16_high(unsigned int pair) {    // element 2e + 1
    return __uint_as_float(pair & 0xFFFF0000u);
}

template <int M, int VEC>
__device__ __forceinline__ void bf16_matvec(const float* __restrict__ x,
                                            const __nv_bfloat16* __restrict__ w,
                                            float* __restrict__ y, int N, int K) {
    static_assert(1 <= M && M <= BF16_MAX_M && (VEC == 1 || VEC == 8), "M rows, VEC 1 or 8");
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int n0 = (blockIdx.x * BF16_WARPS + warp) * BF16_ROWS;   // the warp's first row
    const __nv_bfloat16* rows[BF16_ROWS];
#pragma unroll
    for (int r = 0; r < BF16_ROWS; ++r)          // rows past N read row N - 1, never stored
        rows[r] = w + static_cast<long long>(min(n0 + r, N - 1)) * K;

    float acc[M][BF16_ROWS];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int r = 0; r < BF16_ROWS; ++r) acc[m][r] = 0.0f;
    }

#pragma unroll 2
    for (int k = VEC * lane; k < K; k += VEC * 32) {
        float wv[BF16_ROWS][VEC];                // this step's weights of the 4 rows, in float
#pragma unroll
        for (int r = 0; r < BF16_ROWS; ++r) {
            if (VEC == 8) {
                const uint4 pairs = __ldg(reinterpret_cast<const uint4*>(rows[r] + k));
                const unsigned int p[4] = {pairs.x, pairs.y, pairs.z, pairs.w};
#pragma unroll
                for (int e = 0; e < VEC / 2; ++e) {
                    wv[r][2 * e] = bf16_low(p[e]);
                    wv[r][2 * e + 1] = bf16_high(p[e]);
                }
            } else {
                wv[r][0] = __bfloat162float(rows[r][k]);
            }
        }
#pragma unroll
        for (int m = 0; m < M; ++m) {
            float xv[VEC];                       // x[m, k .. k + VEC - 1]
            const float* x_row = x + static_cast<long long>(m) * K + k;
            if (VEC == 8) {
                const float4 a = __ldg(reinterpret_cast<const float4*>(x_row));
                const float4 b = __ldg(reinterpret_cast<const float4*>(x_row) + 1);
                const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int e = 0; e < VEC; ++e) xv[e] = v[e];
            } else {
                xv[0] = __ldg(x_row);
            }
#pragma unroll
            for (int r = 0; r < BF16_ROWS; ++r) {
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[m][r] = fmaf(xv[e], wv[r][e], acc[m][r]);
            }
        }
    }

#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int r = 0; r < BF16_ROWS; ++r)
                acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], mask);
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int r = 0; r < BF16_ROWS; ++r)
                if (n0 + r < N) y[static_cast<long long>(m) * N + n0 + r] = acc[m][r];
        }
    }
}

// One entry point per (VEC, M), each written out so that Python finds it by name:
// bf16_matvec_v8_m{1..8} (K % 8 == 0, 16-byte aligned x and W) and bf16_matvec_v1_m{1..8}.
#define BF16_PARAMS const float* x, const __nv_bfloat16* w, float* y, int N, int K

extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m1(BF16_PARAMS) { bf16_matvec<1, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m2(BF16_PARAMS) { bf16_matvec<2, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m3(BF16_PARAMS) { bf16_matvec<3, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m4(BF16_PARAMS) { bf16_matvec<4, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m5(BF16_PARAMS) { bf16_matvec<5, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m6(BF16_PARAMS) { bf16_matvec<6, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m7(BF16_PARAMS) { bf16_matvec<7, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v8_m8(BF16_PARAMS) { bf16_matvec<8, 8>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m1(BF16_PARAMS) { bf16_matvec<1, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m2(BF16_PARAMS) { bf16_matvec<2, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m3(BF16_PARAMS) { bf16_matvec<3, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m4(BF16_PARAMS) { bf16_matvec<4, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m5(BF16_PARAMS) { bf16_matvec<5, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m6(BF16_PARAMS) { bf16_matvec<6, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m7(BF16_PARAMS) { bf16_matvec<7, 1>(x, w, y, N, K); }
extern "C" __global__ void __launch_bounds__(BF16_THREADS)
bf16_matvec_v1_m8(BF16_PARAMS) { bf16_matvec<8, 1>(x, w, y, N, K); }
