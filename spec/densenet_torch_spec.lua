-- Parity with PyTorch/torchvision: fixtures written by
-- spec/fixtures/make_torch_fixtures.py (run by hand with Debian's
-- python3-torch) hold a batch, torchvision's embeddings, dL/dx and dL/dparam
-- for L = sum(embedding * R) after one training-mode forward, the running
-- statistics after it, and the eval-mode embeddings, computed in float64
-- from float32 weights. torch is not needed here.
--
-- The bar: forward within 1e-4 and gradients within 1e-3 of the float64
-- reference, or, where float32 arithmetic cannot get that close (deep nets
-- whose last batch-norms see few values), within twice the distance that
-- torchvision's own float32 run lands at (recorded as torch32_err.*).
-- All parameter gradients taken together are held to the same bar. In deep
-- nets, float32 rounding can tip a pre-activation that sits at zero to the
-- other side of a ReLU, which moves one tensor's gradient by ~1e-2 in any
-- float32 implementation (torchvision's own run shows such outliers at
-- other tensors); so up to 1 % of the tensors may exceed their bound, but
-- never 2e-2.
local faceid = require("faceid")

local FIX = "spec/fixtures/"

local function rel_err(a, b)
  return (a - b):norm() / math.max(b:norm(), 1e-12)
end

local function config_of(meta)
  local blocks = {}
  for v in meta.blocks:gmatch("%d+") do blocks[#blocks + 1] = tonumber(v) end
  return {
    growth = tonumber(meta.growth), blocks = blocks, bottleneck = tonumber(meta.bottleneck),
    compression = tonumber(meta.compression), stem = meta.stem, embedding = tonumber(meta.embedding),
    input = tonumber(meta.input), channels = tonumber(meta.channels),
  }
end

-- the integer hash of make_torch_fixtures.py, bit for bit
local function hash_uniform(t, i)
  local h = (i * 0x9E3779B1 + (t + 1) * 0x85EBCA77) & 0xFFFFFFFF
  h = h ~ (h >> 15)
  h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
  h = h ~ (h >> 12)
  h = (h * 0x297A2D39) & 0xFFFFFFFF
  h = h ~ (h >> 15)
  return h / 4294967296.0
end

local function hash_values(t, n, scale, offset)
  local v = {}
  for i = 0, n - 1 do v[i + 1] = offset + (2.0 * hash_uniform(t, i) - 1.0) * scale end
  return faceid.tensor(v)
end

local function hash_scale(name, size)
  if name:find("running_var$") then return 0.25, 1.0 end
  if name:find("running_mean$") then return 0.1, 0.0 end
  if #size == 4 then return math.sqrt(6.0 / (size[2] * size[3] * size[4])), 0.0 end
  if name:find("^classifier.weight") then return 1.0 / math.sqrt(size[2]), 0.0 end
  if name:find("weight$") then return 0.25, 1.0 end
  return 0.1, 0.0
end

-- torchvision's state_dict order: each BN's weight, bias, running_mean,
-- running_var, num_batches_tracked; convs and the classifier as parameters
local function hashed_state(net)
  local bufs = {}
  for _, b in ipairs(net:buffers()) do bufs[b.name] = b.tensor end
  local t = 0
  for _, p in ipairs(net:parameters()) do
    local size = p.param:size()
    local scale, off = hash_scale(p.name, size)
    p.param:view(-1):copy(hash_values(t, p.param:numel(), scale, off))
    t = t + 1
    if p.kind == "bn_bias" then
      local prefix = p.name:gsub("%.bias$", "")
      for _, suffix in ipairs({ ".running_mean", ".running_var" }) do
        local b = bufs[prefix .. suffix]
        local s, o = hash_scale(prefix .. suffix, b:size())
        b:copy(hash_values(t, b:numel(), s, o))
        t = t + 1
      end
      t = t + 1 -- num_batches_tracked
    end
  end
end

-- faceid's error may be `bound`, or up to twice torchvision's own float32
-- error where that is larger (two float32 computations with different
-- summation orders scatter around the exact value by similar amounts)
local function bound_of(t, key, bound)
  local torch32 = t["torch32_err." .. key] and t["torch32_err." .. key]:get(1) or 0
  return math.max(bound, 2 * torch32), torch32
end

local function within(t, key, err, bound, what)
  local b, torch32 = bound_of(t, key, bound)
  if os.getenv("FACEID_PARITY_REPORT") then
    print(("%-60s faceid %.3g  torch32 %.3g"):format(what, err, torch32))
  end
  assert(err < b, ("%s differs from the float64 reference by %.3g (bound %.3g, torchvision float32: %.3g)")
    :format(what, err, b, torch32))
end

local function parity(name)
  local t, meta = assert(faceid.load(FIX .. name .. ".safetensors"))
  local net = faceid.DenseNet(config_of(meta))
  if meta.hashed_weights == "1" then
    hashed_state(net)
  else
    local state = {}
    for k, v in pairs(t) do
      local n = k:match("^state%.(.*)$")
      if n then state[n] = v end
    end
    net:load_state(state)
  end
  net:train()
  net:zero_grad()
  local emb = net:forward(t.x)
  within(t, "embedding", rel_err(emb, t.embedding), 1e-4, name .. ": the embedding")
  local gx = net:backward(t.r, true)
  within(t, "x", rel_err(gx, t["grad.x"]), 1e-3, name .. ": dL/dx")
  local checked, outliers, sq_err, sq_ref = 0, {}, 0, 0
  for _, p in ipairs(net:parameters()) do
    local full = t["grad." .. p.name]
    local mine, ref
    if full then
      mine, ref = p.grad, full
    else
      local idx, sample = t["grad_index." .. p.name], t["grad_sample." .. p.name]
      assert(idx and sample, "fixture has no gradient for " .. p.name)
      local flat, values = p.grad:view(-1), {}
      for i = 1, idx:numel() do values[i] = flat:get(math.tointeger(idx:get(i)) + 1) end
      mine, ref = faceid.tensor(values), sample
      local norm = t["grad_norm." .. p.name]:get(1)
      within(t, p.name, math.abs(p.grad:norm() - norm) / norm, 1e-3, name .. ": the gradient norm of " .. p.name)
    end
    local e = rel_err(mine, ref)
    sq_err, sq_ref = sq_err + (mine - ref):norm() ^ 2, sq_ref + ref:norm() ^ 2
    local b, torch32 = bound_of(t, p.name, 1e-3)
    if os.getenv("FACEID_PARITY_REPORT") then
      print(("%-60s faceid %.3g  torch32 %.3g"):format(p.name, e, torch32))
    end
    if e >= b then
      assert(e < 2e-2, ("%s: the gradient of %s differs from the float64 reference by %.3g")
        :format(name, p.name, e))
      outliers[#outliers + 1] = ("%s (%.3g)"):format(p.name, e)
    end
    checked = checked + 1
  end
  assert.are.equal(#net:parameters(), checked)
  assert(#outliers <= checked // 100, ("%s: %d gradients beyond their bound: %s")
    :format(name, #outliers, table.concat(outliers, ", ")))
  within(t, "all_gradients", math.sqrt(sq_err / sq_ref), 1e-3, name .. ": all gradients together")
  local e
  for _, b in ipairs(net:buffers()) do
    local want = t["after." .. b.name]
    if want then
      e = rel_err(b.tensor, want)
      assert(e < 1e-5, ("%s: %s after one step differs by %.3g"):format(name, b.name, e))
    end
  end
  net:evaluate()
  e = rel_err(net:forward(t.x), t.eval_embedding)
  assert(e < 1e-4, ("%s: eval-mode embeddings differ by %.3g"):format(name, e))
  net:close()
end

describe("DenseNet parity with torchvision", function()
  it("small DenseNet-BC with the small stem", function()
    parity("torch_small")
  end)

  it("DenseNet-BC with the imagenet stem on 2-channel input", function()
    parity("torch_imagenet_stem")
  end)

  it("densenet121 at 64x64", function()
    parity("torch_densenet121_64")
  end)
end)
