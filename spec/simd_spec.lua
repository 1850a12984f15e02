-- faceid.simd: the two forms of batch normalisation's row loops (portable
-- generic vectors, AVX2) give bitwise the same results, in the layer and in
-- a DenseNet's training and evaluation passes, on rows whose lengths take
-- every tail (8 at a time, then 4, then one by one); switching is checked.
local faceid = require("faceid")
local nn = faceid.nn
local fails_with = require("helper").fails_with

local has_avx2 = pcall(faceid.simd, "avx2")
local start = faceid.simd()

-- f() under each form, the results of both; the starting form restored
local function both(f)
  local r = {}
  for _, form in ipairs({ "generic", "avx2" }) do
    assert.are.equal(form, faceid.simd(form))
    r[form] = f()
  end
  faceid.simd(start)
  return r.generic, r.avx2
end

local function same_lists(a, b, what)
  assert.are.equal(#a, #b)
  for k = 1, #a do
    local name, x, y = a[k][1], a[k][2], b[k][2]
    assert(x:equal(y), ("%s, %s: the forms differ by up to %.3g"):format(what, name, (x - y):abs():max()))
  end
end

describe("faceid.simd", function()
  it("names the form in use and refuses unknown ones", function()
    assert.truthy(start == "avx2" or start == "generic", start)
    assert.are.equal("generic", faceid.simd("generic"))
    assert.are.equal("generic", faceid.simd())
    fails_with("unknown SIMD form 'sse9' (expected 'avx2' or 'generic')", faceid.simd, "sse9")
    assert.are.equal("generic", faceid.simd())
    faceid.simd(start)
    assert.are.equal(start, faceid.simd())
  end)

  it("defaults to AVX2 where the CPU has it", function()
    if not has_avx2 then
      pending("this CPU has no AVX2: the generic form is the only one")
      return
    end
    faceid.simd(start)
    assert.are.equal(os.getenv("FACEID_SIMD") == "generic" and "generic" or "avx2", start)
  end)
end)

describe("the two forms", function()
  before_each(function()
    if not has_avx2 then pending("this CPU has no AVX2: nothing to compare the generic form with") end
  end)

  -- plane sizes: 8k + 7 (every tail), 8k, 8k + 4, 3 (scalar only), 1
  for _, hw in ipairs({ { 5, 3 }, { 4, 4 }, { 3, 4 }, { 1, 3 }, { 1, 1 } }) do
    it(("agree on batchnorm2d forward and backward, %dx%d planes"):format(hw[1], hw[2]), function()
      local g = faceid.Generator(3)
      local x = faceid.randn(g, 3, 5, hw[1], hw[2]) * 2 + 0.5
      local dy = faceid.randn(g, 3, 5, hw[1], hw[2])
      local gamma, beta = faceid.randn(g, 5), faceid.randn(g, 5)
      local a, b = both(function()
        local r = {}
        for _, training in ipairs({ true, false }) do
          for _, relu in ipairs({ false, true }) do
            local rm, rv = faceid.zeros(5), faceid.ones(5)
            local o = { training = training, relu = relu }
            local y, save = nn.batchnorm2d(x, gamma, beta, rm, rv, o)
            local dx, dg, db = faceid.zeros(3, 5, hw[1], hw[2]), faceid.zeros(5), faceid.zeros(5)
            if relu then
              nn.batchnorm2d_relu_backward(dy, x, gamma, beta, save, { training = training }, dx, dg, db)
            else
              nn.batchnorm2d_backward(dy, x, gamma, save, o, dx, dg, db)
            end
            local tag = ("training %s relu %s "):format(training, relu)
            for _, t in ipairs({ { "y", y }, { "dx", dx }, { "dgamma", dg }, { "dbeta", db },
              { "running mean", rm }, { "running var", rv } }) do
              r[#r + 1] = { tag .. t[1], t[2]:clone() }
            end
          end
        end
        return r
      end)
      same_lists(a, b, "batchnorm2d")
    end)
  end

  -- rows of 19 tiles (m = 2: 8 + 8, then 3 one by one) and 10 (m = 4: 8,
  -- then 2), in segments of up to 32 tiles; dw by Winograd too
  for _, algorithm in ipairs({ "winograd", "winograd4" }) do
    it("agree on " .. algorithm .. " convolutions", function()
      local g = faceid.Generator(9)
      local x = faceid.randn(g, 2, 3, 7, 38)
      local w = faceid.randn(g, 4, 3, 3, 3)
      local dy = faceid.randn(g, 2, 4, 7, 38)
      local o = { padding = 1, algorithm = algorithm }
      local a, b = both(function()
        local dx, dw = faceid.zeros(2, 3, 7, 38), faceid.zeros(4, 3, 3, 3)
        nn.conv2d_backward(dy, x, w, o, dx, dw)
        return { { "y", nn.conv2d(x, w, o) }, { "dx", dx }, { "dw", dw } }
      end)
      same_lists(a, b, algorithm)
    end)
  end

  it("agree on a DenseNet's training and evaluation passes, at 1 and 2 threads", function()
    -- 12x12 and 6x6 maps (rows of 144 and 36 floats: 8-float steps, a
    -- 4-float tail), growth 16: the deferred input-gradient terms of bn1
    local cfg = { growth = 16, blocks = { 2, 2 }, bottleneck = 4, stem = "small", input = 12,
      channels = 2, embedding = 3, seed = 6 }
    local x = faceid.randn(faceid.Generator(12), 4, 2, 12, 12)
    local dout = faceid.randn(faceid.Generator(13), 4, 3)
    for _, T in ipairs({ 1, 2 }) do
      local a, b = both(function()
        local net = faceid.DenseNet(cfg)
        net:threads(T)
        local r = { { "embeddings", net:forward(x):clone() }, { "input gradient", net:backward(dout, true):clone() } }
        for _, p in ipairs(net:parameters()) do r[#r + 1] = { p.name .. " gradient", p.grad:clone() } end
        for _, bf in ipairs(net:buffers()) do r[#r + 1] = { bf.name, bf.tensor:clone() } end
        net:evaluate()
        r[#r + 1] = { "evaluation embeddings", net:forward(x):clone() }
        net:close()
        return r
      end)
      same_lists(a, b, ("DenseNet at %d threads"):format(T))
    end
  end)
end)
