-- spec/dist/train.lua HOW DATA OUT STEPS [RESUME]: faceid.train.run under
-- mpirun. HOW: "init" (the script starts faceid.dist itself and checks,
-- after training, that every rank holds the same weights), "auto" (the
-- script does not: train.run starts and finalizes MPI), "die" (rank 1 is
-- killed at its third step), "forever" (trains until a signal stops it).
local faceid = require("faceid")
local dist = faceid.dist

local how, data, out, steps, resume = arg[1], arg[2], arg[3], tonumber(arg[4]), arg[5]
if how == "init" then dist.init() end

local schedule = "constant"
if how == "die" then
  schedule = function(step)
    if step == 2 and os.getenv("OMPI_COMM_WORLD_RANK") == "1" then
      local f = assert(io.open("/proc/self/stat"))
      local pid = f:read("n")
      f:close()
      os.execute("kill -9 " .. pid)
    end
    return { lr = 1e-3, beta1 = 0.9 }
  end
end

local r = faceid.train.run({ data = data, input = 16, batch = 4, steps = steps, holdout = 2, eval_every = 3,
  eval_pairs = 20, checkpoint_every = 3, print_every = 1, out = out, resume = resume or false, seed = 9,
  net = { growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small", embedding = 4 }, threads = 1,
  schedule = schedule, lr = 1e-3 })

local same = "unchecked"
if how == "init" then
  local params = r.net:flat()
  local hi, lo = params:clone(), params:clone()
  dist.allreduce(hi, "max")
  dist.allreduce(lo, "min")
  same = tostring(hi:equal(lo) and hi:equal(params))
end
print(("rank %d of %d: steps %d interrupted %s loss %.6f identical %s"):format(r.rank or -1, r.processes or -1,
  r.steps, tostring(r.interrupted), r.last_loss or -1, same))
if how == "init" then dist.finalize() end
