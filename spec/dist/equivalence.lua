-- spec/dist/equivalence.lua MODE OUT: N training steps, either on one
-- process over the combined batch (started without mpirun) or data-parallel
-- (under mpirun: each rank its share, gradients averaged with
-- faceid.dist.allreduce). Rank 0 saves the final weights to OUT.
--   MODE "nn": a small net without batch norm (conv -> relu -> global
--     average pool -> linear), SGD with momentum: one process computes the
--     loss of the whole batch in one forward.
--   MODE "densenet": a small DenseNet and Adam; batch norm normalises with
--     each rank's own statistics, so the one-process reference runs the two
--     halves of each batch one after the other (gradients accumulate) and
--     halves the sum: the same arithmetic as the mean over two ranks.
local faceid = require("faceid")
local nn, dist = faceid.nn, faceid.dist

local mode, out = arg[1], arg[2]
local parallel = dist.launched()
local rank, size = 0, 1
if parallel then rank, size = dist.init() end
faceid.set_num_threads(1)

local B, STEPS = 8, 4 -- pairs per step (combined), steps

-- the step's batch of pairs, the same on every rank: first images,
-- second images, labels
local function batch(step, side)
  local g = faceid.Generator(1000 + step)
  local a, b = faceid.empty(B, 3, side, side), faceid.empty(B, 3, side, side)
  a:normal_(g)
  b:normal_(g)
  local y = faceid.empty(B)
  for i = 1, B do y:set(i, i % 2) end
  return a, b, y
end

-- pairs first..first+n-1 stacked as a forward wants them
local function stack(a, b, y, first, n)
  return faceid.cat({ a:narrow(1, first, n), b:narrow(1, first, n) }, 1), y:narrow(1, first, n):clone()
end

local loss = faceid.ContrastiveLoss({ margin = 2.0 })
local params

if mode == "nn" then
  local sizes = { { 4, 3, 3, 3 }, { 6, 4 }, { 6 } }
  local n = 4 * 27 + 24 + 6
  local P, G, V = faceid.empty(n), faceid.zeros(n), faceid.zeros(n)
  P:normal_(faceid.Generator(5))
  P:mul_(0.5)
  local function views(T)
    local out_, off = {}, 1
    for k, s in ipairs(sizes) do
      local m = 1
      for _, d in ipairs(s) do m = m * d end
      out_[k] = T:narrow(1, off, m):view(s)
      off = off + m
    end
    return out_
  end
  local p, g = views(P), views(G)
  local function forward_backward(x, y)
    local h = nn.conv2d(x, p[1], { padding = 1 })
    local r = nn.relu(h)
    local pooled = nn.global_avg_pool(r)
    local emb = nn.linear(pooled, p[2], p[3])
    local l = loss:forward(emb, y)
    local demb = loss:backward()
    local dpool = faceid.zeros(pooled:size())
    nn.linear_backward(demb, pooled, p[2], dpool, g[2], g[3])
    local dr = nn.global_avg_pool_backward(dpool, r)
    local dh = nn.relu_backward(dr, r)
    nn.conv2d_backward(dh, x, p[1], { padding = 1 }, nil, g[1])
    return l
  end
  for step = 1, STEPS do
    local a, b, y = batch(step, 6)
    G:zero_()
    if parallel then
      local first, count = dist.shard(B)
      forward_backward(stack(a, b, y, first, count))
      dist.allreduce(G, "mean")
    else
      forward_backward(stack(a, b, y, 1, B))
    end
    V:mul_(0.9):add_(G)
    P:add_(V, -0.1)
  end
  params = P
elseif mode == "densenet" then
  -- rank 1 starts from other weights: broadcast must replace them
  local net = faceid.DenseNet({ growth = 4, blocks = { 2, 2 }, bottleneck = 2, stem = "small", embedding = 6,
    input = 12, seed = 3 + rank })
  if parallel then dist.broadcast(net) end
  local opt = faceid.Adam(net, { lr = 1e-2 })
  local _, grads = net:flat()
  local function forward_backward(x, y)
    loss:forward(net:forward(x), y)
    net:backward(loss:backward())
  end
  for step = 1, STEPS do
    local a, b, y = batch(step, 12)
    net:zero_grad()
    if parallel then
      local first, count = dist.shard(B)
      forward_backward(stack(a, b, y, first, count))
      dist.allreduce(grads, "mean")
    else
      for h = 0, 1 do
        local first, count = dist.shard(B, h, 2)
        forward_backward(stack(a, b, y, first, count))
      end
      grads:mul_(0.5)
    end
    opt:step()
  end
  params = net:flat()
else
  error("mode must be nn or densenet")
end

if rank == 0 then assert(faceid.save(out, { params = params })) end
print(("rank %d of %d done"):format(rank, size))
if parallel then dist.finalize() end
