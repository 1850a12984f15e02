-- spec/dist/primitives.lua: faceid.dist's collectives on every rank,
-- checked against values each rank computes by hand. Prints "ok RANK".
local faceid = require("faceid")
local dist = faceid.dist

local rank, size = dist.init()
assert(dist.initialized())
assert(dist.rank() == rank and dist.size() == size and size >= 2, "rank/size")
assert(select(1, dist.init()) == rank, "init is idempotent")

local function values(t)
  local out = {}
  for i = 1, t:numel() do out[i] = t:view(t:numel()):get(i) end
  return out
end
local function check(t, want, what)
  local got = values(t)
  for i = 1, #want do
    assert(math.abs(got[i] - want[i]) <= 1e-6 * math.max(1, math.abs(want[i])),
      ("%s: element %d is %s, want %s"):format(what, i, got[i], want[i]))
  end
end

-- element k of rank q's tensor: (q + 1) * k - 3 (so signs differ)
local function mine(q, n)
  local t = faceid.empty(n)
  for k = 1, n do t:set(k, (q + 1) * k - 3) end
  return t
end
local n = 5
local want = { sum = {}, mean = {}, max = {}, min = {} }
for k = 1, n do
  local s, hi, lo = 0, -math.huge, math.huge
  for q = 0, size - 1 do
    local v = (q + 1) * k - 3
    s, hi, lo = s + v, math.max(hi, v), math.min(lo, v)
  end
  want.sum[k], want.mean[k], want.max[k], want.min[k] = s, s / size, hi, lo
end
for _, op in ipairs({ "sum", "mean", "max", "min" }) do
  local t = mine(rank, n)
  assert(dist.allreduce(t, op) == t, "allreduce returns its tensor")
  check(t, want[op], op)
end
-- a 2-D tensor, and the weighted form: sum over q of (q + 1) * 1
local t2 = faceid.ones(2, 3)
dist.allreduce(t2, "sum", rank + 1)
check(t2, { size * (size + 1) / 2, size * (size + 1) / 2 }, "weighted sum")

-- broadcast from the last rank
local b = faceid.full({ 4 }, rank)
dist.broadcast(b, size - 1)
check(b, { size - 1, size - 1, size - 1, size - 1 }, "broadcast")

-- errors every rank sees alike, before any data moves
local function fails(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), ("error '%s' does not match '%s'"):format(tostring(err), pattern))
end
fails("different sizes", dist.allreduce, faceid.zeros(rank + 1), "sum")
fails("different sizes", dist.broadcast, faceid.zeros(rank + 2))
fails("contiguous", dist.allreduce, faceid.zeros(2, 3):t(), "sum")
fails("op must be", dist.allreduce, faceid.zeros(2), "avg")
fails("expected a faceid.Tensor", dist.allreduce, { 1, 2 }, "sum")
fails("root must be a rank", dist.broadcast, faceid.zeros(2), size)
local closed = faceid.zeros(3)
closed:close()
fails("closed", dist.allreduce, closed, "sum")
-- still in step after the errors
local c = faceid.full({ 1 }, 1)
dist.allreduce(c, "sum")
check(c, { size }, "after errors")

local all = dist.allgather_string(("r%d"):format(rank) .. ("x"):rep(rank))
assert(#all == size, "allgather_string: one string per rank")
for q = 0, size - 1 do assert(all[q + 1] == ("r%d"):format(q) .. ("x"):rep(q), "allgather_string " .. q) end

dist.barrier()
print("ok " .. rank)
io.stdout:flush()
dist.finalize()
assert(not dist.initialized())
fails("finalized", dist.rank)
fails("cannot start again", dist.init)
