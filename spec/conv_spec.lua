-- nn.conv2d: the im2col/gemm fast path against the direct-loop twin
-- (forward and backward, many shapes, channel-slice views), golden values
-- from plain Lua loops, finite-difference gradients, and argument errors.
local faceid = require("faceid")
local nn = faceid.nn
local helper = require("helper")

local maxabs = helper.maxabs
local assert_close = helper.assert_close

-- flat Lua array of a tensor's values
local function values(t)
  local out = {}
  local function walk(v)
    if type(v) == "number" then
      out[#out + 1] = v
    else
      for _, x in ipairs(v) do walk(x) end
    end
  end
  walk(t:totable())
  return out
end

local function gradcheck(loss, t, g, eps, what)
  return helper.gradcheck(loss, t, g, eps, what, 2e-3)
end

local project = helper.project
local fails_with = helper.fails_with

-- out size along one axis
local function osz(n, k, s, p)
  return (n + 2 * p - k) // s + 1
end

local configs = {
  { name = "1x1 (direct gemm)", n = 2, c = 5, h = 6, w = 7, oc = 4, kh = 1, kw = 1 },
  { name = "3x3 pad 1", n = 3, c = 7, h = 9, w = 8, oc = 5, kh = 3, kw = 3, padding = 1 },
  { name = "7x7 stride 2 pad 3", n = 2, c = 3, h = 17, w = 15, oc = 6, kh = 7, kw = 7, stride = 2, padding = 3 },
  { name = "3x5 kernel, stride {2,1}, pad {1,2}", n = 2, c = 4, h = 7, w = 11, oc = 3, kh = 3, kw = 5,
    stride = { 2, 1 }, padding = { 1, 2 } },
  { name = "1x1 stride 2 (im2col)", n = 2, c = 3, h = 7, w = 6, oc = 2, kh = 1, kw = 1, stride = 2 },
  { name = "1x1 pad 1 (im2col)", n = 1, c = 2, h = 3, w = 4, oc = 3, kh = 1, kw = 1, padding = 1 },
  { name = "2x2 stride 3, padding past the edge", n = 2, c = 3, h = 8, w = 5, oc = 2, kh = 2, kw = 2,
    stride = 3, padding = 2 },
  { name = "one image, one channel, kernel = input", n = 1, c = 1, h = 5, w = 4, oc = 3, kh = 5, kw = 4 },
  { name = "3x5 kernel, pad {2, 0}, fewer outputs than inputs (dx as a convolution)", n = 2, c = 6, h = 7,
    w = 9, oc = 2, kh = 3, kw = 5, padding = { 2, 0 } },
  { name = "3x3 pad 1, more outputs than inputs (dx through col2im)", n = 2, c = 2, h = 5, w = 6, oc = 5,
    kh = 3, kw = 3, padding = 1 },
  { name = "2x2 stride 1, padding as large as the kernel", n = 2, c = 3, h = 4, w = 3, oc = 2, kh = 2, kw = 2,
    padding = 2 },
  -- small maps go through the gemm several images at a time (at least 256
  -- columns): these make groups of 2 with a remainder, and one image per gemm
  { name = "3x3 pad 1 on 10x20 maps, images grouped with a remainder", n = 5, c = 5, h = 10, w = 20, oc = 3,
    kh = 3, kw = 3, padding = 1 },
  { name = "1x1 on 10x20 maps, images grouped with a remainder", n = 5, c = 4, h = 10, w = 20, oc = 6,
    kh = 1, kw = 1 },
  { name = "3x3 stride 2 on 28x28, grouped, dx through col2im", n = 5, c = 2, h = 28, w = 28, oc = 3,
    kh = 3, kw = 3, stride = 2, padding = 1 },
  { name = "3x3 pad 1 on 24x24 maps, one image per gemm", n = 2, c = 2, h = 24, w = 24, oc = 3,
    kh = 3, kw = 3, padding = 1 },
  { name = "1x1 on 24x24 maps, one image per gemm", n = 2, c = 3, h = 24, w = 24, oc = 2, kh = 1, kw = 1 },
  { name = "stride larger than the kernel", n = 2, c = 2, h = 10, w = 9, oc = 2, kh = 2, kw = 3,
    stride = { 4, 3 }, padding = { 0, 1 } },
  -- Winograd F(2x2, 3x3): 2x2 output tiles, numbered across images and
  -- transformed 256 at a time, rows in segments of 32 tiles; F(4x4, 3x3):
  -- 4x4 tiles, 128 at a time
  { name = "winograd: odd 9x7 maps (half tiles at the edges)", n = 3, c = 5, h = 9, w = 7, oc = 4, kh = 3,
    kw = 3, padding = 1, algorithm = "winograd" },
  { name = "winograd: 1x2 maps", n = 4, c = 3, h = 1, w = 2, oc = 2, kh = 3, kw = 3, padding = 1,
    algorithm = "winograd" },
  { name = "winograd: 385 tiles, a chunk ending inside a tile row of the fourth image", n = 5, c = 3, h = 13,
    w = 22, oc = 3, kh = 3, kw = 3, padding = 1, algorithm = "winograd" },
  { name = "winograd: rows of 131 tiles (segments of 32, 32, 32, 32 and 3)", n = 1, c = 2, h = 3, w = 261,
    oc = 3, kh = 3, kw = 3, padding = 1, algorithm = "winograd" },
  { name = "winograd4: 9x7 maps (partial tiles at the edges)", n = 3, c = 5, h = 9, w = 7, oc = 4, kh = 3,
    kw = 3, padding = 1, algorithm = "winograd4" },
  { name = "winograd4: 1x2 maps", n = 4, c = 3, h = 1, w = 2, oc = 2, kh = 3, kw = 3, padding = 1,
    algorithm = "winograd4" },
  { name = "winograd4: 168 tiles, a chunk ending inside a tile row of the sixth image", n = 7, c = 3, h = 13,
    w = 22, oc = 3, kh = 3, kw = 3, padding = 1, algorithm = "winograd4" },
  { name = "winograd4: rows of 66 tiles (segments of 32, 32 and 2)", n = 1, c = 2, h = 5, w = 263, oc = 3,
    kh = 3, kw = 3, padding = 1, algorithm = "winograd4" },
  { name = "winograd4: dx as a Winograd convolution of dy", n = 2, c = 6, h = 8, w = 8, oc = 2, kh = 3, kw = 3,
    padding = 1, algorithm = "winograd4" },
  { name = "winograd: dx as a Winograd convolution of dy (fewer outputs than inputs)", n = 2, c = 6, h = 8,
    w = 8, oc = 2, kh = 3, kw = 3, padding = 1, algorithm = "winograd" },
  { name = "winograd: more outputs than inputs (dx through col2im)", n = 2, c = 2, h = 6, w = 5, oc = 5,
    kh = 3, kw = 3, padding = 1, algorithm = "winograd" },
  -- (products under the pool's gemm grain: larger ones, threaded by BLAS
  -- when serial, would differ from the pool's run in the last bits)
  { name = "auto: 64 input channels take Winograd", n = 1, c = 64, h = 4, w = 5, oc = 16, kh = 3, kw = 3,
    padding = 1 },
  { name = "im2col asked for where Winograd fits", n = 1, c = 64, h = 4, w = 5, oc = 16, kh = 3, kw = 3,
    padding = 1, algorithm = "im2col" },
}

local function opts_of(cfg, extra)
  local o = { stride = cfg.stride, padding = cfg.padding, algorithm = cfg.algorithm }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function out_size(cfg)
  local sh = type(cfg.stride) == "table" and cfg.stride[1] or cfg.stride or 1
  local sw = type(cfg.stride) == "table" and cfg.stride[2] or cfg.stride or 1
  local ph = type(cfg.padding) == "table" and cfg.padding[1] or cfg.padding or 0
  local pw = type(cfg.padding) == "table" and cfg.padding[2] or cfg.padding or 0
  return osz(cfg.h, cfg.kh, sh, ph), osz(cfg.w, cfg.kw, sw, pw)
end

describe("nn.conv2d fast path against the direct loops", function()
  for idx, cfg in ipairs(configs) do
    it(cfg.name, function()
      local g = faceid.Generator(100 + idx)
      local x = faceid.randn(g, cfg.n, cfg.c, cfg.h, cfg.w)
      local w = faceid.randn(g, cfg.oc, cfg.c, cfg.kh, cfg.kw)
      local b = faceid.randn(g, cfg.oc)
      local o = opts_of(cfg)
      local oh, ow = out_size(cfg)

      local y = nn.conv2d(x, w, o)
      assert.are.same({ cfg.n, cfg.oc, oh, ow }, y:size())
      assert_close(y, nn.conv2d_naive(x, w, o), 1e-5, "forward")
      local ob = opts_of(cfg, { bias = b })
      assert_close(nn.conv2d(x, w, ob), nn.conv2d_naive(x, w, ob), 1e-5, "forward with bias")

      -- backward accumulates: start every gradient from the same non-zero base
      local dy = faceid.randn(g, cfg.n, cfg.oc, oh, ow)
      local dx0, dw0, db0 = faceid.randn(g, x:size()), faceid.randn(g, w:size()), faceid.randn(g, cfg.oc)
      local dx, dw, db = dx0:clone(), dw0:clone(), db0:clone()
      local rx, rw, rb = dx0:clone(), dw0:clone(), db0:clone()
      nn.conv2d_backward(dy, x, w, o, dx, dw, db)
      nn.conv2d_backward_naive(dy, x, w, o, rx, rw, rb)
      assert_close(dx, rx, 1e-5, "dx")
      assert_close(dw, rw, 1e-5, "dw")
      assert_close(db, rb, 1e-5, "db")
      -- the naive reference itself accumulated
      local zx = faceid.zeros(x:size())
      nn.conv2d_backward_naive(dy, x, w, o, zx)
      assert_close(rx - dx0, zx, 1e-5, "naive dx accumulates")
    end)
  end

  it("skips gradients given as nil", function()
    local g = faceid.Generator(7)
    local x, w = faceid.randn(g, 2, 3, 5, 5), faceid.randn(g, 4, 3, 3, 3)
    local dy = faceid.randn(g, 2, 4, 3, 3)
    local dx, dw = faceid.zeros(x:size()), faceid.zeros(w:size())
    nn.conv2d_backward(dy, x, w, nil, nil, dw)
    assert.are.equal(0, maxabs(dx))
    local rw = faceid.zeros(w:size())
    nn.conv2d_backward_naive(dy, x, w, nil, nil, rw)
    assert_close(dw, rw, 1e-5, "dw alone")
    nn.conv2d_backward(dy, x, w, nil, dx, nil)
    local rx = faceid.zeros(x:size())
    nn.conv2d_backward_naive(dy, x, w, nil, rx)
    assert_close(dx, rx, 1e-5, "dx alone")
    assert.are.same({ dx }, { nn.conv2d_backward(dy, x, w, {}, dx) })
  end)
end)

local same = helper.same

local with_threads = helper.with_threads

describe("nn.conv2d overwrite_dx and threads", function()
  for idx, cfg in ipairs(configs) do
    it(cfg.name, function()
      local g = faceid.Generator(300 + idx)
      local x = faceid.randn(g, cfg.n, cfg.c, cfg.h, cfg.w)
      local w = faceid.randn(g, cfg.oc, cfg.c, cfg.kh, cfg.kw)
      local b = faceid.randn(g, cfg.oc)
      local oh, ow = out_size(cfg)
      local dy = faceid.randn(g, cfg.n, cfg.oc, oh, ow)
      local o, over = opts_of(cfg), opts_of(cfg, { overwrite_dx = true })
      local garbage = faceid.randn(g, x:size()) * 1e3
      local function run()
        local y = nn.conv2d(x, w, opts_of(cfg, { bias = b }))
        local dx, dw, db = faceid.zeros(x:size()), faceid.zeros(w:size()), faceid.zeros(cfg.oc)
        nn.conv2d_backward(dy, x, w, o, dx, dw, db)
        -- dx overwritten (garbage and all), dw still accumulated
        local odx, odw = garbage:clone(), faceid.ones(w:size())
        nn.conv2d_backward(dy, x, w, over, odx, odw)
        -- into a channel slice: the channels around it stay as they were
        local buf = faceid.full({ cfg.n, cfg.c + 3, cfg.h, cfg.w }, 7)
        nn.conv2d_backward(dy, x, w, over, buf:narrow(2, 2, cfg.c))
        return y, dx, dw, db, odx, odw, buf
      end
      local y, dx, dw, db, odx, odw, buf = run()
      same(odx, dx, "dx overwritten")
      assert_close(odw - 1, dw, 1e-5, "dw accumulated")
      same(buf:narrow(2, 2, cfg.c):contiguous(), dx, "dx slice overwritten")
      assert.are.equal(7, buf:narrow(2, 1, 1):min())
      assert.are.equal(7, buf:narrow(2, cfg.c + 2, 2):max())
      -- the naive twin overwrites too
      local ndx = garbage:clone()
      nn.conv2d_backward_naive(dy, x, w, over, ndx)
      assert_close(ndx, dx, 1e-5, "naive dx overwritten")
      -- bitwise the same on 3 threads
      local got = table.pack(with_threads(3, run))
      local ref = { y, dx, dw, db, odx, odw, buf }
      local names = { "y", "dx", "dw", "db", "overwritten dx", "dw after overwrite", "slice" }
      for i = 1, #ref do same(got[i], ref[i], names[i] .. " on 3 threads") end
    end)
  end

  it("refuses a non-boolean overwrite_dx", function()
    local x, w = faceid.zeros(1, 1, 3, 3), faceid.zeros(1, 1, 1, 1)
    fails_with("nn.conv2d_backward: option overwrite_dx must be a boolean, got number", nn.conv2d_backward,
      x, x, w, { overwrite_dx = 1 }, x:clone())
  end)
end)

describe("nn.conv2d algorithms", function()
  local function conv(c, algorithm, seed)
    local g = faceid.Generator(seed or 1)
    local x, w = faceid.randn(g, 2, c, 7, 6), faceid.randn(g, 16, c, 3, 3)
    local b = faceid.randn(g, 16)
    return nn.conv2d(x, w, { padding = 1, bias = b, algorithm = algorithm })
  end

  it("auto takes Winograd from 64 input channels, im2col below", function()
    local wino, gemm = conv(64, "winograd"), conv(64, "im2col")
    same(conv(64, "auto"), wino, "auto on 64 channels")
    assert.is_false(wino:equal(gemm), "Winograd and im2col round differently")
    assert_close(wino, gemm, 1e-5, "Winograd against im2col")
    same(conv(63, "auto", 2), conv(63, "im2col", 2), "auto on 63 channels")
    same(conv(63), conv(63, "auto"), "the default is auto")
  end)

  it("Winograd on DenseNet's shapes stays within float rounding of the direct loops", function()
    local g = faceid.Generator(5)
    -- measured: im2col about 3e-7 of the largest output, F(2x2, 3x3) 3e-7,
    -- F(4x4, 3x3) 8e-6
    for _, case in ipairs({ { "winograd", 2e-6 }, { "winograd4", 2e-5 } }) do
      for _, hw in ipairs({ 16, 8, 4 }) do
        local x = faceid.randn(g, 3, 128, hw, hw):relu()
        local w = faceid.randn(g, 32, 128, 3, 3) * 0.03
        local y = nn.conv2d(x, w, { padding = 1, algorithm = case[1] })
        assert_close(y, nn.conv2d_naive(x, w, { padding = 1 }), case[2],
          case[1] .. " 128 -> 32 on " .. hw .. "x" .. hw)
      end
    end
  end)

  it("refuses Winograd where it does not fit and unknown algorithms", function()
    local x = faceid.zeros(1, 2, 6, 6)
    fails_with("nn.conv2d: winograd needs a 3x3 kernel, stride 1 and padding 1, got 5x5, stride 1x1, padding 2x2",
      nn.conv2d, x, faceid.zeros(1, 2, 5, 5), { padding = 2, algorithm = "winograd" })
    fails_with("got 3x3, stride 2x2, padding 1x1", nn.conv2d, x, faceid.zeros(1, 2, 3, 3),
      { padding = 1, stride = 2, algorithm = "winograd" })
    fails_with("got 3x3, stride 1x1, padding 0x0", nn.conv2d_backward, faceid.zeros(1, 1, 4, 4), x,
      faceid.zeros(1, 2, 3, 3), { algorithm = "winograd" }, x:clone())
    fails_with("nn.conv2d: winograd4 needs a 3x3 kernel, stride 1 and padding 1, got 1x1", nn.conv2d, x,
      faceid.zeros(1, 2, 1, 1), { algorithm = "winograd4" })
    fails_with('nn.conv2d: option algorithm must be "auto", "im2col", "winograd" or "winograd4", got "fft"', nn.conv2d, x,
      faceid.zeros(1, 2, 3, 3), { algorithm = "fft" })
    fails_with('nn.conv2d_naive: option algorithm must be "auto", "im2col", "winograd" or "winograd4", got number',
      nn.conv2d_naive, x, faceid.zeros(1, 2, 3, 3), { algorithm = 2 })
    fails_with("nn.conv2d: unknown convolution algorithm", require("faceid.core")._nn.conv2d, x,
      faceid.zeros(1, 2, 3, 3), nil, 1, 1, 1, 1, nil, 7)
  end)
end)

describe("nn.conv2d on channel slices of a shared buffer", function()
  local cases = {
    { "3x3 pad 1", 3, 1 },
    { "1x1", 1, 0 },
    { "3x3 by winograd", 3, 1, "winograd" },
    { "3x3 by winograd4", 3, 1, "winograd4" },
  }
  for _, case in ipairs(cases) do
    local name, k, pad, algo = case[1], case[2], case[3], case[4]
    it("reads and writes slices with any batch stride (" .. name .. ")", function()
      local g = faceid.Generator(31 + k)
      local n, c, h, wd, oc = 3, 4, 6, 5, 3
      local xbuf = faceid.randn(g, n, 11, h, wd)
      local x = xbuf:narrow(2, 5, c) -- channels 5..8 of 11
      assert.is_false(x:is_contiguous())
      local w = faceid.randn(g, oc, c, k, k)
      local o = { padding = pad, algorithm = algo }
      local ref = nn.conv2d_naive(x:contiguous(), w, o)
      assert_close(nn.conv2d(x, w, o), ref, 1e-5, "slice input")
      assert_close(nn.conv2d_naive(x, w, o), ref, 1e-6, "slice input, naive")

      -- output into channels 2..4 of a 9-channel buffer; the rest untouched
      local ybuf = faceid.randn(g, n, 9, h, wd)
      local before = ybuf:clone()
      local y = nn.conv2d(x, w, { padding = pad, out = ybuf:narrow(2, 2, oc), algorithm = algo })
      assert_close(ybuf:narrow(2, 2, oc):contiguous(), ref, 1e-5, "slice output")
      assert.are.equal(0, maxabs(ybuf:narrow(2, 1, 1) - before:narrow(2, 1, 1)))
      assert.are.equal(0, maxabs(ybuf:narrow(2, 5, 5) - before:narrow(2, 5, 5)))
      assert_close(y:contiguous(), ref, 1e-5, "returned view")

      -- gradients: dy a slice of one buffer, dx a slice of another with a
      -- different batch stride than x's
      local dybuf = faceid.randn(g, n, 7, h, wd)
      local dy = dybuf:narrow(2, 3, oc)
      local dxbuf = faceid.randn(g, n, 6, h, wd)
      local dxbefore = dxbuf:clone()
      local dx = dxbuf:narrow(2, 2, c)
      local dw = faceid.zeros(w:size())
      nn.conv2d_backward(dy, x, w, o, dx, dw)
      local rx, rw = faceid.zeros(n, c, h, wd), faceid.zeros(w:size())
      nn.conv2d_backward_naive(dy:contiguous(), x:contiguous(), w, o, rx, rw)
      assert_close(dx:contiguous() - dxbefore:narrow(2, 2, c):contiguous(), rx, 1e-5, "slice dx")
      assert_close(dw, rw, 1e-5, "slice dw")
      assert.are.equal(0, maxabs(dxbuf:narrow(2, 1, 1) - dxbefore:narrow(2, 1, 1)))
      assert.are.equal(0, maxabs(dxbuf:narrow(2, 6, 1) - dxbefore:narrow(2, 6, 1)))
    end)
  end
end)

describe("nn.conv2d inside one dense-block buffer", function()
  it("reads the first channels and appends its output after them", function()
    local g = faceid.Generator(41)
    local n, cin, k, h, w = 3, 5, 2, 4, 6
    local buf = faceid.randn(g, n, cin + 2 * k, h, w)
    local wt = faceid.randn(g, k, cin, 3, 3)
    local ref = nn.conv2d_naive(buf:narrow(2, 1, cin):contiguous(), wt, { padding = 1 })
    local before = buf:clone()
    nn.conv2d(buf:narrow(2, 1, cin), wt, { padding = 1, out = buf:narrow(2, cin + 1, k) })
    assert_close(buf:narrow(2, cin + 1, k):contiguous(), ref, 1e-5, "appended")
    assert.are.equal(0, maxabs(buf:narrow(2, 1, cin) - before:narrow(2, 1, cin)))
    assert.are.equal(0, maxabs(buf:narrow(2, cin + k + 1, k) - before:narrow(2, cin + k + 1, k)))
    -- the same for the gradient buffer: dx into the first channels, dy from the new ones
    local dbuf = faceid.randn(g, n, cin + 2 * k, h, w)
    local dbefore = dbuf:clone()
    nn.conv2d_backward(dbuf:narrow(2, cin + 1, k), buf:narrow(2, 1, cin), wt, { padding = 1 },
      dbuf:narrow(2, 1, cin))
    local rx = faceid.zeros(n, cin, h, w)
    nn.conv2d_backward_naive(dbefore:narrow(2, cin + 1, k):contiguous(), buf:narrow(2, 1, cin):contiguous(), wt,
      { padding = 1 }, rx)
    assert_close(dbuf:narrow(2, 1, cin):contiguous() - dbefore:narrow(2, 1, cin):contiguous(), rx, 1e-5, "dx")
    -- but an output over its own input channels is refused
    fails_with("nn.conv2d: out overlaps the input", nn.conv2d, buf:narrow(2, 1, cin), wt,
      { padding = 1, out = buf:narrow(2, cin, k) })
    fails_with("nn.conv2d_backward: the input gradient overlaps the output gradient", nn.conv2d_backward,
      dbuf:narrow(2, cin + 1, k), buf:narrow(2, 1, cin), wt, { padding = 1 }, dbuf:narrow(2, 2, cin))
  end)
end)

describe("nn.conv2d golden values", function()
  it("sums 3x3 windows of 1..16 with a ones kernel", function()
    local x = faceid.arange(1, 17):view(1, 1, 4, 4)
    local y = nn.conv2d(x, faceid.ones(1, 1, 3, 3))
    assert.are.same({ { { { 54, 63 }, { 90, 99 } } } }, y:totable())
    -- padding 1: the corner sees 1 + 2 + 5 + 6
    local yp = nn.conv2d(x, faceid.ones(1, 1, 3, 3), { padding = 1 })
    assert.are.equal(14, yp:get(1, 1, 1, 1))
    assert.are.equal(11 + 12 + 15 + 16, yp:get(1, 1, 4, 4))
    assert.are.equal(1 + 2 + 3 + 5 + 6 + 7, yp:get(1, 1, 1, 2))
  end)

  it("matches a convolution written with Lua loops", function()
    local g = faceid.Generator(5)
    local n, c, h, wd, oc, k, s, p = 2, 3, 5, 6, 2, 3, 2, 1
    local x, w, b = faceid.randn(g, n, c, h, wd), faceid.randn(g, oc, c, k, k), faceid.randn(g, oc)
    local y = nn.conv2d(x, w, { stride = s, padding = p, bias = b })
    local xt, wt, bt = x:totable(), w:totable(), b:totable()
    local oh, ow = osz(h, k, s, p), osz(wd, k, s, p)
    assert.are.same({ n, oc, oh, ow }, y:size())
    for i = 1, n do
      for o = 1, oc do
        for yy = 1, oh do
          for xx = 1, ow do
            local acc = bt[o]
            for ci = 1, c do
              for u = 1, k do
                for v = 1, k do
                  local ih, iw = (yy - 1) * s - p + u, (xx - 1) * s - p + v
                  if ih >= 1 and ih <= h and iw >= 1 and iw <= wd then
                    acc = acc + xt[i][ci][ih][iw] * wt[o][ci][u][v]
                  end
                end
              end
            end
            local got = y:get(i, o, yy, xx)
            assert(math.abs(got - acc) <= 1e-5 * math.max(1, math.abs(acc)),
              ("y[%d][%d][%d][%d] = %.7g, want %.7g"):format(i, o, yy, xx, got, acc))
          end
        end
      end
    end
  end)
end)

describe("nn.conv2d gradients by finite differences", function()
  -- {name, seed, x size, options}: a 3x3 kernel, 3 -> 4 channels, with bias
  local cases = {
    { "a strided padded conv", 11, { 2, 3, 6, 5 }, { stride = 2, padding = 1 } },
    { "a 3x3 conv by winograd (odd map, partial tiles)", 13, { 2, 3, 7, 5 }, { padding = 1, algorithm = "winograd" } },
    { "a 3x3 conv by winograd4 (odd map, partial tiles)", 13, { 2, 3, 7, 5 }, { padding = 1, algorithm = "winograd4" } },
  }
  for _, case in ipairs(cases) do
    it("checks dx, dw and db of " .. case[1], function()
      local g = faceid.Generator(case[2])
      local x, w, b = faceid.randn(g, table.unpack(case[3])), faceid.randn(g, 4, 3, 3, 3), faceid.randn(g, 4)
      local o = { bias = b }
      for k, v in pairs(case[4]) do o[k] = v end
      local y = nn.conv2d(x, w, o)
      local r = faceid.randn(g, y:size())
      local dx, dw, db = faceid.zeros(x:size()), faceid.zeros(w:size()), faceid.zeros(4)
      nn.conv2d_backward(r, x, w, o, dx, dw, db)
      local function loss()
        return project(nn.conv2d(x, w, o), r)
      end
      gradcheck(loss, x, dx, 1e-2, "dx")
      gradcheck(loss, w, dw, 1e-2, "dw")
      gradcheck(loss, b, db, 1e-2, "db")
    end)
  end

  it("checks dx and dw of a 1x1 conv", function()
    local g = faceid.Generator(12)
    local x, w = faceid.randn(g, 2, 5, 3, 4), faceid.randn(g, 3, 5, 1, 1)
    local r = faceid.randn(g, 2, 3, 3, 4)
    local dx, dw = faceid.zeros(x:size()), faceid.zeros(w:size())
    nn.conv2d_backward(r, x, w, nil, dx, dw)
    local function loss()
      return project(nn.conv2d(x, w), r)
    end
    gradcheck(loss, x, dx, 1e-2, "dx")
    gradcheck(loss, w, dw, 1e-2, "dw")
  end)

  it("would notice a wrong gradient", function()
    local g = faceid.Generator(13)
    local x, w = faceid.randn(g, 1, 2, 4, 4), faceid.randn(g, 2, 2, 3, 3)
    local r = faceid.randn(g, 1, 2, 2, 2)
    local dw = faceid.zeros(w:size())
    nn.conv2d_backward(r, x, w, nil, nil, dw)
    dw:set(1, 2, 2, 2, dw:get(1, 2, 2, 2) * 1.1 + 0.1)
    local ok = pcall(gradcheck, function() return project(nn.conv2d(x, w), r) end, w, dw, 1e-2, "dw")
    assert.is_false(ok)
  end)
end)

describe("nn.conv2d errors", function()
  local g = faceid.Generator(3)
  local x = faceid.randn(g, 8, 3, 6, 6)
  local w = faceid.randn(g, 5, 3, 3, 3)

  it("names mismatched channels with both shapes", function()
    fails_with("nn.conv2d: input 8x3x6x6 but weight expects 4 channels", nn.conv2d, x, faceid.randn(g, 5, 4, 3, 3))
  end)

  it("refuses wrong ranks and types", function()
    fails_with("nn.conv2d: input must be 4-D (N, C, H, W), got 3x6x6 (3-D)", nn.conv2d, faceid.randn(g, 3, 6, 6), w)
    fails_with("nn.conv2d: weight must be 4-D", nn.conv2d, x, faceid.randn(g, 5, 27))
    fails_with("nn.conv2d: input must be a faceid.Tensor, got nil", nn.conv2d, nil, w)
    fails_with("nn.conv2d: weight must be a faceid.Tensor, got table", nn.conv2d, x, {})
    fails_with("nn.conv2d: bias has shape 4, expected 5", nn.conv2d, x, w, { bias = faceid.zeros(4) })
  end)

  it("refuses bad options", function()
    fails_with("nn.conv2d: unknown option 'strides'", nn.conv2d, x, w, { strides = 2 })
    fails_with("nn.conv2d: option stride must be a positive integer", nn.conv2d, x, w, { stride = 0 })
    fails_with("nn.conv2d: option stride must be a positive integer", nn.conv2d, x, w, { stride = 1.5 })
    fails_with("nn.conv2d: option padding must be a non-negative integer", nn.conv2d, x, w, { padding = -1 })
    fails_with("nn.conv2d: option padding must be a number or a pair", nn.conv2d, x, w, { padding = { 1, 1, 1 } })
    fails_with("nn.conv2d: options must be a table, got number", nn.conv2d, x, w, 2)
    fails_with("nn.conv2d_backward: unknown option 'pad'", nn.conv2d_backward, x, x, w, { pad = 1 })
  end)

  it("refuses a kernel larger than the padded input", function()
    fails_with("nn.conv2d: kernel 7x7 is larger than the padded input 6x6", nn.conv2d, x, faceid.randn(g, 2, 3, 7, 7))
  end)

  it("checks gradient shapes, layouts and aliasing", function()
    local dy = faceid.randn(g, 8, 5, 4, 4)
    fails_with("nn.conv2d_backward: output gradient has shape 8x5x4x4, expected 8x5x6x6",
      nn.conv2d_backward, dy, x, w, { padding = 1 })
    fails_with("nn.conv2d_backward: input gradient has shape 8x3x5x6, expected 8x3x6x6",
      nn.conv2d_backward, dy, x, w, {}, faceid.zeros(8, 3, 5, 6))
    fails_with("nn.conv2d_backward: weight gradient has shape 5x3x3x4, expected 5x3x3x3",
      nn.conv2d_backward, faceid.zeros(8, 5, 4, 4), x, w, {}, nil, faceid.zeros(5, 3, 3, 4))
    fails_with("nn.conv2d_backward: the input gradient overlaps the input",
      nn.conv2d_backward, faceid.zeros(8, 5, 4, 4), x, w, {}, x)
    fails_with("nn.conv2d: out overlaps the input",
      nn.conv2d, x, faceid.randn(g, 3, 3, 1, 1), { out = x })
    fails_with("nn.conv2d: input must be dense apart from its batch stride",
      nn.conv2d, x:transpose(3, 4), w)
    fails_with("nn.conv2d: weight must be contiguous", nn.conv2d, x, w:transpose(3, 4))
    fails_with("nn.conv2d: out has shape 8x5x4x4, expected 8x5x6x6",
      nn.conv2d, x, w, { padding = 1, out = faceid.zeros(8, 5, 4, 4) })
  end)
end)
