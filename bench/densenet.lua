--- bench/densenet.lua - speed and memory of one DenseNet configuration.
-- Run by `make bench` and by bench/compare.lua, one configuration per fresh
-- process so that the peak resident memory (VmHWM) belongs to that
-- configuration alone.
--
--   lua5.4 bench/densenet.lua [--mode train|eval|sgemm] [--input 128] [--batch 32]
--                             [--threads 2] [--steps 5] [--embedding 32] [--n 2048]
--                             [--no-optim] [--json]
--
-- train: median time of a training step as faceid.train makes it: forward of
--   `batch` images in training mode (batch / 2 pairs: the first images, then
--   the second ones), contrastive loss (margin 2, labels alternately same and
--   different), backward, Adam step (train.lua's defaults: lr 3e-4, betas 0.9
--   and 0.99), zero_grad. --no-optim leaves out the Adam step.
-- eval: median time of an evaluation-mode forward.
-- sgemm: the machine's ceiling, a large square cblas_sgemm (n x n).
-- Effective GFLOP/s count the multiply-adds of every convolution and the
-- linear layer from the layer shapes (2 FLOPs each): forward once; training
-- adds the weight gradient and the input gradient of every layer but the
-- first convolution. Loss and optimizer are not counted (they are tiny).
-- The count is the direct convolution's, whichever algorithm runs: where
-- Winograd does 2.25x fewer multiply-adds (the 3x3 convolutions, see
-- doc/nn.md), the effective rate may exceed what the hardware executes.
-- The first step of each run is left out (it allocates).
--
-- --json prints one line instead of the sentence, for bench/compare.lua:
--   {"framework":"faceid","mode":"train","input":128,"batch":32,"threads":2,"steps":5,
--    "optim":true,"images_per_s":..,"ms_per_step":..,"gflops":..,"peak_rss_mib":..}
-- (sgemm: framework, mode, n, threads, steps, gflops, peak_rss_mib).
local faceid = require("faceid")
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local median = bench.median

local USAGE = "usage: lua5.4 bench/densenet.lua [--mode train|eval|sgemm] [--input N] [--batch N]"
  .. " [--threads N] [--steps N] [--embedding N] [--n N] [--no-optim] [--json]\n"
local opts, flags = bench.options({ mode = "train", input = 128, batch = 32, threads = 2, steps = 5, embedding = 32,
  n = 2048 }, USAGE, { ["no-optim"] = false, json = false })
if opts.mode ~= "train" and opts.mode ~= "eval" and opts.mode ~= "sgemm" then
  io.stderr:write(USAGE)
  os.exit(2)
end
for _, k in ipairs({ "input", "batch", "threads", "steps", "embedding", "n" }) do
  if math.type(opts[k]) ~= "integer" or opts[k] < 1 then
    io.stderr:write(("bench/densenet.lua: --%s must be a positive integer\n"):format(k))
    os.exit(2)
  end
end
if opts.mode == "train" and opts.batch % 2 ~= 0 then
  io.stderr:write("bench/densenet.lua: --batch must be even in train mode (it holds pairs)\n")
  os.exit(2)
end

faceid.set_num_threads(opts.threads)

local function mib(bytes)
  return bytes / 2 ^ 20
end

-- one flat JSON object from an ordered list of {key, value}
local function json_line(fields)
  local parts = {}
  for _, kv in ipairs(fields) do
    local k, v = kv[1], kv[2]
    local s
    if type(v) == "string" then
      s = '"' .. v .. '"'
    elseif type(v) == "boolean" then
      s = tostring(v)
    elseif math.type(v) == "integer" then
      s = tostring(v)
    else
      s = ("%.6g"):format(v)
    end
    parts[#parts + 1] = ('"%s":%s'):format(k, s)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

if opts.mode == "sgemm" then
  local n = opts.n
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
  local gflops = 2 * n ^ 3 / t / 1e9
  if flags.json then
    print(json_line({ { "framework", "faceid" }, { "mode", "sgemm" }, { "n", n }, { "threads", opts.threads },
      { "steps", opts.steps }, { "gflops", gflops }, { "peak_rss_mib", mib(faceid.memory()) } }))
  else
    print(("sgemm %dx%d threads=%d: %.1f GFLOP/s (median of %d)"):format(n, n, opts.threads, gflops,
      opts.steps))
  end
  return
end

-- FLOPs of the network for one image: forward, and a training step
local function flops_per_image(net)
  local c = net:config()
  local fwd, first = 0, nil
  for _, p in ipairs(net:parameters()) do
    if p.kind == "conv" or p.kind == "linear_weight" then
      first = first or p.name -- names: each parameters() call makes new tables
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
      if p.name == first then first_macs = macs end
    elseif p.kind == "linear_weight" then
      fwd = fwd + p.param:numel()
    end
  end
  return 2 * fwd, 2 * (3 * fwd - first_macs)
end

local net = faceid.DenseNet.densenet121({ embedding = opts.embedding, input = opts.input })
local g = faceid.Generator(2018)
local x = faceid.randn(g, opts.batch, 3, opts.input, opts.input)
local fwd_flops, train_flops = flops_per_image(net)
local optim = opts.mode == "train" and not flags["no-optim"]

local times = {}
if opts.mode == "train" then
  local pairs_n = opts.batch // 2
  local y = {}
  for p = 1, pairs_n do y[p] = (p - 1) % 2 end -- 0 same, 1 different
  local labels = faceid.tensor(y)
  local loss = faceid.ContrastiveLoss({ margin = 2.0 })
  local opt = optim and faceid.Adam(net, { lr = 3e-4, beta1 = 0.9, beta2 = 0.99, eps = 1e-8 }) or nil
  net:train()
  for step = 0, opts.steps do
    local t0 = faceid.clock()
    local emb = net:forward(x)
    loss:forward(emb, labels)
    net:backward(loss:backward())
    if opt then opt:step() end
    net:zero_grad()
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
local ips, gflops = opts.batch / t, per_image * opts.batch / t / 1e9
if flags.json then
  print(json_line({ { "framework", "faceid" }, { "mode", opts.mode }, { "input", opts.input },
    { "batch", opts.batch }, { "threads", opts.threads }, { "steps", opts.steps }, { "optim", optim },
    { "images_per_s", ips }, { "ms_per_step", 1000 * t }, { "gflops", gflops },
    { "peak_rss_mib", mib(peak) } }))
else
  print(("densenet121 %-5s input=%d batch=%d threads=%d%s: %7.1f img/s  %7.1f ms/step  %6.1f GFLOP/s"
    .. "  peak RSS %6.0f MiB"):format(opts.mode, opts.input, opts.batch, opts.threads,
    (opts.mode == "train" and not optim) and " no-optim" or "", ips, 1000 * t, gflops, mib(peak)))
end
