-- faceid.dist: data-parallel training over MPI. The parts that need MPI
-- start child programs (spec/dist/*.lua) with `mpirun -np 2` on this
-- machine; they are pending where mpirun or faceid/dist_mpi.so is absent.
local faceid = require("faceid")
local helper = require("helper")

local NO_MPI = "faceid.dist: built without MPI (install libopenmpi-dev and rebuild)"

-- faceid.dist loaded afresh with faceid/dist_mpi.so out of reach
local function without_mpi(f)
  local saved_path = package.cpath
  local saved = { package.loaded["faceid.dist"], package.loaded["faceid.dist_mpi"] }
  package.cpath = "/nonexistent/?.so"
  package.loaded["faceid.dist"], package.loaded["faceid.dist_mpi"] = nil, nil
  local ok, err = pcall(function() f(require("faceid.dist")) end)
  package.cpath = saved_path
  package.loaded["faceid.dist"], package.loaded["faceid.dist_mpi"] = saved[1], saved[2]
  if not ok then error(err, 0) end
end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- the command line that runs a Lua script under mpirun with this build
local cpath = package.cpath:match("^[^;]+")
local function mpirun(np, args, out)
  return ("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%s "
    .. "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
    .. "timeout 60 mpirun --oversubscribe --bind-to none -np %d lua5.4 %s > %s 2>&1")
    :format(sh_quote(os.getenv("PWD") or "."), sh_quote(cpath .. ";;"), np, args, sh_quote(out))
end

-- exit status of a shell command
local function run(cmd)
  local ok, how, code = os.execute(cmd)
  if how == "exit" then return code end
  return 128 + code, ok
end

-- why the MPI parts cannot run here, or nil
local function mpi_missing()
  if os.getenv("FACEID_SANITIZE") == "1" then
    return "MPI specs skipped under the sanitizers (Open MPI itself is not clean under ASan/LSan)"
  end
  if not package.searchpath("faceid.dist_mpi", package.cpath) then
    return "faceid/dist_mpi.so not built (needs libopenmpi-dev)"
  end
  if run("command -v mpirun > /dev/null 2>&1") ~= 0 then
    return "mpirun not installed (Debian: openmpi-bin)"
  end
  return nil
end

local synthetic_tree = helper.synthetic_tree

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

describe("faceid.dist", function()
  describe("shard", function()
    it("gives the ranks contiguous, disjoint shares that cover 1..n and differ by one at most", function()
      for _, case in ipairs({ { 10, 3 }, { 64, 4 }, { 3, 3 }, { 7, 2 }, { 5, 1 }, { 2, 4 } }) do
        local n, size = case[1], case[2]
        local seen, next_first, lo, hi = {}, 1, math.huge, -1
        for r = 0, size - 1 do
          local first, cnt = faceid.dist.shard(n, r, size)
          assert.are.equal(next_first, first)
          for k = first, first + cnt - 1 do
            assert.is_nil(seen[k])
            seen[k] = r
          end
          next_first = first + cnt
          lo, hi = math.min(lo, cnt), math.max(hi, cnt)
        end
        assert.are.equal(n + 1, next_first)
        assert.is_true(hi - lo <= 1, ("%d items on %d ranks: shares %d..%d"):format(n, size, lo, hi))
      end
      assert.has_error(function() faceid.dist.shard(4, 2, 2) end,
        "faceid.dist.shard: need 0 <= rank < size, got rank 2 of 2")
      assert.has_error(function() faceid.dist.shard(-1, 0, 2) end,
        "faceid.dist.shard: n must be an integer >= 0, got -1")
    end)
  end)

  describe("without MPI", function()
    it("says it was built without MPI, in every call", function()
      without_mpi(function(dist)
        assert.is_false(dist.available())
        assert.is_false(dist.initialized())
        assert.is_nil(dist.library())
        for _, call in ipairs({
          function() dist.init() end, function() dist.rank() end, function() dist.size() end,
          function() dist.barrier() end, function() dist.finalize() end,
          function() dist.allreduce(faceid.zeros(2), "mean") end,
          function() dist.broadcast(faceid.zeros(2)) end,
        }) do
          assert.has_error(call, NO_MPI)
        end
        -- shard is arithmetic and needs no MPI
        assert.are.same({ 3, 3 }, { dist.shard(5, 1, 2) })
      end)
    end)

    it("lets train.run refuse dist = true and train as before otherwise", function()
      without_mpi(function()
        assert.has_error(function() faceid.train.run({ data = "x", dist = true }) end, NO_MPI)
      end)
      assert.has_error(function() faceid.train.run({ data = "x", dist = "yes" }) end,
        "faceid.train.run: dist must be \"auto\", true or false")
    end)
  end)

  describe("over MPI", function()
    local dir
    local function need_mpi()
      local why = mpi_missing()
      if why then
        pending(why)
        return false
      end
      dir = dir or helper.tmpdir()
      return true
    end
    teardown(function()
      if dir then helper.rmtree(dir) end
    end)

    it("reduces, broadcasts and gathers on every rank, and refuses mismatched tensors", function()
      if not need_mpi() then return end
      local out = dir .. "/primitives.out"
      local rc = run(mpirun(2, "spec/dist/primitives.lua", out))
      local log = helper.read_file(out)
      assert.are.equal(0, rc, log)
      assert.truthy(log:find("ok 0"), log)
      assert.truthy(log:find("ok 1"), log)
    end)

    for _, mode in ipairs({ "nn", "densenet" }) do
      it(("gives 2 processes the weights of 1 process on the combined batch (%s)"):format(mode), function()
        if not need_mpi() then return end
        local one, two = dir .. "/one-" .. mode, dir .. "/two-" .. mode
        local rc1 = run(("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%s lua5.4 "
          .. "spec/dist/equivalence.lua %s %s > %s 2>&1"):format(sh_quote(os.getenv("PWD") or "."),
          sh_quote(cpath .. ";;"), mode, sh_quote(one), sh_quote(one .. ".out")))
        assert.are.equal(0, rc1, helper.read_file(one .. ".out"))
        local rc2 = run(mpirun(2, ("spec/dist/equivalence.lua %s %s"):format(mode, sh_quote(two)), two .. ".out"))
        assert.are.equal(0, rc2, helper.read_file(two .. ".out"))
        local a, b = faceid.load(one).params, faceid.load(two).params
        assert.are.equal(a:numel(), b:numel())
        local diff, scale = (a - b):abs():max(), a:abs():max()
        assert.is_true(diff <= 1e-5 * scale, ("weights differ by %g (largest weight %g)"):format(diff, scale))
      end)
    end

    it("trains with train.run on 2 processes: one model, rank 0 alone writes; resumes on 1 and on 2", function()
      if not need_mpi() then return end
      synthetic_tree(dir .. "/faces", 6, 4, 16)
      local out = dir .. "/run2"
      local rc = run(mpirun(2, ("spec/dist/train.lua init %s %s 6"):format(sh_quote(dir .. "/faces"), sh_quote(out)),
        dir .. "/train.out"))
      local log = helper.read_file(dir .. "/train.out")
      assert.are.equal(0, rc, log)
      for r = 0, 1 do
        assert.truthy(log:find(("rank %d of 2: steps 6 interrupted nil loss [%%d.]+ identical true"):format(r)), log)
      end
      -- rank 0 alone prints and logs
      assert.are.equal(6, count(log, "\nstep %d/6 "), log)
      assert.are.equal(1, count(log, "on 2 processes %(MPI"), log)
      assert.are.equal(2, count(log, "\neval  step "), log) -- steps 3 and 6
      local csv = helper.read_file(out .. "/log.csv")
      assert.are.equal(7, count(csv, "\n"), csv)
      local _, meta = faceid.load(out .. "/last.safetensors")
      assert.are.equal(6, tonumber(meta.step))
      assert.are.equal(2, tonumber(meta.processes))
      assert.are.equal(2, count(meta.augment_states, "%x+"))
      assert.are.equal(25, #meta.augment_states:match("^(%x+),") // 2)
      -- resume on 1 process (this one, no MPI): continues at step 7
      local r1 = faceid.train.run({ data = dir .. "/faces", input = 16, batch = 4, steps = 9, holdout = 2,
        eval_every = 3, eval_pairs = 20, checkpoint_every = 3, quiet = true, seed = 9, out = dir .. "/run1",
        resume = out .. "/last.safetensors", schedule = "constant", lr = 1e-3, threads = 1 })
      assert.are.equal(9, r1.steps)
      assert.are.equal(3, #r1.history)
      assert.are.equal(7, r1.history[1].step)
      assert.is_nil(r1.processes)
      -- and that 1-process checkpoint on 2 processes again, started by
      -- train.run itself (the script does not call dist.init)
      rc = run(mpirun(2, ("spec/dist/train.lua auto %s %s 12 %s"):format(sh_quote(dir .. "/faces"),
        sh_quote(dir .. "/run1"), sh_quote(dir .. "/run1/last.safetensors")), dir .. "/resume.out"))
      log = helper.read_file(dir .. "/resume.out")
      assert.are.equal(0, rc, log)
      assert.truthy(log:find("rank 0 of 2: steps 12 "), log)
      assert.truthy(log:find("rank 1 of 2: steps 12 "), log)
      assert.is_nil(log:find("\nstep 9/12"), log)
      assert.truthy(log:find("\nstep 10/12"), log)
      _, meta = faceid.load(dir .. "/run1/last.safetensors")
      assert.are.equal(12, tonumber(meta.step))
      assert.are.equal(2, tonumber(meta.processes))
    end)

    it("runs `mpirun -np 2 faceid train`: rank 0 alone prints, evaluates and writes the model", function()
      if not need_mpi() then return end
      if not helper.exists(dir .. "/faces/p1/1.png") then synthetic_tree(dir .. "/faces", 6, 4, 16) end
      local out, logf = dir .. "/cli", dir .. "/cli.out"
      local rc = run(mpirun(2, ("bin/faceid train --data %s --net tiny --size 16 --embedding 8 --batch 4 --steps 3 "
        .. "--holdout 2 --eval-pairs 20 --schedule constant --threads 1 --out %s"):format(sh_quote(dir .. "/faces"),
        sh_quote(out)), logf))
      local log = "\n" .. helper.read_file(logf)
      assert.are.equal(0, rc, log)
      assert.are.equal(1, count(log, "on 2 processes %(MPI"), log)
      assert.are.equal(1, count(log, "\ndata: "), log)
      assert.are.equal(1, count(log, "wrote " .. out:gsub("%p", "%%%0") .. "/model%.safetensors"), log)
      assert.are.equal(1, count(log, "\nAUC: "), log)
      local _, meta = faceid.load(out .. "/model.safetensors")
      assert.are.equal("16", meta.input)
    end)

    it("stops every rank at the same step on SIGUSR1 to mpirun, and rank 0 saves", function()
      if not need_mpi() then return end
      if not helper.exists(dir .. "/faces/p1/1.png") then synthetic_tree(dir .. "/faces", 6, 4, 16) end
      local out, logf = dir .. "/sig", dir .. "/sig.out"
      local cmd = mpirun(2, ("spec/dist/train.lua forever %s %s 100000"):format(sh_quote(dir .. "/faces"),
        sh_quote(out)), logf):gsub("timeout 60 mpirun", "exec mpirun")
      -- (no hang if the signal is lost: mpirun is killed after 60 s)
      os.execute(("(%s) & pid=$!; for i in $(seq 300); do grep -q '^step 4/' %s 2>/dev/null && break; "
        .. "sleep 0.1; done; kill -USR1 $pid; for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; "
        .. "sleep 0.1; done; kill -9 $pid 2>/dev/null; wait $pid"):format(cmd, sh_quote(logf)))
      local log = helper.read_file(logf)
      local stopped = tonumber(log:match("stopped at step (%d+), checkpoint saved"))
      assert.is_not_nil(stopped, log)
      assert.truthy(log:find(("rank 0 of 2: steps %d interrupted true"):format(stopped)), log)
      assert.truthy(log:find(("rank 1 of 2: steps %d interrupted true"):format(stopped)), log)
      local _, meta = faceid.load(out .. "/last.safetensors")
      assert.are.equal(stopped, tonumber(meta.step))
    end)

    for _, how in ipairs({ "error", "exit", "kill" }) do
      it(("stops the job with an error when a rank dies (%s), instead of hanging"):format(how), function()
        if not need_mpi() then return end
        local rc = run(mpirun(2, "spec/dist/die.lua " .. how, dir .. "/die.out"))
        local log = helper.read_file(dir .. "/die.out")
        assert.are_not.equal(0, rc, log)
        assert.are_not.equal(124, rc, "the job hung (killed by timeout): " .. log)
      end)
    end

    it("stops the job when a rank dies in the middle of train.run", function()
      if not need_mpi() then return end
      if not helper.exists(dir .. "/faces/p1/1.png") then synthetic_tree(dir .. "/faces", 6, 4, 16) end
      local rc = run(mpirun(2, ("spec/dist/train.lua die %s %s 50"):format(sh_quote(dir .. "/faces"),
        sh_quote(dir .. "/die")), dir .. "/die-train.out"))
      local log = helper.read_file(dir .. "/die-train.out")
      assert.are_not.equal(0, rc, log)
      assert.are_not.equal(124, rc, "the job hung (killed by timeout): " .. log)
      assert.is_nil(log:find("steps 50"), log)
    end)
  end)
end)
