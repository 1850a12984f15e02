--- bench/densenet.lua - speed and memory of one DenseNet configuration.
-- Run by `make bench`, one configuration per fresh process so that the peak
-- resident memory (VmHWM) belongs to that configuration alone.
--
--   lua5.4 bench/densenet.lua [--mode train|eval|sgemm] [--input 128] [--batch 32]
--                             [--threads 2] [--steps 5] [--embedding 32]
--
-- train: median time of a training step (forward of `batch` images in
--   training mode + backward of a fixed embedding gradient; no optimizer),
-- eval: median time of an evaluation-mode forward,
-- sgemm: the machine's ceiling, a large square cblas_sgemm.
-- Effective GFLOP/s count the multiply-adds of every convolution and the
-- linear layer from the layer shapes (2 FLOPs each): forward once; training
-- adds the weight gradient and the input gradient of every layer but the
-- first convolution.
local faceid = require("faceid")

local opts = { mode = "train", input = 128, batch = 32, threads = 2, steps = 5, embedding = 32 }
local i = 1
while arg and arg[i] do
  local key = arg[i]:match("^%-%-(%w+)$")
  if not key or opts[key] == nil or not arg[i + 1] then
    io.stderr:write("usage: lua5.4 bench/densenet.lua [--mode train|eval|sgemm] [--input N] [--batch N]"
      .. " [--threads N] [--steps N] [--embedding N]\n")
    os.exit(2)
  end
  opts[key] = tonumber(arg[i + 1]) or arg[i + 1]
  i = i + 2
end

faceid.set_num_threads(opts.threads)

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local function mib(bytes)
  return bytes / 2 ^ 20
end

if opts.mode == "sgemm" then
  local n = 2048
  local g = faceid.Generator(1)
  local a, b = faceid.randn(g, n, n), faceid.randn(g, n, n)
  faceid.matmul(a, b) -- warm up threads and pages
  local times = {}
  for _ = 1, opts.steps do
    local t0 = faceid.clock()
    faceid.matmul(a, b)
    times[#times + 1] = faceid.clock() - t0
  end
  local t = median(times)
  print(("sgemm %dx%d threads=%d: %.1f GFLOP/s (median of %d)"):format(n, n, opts.threads,
    2 * n ^ 3 / t / 1e9, opts.steps))
  return
end

-- multiply-adds of the network for one image: forward, and what backward adds
local function flops_per_image(net)
  local c = net:config()
  local fwd, first = 0, nil
  for _, p in ipairs(net:parameters()) do
    if p.kind == "conv" or p.kind == "linear_weight" then
      first = first or p
    end
  end
  -- spatial size of each conv output follows the architecture
  local s = c.input
  local h0 = c.stem == "imagenet" and (s - 1) // 2 + 1 or s
  local h = c.stem == "imagenet" and (h0 - 1) // 2 + 1 or h0
  local sizes = { ["features.conv0.weight"] = h0 }
  for b = 1, #c.blocks do
    for l = 1, c.blocks[b] do
      sizes[("features.denseblock%d.denselayer%d.conv1.weight"):format(b, l)] = h
      sizes[("features.denseblock%d.denselayer%d.conv2.weight"):format(b, l)] = h
    end
    if b < #c.blocks then
      h = h // 2
      -- the transition pools before its 1x1 convolution (they commute)
      sizes[("features.transition%d.conv.weight"):format(b)] = h
    end
  end
  local first_macs = 0
  for _, p in ipairs(net:parameters()) do
    if p.kind == "conv" then
      local hw = sizes[p.name] ^ 2
      local macs = p.param:numel() * hw
      fwd = fwd + macs
      if p == first then first_macs = macs end
    elseif p.kind == "linear_weight" then
      fwd = fwd + p.param:numel()
    end
  end
  return 2 * fwd, 2 * (3 * fwd - first_macs)
end

local net = faceid.DenseNet.densenet121({ embedding = opts.embedding, input = opts.input })
local g = faceid.Generator(2018)
local x = faceid.randn(g, opts.batch, 3, opts.input, opts.input)
local grad = faceid.randn(g, opts.batch, opts.embedding)
local fwd_flops, train_flops = flops_per_image(net)

local times = {}
if opts.mode == "train" then
  net:train()
  for step = 0, opts.steps do
    local t0 = faceid.clock()
    net:forward(x)
    net:backward(grad)
    if step > 0 then times[#times + 1] = faceid.clock() - t0 end -- step 0 allocates
  end
else
  net:evaluate()
  for step = 0, opts.steps do
    local t0 = faceid.clock()
    net:forward(x)
    if step > 0 then times[#times + 1] = faceid.clock() - t0 end
  end
end
local t = median(times)
local per_image = opts.mode == "train" and train_flops or fwd_flops
local peak = faceid.memory()
print(("densenet121 %-5s input=%d batch=%d threads=%d: %7.1f img/s  %7.1f ms/step  %6.1f GFLOP/s  peak RSS %6.0f MiB")
  :format(opts.mode, opts.input, opts.batch, opts.threads, opts.batch / t, 1000 * t,
    per_image * opts.batch / t / 1e9, mib(peak)))
