-- The training loop end to end: it learns faces of people it never saw,
-- and a run resumed from a checkpoint matches one that never stopped.
local faceid = require("faceid")
local helper = require("helper")

local small_net = { growth = 6, blocks = { 2, 2 }, bottleneck = 2, stem = "small", embedding = 8 }

local synthetic_tree = helper.synthetic_tree

describe("faceid.train", function()
  it("learns to tell held-out AT&T people apart", function()
    local dir, why = helper.need_data("att_faces", "s1/1.pgm")
    if not dir then return pending(why) end
    local data = faceid.data.folders(dir)
    local train_ds, val_ds = data:split_by_identity({ counts = { 30, 10 }, seed = 7 })
    local net = faceid.DenseNet({ growth = 8, blocks = { 2, 2, 2 }, bottleneck = 2, stem = "small",
      input = 32, embedding = 16, seed = 1 })
    local val_loader = faceid.augment.Loader(val_ds, { size = 32 })
    local val_pairs = faceid.pairs.fixed(val_ds, 11, { n_same = 200, n_diff = 200 })
    local d0, y0 = faceid.train.distances(net, val_loader, val_pairs)
    local auc0 = faceid.metrics.auc(d0, y0)
    local r = faceid.train.run({ data = train_ds, val = val_ds, net = net, batch = 16, steps = 120,
      schedule = "constant", lr = 1e-3, eval_every = 120, eval_pairs = 400, quiet = true, seed = 3 })
    local first, last = 0, 0
    for i = 1, 20 do
      first = first + r.history[i].loss
      last = last + r.history[#r.history - 20 + i].loss
    end
    assert(last < 0.85 * first, ("loss did not fall: %.4f -> %.4f"):format(first / 20, last / 20))
    local d, y = faceid.train.distances(net, val_loader, val_pairs)
    local auc = faceid.metrics.auc(d, y)
    -- chance is 0.5; random DenseNet features already sort AT&T faces
    -- somewhat, so training must also improve on the untrained network
    assert(auc > 0.8 and auc > auc0,
      ("held-out AUC %.3f (untrained %.3f): not clearly above chance and the untrained net"):format(auc, auc0))
  end)

  it("resumes from a checkpoint exactly where it stopped", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 6, 4, 16)
    local common = { data = dir .. "/faces", input = 16, net = small_net, batch = 4, eval_every = 6,
      eval_pairs = 20, holdout = 2, checkpoint_every = 5, quiet = true, seed = 9 }
    local function with(extra)
      local o = {}
      for k, v in pairs(common) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return o
    end
    local full = faceid.train.run(with({ steps = 12, out = dir .. "/full" }))
    faceid.train.run(with({ steps = 5, out = dir .. "/part" })) -- checkpoint at step 5
    local resumed = faceid.train.run(with({ steps = 12, out = dir .. "/part",
      resume = dir .. "/part/last.safetensors" }))
    assert.are.equal(12, resumed.steps)
    local a, b = full.net:flat(), resumed.net:flat()
    assert.is_true(a:equal(b), "resumed weights differ from the uninterrupted run's")
    for i = 6, 12 do
      assert.are.equal(full.history[i].loss, resumed.history[i - 5].loss)
    end
    -- the checkpoint is also a model file
    local m = assert(faceid.DenseNet.load(dir .. "/full/last.safetensors"))
    assert.is_true(select(1, m:flat()):equal(a))
    helper.rmtree(dir)
  end)

  it("stops on a non-finite loss with the step in the message", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 4, 3, 16)
    local ok, err = pcall(faceid.train.run, { data = dir .. "/faces", input = 16, net = small_net,
      batch = 4, steps = 3, holdout = 0, quiet = true, lr = 1e30, schedule = "constant", optimizer = "sgd" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("step %d+: "), err)
    helper.rmtree(dir)
  end)

  it("skips non-finite steps with on_nan = skip, and stops after too many in a row", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 4, 3, 16)
    local saved = faceid.train.MAX_SKIPS
    faceid.train.MAX_SKIPS = 5
    local ok, err = pcall(faceid.train.run, { data = dir .. "/faces", input = 16, net = small_net,
      batch = 4, steps = 3, holdout = 0, quiet = true, lr = 1e30, schedule = "constant", optimizer = "sgd",
      on_nan = "skip", threads = 1 })
    faceid.train.MAX_SKIPS = saved
    assert.is_false(ok)
    assert.truthy(tostring(err):find("in 5 steps in a row (5 skipped in all); stopped", 1, true), err)
    helper.rmtree(dir)
  end)

  it("saves a checkpoint and stops cleanly on Ctrl-C (SIGINT)", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 4, 3, 16)
    local script = dir .. "/run.lua"
    helper.write_file(script, ([[
      local faceid = require("faceid")
      local r = faceid.train.run({ data = %q, input = 16, batch = 4, steps = 100000, holdout = 0,
        net = { growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small", embedding = 4 },
        out = %q, print_every = 1 })
      print("interrupted", r.interrupted, r.steps)
    ]]):format(dir .. "/faces", dir .. "/out"))
    local cpath = package.cpath:match("^[^;]+")
    local cmd = ("cd '%s' && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s;;' lua5.4 '%s' > '%s/log' 2>&1 & "
      .. "pid=$!; for i in $(seq 100); do grep -q '^step 3/' '%s/log' 2>/dev/null && break; sleep 0.1; done; "
      .. "kill -INT $pid; wait $pid"):format(os.getenv("PWD") or ".", cpath, script, dir, dir)
    os.execute(cmd)
    local log = helper.read_file(dir .. "/log")
    assert.truthy(log:find("stopped at step %d+, checkpoint saved"), log)
    assert.truthy(log:find("interrupted	true"), log)
    local steps = tonumber(log:match("interrupted	true	(%d+)"))
    local t, meta = faceid.load(dir .. "/out/last.safetensors")
    assert.is_not_nil(t, meta)
    assert.are.equal(steps, tonumber(meta.step))
    helper.rmtree(dir)
  end)

  it("evaluates on as many held-out pairs as the held-out people allow", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 5, 3, 16)
    -- 2 held-out people with 3 photos: 2 * 3 = 6 same-person pairs, not 500
    local r = faceid.train.run({ data = dir .. "/faces", input = 16, net = small_net, batch = 4, steps = 1,
      holdout = 2, eval_pairs = 1000, quiet = true, threads = 1 })
    assert.are.equal(12, r.eval.n)
    helper.rmtree(dir)
  end)

  it("trains on the evaluation path (no randomness in the images) with augment = false", function()
    local dir = helper.tmpdir()
    synthetic_tree(dir .. "/faces", 4, 3, 16)
    -- the loader's methods, seen through an instance's metatable
    local probe = faceid.augment.Loader(faceid.data.folders(dir .. "/faces"), { size = 16 })
    local L = getmetatable(probe).__index
    local calls, batch, eval_batch = { batch = 0, eval_batch = 0 }, L.batch, L.eval_batch
    L.batch = function(...) calls.batch = calls.batch + 1; return batch(...) end
    L.eval_batch = function(...) calls.eval_batch = calls.eval_batch + 1; return eval_batch(...) end
    local ok, err = pcall(faceid.train.run, { data = dir .. "/faces", input = 16, net = small_net, batch = 4,
      steps = 3, holdout = 0, quiet = true, augment = false, threads = 1 })
    L.batch, L.eval_batch = batch, eval_batch
    assert(ok, err)
    assert.are.same({ batch = 0, eval_batch = 3 }, calls)
    helper.rmtree(dir)
  end)

  it("refuses unknown options", function()
    assert.has_error(function() faceid.train.run({ data = "x", stpes = 3 }) end,
      "faceid.train.run: unknown option 'stpes'")
  end)
end)
