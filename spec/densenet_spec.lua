-- DenseNet: construction, names, shapes, modes, finite-difference gradient
-- checks of the whole network, buffer reuse, save/load.
local faceid = require("faceid")
local helper = require("helper")

local small_cfg = { growth = 4, blocks = { 2, 2 }, bottleneck = 2, stem = "small", input = 8,
  channels = 2, embedding = 3, seed = 5 }

describe("DenseNet construction", function()
  it("has torchvision's densenet121 parameter count with a 32-d head", function()
    local net = faceid.DenseNet.densenet121({ embedding = 32 })
    assert.are.equal(6986656, net:num_parameters())
    net:close()
  end)

  it("names parameters and buffers as torchvision's state_dict", function()
    local net = faceid.DenseNet.densenet121({ embedding = 32 })
    local p, b = net:parameters(), net:buffers()
    assert.are.equal("features.conv0.weight", p[1].name)
    assert.are.same({ 64, 3, 7, 7 }, p[1].param:size())
    assert.are.equal("features.norm0.weight", p[2].name)
    assert.are.equal("features.denseblock1.denselayer1.norm1.weight", p[4].name)
    assert.are.equal("features.denseblock1.denselayer1.conv1.weight", p[6].name)
    assert.are.same({ 128, 64, 1, 1 }, p[6].param:size())
    assert.are.same({ 32, 128, 3, 3 }, p[9].param:size())
    assert.are.equal("features.denseblock4.denselayer16.conv2.weight", p[#p - 4].name)
    assert.are.equal("features.norm5.weight", p[#p - 3].name)
    assert.are.equal("classifier.weight", p[#p - 1].name)
    assert.are.same({ 32, 1024 }, p[#p - 1].param:size())
    assert.are.equal("features.norm0.running_mean", b[1].name)
    assert.are.equal("features.norm5.running_mean", b[#b - 1].name)
    local by_name = {}
    for _, e in ipairs(p) do by_name[e.name] = e end
    assert.are.same({ 512, 1024, 1, 1 }, by_name["features.transition3.conv.weight"].param:size())
    assert.are.same({ 128, 992, 1, 1 }, by_name["features.denseblock4.denselayer16.conv1.weight"].param:size())
    net:close()
  end)

  it("initialises like torchvision", function()
    local net = faceid.DenseNet(small_cfg)
    for _, e in ipairs(net:parameters()) do
      local t = e.param
      if e.kind == "bn_weight" then
        assert.are.equal(t:numel(), t:sum())
      elseif e.kind == "bn_bias" or e.kind == "linear_bias" then
        assert.are.equal(0, t:abs():sum())
      elseif e.kind == "linear_weight" then
        assert.is_true(t:abs():max() <= 1 / math.sqrt(t:size(2)))
      end
    end
    -- Kaiming-normal std sqrt(2 / fan_in), checked on densenet121's widest conv
    local big = faceid.DenseNet.densenet121({ embedding = 8 })
    local w = big:parameters()[#big:parameters() - 4].param -- 32x128x3x3
    local std = math.sqrt((w * w):mean())
    assert.is_true(math.abs(std - math.sqrt(2 / (128 * 9))) < 0.02 * std)
    for _, b in ipairs(net:buffers()) do
      assert.are.equal(b.kind == "running_var" and b.tensor:numel() or 0, b.tensor:sum())
    end
  end)

  it("draws the same weights for the same seed", function()
    local a, b = faceid.DenseNet(small_cfg), faceid.DenseNet(small_cfg)
    local c = faceid.DenseNet(setmetatable({ seed = 6 }, { __index = small_cfg }))
    local pa, pb = a:flat(), b:flat()
    assert.is_true(pa:equal(pb))
    assert.is_false(pa:equal((c:flat())))
  end)

  it("refuses unknown or bad options", function()
    assert.has_error(function() faceid.DenseNet({ growht = 3 }) end, "faceid.DenseNet: unknown option 'growht'")
    local ok, err = pcall(faceid.DenseNet, { input = 16 })
    assert.is_false(ok)
    assert.truthy(err:find("input 16 is too small", 1, true), err)
    ok, err = pcall(faceid.DenseNet, { stem = "huge" })
    assert.truthy(err:find("'stem' must be", 1, true), err)
    ok, err = pcall(faceid.DenseNet, { compression = 1.5 })
    assert.truthy(err:find("compression must be in (0, 1]", 1, true), err)
    ok, err = pcall(faceid.DenseNet.densenet121, { growth = 12 })
    assert.truthy(err:find("fixed by the architecture", 1, true), err)
  end)

  it("prints a summary", function()
    local s = tostring(faceid.DenseNet.densenet121({ embedding = 32 }))
    assert.truthy(s:find("block 3: 24 layers,  256 -> 1024 channels, transition to 512", 1, true), s)
    assert.truthy(s:find("parameters: 6,986,656", 1, true), s)
  end)
end)

describe("DenseNet forward and backward", function()
  it("maps N images to N embeddings in both modes", function()
    local net = faceid.DenseNet(small_cfg)
    local x = faceid.randn(faceid.Generator(1), 5, 2, 8, 8)
    assert.are.same({ 5, 3 }, net:forward(x):size())
    net:evaluate()
    assert.is_false(net:is_training())
    local e1 = net:forward(x)
    assert.is_true(e1:equal(net:forward(x)))
    -- evaluation is per image: the first image alone gives the same row
    assert.is_true(net:forward(x:narrow(1, 1, 1)):allclose(e1:narrow(1, 1, 1), 1e-5, 1e-6))
  end)

  it("updates running statistics only in training mode", function()
    local net = faceid.DenseNet(small_cfg)
    local x = faceid.randn(faceid.Generator(2), 4, 2, 8, 8):add_(3)
    local rm = net:buffers()[1].tensor
    net:evaluate()
    net:forward(x)
    assert.are.equal(0, rm:abs():sum())
    net:train()
    net:forward(x)
    assert.is_true(rm:abs():sum() > 0)
    assert.are.equal(1, net:batches_tracked())
  end)

  it("refuses backward without a training forward, and wrong shapes", function()
    local net = faceid.DenseNet(small_cfg)
    local ok, err = pcall(net.backward, net, faceid.ones(2, 3))
    assert.truthy(err:find("backward needs a training-mode forward first", 1, true), err)
    net:forward(faceid.ones(2, 2, 8, 8))
    ok, err = pcall(net.backward, net, faceid.ones(3, 3))
    assert.truthy(err:find("gradient has 3 rows but the last forward had 2", 1, true), err)
    ok, err = pcall(net.backward, net, faceid.ones(2, 4))
    assert.truthy(err:find("gradient is 2x4 but the embeddings are Nx3", 1, true), err)
    ok, err = pcall(net.forward, net, faceid.ones(2, 3, 8, 8))
    assert.truthy(err:find("input is 2x3x8x8 but the network expects Nx2x8x8", 1, true), err)
    net:evaluate()
    net:forward(faceid.ones(2, 2, 8, 8))
    net:train()
    ok, err = pcall(net.backward, net, faceid.ones(2, 3))
    assert.is_false(ok)
    net:close()
    ok, err = pcall(net.forward, net, faceid.ones(2, 2, 8, 8))
    assert.truthy(err:find("network has been closed", 1, true), err)
  end)

  it("accumulates gradients until zero_grad", function()
    local net = faceid.DenseNet(small_cfg)
    local x = faceid.randn(faceid.Generator(3), 3, 2, 8, 8)
    local _, grads = net:flat()
    net:forward(x)
    net:backward(faceid.ones(3, 3))
    local once = grads:clone()
    net:forward(x)
    net:backward(faceid.ones(3, 3))
    assert.is_true(grads:allclose(once * 2, 1e-4, 1e-6))
    net:zero_grad()
    assert.are.equal(0, grads:abs():sum())
  end)

  -- training splits the batch over the threads (each part its images, the
  -- batch norms' sums and the weight gradients exchanged): within float
  -- rounding of the whole batch on one thread, bitwise the same run to run
  it("trains a batch split over its threads as it does whole, and reproducibly", function()
    local cfgs = {
      small_cfg,
      -- the imagenet stem: max-pool indices and the stem's batch norm per part
      { growth = 4, blocks = { 2, 2 }, bottleneck = 2, stem = "imagenet", input = 16, channels = 3,
        embedding = 3, seed = 7 },
      -- 16x16 maps and a 64-channel bottleneck: Winograd's weight gradient per part
      { growth = 16, blocks = { 2, 1 }, bottleneck = 4, stem = "small", input = 16, channels = 2,
        embedding = 3, seed = 6 },
    }
    for ci, cfg in ipairs(cfgs) do
      local x = faceid.randn(faceid.Generator(12), 5, cfg.channels, cfg.input, cfg.input)
      local g = faceid.randn(faceid.Generator(13), 5, 3)
      local function run(threads)
        local net = faceid.DenseNet(cfg)
        assert.are.equal(threads, net:threads(threads))
        local r = { { "embeddings", net:forward(x):clone() }, { "input gradient", net:backward(g, true):clone() } }
        for _, p in ipairs(net:parameters()) do r[#r + 1] = { p.name .. " gradient", p.grad:clone() } end
        for _, b in ipairs(net:buffers()) do r[#r + 1] = { b.name, b.tensor:clone() } end
        net:close()
        return r
      end
      local whole = run(1)
      -- 5 images over 2 and 3 threads: parts of 3 + 2 and 2 + 2 + 1; over 8: one image each
      for _, T in ipairs({ 2, 3, 8 }) do
        local a, b = run(T), run(T)
        for k, w in ipairs(whole) do
          local what = ("config %d, threads %d: %s"):format(ci, T, w[1])
          -- each tensor to within 1e-4 of its own largest value (a sum that
          -- nearly cancels rounds to other small values in another order)
          local diff = (a[k][2] - w[2]):abs():max()
          assert.is_true(diff <= 1e-4 * w[2]:abs():max() + 1e-6, what .. (" differs by %g"):format(diff))
          assert.is_true(a[k][2]:equal(b[k][2]), what .. " (rerun)")
        end
      end
    end
  end)

  -- a bottleneck of 64 channels: evaluation takes Winograd for the 3x3
  -- convolutions (norm2 applied as it reads), training im2col
  local wino_cfg = { growth = 16, blocks = { 2, 1 }, bottleneck = 4, stem = "small", input = 12,
    channels = 2, embedding = 3, seed = 6 }

  it("evaluates a batch split over its threads as it does serially and image by image", function()
    local x = faceid.randn(faceid.Generator(21), 5, 2, 8, 8)
    local net = faceid.DenseNet(small_cfg)
    net:forward(x) -- running statistics that are not the initial ones
    net:evaluate()
    net:threads(1)
    local serial = net:forward(x):clone()
    for _, T in ipairs({ 2, 3, 8 }) do
      assert.are.equal(T, net:threads(T))
      local e = net:forward(x)
      assert.is_true(e:allclose(serial, 1e-5, 1e-6), "threads " .. T)
      for i = 1, 5, 2 do
        assert.is_true(net:forward(x:narrow(1, i, 1)):allclose(serial:narrow(1, i, 1), 1e-5, 1e-6))
      end
      assert.is_true(net:forward(x:narrow(1, 2, 3)):allclose(serial:narrow(1, 2, 3), 1e-5, 1e-6))
    end
    -- the same with Winograd (products of other widths: within rounding)
    local wx = faceid.randn(faceid.Generator(22), 5, 2, 12, 12)
    local wnet = faceid.DenseNet(wino_cfg)
    wnet:forward(wx)
    wnet:evaluate()
    wnet:threads(1)
    local wserial = wnet:forward(wx):clone()
    for _, T in ipairs({ 2, 3 }) do
      wnet:threads(T)
      assert.is_true(wnet:forward(wx):allclose(wserial, 1e-5, 1e-6), "Winograd on threads " .. T)
      assert.is_true(wnet:forward(wx:narrow(1, 4, 1)):allclose(wserial:narrow(1, 4, 1), 1e-5, 1e-6), "one image")
    end
    -- changing the threads between a training forward and its backward
    -- re-plans the buffers: the backward then asks for a new forward
    net:train()
    net:forward(x)
    net:threads(2)
    local ok, err = pcall(net.backward, net, faceid.ones(5, 3))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("needs a training-mode forward first", 1, true), err)
    net:forward(x)
    net:backward(faceid.ones(5, 3))
  end)

  it("reuses its activation buffers across steps", function()
    local net = faceid.DenseNet(small_cfg)
    local x = faceid.randn(faceid.Generator(4), 6, 2, 8, 8)
    net:forward(x)
    net:backward(faceid.ones(6, 3))
    local bytes = net:arena_bytes()
    for _ = 1, 3 do
      net:forward(x)
      net:backward(faceid.ones(6, 3))
    end
    net:forward(x:narrow(1, 1, 4)) -- a smaller batch fits the same buffers
    assert.are.equal(bytes, net:arena_bytes())
  end)
end)

-- Finite differences of L = sum(net(x) * R) in training mode (batch
-- statistics), along random directions restricted to one kind of tensor at
-- a time: the input, and each kind of parameter. Directional derivatives
-- average over many elements, so an isolated ReLU kink cannot fake a pass
-- or a failure, while a wrong formula for any kind shows at once.
describe("DenseNet gradients", function()
  local function check(cfg, n)
    local net = faceid.DenseNet(cfg)
    local g = faceid.Generator(77)
    local x = faceid.randn(g, n, cfg.channels, cfg.input, cfg.input)
    local r = faceid.randn(g, n, cfg.embedding)
    local function loss()
      return (net:forward(x) * r):sum()
    end
    net:zero_grad()
    net:forward(x)
    local gx = net:backward(r, true)
    local groups = { input = { { t = x, g = gx } } }
    for _, e in ipairs(net:parameters()) do
      groups[e.kind] = groups[e.kind] or {}
      table.insert(groups[e.kind], { t = e.param, g = e.grad:clone() })
    end
    -- a unit direction per group, and the error measured against the
    -- group's gradient norm (|g . d| <= |g|), so tiny projections do not
    -- inflate it; eps 1e-3 keeps float32 rounding near 1e-4 of that
    local eps = 1e-3
    for kind, list in pairs(groups) do
      local dirs, analytic, dn, gn = {}, 0, 0, 0
      for i, item in ipairs(list) do
        dirs[i] = faceid.randn(g, item.t:size())
        dn = dn + dirs[i]:norm() ^ 2
        gn = gn + item.g:norm() ^ 2
      end
      dn, gn = math.sqrt(dn), math.sqrt(gn)
      for i, item in ipairs(list) do
        dirs[i]:div_(dn)
        analytic = analytic + item.g:mul(dirs[i]):sum()
      end
      local function shift(s)
        for i, item in ipairs(list) do item.t:axpy_(dirs[i], s) end
      end
      shift(eps)
      local lp = loss()
      shift(-2 * eps)
      local lm = loss()
      shift(eps)
      local numeric = (lp - lm) / (2 * eps)
      local err = math.abs(numeric - analytic) / math.max(gn, 1e-4)
      assert(err < 1e-2, ("%s: analytic %.6g vs numeric %.6g (error %.3g of |grad| %.3g)")
        :format(kind, analytic, numeric, err, gn))
      assert(gn > 1e-6, kind .. ": gradient is zero")
    end
  end

  it("match finite differences with the small stem", function()
    check(small_cfg, 3)
  end)

  it("match finite differences with the imagenet stem, max-pool and transitions", function()
    check({ growth = 3, blocks = { 2, 1, 2 }, bottleneck = 2, compression = 0.5, stem = "imagenet",
      input = 32, channels = 3, embedding = 4, seed = 9 }, 2)
  end)

  it("match finite differences with odd sizes and compression", function()
    check({ growth = 5, blocks = { 1, 3 }, bottleneck = 3, compression = 0.7, stem = "small",
      input = 7, channels = 1, embedding = 2, seed = 10 }, 2)
  end)
end)

-- The network against the layers it is made of, run one by one through
-- faceid.nn (each tested against its naive loops): every batch norm that the
-- network applies inside the convolution or pool reading its output (the 1x1
-- convolutions' gather, Winograd's input, the average, global and max pools)
-- is here a separate nn.batchnorm2d pass. Evaluation and training (batch
-- statistics, running averages), on one thread: a split batch sums its
-- statistics part by part (checked above against the whole batch).
describe("DenseNet composition", function()
  local nn = faceid.nn

  local function compose(net, x, training)
    local cfg = net:config()
    local P, B = {}, {}
    for _, p in ipairs(net:parameters()) do P[p.name] = p.param end
    for _, b in ipairs(net:buffers()) do B[b.name] = b.tensor:clone() end
    local function bn(t, name)
      return (nn.batchnorm2d(t, P[name .. ".weight"], P[name .. ".bias"], B[name .. ".running_mean"],
        B[name .. ".running_var"], { training = training, relu = true }))
    end
    local y = nn.conv2d(x, P["features.conv0.weight"], { stride = 2, padding = 3 })
    y = nn.max_pool2d(bn(y, "features.norm0"), 3, { stride = 2, padding = 1, indices = false })
    for b, L in ipairs(cfg.blocks) do
      local feats = y
      for l = 1, L do
        local pre = ("features.denseblock%d.denselayer%d"):format(b, l)
        local y1 = nn.conv2d(bn(feats, pre .. ".norm1"), P[pre .. ".conv1.weight"])
        local side = y1:size(3)
        -- the algorithm the network takes: F(4x4, 3x3) evaluating, F(2x2,
        -- 3x3) training on maps of 16x16 and more, im2col below
        local algo = not training and "winograd4" or side * side >= 256 and "winograd" or "im2col"
        local y2 = nn.conv2d(bn(y1, pre .. ".norm2"), P[pre .. ".conv2.weight"], { padding = 1, algorithm = algo })
        feats = faceid.cat({ feats, y2 }, 2)
      end
      if b < #cfg.blocks then
        -- pool, then the 1x1 convolution, as the network orders them
        local t = nn.avg_pool2d(bn(feats, ("features.transition%d.norm"):format(b)), 2)
        y = nn.conv2d(t, P[("features.transition%d.conv.weight"):format(b)])
      else
        y = feats
      end
    end
    local f = nn.global_avg_pool(bn(y, "features.norm5"))
    return nn.linear(f, P["classifier.weight"], P["classifier.bias"]), B
  end

  it("computes, in both modes, what its layers compose to", function()
    -- a 64-channel bottleneck on 16x16 and 8x8 maps: Winograd in both modes
    local net = faceid.DenseNet({ growth = 16, blocks = { 2, 2 }, bottleneck = 4, compression = 0.5,
      stem = "imagenet", input = 64, channels = 3, embedding = 5, seed = 11 })
    net:threads(1)
    local x = faceid.randn(faceid.Generator(14), 3, 3, 64, 64)
    for _, training in ipairs({ true, false }) do
      if training then net:train() else net:evaluate() end
      local want, running = compose(net, x, training)
      local got = net:forward(x)
      local what = training and "training" or "evaluation"
      -- bitwise: applying a batch norm as its output is read computes the
      -- very values a separate pass writes, and the products see the same data
      assert.is_true(got:equal(want), what .. (": differs by %g"):format((got - want):abs():max()))
      if training then
        for _, b in ipairs(net:buffers()) do assert.is_true(b.tensor:equal(running[b.name]), b.name) end
      end
    end
    net:close()
  end)
end)

describe("DenseNet save and load", function()
  it("round-trips weights, running statistics and config", function()
    local dir = helper.tmpdir()
    local net = faceid.DenseNet(small_cfg)
    local x = faceid.randn(faceid.Generator(8), 4, 2, 8, 8)
    net:forward(x) -- move the running statistics
    net:evaluate()
    local before = net:forward(x)
    assert.is_true(net:save(dir .. "/m.safetensors"))
    local back = assert(faceid.DenseNet.load(dir .. "/m.safetensors"))
    back:evaluate()
    assert.is_true(back:forward(x):equal(before))
    assert.are.same(net:config(), back:config())
    assert.are.equal(1, back:batches_tracked())
    local t, meta, dtypes = faceid.load(dir .. "/m.safetensors")
    assert.are.equal("I64", dtypes["features.norm0.num_batches_tracked"])
    assert.are.equal("faceid.densenet", meta.format)
    assert.are.equal("2,2", meta.blocks)
    assert.is_not_nil(t["features.denseblock2.denselayer2.conv2.weight"])
    helper.rmtree(dir)
  end)

  it("refuses a file whose tensors do not fit, naming the tensor", function()
    local dir = helper.tmpdir()
    local net = faceid.DenseNet(small_cfg)
    local state = net:state()
    state["features.norm5.running_mean"] = faceid.zeros(7)
    assert.is_true(faceid.save(dir .. "/bad.safetensors", state))
    local m, err = faceid.DenseNet.load(dir .. "/bad.safetensors")
    assert.is_nil(m)
    assert.truthy(err:find("features.norm5.running_mean", 1, true), err)
    state["features.norm5.running_mean"] = nil
    assert.is_true(faceid.save(dir .. "/missing.safetensors", state))
    m, err = faceid.DenseNet.load(dir .. "/missing.safetensors")
    assert.is_nil(m)
    assert.truthy(err:find("missing tensor 'features.norm5.running_mean'", 1, true), err)
    m, err = faceid.DenseNet.load(dir .. "/absent.safetensors")
    assert.is_nil(m)
    assert.truthy(err:find("absent.safetensors", 1, true), err)
    helper.rmtree(dir)
  end)
end)
