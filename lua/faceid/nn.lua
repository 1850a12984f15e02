--- faceid.nn: the neural-network layers as plain functions on Tensors.
--
-- Every layer is a forward function returning new tensors and a backward
-- function that ACCUMULATES (+=) gradients into tensors you pass (zero them
-- yourself first, e.g. with t:zero_()). Layouts are PyTorch's: images are
-- (N, C, H, W) float32, conv weights (OC, C, KH, KW), linear weights
-- (OUT, IN). Shapes follow torch.nn.functional, so numbers can be compared
-- with PyTorch directly.
--
-- Images may be views whose batch dimension has any stride while each image
-- is dense, e.g. `buf:narrow(2, c0, C)` of an (N, Ctotal, H, W) buffer: a
-- layer then reads (or, given `out`, writes) a channel slice in place. An
-- output may be another channel slice of the input's own buffer (a dense
-- block appending its new features); outputs that share memory with an
-- input are refused, except the in-place forms of relu and batchnorm2d.
-- Parameters must be contiguous.
--
-- Options are tables; an unknown key is an error. `stride`, `padding` and
-- `kernel` take a number or a pair {h, w}. Backward functions take the
-- option `overwrite_dx` (false): true writes dx = dL/dx instead of adding
-- to it, which saves zeroing dx first (weight and bias gradients still
-- accumulate).
--
-- Threads: nn.set_threads(n) gives this Lua state a pool of n threads (the
-- caller included) on which the memory-bound loops run; results are
-- bitwise the same for every n. Matrix products use BLAS's own threads
-- (faceid.set_num_threads).
--
--   local nn = require("faceid").nn
--   local y = nn.conv2d(x, w, { stride = 2, padding = 3 })
--   local dx, dw = faceid.zeros(x:size()), faceid.zeros(w:size())
--   nn.conv2d_backward(dy, x, w, { stride = 2, padding = 3 }, dx, dw)
local core = require("faceid.core")
local C = core._nn

local M = {}

local NONE = {} -- marks an option without a default
local SOURCE = debug.getinfo(1, "S").source

-- raise msg at the first caller outside this file (the user's line)
local function fail(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.source ~= SOURCE and info.what ~= "C") then break end
    level = level + 1
  end
  error(msg, level)
end

-- opts checked against `spec` (key -> default or NONE); errors name the caller
local function options(fname, opts, spec)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    fail(("%s: options must be a table, got %s"):format(fname, type(opts)))
  end
  for k in pairs(opts) do
    if spec[k] == nil then
      local known = {}
      for name in pairs(spec) do known[#known + 1] = name end
      table.sort(known)
      fail(("%s: unknown option '%s' (known: %s)"):format(fname, tostring(k), table.concat(known, ", ")))
    end
  end
  local o = {}
  for k, default in pairs(spec) do
    local v = opts[k]
    if v == nil and default ~= NONE then v = default end
    o[k] = v
  end
  return o
end

local function int(fname, name, v, min)
  local i = math.type(v) and math.tointeger(v)
  if not i or i < min then
    fail(("%s: option %s must be %s integer or a pair {h, w} of them, got %s"):format(
      fname, name, min > 0 and "a positive" or "a non-negative", tostring(v)))
  end
  return i
end

-- a number or {h, w} -> h, w
local function pair(fname, name, v, min)
  if type(v) == "table" then
    if #v ~= 2 then
      fail(("%s: option %s must be a number or a pair {h, w}, got a table of %d"):format(fname, name, #v))
    end
    return int(fname, name, v[1], min), int(fname, name, v[2], min)
  end
  local i = int(fname, name, v, min)
  return i, i
end

local function boolean(fname, name, v)
  if type(v) ~= "boolean" then
    fail(("%s: option %s must be a boolean, got %s"):format(fname, name, type(v)))
  end
  return v
end

local function number(fname, name, v)
  if type(v) ~= "number" then
    fail(("%s: option %s must be a number, got %s"):format(fname, name, type(v)))
  end
  return v
end

-- ---- threads ------------------------------------------------------------

--- Run the layers of this Lua state on n threads (1: serially, the default).
-- The pool's workers sleep between calls; a new count replaces the pool.
-- Calls under about 0.25 M floats of work run serially all the same.
function M.set_threads(n)
  C.set_threads(n)
end

--- The thread count set by set_threads.
function M.threads()
  return C.threads()
end

-- ---- conv2d -------------------------------------------------------------

local CONV = { stride = 1, padding = 0, bias = NONE, out = NONE, overwrite_dx = false, algorithm = "auto" }
-- the C core's codes (FID_CONV_AUTO, FID_CONV_IM2COL, FID_CONV_WINOGRAD, FID_CONV_WINOGRAD4)
local ALGORITHMS = { auto = 0, im2col = 1, winograd = 2, winograd4 = 3 }

local function conv_opts(fname, opts)
  local o = options(fname, opts, CONV)
  local sh, sw = pair(fname, "stride", o.stride, 1)
  local ph, pw = pair(fname, "padding", o.padding, 0)
  local algo = ALGORITHMS[o.algorithm]
  if not algo then
    fail(('%s: option algorithm must be "auto", "im2col", "winograd" or "winograd4", got %s'):format(
      fname, type(o.algorithm) == "string" and ('"' .. o.algorithm .. '"') or type(o.algorithm)))
  end
  return o, sh, sw, ph, pw, algo
end

--- 2-D convolution (cross-correlation, zero padding, no bias unless given).
-- @param x input (N, C, H, W)
-- @param w weight (OC, C, KH, KW)
-- @param opts `stride` (1), `padding` (0), `bias` (a tensor (OC) or nil),
--   `out` (a tensor (N, OC, OH, OW), possibly a channel slice, to write into),
--   `algorithm` ("auto": Winograd F(2x2, 3x3) for 3x3 kernels with stride 1
--   and padding 1 and at least 64 input channels, im2col + gemm otherwise;
--   "im2col"; "winograd", an error for other kernels; "winograd4", F(4x4, 3x3))
-- @return y (N, OC, OH, OW), OH = floor((H + 2*ph - KH) / sh) + 1
function M.conv2d(x, w, opts)
  local o, sh, sw, ph, pw, algo = conv_opts("nn.conv2d", opts)
  return C.conv2d(x, w, o.bias, sh, sw, ph, pw, o.out, algo)
end

--- Gradients of conv2d, accumulated: dx += dL/dx, dw += dL/dw, db += dL/db.
-- @param dy dL/dy (N, OC, OH, OW)
-- @param x, w the forward's input and weight
-- @param opts the forward's options (bias and out are ignored), and
--   `overwrite_dx` (false)
-- @param dx, dw, db tensors shaped like x, w and the bias; any may be nil
-- @return dx, dw, db
function M.conv2d_backward(dy, x, w, opts, dx, dw, db)
  local fname = "nn.conv2d_backward"
  local o, sh, sw, ph, pw, algo = conv_opts(fname, opts)
  C.conv2d_backward(dy, x, w, sh, sw, ph, pw, dx, dw, db, boolean(fname, "overwrite_dx", o.overwrite_dx), algo)
  return dx, dw, db
end

--- conv2d by direct loops (slow; the reference the fast path is tested against).
function M.conv2d_naive(x, w, opts)
  local o, sh, sw, ph, pw = conv_opts("nn.conv2d_naive", opts)
  return C.conv2d_naive(x, w, o.bias, sh, sw, ph, pw, o.out)
end

--- conv2d_backward by direct loops.
function M.conv2d_backward_naive(dy, x, w, opts, dx, dw, db)
  local fname = "nn.conv2d_backward_naive"
  local o, sh, sw, ph, pw = conv_opts(fname, opts)
  C.conv2d_backward_naive(dy, x, w, sh, sw, ph, pw, dx, dw, db, boolean(fname, "overwrite_dx", o.overwrite_dx))
  return dx, dw, db
end

-- ---- batchnorm2d --------------------------------------------------------

local BN = { training = true, momentum = 0.1, eps = 1e-5, out = NONE, relu = false, overwrite_dx = false }

--- 2-D batch normalisation, as torch.nn.BatchNorm2d.
-- Training: normalises with the batch mean and biased variance over
-- (N, H, W) per channel and updates running_mean/running_var in place:
-- r = (1 - momentum) * r + momentum * stat, with the UNBIASED variance.
-- Eval: normalises with the running statistics.
-- @param x input (N, C, H, W)
-- @param weight, bias gamma and beta (C), or nil for 1 and 0
-- @param running_mean, running_var (C): required in eval; in training nil
--   for both means the statistics are not tracked
-- @param opts `training` (true), `momentum` (0.1), `eps` (1e-5), `out`
--   (a tensor shaped like x to write into; may be x itself), `relu` (false:
--   true returns relu(y) from the same pass)
-- @return y (N, C, H, W), save: a (2, C) tensor holding the mean (row 1)
--   and 1/sqrt(var + eps) (row 2) used, for batchnorm2d_backward
function M.batchnorm2d(x, weight, bias, running_mean, running_var, opts)
  local fname = "nn.batchnorm2d"
  local o = options(fname, opts, BN)
  return C.batchnorm2d(x, weight, bias, running_mean, running_var, boolean(fname, "training", o.training),
    number(fname, "momentum", o.momentum), number(fname, "eps", o.eps), o.out, boolean(fname, "relu", o.relu))
end

--- batchnorm2d's output recomputed from its saved statistics: (x - mean) *
-- (weight * invstd) + bias, then relu when opts.relu, bitwise equal to the
-- forward's y. Recomputing is how a network avoids keeping BN outputs.
-- @param save the forward's (2, C) statistics
-- @param opts the forward's options (`relu` and `out` are read)
-- @return y (N, C, H, W)
function M.batchnorm2d_apply(x, weight, bias, save, opts)
  local fname = "nn.batchnorm2d_apply"
  local o = options(fname, opts, BN)
  return C.batchnorm2d_apply(x, weight, bias, save, boolean(fname, "relu", o.relu), o.out)
end

--- Gradients of batchnorm2d, accumulated into dx, dweight, dbias (any may be nil).
-- In training mode the gradient flows through the batch statistics; in eval
-- mode they are constants. `opts` is the forward's (training and
-- overwrite_dx are read; a forward with relu needs batchnorm2d_relu_backward).
-- @return dx, dweight, dbias
function M.batchnorm2d_backward(dy, x, weight, save, opts, dx, dweight, dbias)
  local fname = "nn.batchnorm2d_backward"
  local o = options(fname, opts, BN)
  if o.relu then
    fail(fname .. ": option relu needs the bias: use nn.batchnorm2d_relu_backward")
  end
  C.batchnorm2d_backward(dy, x, weight, save, boolean(fname, "training", o.training), dx, dweight, dbias,
    boolean(fname, "overwrite_dx", o.overwrite_dx))
  return dx, dweight, dbias
end

--- Gradients of relu(batchnorm2d(x)), accumulated: dy is the gradient at
-- the ReLU's output. The ReLU mask is recomputed from x, weight, bias and
-- save, so neither the output nor a mask has to be kept; the result equals,
-- bitwise, masking dy with relu_backward and calling batchnorm2d_backward.
-- @param bias the forward's bias (or nil for 0)
-- @return dx, dweight, dbias
function M.batchnorm2d_relu_backward(dy, x, weight, bias, save, opts, dx, dweight, dbias)
  local fname = "nn.batchnorm2d_relu_backward"
  local o = options(fname, opts, BN)
  C.batchnorm2d_backward(dy, x, weight, save, boolean(fname, "training", o.training), dx, dweight, dbias,
    boolean(fname, "overwrite_dx", o.overwrite_dx), true, bias)
  return dx, dweight, dbias
end

-- ---- relu ---------------------------------------------------------------

--- y = max(x, 0) elementwise; `out` (optional) may be x itself (in place).
-- x has 1 to 4 dimensions (the first may be a strided batch).
function M.relu(x, out)
  return C.relu(x, out)
end

--- dx += dy where y > 0. Takes the forward OUTPUT y (so an in-place forward
-- is fine); returns dx, a new zeroed tensor first when dx is nil.
function M.relu_backward(dy, y, dx)
  return C.relu_backward(dy, y, dx)
end

-- ---- pooling ------------------------------------------------------------

local MAXPOOL = { stride = NONE, padding = 0, out = NONE, indices = true }
local AVGPOOL = { stride = NONE, padding = 0, count_include_pad = true, out = NONE, overwrite_dx = false }
local GRAD = { overwrite_dx = false }

-- the overwrite_dx option of a backward without other options
local function overwrite(fname, opts)
  return boolean(fname, "overwrite_dx", options(fname, opts, GRAD).overwrite_dx)
end

local function pool_args(fname, kernel, opts, spec)
  local o = options(fname, opts, spec)
  local kh, kw = pair(fname, "kernel", kernel, 1)
  local sh, sw = kh, kw
  if o.stride ~= nil then sh, sw = pair(fname, "stride", o.stride, 1) end
  local ph, pw = pair(fname, "padding", o.padding, 0)
  return o, kh, kw, sh, sw, ph, pw
end

--- Max pooling, as torch.nn.functional.max_pool2d (floor mode, padding
-- counts as -inf and may be at most half the kernel).
-- @param x input (N, C, H, W)
-- @param kernel a number or {kh, kw}
-- @param opts `stride` (the kernel), `padding` (0), `out`, `indices` (true;
--   false: the values alone, by a faster separable pass, as in evaluation)
-- @return y (N, C, OH, OW), indices: an opaque faceid.PoolIndices holding
--   the argmax of every window (and the input shape) for max_pool2d_backward;
--   indices:totensor() gives them as 1-based flat positions h*W + w + 1 in
--   each input plane, indices:size() the output shape
function M.max_pool2d(x, kernel, opts)
  local fname = "nn.max_pool2d"
  local o, kh, kw, sh, sw, ph, pw = pool_args(fname, kernel, opts, MAXPOOL)
  return C.max_pool2d(x, kh, kw, sh, sw, ph, pw, o.out, not boolean(fname, "indices", o.indices))
end

--- dx += dy routed to each window's argmax; returns dx (new and zeroed when nil).
-- @param opts `overwrite_dx` (false)
function M.max_pool2d_backward(dy, indices, dx, opts)
  return C.max_pool2d_backward(dy, indices, dx, overwrite("nn.max_pool2d_backward", opts))
end

--- Average pooling, as torch.nn.functional.avg_pool2d (floor mode; with
-- count_include_pad (true) the padding zeros count in the divisor).
-- @param x input (N, C, H, W)
-- @param kernel a number or {kh, kw}
-- @param opts `stride` (the kernel), `padding` (0), `count_include_pad`
--   (true), `out`
function M.avg_pool2d(x, kernel, opts)
  local fname = "nn.avg_pool2d"
  local o, kh, kw, sh, sw, ph, pw = pool_args(fname, kernel, opts, AVGPOOL)
  return C.avg_pool2d(x, kh, kw, sh, sw, ph, pw, boolean(fname, "count_include_pad", o.count_include_pad), o.out)
end

--- dx += the gradient of avg_pool2d; x (or any tensor of the input's shape)
-- gives the input size; opts as the forward's plus `overwrite_dx` (false).
-- Returns dx (new and zeroed when nil).
function M.avg_pool2d_backward(dy, x, kernel, opts, dx)
  local fname = "nn.avg_pool2d_backward"
  local o, kh, kw, sh, sw, ph, pw = pool_args(fname, kernel, opts, AVGPOOL)
  return C.avg_pool2d_backward(dy, x, kh, kw, sh, sw, ph, pw,
    boolean(fname, "count_include_pad", o.count_include_pad), dx, boolean(fname, "overwrite_dx", o.overwrite_dx))
end

--- Global average pooling (N, C, H, W) -> (N, C); `out` (optional) an (N, C) tensor.
function M.global_avg_pool(x, out)
  return C.global_avg_pool(x, out)
end

--- dx += dy / (H*W) broadcast over each plane; returns dx (new when nil).
-- @param opts `overwrite_dx` (false)
function M.global_avg_pool_backward(dy, x, dx, opts)
  return C.global_avg_pool_backward(dy, x, dx, overwrite("nn.global_avg_pool_backward", opts))
end

-- ---- linear -------------------------------------------------------------

--- y (N, OUT) = x (N, IN) @ w^T + b, with w (OUT, IN) as torch.nn.Linear.
-- @param b bias (OUT) or nil
-- @param out optional (N, OUT) tensor to write into
function M.linear(x, w, b, out)
  return C.linear(x, w, b, out)
end

--- Gradients of linear, accumulated: dx += dy @ w, dw += dy^T @ x,
-- db += the column sums of dy; any of dx, dw, db may be nil.
-- @return dx, dw, db
function M.linear_backward(dy, x, w, dx, dw, db)
  C.linear_backward(dy, x, w, dx, dw, db)
  return dx, dw, db
end

return M
