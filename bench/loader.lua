--- bench/loader.lua - what the batch loader costs, alone and inside a
-- training step. Run by `make bench` (never by the tests).
--
--   lua5.4 bench/loader.lua [--data ../shared/data] [--input 128] [--batch 16]
--                           [--threads 2] [--steps 3] [--batches 10] [--train 1]
--
-- Part 1, per data set present (CelebA subset, AT&T): loader images/s for
--   cold   every image decoded from its file (cache = false),
--   memory the in-memory Cache, warm (the same batches seen once before),
--   mapped a prepared cache (faceid.cache), memory-mapped, warm (and the
--          first pass, which maps its pages in, on its own),
-- over `batches` training batches of `batch` pairs (2 * batch images,
-- augmented to input x input), plus the time `faceid.cache.prepare` takes.
-- Part 2 (--train 1): the DenseNet-121 training step at `batch` pairs
-- (forward of 2 * batch images, contrastive loss, backward, Adam) with
-- pre-made tensors, then with the real loader (cold and mapped) building
-- each batch first; the loader's share is its time over the whole step.
-- Times are medians over `steps` steps after one warm-up step.
local faceid = require("faceid")
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local median = bench.median

local opts = bench.options({ data = "../shared/data", input = 128, batch = 16, threads = 2, steps = 3, batches = 10,
  train = 1 }, "usage: lua5.4 bench/loader.lua [--data DIR] [--input N] [--batch PAIRS] [--threads N]"
  .. " [--steps N] [--batches N] [--train 0|1]\n")
for _, k in ipairs({ "input", "batch", "threads", "steps", "batches", "train" }) do
  opts[k] = math.tointeger(opts[k]) or error("--" .. k .. " must be an integer")
end

faceid.set_num_threads(opts.threads)

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "'"))
local function cleanup()
  os.execute("rm -rf '" .. tmp .. "'")
end

print(("loader bench: input %d, %d pairs (%d images) per batch, %d threads; load average %s at start")
  :format(opts.input, opts.batch, 2 * opts.batch, opts.threads, loadavg()))
print("(timings on a shared machine are noisy: rerun on a quiet one before quoting them)")

-- images/s of `batches` training batches from `loader`
local function rate(loader, list)
  local gen = faceid.Generator(7)
  local n, t0 = 0, faceid.clock()
  for b = 1, opts.batches do
    local first = (b - 1) * opts.batch % math.max(1, #list - opts.batch) + 1
    local x = loader:batch(list, first, opts.batch, gen)
    n = n + (x and x:size(1) or 0)
  end
  return n / (faceid.clock() - t0)
end

local sets = {
  { name = "CelebA", dir = opts.data .. "/celeba_subset", probe = "identity_subset.txt" },
  { name = "AT&T", dir = opts.data .. "/att_faces", probe = "s1/1.pgm" },
}
local train_set
for _, s in ipairs(sets) do
  if not exists(s.dir .. "/" .. s.probe) then
    print(("%-7s absent (%s): skipped"):format(s.name, s.dir))
  else
    local ds = assert(faceid.data.open(s.dir))
    local list = faceid.pairs.epoch(ds, faceid.Generator(1))
    local opt = { size = opts.input, reuse = true }
    local cold = rate(faceid.augment.Loader(ds, { size = opts.input, reuse = true, cache = false }), list)
    local mem_loader = faceid.augment.Loader(ds, opt)
    rate(mem_loader, list) -- warms the cache with these very batches
    local mem = rate(mem_loader, list)
    local path = tmp .. "/" .. s.name:gsub("%W", "") .. ".fidcache"
    local summary = assert(faceid.cache.prepare(ds, path, { size = opts.input, threads = opts.threads }))
    local prepared = assert(faceid.cache.open(path, ds))
    local mapped_loader = faceid.augment.Loader(ds, { size = opts.input, reuse = true, cache = prepared })
    local first_touch = rate(mapped_loader, list)
    local mapped = rate(mapped_loader, list)
    print(("%-7s %5d images: cold decode %6.1f img/s | in-memory cache (warm) %6.1f img/s | mapped prepared"
      .. " cache %6.1f img/s (first touch of its pages %6.1f) | prepare %4.1f s (%6.1f img/s, %d failed, %.1f MB)")
      :format(s.name, #ds, cold, mem, mapped, first_touch, summary.seconds, #ds / summary.seconds, summary.failed,
        summary.bytes / 1e6))
    train_set = train_set or { name = s.name, ds = ds, list = list, prepared = prepared }
  end
end

if opts.train == 1 and train_set then
  local ds, list = train_set.ds, train_set.list
  local net = faceid.DenseNet.densenet121({ input = opts.input, embedding = 32 })
  net:train()
  local loss = faceid.ContrastiveLoss({ margin = 2.0 })
  local adam = faceid.Adam(net, { lr = 1e-4 })
  local gen = faceid.Generator(3)

  -- one optimizer step on x, y: forward, loss, backward, Adam
  local function step(x, y)
    local emb = net:forward(x)
    loss:forward(emb, y)
    net:backward(loss:backward())
    adam:step()
    net:zero_grad()
  end

  local fixed = faceid.augment.Loader(ds, { size = opts.input })
  local x0, y0 = fixed:batch(list, 1, opts.batch, faceid.Generator(5))
  step(x0, y0) -- warm-up: allocates every buffer
  local premade = {}
  for _ = 1, opts.steps do
    local t0 = faceid.clock()
    step(x0, y0)
    premade[#premade + 1] = faceid.clock() - t0
  end
  local t_pre = median(premade)
  print(("train   densenet121 %s, %d images/step: pre-made tensors %.3f s/step")
    :format(train_set.name, 2 * opts.batch, t_pre))

  local function with_loader(what, loader)
    local steps, loads, pos = {}, {}, 1 + 4 * opts.batch
    for _ = 1, opts.steps do
      local t0 = faceid.clock()
      local x, y = loader:batch(list, pos, opts.batch, gen)
      local t1 = faceid.clock()
      step(x, y)
      steps[#steps + 1], loads[#loads + 1] = faceid.clock() - t0, t1 - t0
      pos = pos + opts.batch
    end
    local t, l = median(steps), median(loads)
    print(("train   with the real loader (%s): %.3f s/step, of which loading %.1f ms = %.2f %% of the step"
      .. " (step vs pre-made: %+.1f %%)"):format(what, t, 1000 * l, 100 * l / t, 100 * (t - t_pre) / t_pre))
  end
  with_loader("cold decode", faceid.augment.Loader(ds, { size = opts.input, reuse = true, cache = false }))
  with_loader("mapped prepared cache", faceid.augment.Loader(ds, { size = opts.input, reuse = true,
    cache = train_set.prepared }))
end
print(("load average %s at the end"):format(loadavg()))
cleanup()
