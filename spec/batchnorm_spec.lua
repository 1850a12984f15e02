-- nn.batchnorm2d: golden values from Lua loops (batch statistics, PyTorch's
-- running-average update with the unbiased variance, eval mode), channel
-- slices and in-place use, finite-difference gradients in training and eval
-- mode, and argument errors.
local faceid = require("faceid")
local nn = faceid.nn
local helper = require("helper")

local maxabs = helper.maxabs
local assert_close = helper.assert_close

local function near(got, want, tol, what)
  assert(math.abs(got - want) <= (tol or 1e-5) * math.max(1, math.abs(want)),
    ("%s: got %.9g, want %.9g"):format(what or "value", got, want))
end

local function gradcheck(loss, t, g, eps, what)
  return helper.gradcheck(loss, t, g, eps, what, 3e-3)
end

local project = helper.project
local fails_with = helper.fails_with

-- per-channel mean and biased variance of a (N, C, H, W) table, and M
local function lua_stats(xt)
  local n, c, h, w = #xt, #xt[1], #xt[1][1], #xt[1][1][1]
  local mean, var, m = {}, {}, n * h * w
  for ch = 1, c do
    local s = 0
    for i = 1, n do for y = 1, h do for x = 1, w do s = s + xt[i][ch][y][x] end end end
    mean[ch] = s / m
    local q = 0
    for i = 1, n do for y = 1, h do for x = 1, w do q = q + (xt[i][ch][y][x] - mean[ch]) ^ 2 end end end
    var[ch] = q / m
  end
  return mean, var, m
end

describe("nn.batchnorm2d golden values", function()
  it("normalises a hand-worked channel", function()
    -- channel 1 holds 1, 2, 3, 4: mean 2.5, biased variance 1.25
    local x = faceid.tensor({ { { { 1, 2 }, { 3, 4 } }, { { 5, 5 }, { 5, 9 } } } })
    local y, save = nn.batchnorm2d(x)
    local is = 1 / math.sqrt(1.25 + 1e-5)
    near(y:get(1, 1, 1, 1), -1.5 * is, 1e-6, "y[1]")
    near(y:get(1, 1, 2, 2), 1.5 * is, 1e-6, "y[4]")
    near(save:get(1, 1), 2.5, 1e-7, "mean")
    near(save:get(2, 1), is, 1e-6, "invstd")
    -- channel 2: 5, 5, 5, 9: mean 6, variance 3
    near(y:get(1, 2, 2, 2), 3 / math.sqrt(3 + 1e-5), 1e-6, "y[2][4]")
  end)

  it("matches Lua loops in training mode and updates the running statistics as PyTorch", function()
    local g = faceid.Generator(21)
    local n, c, h, w = 3, 4, 5, 2
    local x = faceid.randn(g, n, c, h, w) * 2 + 0.5
    local gamma, beta = faceid.randn(g, c), faceid.randn(g, c)
    local rm0, rv0 = faceid.randn(g, c), faceid.rand(g, c) + 0.5
    local rm, rv = rm0:clone(), rv0:clone()
    local y, save = nn.batchnorm2d(x, gamma, beta, rm, rv, { momentum = 0.25, eps = 1e-3 })
    local xt = x:totable()
    local mean, var, m = lua_stats(xt)
    for ch = 1, c do
      local is = 1 / math.sqrt(var[ch] + 1e-3)
      near(save:get(1, ch), mean[ch], 1e-6, "saved mean")
      near(save:get(2, ch), is, 1e-5, "saved invstd")
      -- running = (1 - momentum) * running + momentum * stat, unbiased variance
      near(rm:get(ch), 0.75 * rm0:get(ch) + 0.25 * mean[ch], 1e-6, "running_mean")
      near(rv:get(ch), 0.75 * rv0:get(ch) + 0.25 * var[ch] * m / (m - 1), 1e-5, "running_var")
      for i = 1, n do
        for yy = 1, h do
          for xx = 1, w do
            local want = (xt[i][ch][yy][xx] - mean[ch]) * is * gamma:get(ch) + beta:get(ch)
            near(y:get(i, ch, yy, xx), want, 1e-5, "y")
          end
        end
      end
    end
  end)

  it("uses momentum 0.1 by default", function()
    local g = faceid.Generator(22)
    local x = faceid.randn(g, 4, 2, 3, 3)
    local rm, rv = faceid.zeros(2), faceid.ones(2)
    nn.batchnorm2d(x, nil, nil, rm, rv)
    local mean, var, m = lua_stats(x:totable())
    for ch = 1, 2 do
      near(rm:get(ch), 0.1 * mean[ch], 1e-6, "running_mean")
      near(rv:get(ch), 0.9 + 0.1 * var[ch] * m / (m - 1), 1e-6, "running_var")
    end
  end)

  it("normalises with the running statistics in eval mode and leaves them alone", function()
    local g = faceid.Generator(23)
    local x = faceid.randn(g, 2, 3, 4, 4)
    local gamma, beta = faceid.randn(g, 3), faceid.randn(g, 3)
    local rm, rv = faceid.randn(g, 3), faceid.rand(g, 3) + 0.1
    local rm0, rv0 = rm:clone(), rv:clone()
    local y, save = nn.batchnorm2d(x, gamma, beta, rm, rv, { training = false })
    assert.is_true(rm:equal(rm0) and rv:equal(rv0))
    for ch = 1, 3 do
      local is = 1 / math.sqrt(rv:get(ch) + 1e-5)
      near(save:get(1, ch), rm:get(ch), 0, "saved mean")
      near(save:get(2, ch), is, 1e-6, "saved invstd")
      for i = 1, 2 do
        local want = (x:get(i, ch, 3, 2) - rm:get(ch)) * is * gamma:get(ch) + beta:get(ch)
        near(y:get(i, ch, 3, 2), want, 1e-5, "y")
      end
    end
  end)

  it("keeps precision when the mean is far larger than the spread", function()
    local g = faceid.Generator(24)
    local x = faceid.randn(g, 4, 1, 4, 4) * 0.01 + 1000
    local y = nn.batchnorm2d(x)
    local mean, var = lua_stats(x:totable())
    local xt = x:totable()
    local want = (xt[2][1][3][3] - mean[1]) / math.sqrt(var[1] + 1e-5)
    near(y:get(2, 1, 3, 3), want, 2e-3, "y")
  end)
end)

describe("nn.batchnorm2d layouts", function()
  it("works in place", function()
    local g = faceid.Generator(25)
    local x = faceid.randn(g, 2, 3, 4, 5)
    local ref = nn.batchnorm2d(x:clone())
    local y = nn.batchnorm2d(x, nil, nil, nil, nil, { out = x })
    assert_close(x, ref, 1e-6, "in place")
    assert.are.equal(0, maxabs(y - x))
  end)

  it("reads and writes channel slices, gradients included", function()
    local g = faceid.Generator(26)
    local n, c, h, w = 3, 4, 3, 5
    local xbuf = faceid.randn(g, n, 10, h, w)
    local x = xbuf:narrow(2, 4, c)
    local gamma, beta = faceid.randn(g, c), faceid.randn(g, c)
    local xc = x:contiguous()
    local ref, rsave = nn.batchnorm2d(xc, gamma, beta)
    local ybuf = faceid.zeros(n, 7, h, w)
    local _, save = nn.batchnorm2d(x, gamma, beta, nil, nil, { out = ybuf:narrow(2, 2, c) })
    assert_close(ybuf:narrow(2, 2, c):contiguous(), ref, 1e-6, "slice output")
    assert.are.equal(0, maxabs(ybuf:narrow(2, 1, 1)) + maxabs(ybuf:narrow(2, 6, 2)))
    assert_close(save, rsave, 1e-6, "save")

    local dy = faceid.randn(g, n, 9, h, w):narrow(2, 5, c)
    local dxbuf = faceid.zeros(n, 7, h, w)
    local dg, db = faceid.zeros(c), faceid.zeros(c)
    nn.batchnorm2d_backward(dy, x, gamma, save, {}, dxbuf:narrow(2, 3, c), dg, db)
    local rx, rg, rb = faceid.zeros(xc:size()), faceid.zeros(c), faceid.zeros(c)
    nn.batchnorm2d_backward(dy:contiguous(), xc, gamma, rsave, {}, rx, rg, rb)
    assert_close(dxbuf:narrow(2, 3, c):contiguous(), rx, 1e-5, "slice dx")
    assert_close(dg, rg, 1e-5, "dgamma")
    assert_close(db, rb, 1e-5, "dbeta")
    assert.are.equal(0, maxabs(dxbuf:narrow(2, 1, 2)) + maxabs(dxbuf:narrow(2, 7, 1)))
  end)
end)

describe("nn.batchnorm2d inside one buffer", function()
  it("normalises some channels into others of the same buffer", function()
    local g = faceid.Generator(27)
    local buf = faceid.randn(g, 2, 7, 3, 3)
    local ref = nn.batchnorm2d(buf:narrow(2, 1, 3):contiguous())
    nn.batchnorm2d(buf:narrow(2, 1, 3), nil, nil, nil, nil, { out = buf:narrow(2, 4, 3) })
    assert_close(buf:narrow(2, 4, 3):contiguous(), ref, 1e-6, "into the same buffer")
    fails_with("nn.batchnorm2d: out overlaps the input", nn.batchnorm2d, buf:narrow(2, 1, 3), nil, nil, nil, nil,
      { out = buf:narrow(2, 3, 3) })
  end)
end)

describe("nn.batchnorm2d gradients by finite differences", function()
  for _, training in ipairs({ true, false }) do
    it(training and "training mode: x, gamma, beta" or "eval mode: x, gamma, beta", function()
      local g = faceid.Generator(training and 41 or 42)
      local x = faceid.randn(g, 3, 2, 3, 2)
      local gamma, beta = faceid.randn(g, 2) + 1, faceid.randn(g, 2)
      local rm, rv = faceid.randn(g, 2) * 0.1, faceid.rand(g, 2) + 0.5
      local o = { training = training }
      -- in training the running statistics are left untracked so repeated
      -- forwards do not move them
      local function fwd()
        if training then return nn.batchnorm2d(x, gamma, beta, nil, nil, o) end
        return nn.batchnorm2d(x, gamma, beta, rm, rv, o)
      end
      local y, save = fwd()
      local r = faceid.randn(g, y:size())
      local dx0 = faceid.randn(g, x:size())
      local dx, dg, db = dx0:clone(), faceid.ones(2), faceid.ones(2)
      nn.batchnorm2d_backward(r, x, gamma, save, o, dx, dg, db)
      local function loss() return project((fwd()), r) end
      gradcheck(loss, x, dx - dx0, 1e-2, "dx")
      gradcheck(loss, gamma, dg - 1, 1e-2, "dgamma")
      gradcheck(loss, beta, db - 1, 1e-2, "dbeta")
    end)
  end

  it("training and eval gradients differ (the batch statistics matter)", function()
    local g = faceid.Generator(43)
    local x = faceid.randn(g, 2, 1, 3, 3)
    local y, save = nn.batchnorm2d(x)
    local r = faceid.randn(g, y:size())
    local dt, de = faceid.zeros(x:size()), faceid.zeros(x:size())
    nn.batchnorm2d_backward(r, x, nil, save, { training = true }, dt)
    nn.batchnorm2d_backward(r, x, nil, save, { training = false }, de)
    assert(maxabs(dt - de) > 1e-2)
    -- training-mode dx sums to zero over each channel (the mean is removed)
    assert(math.abs(dt:sum()) < 1e-4)
  end)
end)

local same = helper.same

local with_threads = helper.with_threads

describe("nn.batchnorm2d fused with relu", function()
  for _, training in ipairs({ true, false }) do
    local mode = training and "training" or "eval"

    it("relu = true gives relu(batchnorm2d) and the same statistics (" .. mode .. ")", function()
      local g = faceid.Generator(training and 61 or 62)
      local x = faceid.randn(g, 3, 5, 4, 6) + 0.2
      local gamma, beta = faceid.randn(g, 5), faceid.randn(g, 5)
      local rm, rv = faceid.randn(g, 5), faceid.rand(g, 5) + 0.5
      local rm2, rv2 = rm:clone(), rv:clone()
      local y, save = nn.batchnorm2d(x, gamma, beta, rm, rv, { training = training })
      local yr, saver = nn.batchnorm2d(x, gamma, beta, rm2, rv2, { training = training, relu = true })
      same(yr, nn.relu(y), "relu output")
      assert(y:min() < 0 and yr:min() == 0, "the ReLU clamps something")
      same(saver, save, "save")
      same(rm2, rm, "running_mean")
      same(rv2, rv, "running_var")
    end)

    it("apply recomputes the forward's output bitwise (" .. mode .. ")", function()
      local g = faceid.Generator(training and 63 or 64)
      local x = faceid.randn(g, 2, 4, 5, 3) * 3 - 1
      local gamma, beta = faceid.randn(g, 4), faceid.randn(g, 4)
      local rm, rv = faceid.randn(g, 4), faceid.rand(g, 4) + 0.5
      for _, relu in ipairs({ false, true }) do
        local o = { training = training, relu = relu }
        local y, save = nn.batchnorm2d(x, gamma, beta, rm:clone(), rv:clone(), o)
        same(nn.batchnorm2d_apply(x, gamma, beta, save, o), y, "apply")
        -- gamma and beta default to 1 and 0 in both
        local y1, save1 = nn.batchnorm2d(x, nil, nil, rm:clone(), rv:clone(), o)
        same(nn.batchnorm2d_apply(x, nil, nil, save1, o), y1, "apply without gamma and beta")
        -- in place, and from a channel slice into a channel slice
        local xi = x:clone()
        nn.batchnorm2d_apply(xi, gamma, beta, save, { relu = relu, out = xi })
        same(xi, y, "apply in place")
        local xbuf = faceid.randn(g, 2, 9, 5, 3)
        xbuf:narrow(2, 3, 4):copy(x)
        local ybuf = faceid.full({ 2, 6, 5, 3 }, 5)
        nn.batchnorm2d_apply(xbuf:narrow(2, 3, 4), gamma, beta, save, { relu = relu, out = ybuf:narrow(2, 2, 4) })
        same(ybuf:narrow(2, 2, 4):contiguous(), y, "apply on slices")
        assert.are.equal(5, ybuf:narrow(2, 1, 1):min())
        assert.are.equal(5, ybuf:narrow(2, 6, 1):max())
      end
    end)

    it("relu backward equals masking dy and the plain backward, bitwise (" .. mode .. ")", function()
      local g = faceid.Generator(training and 65 or 66)
      local x = faceid.randn(g, 3, 4, 5, 4) * 2 + 0.5
      local gamma, beta = faceid.randn(g, 4), faceid.randn(g, 4)
      local rm, rv = faceid.randn(g, 4), faceid.rand(g, 4) + 0.5
      local o = { training = training, relu = true }
      local yr, save = nn.batchnorm2d(x, gamma, beta, rm, rv, o)
      local dy = faceid.randn(g, x:size())
      local masked = nn.relu_backward(dy, yr)
      local dx0, dg0, db0 = faceid.randn(g, x:size()), faceid.randn(g, 4), faceid.randn(g, 4)
      for _, over in ipairs({ false, true }) do
        local fo = { training = training, overwrite_dx = over }
        local dx, dg, db = dx0:clone(), dg0:clone(), db0:clone()
        nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, fo, dx, dg, db)
        local rx, rg, rb = dx0:clone(), dg0:clone(), db0:clone()
        nn.batchnorm2d_backward(masked, x, gamma, save, fo, rx, rg, rb)
        local tag = over and " (overwrite_dx)" or ""
        same(dx, rx, "dx" .. tag)
        same(dg, rg, "dgamma" .. tag)
        same(db, rb, "dbeta" .. tag)
        if over then
          local zx = faceid.zeros(x:size())
          nn.batchnorm2d_backward(masked, x, gamma, save, { training = training }, zx)
          same(dx, zx, "overwrite equals accumulating into zeros")
        end
      end
      -- the mask matters: without it the gradient differs
      local plain = faceid.zeros(x:size())
      nn.batchnorm2d_backward(dy, x, gamma, save, { training = training }, plain)
      local fused = nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, { training = training },
        faceid.zeros(x:size()))
      assert(maxabs(plain - fused) > 1e-2)
    end)
  end

  it("relu backward may overwrite the output gradient with the input gradient in place", function()
    local gen = faceid.Generator(31)
    local x = faceid.randn(gen, 3, 4, 5, 5)
    local gamma, beta = faceid.randn(gen, 4), faceid.randn(gen, 4)
    local _, save = nn.batchnorm2d(x, gamma, beta, faceid.zeros(4), faceid.ones(4), { relu = true })
    local dy = faceid.randn(gen, 3, 4, 5, 5)
    for _, training in ipairs({ true, false }) do
      local dx, dg, db = faceid.zeros(3, 4, 5, 5), faceid.zeros(4), faceid.zeros(4)
      nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, { training = training }, dx, dg, db)
      local d, dg2, db2 = dy:clone(), faceid.zeros(4), faceid.zeros(4)
      nn.batchnorm2d_relu_backward(d, x, gamma, beta, save, { training = training, overwrite_dx = true }, d, dg2,
        db2)
      assert.is_true(d:equal(dx))
      assert.is_true(dg2:equal(dg) and db2:equal(db))
    end
    -- only as the same view, and only when overwriting
    local d = dy:clone()
    fails_with("the input gradient overlaps the output gradient", nn.batchnorm2d_relu_backward, d, x, gamma, beta,
      save, {}, d)
  end)

  it("relu backward reads and writes channel slices", function()
    local g = faceid.Generator(67)
    local n, c, h, w = 2, 3, 4, 5
    local xbuf, dybuf = faceid.randn(g, n, 8, h, w), faceid.randn(g, n, 6, h, w)
    local x, dy = xbuf:narrow(2, 4, c), dybuf:narrow(2, 2, c)
    local gamma, beta = faceid.randn(g, c), faceid.randn(g, c)
    local _, save = nn.batchnorm2d(x, gamma, beta, nil, nil, { relu = true })
    local rx, rg, rb = faceid.zeros(n, c, h, w), faceid.zeros(c), faceid.zeros(c)
    nn.batchnorm2d_relu_backward(dy:contiguous(), x:contiguous(), gamma, beta, save, {}, rx, rg, rb)
    local dxbuf, dg, db = faceid.ones(n, 7, h, w), faceid.zeros(c), faceid.zeros(c)
    nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, {}, dxbuf:narrow(2, 3, c), dg, db)
    same(dxbuf:narrow(2, 3, c):contiguous(), rx + 1, "slice dx accumulated")
    same(dg, rg, "dgamma")
    same(db, rb, "dbeta")
    assert.are.equal(1, dxbuf:narrow(2, 1, 2):min())
    assert.are.equal(1, dxbuf:narrow(2, 6, 2):max())
  end)

  it("gives bitwise the serial results on 3 threads", function()
    local g = faceid.Generator(68)
    local x = faceid.randn(g, 4, 6, 7, 5) + 0.1
    local gamma, beta = faceid.randn(g, 6), faceid.randn(g, 6)
    local dy = faceid.randn(g, x:size())
    local function run()
      local rm, rv = faceid.zeros(6), faceid.ones(6)
      local y, save = nn.batchnorm2d(x, gamma, beta, rm, rv)
      local yr = nn.batchnorm2d(x, gamma, beta, nil, nil, { relu = true })
      local ye = nn.batchnorm2d(x, gamma, beta, rm, rv, { training = false, relu = true })
      local ya = nn.batchnorm2d_apply(x, gamma, beta, save, { relu = true })
      local dx, dg, db = faceid.zeros(x:size()), faceid.zeros(6), faceid.zeros(6)
      nn.batchnorm2d_backward(dy, x, gamma, save, {}, dx, dg, db)
      local rx, rg, rb = faceid.zeros(x:size()), faceid.zeros(6), faceid.zeros(6)
      nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, { overwrite_dx = true }, rx, rg, rb)
      return y, save, rm, rv, yr, ye, ya, dx, dg, db, rx, rg, rb
    end
    local ref = table.pack(run())
    local got = table.pack(with_threads(3, run))
    for i = 1, ref.n do same(got[i], ref[i], ("result %d on 3 threads"):format(i)) end
  end)

  it("checks the fused forms' arguments", function()
    local g = faceid.Generator(69)
    local x = faceid.randn(g, 2, 3, 2, 2)
    local _, save = nn.batchnorm2d(x)
    fails_with("nn.batchnorm2d_backward: option relu needs the bias: use nn.batchnorm2d_relu_backward",
      nn.batchnorm2d_backward, x, x, nil, save, { relu = true })
    fails_with("nn.batchnorm2d_apply: save has shape 3x2, expected 2x3", nn.batchnorm2d_apply, x, nil, nil,
      faceid.zeros(3, 2))
    local buf = faceid.randn(g, 2, 4, 2, 2)
    fails_with("nn.batchnorm2d_apply: out overlaps the input", nn.batchnorm2d_apply, buf:narrow(2, 1, 3), nil, nil,
      save, { out = buf:narrow(2, 2, 3) })
    fails_with("nn.batchnorm2d_relu_backward: bias has shape 2, expected 3", nn.batchnorm2d_relu_backward,
      x, x, nil, faceid.zeros(2), save)
    fails_with("nn.batchnorm2d: option relu must be a boolean, got number", nn.batchnorm2d, x, nil, nil, nil, nil,
      { relu = 1 })
  end)
end)

describe("nn.batchnorm2d errors", function()
  local g = faceid.Generator(5)
  local x = faceid.randn(g, 4, 3, 2, 2)

  it("checks ranks and channel counts", function()
    fails_with("nn.batchnorm2d: input must be 4-D (N, C, H, W), got 4x3 (2-D)", nn.batchnorm2d, faceid.randn(g, 4, 3))
    fails_with("nn.batchnorm2d: weight has shape 4, expected 3", nn.batchnorm2d, x, faceid.ones(4))
    fails_with("nn.batchnorm2d: running_var has shape 3x1, expected 3", nn.batchnorm2d, x, nil, nil,
      faceid.zeros(3), faceid.ones(3, 1))
    fails_with("nn.batchnorm2d_backward: save has shape 3x2, expected 2x3", nn.batchnorm2d_backward,
      x, x, nil, faceid.zeros(3, 2))
    fails_with("nn.batchnorm2d_backward: output gradient has shape 4x3x2x1, expected 4x3x2x2",
      nn.batchnorm2d_backward, faceid.zeros(4, 3, 2, 1), x, nil, faceid.zeros(2, 3))
  end)

  it("checks the mode and its statistics", function()
    fails_with("nn.batchnorm2d: eval mode needs running_mean and running_var", nn.batchnorm2d, x, nil, nil,
      nil, nil, { training = false })
    fails_with("nn.batchnorm2d: give both running_mean and running_var, or neither", nn.batchnorm2d, x, nil, nil,
      faceid.zeros(3))
    fails_with("nn.batchnorm2d: training needs more than one value per channel, got input 1x3x1x1",
      nn.batchnorm2d, faceid.randn(g, 1, 3, 1, 1))
    -- eval mode is fine with a single value
    nn.batchnorm2d(faceid.randn(g, 1, 3, 1, 1), nil, nil, faceid.zeros(3), faceid.ones(3), { training = false })
  end)

  it("checks options", function()
    fails_with("nn.batchnorm2d: unknown option 'momentun'", nn.batchnorm2d, x, nil, nil, nil, nil, { momentun = 0.1 })
    fails_with("nn.batchnorm2d: momentum must be in [0, 1], got 1.5", nn.batchnorm2d, x, nil, nil, nil, nil,
      { momentum = 1.5 })
    fails_with("nn.batchnorm2d: eps must be positive and finite, got 0", nn.batchnorm2d, x, nil, nil, nil, nil,
      { eps = 0 })
    fails_with("nn.batchnorm2d: option training must be a boolean, got string", nn.batchnorm2d, x, nil, nil, nil,
      nil, { training = "yes" })
    fails_with("nn.batchnorm2d: option eps must be a number, got string", nn.batchnorm2d, x, nil, nil, nil, nil,
      { eps = "small" })
  end)

  it("refuses overlapping outputs", function()
    local rm = faceid.zeros(3)
    local buf = faceid.randn(g, 5, 3, 2, 2)
    fails_with("nn.batchnorm2d: out overlaps the input", nn.batchnorm2d, buf:narrow(1, 1, 4), nil, nil, nil, nil,
      { out = buf:narrow(1, 2, 4) })
    fails_with("nn.batchnorm2d: running_mean overlaps running_var", nn.batchnorm2d, x, nil, nil, rm, rm)
  end)
end)
