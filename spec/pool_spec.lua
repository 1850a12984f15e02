-- nn.max_pool2d, nn.avg_pool2d, nn.global_avg_pool and nn.relu: golden
-- values from Lua loops with PyTorch's semantics, channel slices,
-- finite-difference gradients away from kinks and ties, and errors.
local faceid = require("faceid")
local nn = faceid.nn
local helper = require("helper")

local maxabs = helper.maxabs
local assert_close = helper.assert_close

local function gradcheck(loss, t, g, eps, what)
  return helper.gradcheck(loss, t, g, eps, what, 2e-3)
end

local project = helper.project
local fails_with = helper.fails_with

-- distinct values 0.1 apart in a random order: no ties, no kinks within +-eps
local function distinct(g, n, c, h, w)
  local count = n * c * h * w
  local vals = {}
  for i = 1, count do vals[i] = (i - count / 2) * 0.1 end
  for i = count, 2, -1 do
    local j = g:random(i)
    vals[i], vals[j] = vals[j], vals[i]
  end
  return faceid.tensor(vals):view(n, c, h, w)
end

-- reference pooling with Lua loops; returns values and (for max) 1-based argmax
local function lua_pool(xt, kind, k, s, p, include_pad)
  local n, c, h, w = #xt, #xt[1], #xt[1][1], #xt[1][1][1]
  local oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  local y, arg = {}, {}
  for i = 1, n do
    y[i], arg[i] = {}, {}
    for ch = 1, c do
      y[i][ch], arg[i][ch] = {}, {}
      for a = 1, oh do
        y[i][ch][a], arg[i][ch][a] = {}, {}
        for b = 1, ow do
          local best, where, sum, cnt = -math.huge, nil, 0, 0
          for u = 1, k do
            for v = 1, k do
              local yy, xx = (a - 1) * s - p + u, (b - 1) * s - p + v
              if yy >= 1 and yy <= h and xx >= 1 and xx <= w then
                local val = xt[i][ch][yy][xx]
                if val > best then best, where = val, (yy - 1) * w + xx end
                sum, cnt = sum + val, cnt + 1
              end
            end
          end
          if kind == "max" then
            y[i][ch][a][b], arg[i][ch][a][b] = best, where
          else
            y[i][ch][a][b] = sum / (include_pad and k * k or cnt)
          end
        end
      end
    end
  end
  return faceid.tensor(y), kind == "max" and faceid.tensor(arg) or nil
end

describe("nn.max_pool2d", function()
  it("takes 2x2 maxima of 1..16 with their positions", function()
    local x = faceid.arange(1, 17):view(1, 1, 4, 4)
    local y, idx = nn.max_pool2d(x, 2)
    assert.are.same({ { { { 6, 8 }, { 14, 16 } } } }, y:totable())
    assert.are.same({ { { { 6, 8 }, { 14, 16 } } } }, idx:totensor():totable())
    assert.are.same({ 1, 1, 2, 2 }, idx:size())
    assert.truthy(tostring(idx):find("PoolIndices(1x1x2x2 of a 4x4 input)", 1, true))
  end)

  local cases = {
    { "3x3 stride 2 pad 1 (the stem)", 3, 2, 1, 2, 3, 9, 8 },
    { "2x2 stride 2", 2, 2, 0, 2, 2, 6, 7 },
    { "3x3 stride 1 pad 1", 3, 1, 1, 1, 3, 5, 4 },
    { "2x2 stride 1 pad 1", 2, 1, 1, 2, 2, 3, 5 },
  }
  for _, case in ipairs(cases) do
    local name, k, s, p, n, c, h, w = table.unpack(case)
    it("matches Lua loops and finite differences: " .. name, function()
      local g = faceid.Generator(k * 10 + s + p)
      local x = distinct(g, n, c, h, w)
      local y, idx = nn.max_pool2d(x, k, { stride = s, padding = p })
      local ry, rarg = lua_pool(x:totable(), "max", k, s, p)
      assert_close(y, ry, 0, "values")
      assert.are.same(rarg:totable(), idx:totensor():totable())
      -- the values alone, as evaluation computes them
      assert.are.equal(1, select("#", nn.max_pool2d(x, k, { stride = s, padding = p, indices = false })))
      local v = nn.max_pool2d(x, k, { stride = s, padding = p, indices = false })
      assert_close(v, ry, 0, "values without indices")

      local r = faceid.randn(g, y:size())
      local dx0 = faceid.randn(g, x:size())
      local dx = nn.max_pool2d_backward(r, idx, dx0:clone())
      local function loss() return project((nn.max_pool2d(x, k, { stride = s, padding = p })), r) end
      gradcheck(loss, x, dx - dx0, 1e-2, "dx")
      -- a fresh gradient when none is given
      assert_close(nn.max_pool2d_backward(r, idx), dx - dx0, 1e-6, "new dx")
    end)
  end

  it("propagates NaN with and without indices, on rows longer than its row buffer", function()
    local g = faceid.Generator(4)
    local function flat(t)
      local out = {}
      for _, a in ipairs(t:totable()) do
        for _, b in ipairs(a) do
          for _, c in ipairs(b) do
            for _, v in ipairs(c) do out[#out + 1] = v end
          end
        end
      end
      return out
    end
    for _, w in ipairs({ 9, 1030 }) do
      local x = faceid.randn(g, 2, 2, 5, w)
      x:set(1, 2, 3, 4, 0 / 0) -- row 2, column 3 (0-based): outputs (1, 1) and (1, 2)
      x:set(2, 1, 1, 1, 0 / 0) -- row 0, column 0: output (0, 0)
      local y = nn.max_pool2d(x, 3, { stride = 2, padding = 1 })
      local v = nn.max_pool2d(x, 3, { stride = 2, padding = 1, indices = false })
      local a, b, nans = flat(y), flat(v), 0
      assert.are.equal(#a, #b)
      for i = 1, #a do
        if a[i] ~= a[i] then
          nans = nans + 1
          assert(b[i] ~= b[i], "NaN lost without indices at " .. i)
        else
          assert.are.equal(a[i], b[i])
        end
      end
      assert.are.equal(3, nans)
    end
  end)

  -- ties and NaNs on rows of every length around the four-wide loop: the
  -- first maximum in row-major order wins, a NaN beats every number and the
  -- first NaN wins (the scan PyTorch makes)
  it("finds each window's first maximum, or first NaN, as the row-major scan does", function()
    local g = faceid.Generator(31)
    local function scan(x, k, s, p)
      local n, c, h, w = table.unpack(x:size())
      local oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
      local vals, args = {}, {}
      for i = 1, n do
        for ch = 1, c do
          for a = 1, oh do
            for b = 1, ow do
              local m, at
              for u = 1, k do
                for v = 1, k do
                  local yy, xx = (a - 1) * s - p + u, (b - 1) * s - p + v
                  if yy >= 1 and yy <= h and xx >= 1 and xx <= w then
                    local val = x:get(i, ch, yy, xx)
                    if m == nil or val > m or (val ~= val and m == m) then m, at = val, (yy - 1) * w + xx end
                  end
                end
              end
              vals[#vals + 1], args[#args + 1] = m, at
            end
          end
        end
      end
      return vals, args
    end
    for _, geo in ipairs({ { 3, 2, 1 }, { 2, 1, 1 }, { 2, 2, 0 } }) do
      for _, w in ipairs({ 1, 2, 3, 8, 9, 10, 15, 16, 17, 18, 31, 33 }) do
        local k, s, p = table.unpack(geo)
        if w + 2 * p >= k then
          local x = faceid.zeros(2, 2, 5, w)
          for i = 1, 2 do
            for ch = 1, 2 do
              for yy = 1, 5 do
                for xx = 1, w do
                  local r = g:random(10)
                  x:set(i, ch, yy, xx, r == 10 and 0 / 0 or r % 3 - 1)
                end
              end
            end
          end
          local y, idx = nn.max_pool2d(x, k, { stride = s, padding = p })
          local rv, ra = scan(x, k, s, p)
          local yv, ia = y:contiguous():view(y:numel()), idx:totensor():contiguous():view(y:numel())
          local what = ("kernel %d stride %d padding %d, width %d"):format(k, s, p, w)
          for i = 1, #rv do
            assert.are.equal(ra[i], ia:get(i), what .. ": index " .. i)
            local v = yv:get(i)
            if rv[i] ~= rv[i] then
              assert.is_true(v ~= v, what .. ": NaN " .. i)
            else
              assert.are.equal(rv[i], v, what .. ": value " .. i)
            end
          end
        end
      end
    end
  end)

  it("refuses a non-boolean indices option", function()
    fails_with("nn.max_pool2d: option indices must be a boolean, got number", nn.max_pool2d, faceid.zeros(1, 1, 2, 2),
      2, { indices = 0 })
  end)

  it("lets the first maximum of a tie win, as PyTorch", function()
    local x = faceid.ones(1, 1, 2, 2)
    local _, idx = nn.max_pool2d(x, 2)
    assert.are.equal(1, idx:totensor():get(1, 1, 1, 1))
  end)

  it("pools channel slices into slices", function()
    local g = faceid.Generator(9)
    local xbuf = faceid.randn(g, 2, 6, 7, 7)
    local x = xbuf:narrow(2, 2, 3)
    local ybuf = faceid.zeros(2, 5, 3, 3)
    nn.max_pool2d(x, 3, { stride = 2, padding = 0, out = ybuf:narrow(2, 3, 3) })
    local ref, ridx = nn.max_pool2d(x:contiguous(), 3, { stride = 2 })
    assert_close(ybuf:narrow(2, 3, 3):contiguous(), ref, 0, "slice")
    assert.are.equal(0, maxabs(ybuf:narrow(2, 1, 2)))
    local dxbuf = faceid.zeros(2, 4, 7, 7)
    local dy = faceid.randn(g, 2, 4, 3, 3):narrow(2, 2, 3)
    nn.max_pool2d_backward(dy, ridx, dxbuf:narrow(2, 1, 3))
    assert_close(dxbuf:narrow(2, 1, 3):contiguous(), nn.max_pool2d_backward(dy:contiguous(), ridx), 0, "slice dx")
    assert.are.equal(0, maxabs(dxbuf:narrow(2, 4, 1)))
  end)
end)

describe("nn.avg_pool2d", function()
  it("averages 2x2 windows of 1..16", function()
    local x = faceid.arange(1, 17):view(1, 1, 4, 4)
    assert.are.same({ { { { 3.5, 5.5 }, { 11.5, 13.5 } } } }, nn.avg_pool2d(x, 2):totable())
  end)

  it("counts the padding in the divisor unless told otherwise", function()
    local x = faceid.ones(1, 1, 3, 3)
    local y = nn.avg_pool2d(x, 3, { stride = 1, padding = 1 })
    assert(math.abs(y:get(1, 1, 1, 1) - 4 / 9) < 1e-7)
    assert(math.abs(y:get(1, 1, 2, 2) - 1) < 1e-7)
    local z = nn.avg_pool2d(x, 3, { stride = 1, padding = 1, count_include_pad = false })
    assert.are.same({ { { { 1, 1, 1 }, { 1, 1, 1 }, { 1, 1, 1 } } } }, z:totable())
  end)

  local cases = {
    { "2x2 stride 2 (the transition)", 2, 2, 0, true, 2, 3, 6, 5 },
    { "3x3 stride 2 pad 1", 3, 2, 1, true, 2, 2, 7, 6 },
    { "3x3 stride 1 pad 1 without padding in the divisor", 3, 1, 1, false, 1, 2, 4, 5 },
  }
  for _, case in ipairs(cases) do
    local name, k, s, p, include, n, c, h, w = table.unpack(case)
    it("matches Lua loops and finite differences: " .. name, function()
      local g = faceid.Generator(50 + k + s + p)
      local x = faceid.randn(g, n, c, h, w)
      local o = { stride = s, padding = p, count_include_pad = include }
      local y = nn.avg_pool2d(x, k, o)
      assert_close(y, (lua_pool(x:totable(), "avg", k, s, p, include)), 1e-6, "values")
      local r = faceid.randn(g, y:size())
      local dx0 = faceid.randn(g, x:size())
      local dx = nn.avg_pool2d_backward(r, x, k, o, dx0:clone())
      local function loss() return project(nn.avg_pool2d(x, k, o), r) end
      gradcheck(loss, x, dx - dx0, 1e-2, "dx")
      assert_close(nn.avg_pool2d_backward(r, x, k, o), dx - dx0, 1e-5, "new dx")
    end)
  end

  it("pools a channel slice", function()
    local g = faceid.Generator(12)
    local x = faceid.randn(g, 2, 8, 4, 4):narrow(2, 3, 4)
    assert_close(nn.avg_pool2d(x, 2), nn.avg_pool2d(x:contiguous(), 2), 0, "slice")
    local dy = faceid.randn(g, 2, 4, 2, 2)
    local dx = faceid.zeros(2, 9, 4, 4)
    nn.avg_pool2d_backward(dy, x, 2, nil, dx:narrow(2, 6, 4))
    assert_close(dx:narrow(2, 6, 4):contiguous(), nn.avg_pool2d_backward(dy, x, 2), 0, "slice dx")
  end)
end)

describe("nn.global_avg_pool", function()
  it("averages each plane, matching Lua loops and finite differences", function()
    local g = faceid.Generator(13)
    local x = faceid.randn(g, 3, 4, 3, 5)
    local y = nn.global_avg_pool(x)
    assert.are.same({ 3, 4 }, y:size())
    local xt = x:totable()
    for i = 1, 3 do
      for c = 1, 4 do
        local s = 0
        for a = 1, 3 do for b = 1, 5 do s = s + xt[i][c][a][b] end end
        assert(math.abs(y:get(i, c) - s / 15) < 1e-6)
      end
    end
    local r = faceid.randn(g, 3, 4)
    local dx = nn.global_avg_pool_backward(r, x)
    assert(math.abs(dx:get(2, 3, 2, 4) - r:get(2, 3) / 15) < 1e-7)
    gradcheck(function() return project(nn.global_avg_pool(x), r) end, x, dx, 1e-2, "dx")
  end)

  it("reads a channel slice and writes into a wider row", function()
    local g = faceid.Generator(14)
    local x = faceid.randn(g, 2, 7, 2, 2):narrow(2, 2, 5)
    local out = faceid.zeros(2, 8)
    nn.global_avg_pool(x, out:narrow(2, 4, 5))
    assert_close(out:narrow(2, 4, 5):contiguous(), nn.global_avg_pool(x:contiguous()), 1e-6, "slice")
    assert.are.equal(0, maxabs(out:narrow(2, 1, 3)))
    local dxbuf = faceid.zeros(2, 6, 2, 2)
    local dy = faceid.randn(g, 2, 9):narrow(2, 3, 5)
    nn.global_avg_pool_backward(dy, x, dxbuf:narrow(2, 2, 5))
    assert_close(dxbuf:narrow(2, 2, 5):contiguous(), nn.global_avg_pool_backward(dy:contiguous(), x), 1e-6, "dx")
  end)
end)

describe("nn.relu", function()
  it("clamps negatives to zero, in place too", function()
    local x = faceid.tensor({ { -2, -0.5, 0, 0.5, 3 } })
    assert.are.same({ { 0, 0, 0, 0.5, 3 } }, nn.relu(x):totable())
    assert.are.same({ { -2, -0.5, 0, 0.5, 3 } }, x:totable())
    local y = nn.relu(x, x)
    assert.are.same({ { 0, 0, 0, 0.5, 3 } }, x:totable())
    assert.are.same(x:totable(), y:totable())
  end)

  it("backpropagates through the output, checked by finite differences", function()
    local g = faceid.Generator(15)
    -- keep every value at least 0.1 away from the kink
    local x = faceid.randn(g, 2, 3, 4, 3)
    x = x:sign() * (x:abs() + 0.1)
    local y = nn.relu(x)
    local r = faceid.randn(g, y:size())
    local dx0 = faceid.randn(g, x:size())
    local dx = nn.relu_backward(r, y, dx0:clone())
    local xt, rt, dt = x:view(-1), r:view(-1), nn.relu_backward(r, y):view(-1)
    for i = 1, x:numel() do
      assert.are.equal(xt[i] > 0 and rt[i] or 0, dt[i])
    end
    gradcheck(function() return project(nn.relu(x), r) end, x, dx - dx0, 1e-2, "dx")
    -- after an in-place forward the output is all the backward needs
    local xi = x:clone()
    nn.relu(xi, xi)
    assert_close(nn.relu_backward(r, xi), nn.relu_backward(r, y), 0, "after in place")
  end)

  it("works on slices and on 2-D and 1-D tensors", function()
    local g = faceid.Generator(16)
    local buf = faceid.randn(g, 3, 10)
    local x = buf:narrow(2, 2, 6)
    local out = faceid.zeros(3, 8)
    nn.relu(x, out:narrow(2, 2, 6))
    assert_close(out:narrow(2, 2, 6):contiguous(), x:contiguous():relu(), 0, "2-D slice")
    assert.are.equal(0, maxabs(out:narrow(2, 1, 1)) + maxabs(out:narrow(2, 8, 1)))
    local v = faceid.tensor({ -1, 2, -3 })
    assert.are.same({ 0, 2, 0 }, nn.relu(v):totable())
    assert.are.same({ 0, 5, 0 }, nn.relu_backward(faceid.tensor({ 5, 5, 5 }), nn.relu(v)):totable())
    local dx = faceid.zeros(3, 7)
    nn.relu_backward(faceid.ones(3, 6), nn.relu(x), dx:narrow(2, 1, 6))
    assert_close(dx:narrow(2, 1, 6):contiguous(), x:contiguous():sign():relu(), 0, "slice dx")
  end)
end)

local same = helper.same

local with_threads = helper.with_threads

describe("pooling backward with overwrite_dx", function()
  local g = faceid.Generator(71)
  -- odd sizes: the 2x2 windows leave the last row and column out
  local x = faceid.randn(g, 2, 3, 7, 5)
  local over = { overwrite_dx = true }

  it("max_pool2d_backward overwrites dx, untouched positions included", function()
    local y, idx = nn.max_pool2d(x, 3, { stride = 2, padding = 1 })
    local dy = faceid.randn(g, y:size())
    local ref = nn.max_pool2d_backward(dy, idx)
    same(nn.max_pool2d_backward(dy, idx, faceid.randn(g, x:size()), over), ref, "dx")
    local buf = faceid.full({ 2, 5, 7, 5 }, 3)
    nn.max_pool2d_backward(dy, idx, buf:narrow(2, 2, 3), over)
    same(buf:narrow(2, 2, 3):contiguous(), ref, "slice dx")
    assert.are.equal(3, buf:narrow(2, 1, 1):min())
    assert.are.equal(3, buf:narrow(2, 5, 1):max())
  end)

  it("avg_pool2d_backward overwrites dx (2x2 stride 2 and a padded window)", function()
    for _, o in ipairs({ { k = 2 }, { k = 3, stride = 1, padding = 1 } }) do
      local opts = { stride = o.stride, padding = o.padding }
      local y = nn.avg_pool2d(x, o.k, opts)
      local dy = faceid.randn(g, y:size())
      local ref = nn.avg_pool2d_backward(dy, x, o.k, opts)
      local oo = { stride = o.stride, padding = o.padding, overwrite_dx = true }
      same(nn.avg_pool2d_backward(dy, x, o.k, oo, faceid.randn(g, x:size())), ref, "dx, kernel " .. o.k)
    end
  end)

  it("global_avg_pool_backward overwrites dx", function()
    local dy = faceid.randn(g, 2, 3)
    same(nn.global_avg_pool_backward(dy, x, faceid.randn(g, x:size()), over), nn.global_avg_pool_backward(dy, x),
      "dx")
    fails_with("nn.global_avg_pool_backward: unknown option 'overwrite'", nn.global_avg_pool_backward, dy, x, nil,
      { overwrite = true })
  end)
end)

describe("pooling and relu on 3 threads", function()
  it("give bitwise the serial results", function()
    local g = faceid.Generator(72)
    local x = faceid.randn(g, 3, 5, 9, 8)
    local dy2 = faceid.randn(g, 3, 5, 4, 4)
    local dy3 = faceid.randn(g, 3, 5, 5, 4)
    local dyg = faceid.randn(g, 3, 5)
    local xs = faceid.randn(g, 3, 40):narrow(2, 5, 31)
    local function run()
      local ym, idx = nn.max_pool2d(x, 3, { stride = 2, padding = 1 })
      local dm = nn.max_pool2d_backward(dy3, idx)
      local ya = nn.avg_pool2d(x, 2)
      local da = nn.avg_pool2d_backward(dy2, x, 2)
      local da3 = nn.avg_pool2d_backward(dy3, x, 3, { stride = 2, padding = 1, overwrite_dx = true },
        faceid.zeros(x:size()))
      local yg = nn.global_avg_pool(x)
      local dg = nn.global_avg_pool_backward(dyg, x)
      -- relu on a strided 2-D slice: chunks start and end inside rows
      local yr = nn.relu(xs)
      local dr = nn.relu_backward(xs, yr)
      return ym, idx:totensor(), dm, ya, da, da3, yg, dg, yr, dr
    end
    local ref = table.pack(run())
    local got = table.pack(with_threads(3, run))
    for i = 1, ref.n do same(got[i], ref[i], ("result %d on 3 threads"):format(i)) end
  end)
end)

describe("pooling and relu errors", function()
  local g = faceid.Generator(6)
  local x = faceid.randn(g, 2, 3, 6, 6)

  it("checks kernel, stride and padding", function()
    fails_with("nn.max_pool2d: padding 2x2 must be at most half the kernel 3x3", nn.max_pool2d, x, 3, { padding = 2 })
    fails_with("nn.avg_pool2d: kernel 7x7 is larger than the padded input 6x6", nn.avg_pool2d, x, 7)
    fails_with("nn.max_pool2d: option kernel must be a positive integer", nn.max_pool2d, x, 0)
    fails_with("nn.max_pool2d: option kernel must be a positive integer", nn.max_pool2d, x, nil)
    fails_with("nn.avg_pool2d: option stride must be a positive integer", nn.avg_pool2d, x, 2, { stride = { 1, 0 } })
    fails_with("nn.avg_pool2d: unknown option 'ceil_mode'", nn.avg_pool2d, x, 2, { ceil_mode = true })
    fails_with("nn.avg_pool2d: option count_include_pad must be a boolean", nn.avg_pool2d, x, 2,
      { count_include_pad = 1 })
  end)

  it("checks ranks, shapes and index objects", function()
    fails_with("nn.max_pool2d: input must be 4-D (N, C, H, W), got 3x6x6 (3-D)", nn.max_pool2d,
      faceid.randn(g, 3, 6, 6), 2)
    local y, idx = nn.max_pool2d(x, 2)
    fails_with("nn.max_pool2d_backward: output gradient has shape 2x3x6x6, expected 2x3x3x3",
      nn.max_pool2d_backward, x, idx)
    fails_with("nn.max_pool2d_backward: indices must be the faceid.PoolIndices of max_pool2d, got faceid.Tensor",
      nn.max_pool2d_backward, y, y)
    fails_with("nn.max_pool2d_backward: input gradient has shape 2x3x6x5, expected 2x3x6x6",
      nn.max_pool2d_backward, y, idx, faceid.zeros(2, 3, 6, 5))
    fails_with("nn.avg_pool2d_backward: output gradient has shape 2x3x3x3, expected 2x3x2x2",
      nn.avg_pool2d_backward, y, x, 3)
    fails_with("nn.global_avg_pool: input must be 4-D", nn.global_avg_pool, faceid.randn(g, 2, 3))
    fails_with("nn.global_avg_pool_backward: output gradient has shape 2x4, expected 2x3",
      nn.global_avg_pool_backward, faceid.zeros(2, 4), x)
    fails_with("nn.global_avg_pool: out has shape 3x2, expected 2x3", nn.global_avg_pool, x, faceid.zeros(3, 2))
    fails_with("nn.relu_backward: output has shape 2x3x6x5, expected 2x3x6x6", nn.relu_backward, x,
      faceid.zeros(2, 3, 6, 5))
    fails_with("nn.relu: input must be a faceid.Tensor, got number", nn.relu, 3)
  end)

  it("refuses overlapping outputs", function()
    local buf = faceid.randn(g, 3, 3, 4, 4)
    fails_with("nn.relu: out overlaps the input", nn.relu, buf:narrow(1, 1, 2), buf:narrow(1, 2, 2))
    fails_with("nn.max_pool2d: out overlaps the input", nn.max_pool2d, x, 2,
      { out = x:view(-1):narrow(1, 10, 54):view(2, 3, 3, 3) })
    local y = nn.relu(x)
    fails_with("nn.relu_backward: the input gradient overlaps the output gradient", nn.relu_backward, x, y, x)
  end)
end)
