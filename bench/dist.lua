--- bench/dist.lua - data-parallel training speed over MPI, one
-- configuration per mpirun (`make bench-dist` runs 1 process x 2 threads,
-- then 2 processes x 1 thread).
--
--   mpirun -np P lua5.4 bench/dist.lua [--threads 1] [--input 64] [--batch 32]
--                                      [--steps 12] [--net 121|small]
--
-- A training step on random images (no decoding, so the figure is the
-- network's and the reduction's): each rank its share of `batch` pairs
-- (2 x batch images in all), forward, contrastive loss, backward, the
-- gradients averaged with faceid.dist.allreduce, an Adam step. Reported by
-- rank 0: images/s of the combined batch (median step), the time spent in
-- the gradient allreduce per step (median; a barrier just before it keeps
-- apart the time spent waiting for the slowest rank, also reported).
local faceid = require("faceid")
local dist = faceid.dist
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local median = bench.median

local opts = bench.options({ threads = 1, input = 64, batch = 32, steps = 12, net = "121" },
  "usage: mpirun -np P lua5.4 bench/dist.lua [--threads N] [--input N] [--batch N] [--steps N] [--net 121|small]\n")

local rank, size = dist.init()
faceid.set_num_threads(opts.threads)

local net
if opts.net == "small" then
  net = faceid.DenseNet({ growth = 12, blocks = { 3, 6, 12, 8 }, input = opts.input, seed = 1 })
else
  net = faceid.DenseNet.densenet121({ input = opts.input })
end
net:threads(opts.threads)
dist.broadcast(net)
local opt = faceid.Adam(net, { lr = 1e-4 })
local loss = faceid.ContrastiveLoss({ margin = 2.0 })
local _, grads = net:flat()

local first, count = dist.shard(opts.batch)
local g = faceid.Generator(100 + rank)
local x = faceid.randn(g, 2 * count, 3, opts.input, opts.input)
local y = faceid.empty(count)
for k = 1, count do y:set(k, (first + k) % 2) end

local steps, reduce, waits = {}, {}, {}
for step = 0, opts.steps do
  dist.barrier()
  local t0 = faceid.clock()
  loss:forward(net:forward(x), y)
  net:backward(loss:backward())
  local t1 = faceid.clock()
  dist.barrier() -- so that the reduction's own time is not mixed with waiting for the slower rank
  local tb = faceid.clock()
  dist.allreduce(grads, "mean")
  local t2 = faceid.clock()
  opt:step()
  net:zero_grad()
  if step > 0 then -- step 0 allocates the network's buffers
    steps[#steps + 1] = faceid.clock() - t0
    reduce[#reduce + 1] = t2 - tb
    waits[#waits + 1] = tb - t1
  end
end

local t, r, w = median(steps), median(reduce), median(waits)
if rank == 0 then
  print(("dist %d process%s x %d thread%s  %s input=%d batch=%d pairs (%d per process): %6.1f img/s  "
    .. "%7.1f ms/step  allreduce %6.1f ms/step (%4.1f %%) of %.1f MB, waiting for the slowest rank %.1f ms")
    :format(size, size == 1 and "  " or "es", opts.threads, opts.threads == 1 and " " or "s",
      opts.net == "small" and "DenseNet(k=12)" or "densenet121", opts.input, opts.batch, count,
      2 * opts.batch / t, 1000 * t, 1000 * r, 100 * r / t, grads:numel() * 4 / 1e6, 1000 * w))
end
dist.finalize()
