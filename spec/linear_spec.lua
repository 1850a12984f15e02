-- nn.linear: golden values from Lua loops, rows inside wider buffers,
-- finite-difference gradients of x, W and b, and argument errors.
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

-- y = x W^T + b with Lua loops
local function lua_linear(x, w, b)
  local xt, wt, bt = x:totable(), w:totable(), b and b:totable()
  local y = {}
  for i = 1, #xt do
    y[i] = {}
    for o = 1, #wt do
      local s = bt and bt[o] or 0
      for k = 1, #xt[1] do s = s + xt[i][k] * wt[o][k] end
      y[i][o] = s
    end
  end
  return faceid.tensor(y)
end

describe("nn.linear", function()
  it("computes a hand-worked product", function()
    local x = faceid.tensor({ { 1, 2, 3 } })
    local w = faceid.tensor({ { 1, 0, 0 }, { 0, 1, 1 } })
    assert.are.same({ { 1, 5 } }, nn.linear(x, w):totable())
    assert.are.same({ { 11, 25 } }, nn.linear(x, w, faceid.tensor({ 10, 20 })):totable())
  end)

  it("matches Lua loops, with and without bias", function()
    local g = faceid.Generator(31)
    local x, w, b = faceid.randn(g, 5, 7), faceid.randn(g, 3, 7), faceid.randn(g, 3)
    assert_close(nn.linear(x, w, b), lua_linear(x, w, b), 1e-5, "with bias")
    assert_close(nn.linear(x, w), lua_linear(x, w), 1e-5, "without bias")
    local x1, w1 = faceid.randn(g, 1, 4), faceid.randn(g, 1, 4)
    assert_close(nn.linear(x1, w1), lua_linear(x1, w1), 1e-5, "one row, one output")
  end)

  it("reads rows of a wider buffer and writes into one", function()
    local g = faceid.Generator(32)
    local xbuf = faceid.randn(g, 4, 12)
    local x = xbuf:narrow(2, 3, 6)
    local w, b = faceid.randn(g, 5, 6), faceid.randn(g, 5)
    local ref = lua_linear(x:contiguous(), w, b)
    assert_close(nn.linear(x, w, b), ref, 1e-5, "strided rows")
    local out = faceid.zeros(4, 9)
    nn.linear(x, w, b, out:narrow(2, 2, 5))
    assert_close(out:narrow(2, 2, 5):contiguous(), ref, 1e-5, "into a wider buffer")
    assert.are.equal(0, maxabs(out:narrow(2, 1, 1)) + maxabs(out:narrow(2, 7, 3)))

    local dy = faceid.randn(g, 4, 8):narrow(2, 2, 5)
    local dxbuf = faceid.zeros(4, 10)
    local dw, db = faceid.zeros(5, 6), faceid.zeros(5)
    nn.linear_backward(dy, x, w, dxbuf:narrow(2, 5, 6), dw, db)
    local rx, rw, rb = faceid.zeros(4, 6), faceid.zeros(5, 6), faceid.zeros(5)
    nn.linear_backward(dy:contiguous(), x:contiguous(), w, rx, rw, rb)
    assert_close(dxbuf:narrow(2, 5, 6):contiguous(), rx, 1e-6, "strided dx")
    assert_close(dw, rw, 1e-6, "dw")
    assert_close(db, rb, 1e-6, "db")
    assert.are.equal(0, maxabs(dxbuf:narrow(2, 1, 4)))
  end)

  it("has gradients matching Lua loops and finite differences", function()
    local g = faceid.Generator(33)
    local x, w, b = faceid.randn(g, 3, 4), faceid.randn(g, 5, 4), faceid.randn(g, 5)
    local r = faceid.randn(g, 3, 5)
    local dx0, dw0, db0 = faceid.randn(g, 3, 4), faceid.randn(g, 5, 4), faceid.randn(g, 5)
    local dx, dw, db = nn.linear_backward(r, x, w, dx0:clone(), dw0:clone(), db0:clone())
    -- dx = r W, dW = r^T x, db = column sums of r
    assert_close(dx - dx0, lua_linear(r, w:t():contiguous()), 1e-5, "dx")
    assert_close(dw - dw0, lua_linear(r:t():contiguous(), x:t():contiguous()), 1e-5, "dw")
    assert_close(db - db0, r:sum(1), 1e-5, "db")
    local function loss() return project(nn.linear(x, w, b), r) end
    gradcheck(loss, x, dx - dx0, 1e-2, "dx")
    gradcheck(loss, w, dw - dw0, 1e-2, "dw")
    gradcheck(loss, b, db - db0, 1e-2, "db")
  end)

  it("skips gradients given as nil", function()
    local g = faceid.Generator(34)
    local x, w = faceid.randn(g, 2, 3), faceid.randn(g, 4, 3)
    local r = faceid.randn(g, 2, 4)
    local db = faceid.zeros(4)
    local a, bb, c = nn.linear_backward(r, x, w, nil, nil, db)
    assert.is_nil(a)
    assert.is_nil(bb)
    assert.are.equal(db, c)
    assert_close(db, r:sum(1), 1e-6, "db alone")
  end)
end)

describe("nn.linear on 3 threads", function()
  it("gives bitwise the serial results (bias rows and bias gradient split over columns)", function()
    local g = faceid.Generator(81)
    local x, w, b = faceid.randn(g, 6, 5), faceid.randn(g, 7, 5), faceid.randn(g, 7)
    local dy = faceid.randn(g, 6, 7)
    local function run()
      local y = nn.linear(x, w, b)
      local dx, dw, db = faceid.zeros(6, 5), faceid.zeros(7, 5), faceid.ones(7)
      nn.linear_backward(dy, x, w, dx, dw, db)
      return y, dx, dw, db
    end
    local ref = table.pack(run())
    require("faceid.core")._nn.set_threads(3, 0)
    assert.are.equal(3, nn.threads())
    local got = table.pack(pcall(run))
    nn.set_threads(1)
    assert(got[1], got[2])
    for i = 1, ref.n do
      assert(got[i + 1]:equal(ref[i]), ("result %d differs on 3 threads"):format(i))
    end
    assert_close(ref[4], dy:sum(1):view(7) + 1, 1e-6, "db")
  end)
end)

describe("nn.linear errors", function()
  local g = faceid.Generator(7)
  local x, w = faceid.randn(g, 4, 10), faceid.randn(g, 5, 10)

  it("names mismatched features with both shapes", function()
    fails_with("nn.linear: input 4x10 but weight 5x12 expects 12 features", nn.linear, x, faceid.randn(g, 5, 12))
  end)

  it("checks ranks, shapes and layouts", function()
    fails_with("nn.linear: input must be 2-D (N, features), got 4x10x1 (3-D)", nn.linear, faceid.randn(g, 4, 10, 1), w)
    fails_with("nn.linear: weight must be 2-D (out, in), got 50", nn.linear, x, faceid.randn(g, 50))
    fails_with("nn.linear: bias has shape 4, expected 5", nn.linear, x, w, faceid.zeros(4))
    fails_with("nn.linear: weight must be contiguous", nn.linear, x, faceid.randn(g, 10, 5):t())
    fails_with("nn.linear: input must be dense apart from its batch stride", nn.linear, faceid.randn(g, 10, 4):t(), w)
    fails_with("nn.linear: out has shape 4x4, expected 4x5", nn.linear, x, w, nil, faceid.zeros(4, 4))
    fails_with("nn.linear_backward: output gradient has shape 4x10, expected 4x5", nn.linear_backward, x, x, w)
    fails_with("nn.linear_backward: weight gradient has shape 10x5, expected 5x10", nn.linear_backward,
      faceid.zeros(4, 5), x, w, nil, faceid.zeros(10, 5))
    fails_with("nn.linear_backward: the weight gradient overlaps the weight", nn.linear_backward,
      faceid.zeros(4, 5), x, w, nil, w)
  end)
end)
