--- faceid.dist: data-parallel training over MPI.
--
-- Start N copies of a program with mpirun; each one is a rank (0..N-1).
-- Every rank holds the whole model, trains on its own share of each batch,
-- and the gradients are averaged across ranks before every optimizer step,
-- so all ranks keep identical weights: one model, as if trained with the
-- combined batch.
--
--   mpirun -np 4 faceid train --data DIR ...          (the command)
--   mpirun -np 4 lua5.4 script.lua                    (a script:)
--     local dist = require("faceid").dist
--     dist.init()
--     local r = faceid.train.run{ data = DIR, ... }   -- shards by itself
--     dist.finalize()
--
-- faceid.train.run does the sharding, the averaging, the batch-norm
-- bookkeeping and the rank-0-only output by itself when faceid.dist is
-- initialised (or when started by mpirun; see faceid.train). A hand-written
-- loop uses the primitives:
--   init() -> rank, size        start MPI (idempotent)
--   rank(), size()              this process, how many
--   barrier()                   wait for every rank
--   broadcast(x [, root])       root's values everywhere: a Tensor, or a
--                               faceid.DenseNet (weights, batch-norm
--                               running statistics, batches tracked)
--   allreduce(t, op [, scale])  in place on a contiguous Tensor; op "sum"
--                               or "mean" (also "max", "min"); with scale,
--                               each rank multiplies its own t first
--   average_buffers(net)        mean of the batch-norm running statistics
--   shard(n [, rank, size])     first, count of this rank's share of n items
--   finalize()                  stop MPI; call it at the end of a run
--   abort([message])            stop every rank at once
--   available()                 false when built without MPI (then every
--                               other call raises an error saying so)
--
-- Failure: a rank whose program ends without finalize() (an uncaught
-- error, os.exit) aborts the whole job through MPI, so the other ranks
-- exit with an error instead of waiting for it forever.
local core = require("faceid.core")

local M = {}

local ok, C = pcall(require, "faceid.dist_mpi")
local why
if not ok then
  why = tostring(C)
  C = nil
end

local NO_MPI = "faceid.dist: built without MPI (install libopenmpi-dev and rebuild)"

local function need(fname)
  if not C then
    -- a module that exists but fails to load (libmpi missing at run time)
    -- says why; a module never built gets the plain message
    if why and not why:find("module 'faceid.dist_mpi' not found", 1, true) then
      error(("faceid.dist.%s: cannot load faceid.dist_mpi: %s"):format(fname, why), 3)
    end
    error(NO_MPI, 3)
  end
  return C
end

--- true when MPI support was built (faceid/dist_mpi.so loads).
function M.available()
  return C ~= nil
end

--- The MPI library's name and version ("Open MPI v4.1.4"), or nil.
function M.library()
  return C and C.library() or nil
end

--- true between init() and finalize().
function M.initialized()
  return C ~= nil and C.initialized()
end

--- true when this process was started by mpirun (Open MPI, MPICH/PMI).
function M.launched()
  return (os.getenv("OMPI_COMM_WORLD_SIZE") or os.getenv("PMI_SIZE") or os.getenv("PMIX_RANK")) ~= nil
end

function M.init()
  return need("init").init()
end

function M.rank()
  return need("rank").rank()
end

function M.size()
  return need("size").size()
end

function M.barrier()
  need("barrier").barrier()
end

--- Stop MPI (idempotent). Every rank calls it once its work is done.
function M.finalize()
  need("finalize").finalize()
end

function M.abort(message, code)
  need("abort").abort(message, code)
end

function M.processor_name()
  return need("processor_name").processor_name()
end

function M.wtime()
  return need("wtime").wtime()
end

local function is_net(x)
  local mt = type(x) == "userdata" and getmetatable(x)
  return type(mt) == "table" and mt.__name == "faceid.DenseNet"
end

--- In place: root's tensor (default rank 0) into every rank's; a network
-- gets root's parameters, running statistics and batches tracked.
-- @return x
function M.broadcast(x, root)
  local c = need("broadcast")
  if is_net(x) then
    local params = x:flat()
    c.broadcast(params, root)
    for _, b in ipairs(x:buffers()) do
      c.broadcast(b.tensor, root)
    end
    local n = core.tensor({ x:batches_tracked() })
    c.broadcast(n, root)
    x:batches_tracked(math.tointeger(n:get(1)))
    return x
  end
  if not core.is_tensor(x) then
    error(("faceid.dist.broadcast: expected a faceid.Tensor or a faceid.DenseNet, got %s"):format(type(x)), 2)
  end
  return c.broadcast(x, root)
end

local OPS = { sum = true, mean = true, max = true, min = true }

--- In place: the element-wise sum ("sum") or mean ("mean") over the ranks
-- (also "max", "min"), the same result on every rank. With scale, each
-- rank's tensor is multiplied by its own scale first (a weighted sum).
-- @return t
function M.allreduce(t, op, scale)
  local c = need("allreduce")
  if not core.is_tensor(t) then
    error(("faceid.dist.allreduce: expected a faceid.Tensor, got %s"):format(type(t)), 2)
  end
  if not OPS[op] then
    error(("faceid.dist.allreduce: op must be \"sum\" or \"mean\" (or \"max\", \"min\"), got %s")
      :format(tostring(op)), 2)
  end
  if scale ~= nil and type(scale) ~= "number" then
    error(("faceid.dist.allreduce: scale must be a number, got %s"):format(type(scale)), 2)
  end
  return c.allreduce(t, op, scale)
end

--- Each rank's string, gathered on every rank: { [1] = rank 0's, ... }.
function M.allgather_string(s)
  if type(s) ~= "string" then
    error(("faceid.dist.allgather_string: expected a string, got %s"):format(type(s)), 2)
  end
  return need("allgather_string").allgather_string(s)
end

--- Batch-norm running means and variances averaged over the ranks (each
-- rank normalises with its own batch statistics while training, so their
-- running averages drift apart; the saved model gets their mean).
function M.average_buffers(net)
  local c = need("average_buffers")
  if not is_net(net) then
    error(("faceid.dist.average_buffers: expected a faceid.DenseNet, got %s"):format(type(net)), 2)
  end
  for _, b in ipairs(net:buffers()) do
    c.allreduce(b.tensor, "mean")
  end
end

--- This rank's contiguous share of n items: first (1-based), count. The
-- shares of ranks 0..size-1 follow each other and cover 1..n; they differ
-- by at most one item. Pure arithmetic: works without MPI when rank and
-- size are given.
function M.shard(n, rank, size)
  if math.type(n) ~= "integer" or n < 0 then
    error(("faceid.dist.shard: n must be an integer >= 0, got %s"):format(tostring(n)), 2)
  end
  if rank == nil then rank = M.rank() end
  if size == nil then size = M.size() end
  if math.type(size) ~= "integer" or size < 1 or math.type(rank) ~= "integer" or rank < 0 or rank >= size then
    error(("faceid.dist.shard: need 0 <= rank < size, got rank %s of %s"):format(tostring(rank), tostring(size)), 2)
  end
  local lo, hi = n * rank // size, n * (rank + 1) // size
  return lo + 1, hi - lo
end

-- stop signals (SIGINT, SIGTERM, SIGUSR1) as a flag; faceid.train shares it
-- with the other ranks once per step
function M.catch_signals()
  need("catch_signals").catch_signals()
end

function M.release_signals()
  if C then C.release_signals() end
end

function M.signalled()
  return C ~= nil and C.signalled()
end

return M
