#include <algorithm>
#include <vector>

#include <boost/thread.hpp>

#include "caffe/util/math_functions.hpp"
#include "caffe/util/winograd_conv.hpp"

// F(2x2, 3x3): Y = A^T [(G w G^T) .* (B^T d B)] A over 4x4 input tiles d
// that overlap by 2, with
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// Position (i, j) of a transformed tile is plane i * 4 + j of the buffers;
// within a plane, rows are channels and columns are tiles, so that each
// plane's products are one GEMM: (out_channels x channels) x (channels x
// tiles) per group.

namespace caffe {

int winograd_tiles_per_image(const WinogradGeometry& g) {
  return ((g.out_height + 1) / 2) * ((g.out_width + 1) / 2);
}

size_t winograd_filter_size(const WinogradGeometry& g) {
  return static_cast<size_t>(kWinogradPositions) * g.out_channels *
      (g.channels / g.group);
}

namespace {

// Tiles are numbered image by image, row by row. A run is a stretch of at
// most kRun consecutive tiles of one tile row: its inputs and outputs are
// contiguous in the rows of the image, so the transforms below work on
// arrays a compiler vectorizes.
const int kRun = 64;

struct Run {
  int n, ty, tx, length, offset;  // offset: of its first tile in the chunk
};

// The runs of tiles first .. first + count - 1.
std::vector<Run> runs_of(const WinogradGeometry& g, int first, int count) {
  const int tiles_w = (g.out_width + 1) / 2;
  const int tiles = winograd_tiles_per_image(g);
  std::vector<Run> runs;
  for (int offset = 0; offset < count;) {
    const int tile = first + offset;
    Run run;
    run.n = tile / tiles;
    run.ty = (tile % tiles) / tiles_w;
    run.tx = tile % tiles_w;
    run.length = std::min(std::min(kRun, tiles_w - run.tx), count - offset);
    run.offset = offset;
    runs.push_back(run);
    offset += run.length;
  }
  return runs;
}

// Group `group`'s block of plane `position` in a buffer of 16 planes of
// `rows` rows (rows_per_group a group) of `columns` values: the operand of
// that group's GEMM for that position.
template <typename T>
T* block(T* buffer, int position, int rows, int group, int rows_per_group,
    int columns) {
  return buffer + (static_cast<size_t>(position) * rows +
                   group * rows_per_group) * columns;
}

// Where tap (p, q) of the filter from input channel c (within its group) to
// output channel k sits in the layer's weight blob: a Convolution's
// (out_channels, channels / group, 3, 3), or when `deconvolution` a
// Deconvolution's (channels, out_channels / group, 3, 3), whose filters are
// these transposed and rotated by 180 degrees.
size_t weight_index(const WinogradGeometry& g, int k, int c, int p, int q,
    bool deconvolution) {
  const int in_per_group = g.channels / g.group;
  const int out_per_group = g.out_channels / g.group;
  if (deconvolution) {
    const size_t channel = (k / out_per_group) * in_per_group + c;
    return (channel * out_per_group + k % out_per_group) * 9 +
        (2 - p) * 3 + (2 - q);
  }
  return (static_cast<size_t>(k) * in_per_group + c) * 9 + p * 3 + q;
}

// Calls body(begin, end) on parts of 0 .. items - 1, one part per thread:
// as many threads as the BLAS uses, which our tools set per process.
template <typename Body>
void split_over_threads(int items, const Body& body) {
#ifdef OPENBLAS_VERSION
  const int threads = std::max(1, std::min(openblas_get_num_threads(), items));
#else
  const int threads = 1;
#endif
  std::vector<boost::thread> helpers;
  for (int t = 1; t < threads; ++t) {
    helpers.push_back(boost::thread(body,
        static_cast<int>(static_cast<int64_t>(items) * t / threads),
        static_cast<int>(static_cast<int64_t>(items) * (t + 1) / threads)));
  }
  body(0, items / threads);
  for (size_t t = 0; t < helpers.size(); ++t) {
    helpers[t].join();
  }
}

// B^T d B of one run's tiles in input channel plane `in`, into column
// `offset` of the 16 planes (`plane` apart) of `tiles`.
template <typename Dtype>
void transform_run(const WinogradGeometry& g, const Dtype* in,
    const Run& run, size_t plane, Dtype* tiles) {
  const int m = run.length;
  const int x0 = 2 * run.tx - g.pad_w;
  // even[i][k], odd[i][k]: input row 2 ty - pad_h + i, column x0 + 2k (+1),
  // zero outside the image.
  Dtype even[4][kRun + 1], odd[4][kRun + 1];
  for (int i = 0; i < 4; ++i) {
    const int y = 2 * run.ty - g.pad_h + i;
    if (y < 0 || y >= g.height) {
      std::fill(even[i], even[i] + m + 1, Dtype(0));
      std::fill(odd[i], odd[i] + m + 1, Dtype(0));
      continue;
    }
    const Dtype* row = in + static_cast<size_t>(y) * g.width;
    if (x0 >= 0 && x0 + 2 * m + 2 <= g.width) {
      for (int k = 0; k <= m; ++k) {
        even[i][k] = row[x0 + 2 * k];
        odd[i][k] = row[x0 + 2 * k + 1];
      }
    } else {
      for (int k = 0; k <= m; ++k) {
        const int x = x0 + 2 * k;
        even[i][k] = (x >= 0 && x < g.width) ? row[x] : Dtype(0);
        odd[i][k] = (x + 1 >= 0 && x + 1 < g.width) ? row[x + 1] : Dtype(0);
      }
    }
  }
  // B^T d: rows 0..3 of the tile from input rows.
  Dtype be[4][kRun + 1], bo[4][kRun + 1];
  for (int k = 0; k <= m; ++k) {
    be[0][k] = even[0][k] - even[2][k]; bo[0][k] = odd[0][k] - odd[2][k];
    be[1][k] = even[1][k] + even[2][k]; bo[1][k] = odd[1][k] + odd[2][k];
    be[2][k] = even[2][k] - even[1][k]; bo[2][k] = odd[2][k] - odd[1][k];
    be[3][k] = even[1][k] - even[3][k]; bo[3][k] = odd[1][k] - odd[3][k];
  }
  // (B^T d) B: tile k's columns are be[k], bo[k], be[k + 1], bo[k + 1].
  for (int i = 0; i < 4; ++i) {
    Dtype* v0 = tiles + (i * 4 + 0) * plane + run.offset;
    Dtype* v1 = tiles + (i * 4 + 1) * plane + run.offset;
    Dtype* v2 = tiles + (i * 4 + 2) * plane + run.offset;
    Dtype* v3 = tiles + (i * 4 + 3) * plane + run.offset;
    const Dtype* e = be[i];
    const Dtype* o = bo[i];
    for (int k = 0; k < m; ++k) {
      v0[k] = e[k] - e[k + 1];
      v1[k] = o[k] + e[k + 1];
      v2[k] = e[k + 1] - o[k];
      v3[k] = o[k] - o[k + 1];
    }
  }
}

// A^T m A of one run's products (column `offset` of the 16 planes of
// `products`), plus the bias, into output channel plane `out`; the second
// row and column of a block are dropped where the output's size is odd.
template <typename Dtype>
void untransform_run(const WinogradGeometry& g, const Dtype* products,
    size_t plane, const Run& run, Dtype b, Dtype* out) {
  const int m = run.length;
  Dtype am[2][4][kRun];  // A^T m
  for (int j = 0; j < 4; ++j) {
    const Dtype* m0 = products + (0 + j) * plane + run.offset;
    const Dtype* m1 = products + (4 + j) * plane + run.offset;
    const Dtype* m2 = products + (8 + j) * plane + run.offset;
    const Dtype* m3 = products + (12 + j) * plane + run.offset;
    for (int k = 0; k < m; ++k) {
      am[0][j][k] = m0[k] + m1[k] + m2[k];
      am[1][j][k] = m1[k] - m2[k] - m3[k];
    }
  }
  const int y = 2 * run.ty;
  const int x = 2 * run.tx;
  const bool last_odd = x + 2 * m > g.out_width;
  for (int i = 0; i < 2 && y + i < g.out_height; ++i) {  // (A^T m) A
    Dtype left[kRun], right[kRun];
    const Dtype* a0 = am[i][0];
    const Dtype* a1 = am[i][1];
    const Dtype* a2 = am[i][2];
    const Dtype* a3 = am[i][3];
    for (int k = 0; k < m; ++k) {
      left[k] = a0[k] + a1[k] + a2[k] + b;
      right[k] = a1[k] - a2[k] - a3[k] + b;
    }
    Dtype* row = out + static_cast<size_t>(y + i) * g.out_width + x;
    const int whole = last_odd ? m - 1 : m;
    for (int k = 0; k < whole; ++k) {
      row[2 * k] = left[k];
      row[2 * k + 1] = right[k];
    }
    if (last_odd) {
      row[2 * (m - 1)] = left[m - 1];
    }
  }
}

// A dY A^T, the adjoint of untransform_run: one run's output gradients
// (output channel plane `out_diff`; zero where a block's second row or column
// falls outside the output) into column `offset` of the 16 planes of
// `products`.
template <typename Dtype>
void transform_gradient_run(const WinogradGeometry& g, const Dtype* out_diff,
    const Run& run, size_t plane, Dtype* products) {
  const int m = run.length;
  const int y = 2 * run.ty;
  const int x = 2 * run.tx;
  const bool last_odd = x + 2 * m > g.out_width;
  Dtype left[2][kRun], right[2][kRun];  // dY's two columns, per row
  for (int i = 0; i < 2; ++i) {
    if (y + i >= g.out_height) {
      std::fill(left[i], left[i] + m, Dtype(0));
      std::fill(right[i], right[i] + m, Dtype(0));
      continue;
    }
    const Dtype* row = out_diff + static_cast<size_t>(y + i) * g.out_width + x;
    const int whole = last_odd ? m - 1 : m;
    for (int k = 0; k < whole; ++k) {
      left[i][k] = row[2 * k];
      right[i][k] = row[2 * k + 1];
    }
    if (last_odd) {
      left[i][m - 1] = row[2 * (m - 1)];
      right[i][m - 1] = Dtype(0);
    }
  }
  // A dY, A = [1 0; 1 1; 1 -1; 0 -1]: four rows of two columns.
  Dtype ay[4][2][kRun];
  for (int k = 0; k < m; ++k) {
    ay[0][0][k] = left[0][k];
    ay[0][1][k] = right[0][k];
    ay[1][0][k] = left[0][k] + left[1][k];
    ay[1][1][k] = right[0][k] + right[1][k];
    ay[2][0][k] = left[0][k] - left[1][k];
    ay[2][1][k] = right[0][k] - right[1][k];
    ay[3][0][k] = -left[1][k];
    ay[3][1][k] = -right[1][k];
  }
  for (int i = 0; i < 4; ++i) {  // (A dY) A^T
    Dtype* m0 = products + (i * 4 + 0) * plane + run.offset;
    Dtype* m1 = products + (i * 4 + 1) * plane + run.offset;
    Dtype* m2 = products + (i * 4 + 2) * plane + run.offset;
    Dtype* m3 = products + (i * 4 + 3) * plane + run.offset;
    const Dtype* a = ay[i][0];
    const Dtype* b = ay[i][1];
    for (int k = 0; k < m; ++k) {
      m0[k] = a[k];
      m1[k] = a[k] + b[k];
      m2[k] = a[k] - b[k];
      m3[k] = -b[k];
    }
  }
}

// B^T d B of every input channel of a chunk's runs into `tiles`.
template <typename Dtype>
void transform_chunk(const WinogradGeometry& g, const Dtype* input,
    const std::vector<Run>& runs, int count, Dtype* tiles) {
  const size_t in_size = static_cast<size_t>(g.height) * g.width;
  const size_t plane = static_cast<size_t>(g.channels) * count;
  split_over_threads(g.channels, [&](int begin, int end) {
    for (int c = begin; c < end; ++c) {
      for (size_t r = 0; r < runs.size(); ++r) {
        transform_run(g, input + (static_cast<size_t>(runs[r].n) *
            g.channels + c) * in_size, runs[r], plane,
            tiles + static_cast<size_t>(c) * count);
      }
    }
  });
}

}  // namespace

template <typename Dtype>
void winograd_transform_filters(const WinogradGeometry& g,
    const Dtype* weights, bool deconvolution, Dtype* filters) {
  const int in_per_group = g.channels / g.group;
  const size_t plane = static_cast<size_t>(g.out_channels) * in_per_group;
  const Dtype half = Dtype(0.5);
  split_over_threads(g.out_channels, [&](int begin, int end) {
    // kRun filters at a time, tap by tap, so that the loops vectorize.
    Dtype w[3][3][kRun], gw[4][3][kRun];
    for (int k = begin; k < end; ++k) {
      for (int c0 = 0; c0 < in_per_group; c0 += kRun) {
        const int m = std::min(kRun, in_per_group - c0);
        for (int p = 0; p < 3; ++p) {
          for (int q = 0; q < 3; ++q) {
            for (int c = 0; c < m; ++c) {
              w[p][q][c] = weights[weight_index(g, k, c0 + c, p, q,
                                                deconvolution)];
            }
          }
        }
        for (int q = 0; q < 3; ++q) {  // G w
          for (int c = 0; c < m; ++c) {
            gw[0][q][c] = w[0][q][c];
            gw[1][q][c] = half * (w[0][q][c] + w[1][q][c] + w[2][q][c]);
            gw[2][q][c] = half * (w[0][q][c] - w[1][q][c] + w[2][q][c]);
            gw[3][q][c] = w[2][q][c];
          }
        }
        Dtype* out = filters + static_cast<size_t>(k) * in_per_group + c0;
        for (int i = 0; i < 4; ++i) {  // (G w) G^T
          Dtype* u0 = out + (i * 4 + 0) * plane;
          Dtype* u1 = out + (i * 4 + 1) * plane;
          Dtype* u2 = out + (i * 4 + 2) * plane;
          Dtype* u3 = out + (i * 4 + 3) * plane;
          for (int c = 0; c < m; ++c) {
            u0[c] = gw[i][0][c];
            u1[c] = half * (gw[i][0][c] + gw[i][1][c] + gw[i][2][c]);
            u2[c] = half * (gw[i][0][c] - gw[i][1][c] + gw[i][2][c]);
            u3[c] = gw[i][2][c];
          }
        }
      }
    }
  });
}

template <typename Dtype>
void winograd_conv3x3_cpu(const WinogradGeometry& g, const Dtype* filters,
    const Dtype* input, const Dtype* bias, int chunk_tiles,
    Dtype* tile_buffer, Dtype* product_buffer, Dtype* output) {
  const int total = g.num * winograd_tiles_per_image(g);
  const int in_per_group = g.channels / g.group;
  const int out_per_group = g.out_channels / g.group;
  const size_t out_size = static_cast<size_t>(g.out_height) * g.out_width;
  for (int first = 0; first < total; first += chunk_tiles) {
    const int count = std::min(chunk_tiles, total - first);
    const std::vector<Run> runs = runs_of(g, first, count);
    transform_chunk(g, input, runs, count, tile_buffer);
    for (int position = 0; position < kWinogradPositions; ++position) {
      for (int group = 0; group < g.group; ++group) {
        caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, out_per_group,
            count, in_per_group, Dtype(1),
            block(filters, position, g.out_channels, group, out_per_group,
                  in_per_group),
            block(tile_buffer, position, g.channels, group, in_per_group,
                  count), Dtype(0),
            block(product_buffer, position, g.out_channels, group,
                  out_per_group, count));
      }
    }
    const size_t out_plane = static_cast<size_t>(g.out_channels) * count;
    split_over_threads(g.out_channels, [&](int begin, int end) {
      for (int k = begin; k < end; ++k) {
        const Dtype b = bias == NULL ? Dtype(0) : bias[k];
        for (size_t r = 0; r < runs.size(); ++r) {
          untransform_run(g, product_buffer + static_cast<size_t>(k) * count,
              out_plane, runs[r], b, output + (static_cast<size_t>(runs[r].n)
              * g.out_channels + k) * out_size);
        }
      }
    });
  }
}

template <typename Dtype>
void winograd_filter_gradient_cpu(const WinogradGeometry& g,
    const Dtype* input, const Dtype* output_diff, int chunk_tiles,
    Dtype* tile_buffer, Dtype* product_buffer, Dtype* filter_diff) {
  const int total = g.num * winograd_tiles_per_image(g);
  const int in_per_group = g.channels / g.group;
  const int out_per_group = g.out_channels / g.group;
  const size_t out_size = static_cast<size_t>(g.out_height) * g.out_width;
  caffe_set(winograd_filter_size(g), Dtype(0), filter_diff);
  for (int first = 0; first < total; first += chunk_tiles) {
    const int count = std::min(chunk_tiles, total - first);
    const std::vector<Run> runs = runs_of(g, first, count);
    transform_chunk(g, input, runs, count, tile_buffer);
    const size_t out_plane = static_cast<size_t>(g.out_channels) * count;
    split_over_threads(g.out_channels, [&](int begin, int end) {
      for (int k = begin; k < end; ++k) {
        for (size_t r = 0; r < runs.size(); ++r) {
          transform_gradient_run(g, output_diff + (static_cast<size_t>(
              runs[r].n) * g.out_channels + k) * out_size, runs[r], out_plane,
              product_buffer + static_cast<size_t>(k) * count);
        }
      }
    });
    // dU = sum over the tiles of (A dY A^T) (B^T d B)^T, position by position.
    for (int position = 0; position < kWinogradPositions; ++position) {
      for (int group = 0; group < g.group; ++group) {
        caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, out_per_group,
            in_per_group, count, Dtype(1),
            block(product_buffer, position, g.out_channels, group,
                  out_per_group, count),
            block(tile_buffer, position, g.channels, group, in_per_group,
                  count), Dtype(1),
            block(filter_diff, position, g.out_channels, group, out_per_group,
                  in_per_group));
      }
    }
  }
}

template <typename Dtype>
void winograd_add_weight_gradient(const WinogradGeometry& g,
    const Dtype* filter_diff, bool deconvolution, Dtype* weight_diff) {
  const int in_per_group = g.channels / g.group;
  const size_t plane = static_cast<size_t>(g.out_channels) * in_per_group;
  const Dtype half = Dtype(0.5);
  // G^T dU G, the adjoint of the filter transform, G^T = [1 1/2 1/2 0;
  // 0 1/2 -1/2 0; 0 1/2 1/2 1], added where the filter was read from.
  split_over_threads(g.out_channels, [&](int begin, int end) {
    for (int k = begin; k < end; ++k) {
      for (int c = 0; c < in_per_group; ++c) {
        const Dtype* du = filter_diff + static_cast<size_t>(k) * in_per_group
            + c;
        Dtype u[4][4], r[3][4];
        for (int i = 0; i < 16; ++i) {
          u[i / 4][i % 4] = du[i * plane];
        }
        for (int j = 0; j < 4; ++j) {
          r[0][j] = u[0][j] + half * (u[1][j] + u[2][j]);
          r[1][j] = half * (u[1][j] - u[2][j]);
          r[2][j] = half * (u[1][j] + u[2][j]) + u[3][j];
        }
        for (int p = 0; p < 3; ++p) {
          const Dtype dw[3] = {r[p][0] + half * (r[p][1] + r[p][2]),
                               half * (r[p][1] - r[p][2]),
                               half * (r[p][1] + r[p][2]) + r[p][3]};
          for (int q = 0; q < 3; ++q) {
            weight_diff[weight_index(g, k, c, p, q, deconvolution)] += dw[q];
          }
        }
      }
    }
  });
}

template void winograd_transform_filters<float>(const WinogradGeometry&,
    const float*, bool, float*);
template void winograd_transform_filters<double>(const WinogradGeometry&,
    const double*, bool, double*);
template void winograd_conv3x3_cpu<float>(const WinogradGeometry&,
    const float*, const float*, const float*, int, float*, float*, float*);
template void winograd_conv3x3_cpu<double>(const WinogradGeometry&,
    const double*, const double*, const double*, int, double*, double*,
    double*);
template void winograd_filter_gradient_cpu<float>(const WinogradGeometry&,
    const float*, const float*, int, float*, float*, float*);
template void winograd_filter_gradient_cpu<double>(const WinogradGeometry&,
    const double*, const double*, int, double*, double*, double*);
template void winograd_add_weight_gradient<float>(const WinogradGeometry&,
    const float*, bool, float*);
template void winograd_add_weight_gradient<double>(const WinogradGeometry&,
    const double*, bool, double*);

}  // namespace caffe
