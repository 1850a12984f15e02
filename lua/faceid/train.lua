--- faceid.train: the Siamese training loop, written out so it can be read,
-- copied and edited.
--
--   local faceid = require("faceid")
--   local result = faceid.train.run{data = "../shared/data/att_faces", input = 64,
--     net = {growth = 12, blocks = {3, 3, 3}, stem = "small"}, steps = 500, out = "run"}
--
-- One step: draw pairs -> build a batch of 2N augmented images (first
-- images, then second images) -> one forward of the stacked batch ->
-- contrastive loss -> backward -> optimizer step -> schedule. Around it:
-- evaluation on held-out people every `eval_every` steps, checkpoints every
-- `checkpoint_every` steps and at the end (atomic; best.safetensors keeps
-- the best validation AUC), resume, a clean stop on Ctrl-C that saves
-- first, NaN/inf detection, a progress line and a CSV log of every step.
--
-- Options (defaults in M.DEFAULTS):
--   data        a data set (faceid.data) or a folder (faceid.data.open)
--   val         a data set of held-out people; default: `holdout` of the
--               people of `data`, split with `seed`
--   holdout     fraction (< 1) or count of people held out (0.2)
--   net         a faceid.DenseNet, or its options ({} = densenet121)
--   input       image side in pixels (128); embedding (32)
--   batch       pairs per step (64: 128 images per forward)
--   steps       optimizer steps (or epochs: passes over the pairs)
--   minutes     a time budget: training stops after the first step that
--               ends past it (then evaluates and saves as at the end)
--   optimizer   "adam" or "sgd"; lr, beta1, beta2, eps, weight_decay,
--               momentum (SGD)
--   schedule    "seed" (the original's cyclical lr/beta1), "one_cycle",
--               "cosine", "constant", or a faceid.schedule object
--   margin      contrastive margin (2.0)
--   ratio       different pairs per same pair (1)
--   augment     faceid.augment recipe options (nil: the original's recipe),
--               or false for none (evaluation crops only)
--   eval_every, eval_pairs (held-out pairs per evaluation, half of them
--               same-person: capped at the same-person pairs there are),
--               checkpoint_every, print_every
--   out         folder for last.safetensors, best.safetensors, log.csv
--   resume      a checkpoint to continue from (exactly where it stopped)
--   on_nan      "stop" (default) or "skip" (the step is dropped, counted;
--               M.MAX_SKIPS dropped in a row stop the run)
--   seed        seed of everything random (0); threads (2, per process)
--   quiet       no progress lines
--   dist        data-parallel over MPI (faceid.dist): "auto" (default: on
--               when faceid.dist is initialised, or when the process was
--               started by mpirun; then train.run starts MPI itself and
--               finalizes it before returning), true (start it if needed),
--               or false (never)
--
-- Across processes (`dist`): `batch` is the combined batch of all ranks;
-- every rank draws the same epoch of pairs from one seeded generator and
-- takes its own contiguous share of each batch (disjoint, reproducible),
-- augments it with its own generator, and the gradients are averaged
-- (weighted by the pairs each rank used) before every optimizer step, so
-- the weights stay identical everywhere. Batch norm normalises with each
-- rank's own batch statistics; the running averages are averaged across
-- ranks before every evaluation and checkpoint. Only rank 0 prints, logs,
-- evaluates and writes checkpoints (a resume reads the checkpoint on every
-- rank, so it must be at the same path for all). A checkpoint resumes with
-- any number of processes. Ctrl-C (SIGINT/SIGTERM, or SIGUSR1 sent to
-- mpirun) stops every rank after the same step, and rank 0 saves.
local faceid = require("faceid")

local M = {}

--- on_nan = "skip" stops after this many dropped steps in a row
M.MAX_SKIPS = 100

M.DEFAULTS = {
  data = false, val = false, holdout = 0.2, net = false, input = 128, embedding = 32, batch = 64,
  steps = false, epochs = false, optimizer = "adam", lr = 3e-4, beta1 = 0.9, beta2 = 0.99, eps = 1e-8,
  weight_decay = 0, momentum = 0.9, schedule = "seed", margin = 2.0, ratio = 1, augment = nil,
  eval_every = 200, eval_pairs = 1000, checkpoint_every = 500, print_every = 10, out = false,
  resume = false, on_nan = "stop", seed = 0, threads = 2, quiet = false, cache = true, minutes = false,
  dist = "auto",
}

local function options(opts)
  if type(opts) ~= "table" then error("faceid.train.run: options must be a table", 3) end
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do
    if M.DEFAULTS[k] == nil and k ~= "augment" then
      error(("faceid.train.run: unknown option '%s'"):format(tostring(k)), 3)
    end
    o[k] = v
  end
  if not o.data then error("faceid.train.run: option 'data' (a data set or a folder) is required", 3) end
  if o.on_nan ~= "stop" and o.on_nan ~= "skip" then
    error("faceid.train.run: on_nan must be \"stop\" or \"skip\"", 3)
  end
  if o.dist ~= "auto" and o.dist ~= true and o.dist ~= false then
    error("faceid.train.run: dist must be \"auto\", true or false", 3)
  end
  return o
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local function finite(x)
  return x == x and x ~= math.huge and x ~= -math.huge
end

local function fmt_time(s)
  if not finite(s) or s < 0 then return "?" end
  if s >= 3600 then return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60) end
  return ("%dm%02ds"):format(s // 60, math.floor(s % 60))
end

-- faceid.dist when this run is data-parallel, and whether it started MPI
-- itself (then it also finalizes it)
local function setup_dist(o)
  if o.dist == false then return nil, false end
  local env_size = tonumber(os.getenv("OMPI_COMM_WORLD_SIZE") or os.getenv("PMI_SIZE") or "")
  if o.dist == "auto" and not package.loaded["faceid.dist"] and not env_size then return nil, false end
  local dist = require("faceid.dist")
  if dist.initialized() then return dist, false end
  if o.dist == "auto" and not dist.available() then
    if env_size and env_size > 1 then
      error(("faceid.train: started by mpirun as one of %d processes, but faceid.dist is built without MPI"
        .. " (install libopenmpi-dev and rebuild)"):format(env_size), 0)
    end
    return nil, false
  end
  if o.dist == "auto" and not env_size then return nil, false end
  dist.init()
  return dist, true
end

--- Distances of a fixed pair list under the network in evaluation mode.
-- @return distances (Lua list), labels (Lua list)
function M.distances(net, loader, list, chunk)
  local was_training = net:is_training()
  net:evaluate()
  chunk = chunk or 32
  local d, y = {}, {}
  for first = 1, #list, chunk do
    local n = math.min(chunk, #list - first + 1)
    local x, labels, kept = loader:eval_batch(list, first, n)
    if x then
      local m = labels:size(1)
      local emb = net:forward(x)
      local diff = emb:narrow(1, 1, m) - emb:narrow(1, m + 1, m)
      local dist = (diff * diff):sum(2):sqrt()
      for i = 1, m do
        d[#d + 1] = dist:get(i)
        y[#y + 1] = labels:get(i)
      end
    end
    local _ = kept
  end
  if was_training then net:train() end
  return d, y
end

-- the tensors and metadata that make a checkpoint resumable
local function checkpoint_extra(state, opt)
  local tensors = {}
  local st = opt:state()
  for k, v in pairs(st) do
    if type(v) ~= "number" then tensors["optimizer." .. k] = v end
  end
  local meta = {
    format_train = "faceid.checkpoint", step = state.step, epoch = state.epoch,
    position = state.position, optimizer = opt.kind, optimizer_step = opt:step_count(),
    pairs_state = hex(state.pairs_state), augment_state = hex(state.aug:state()),
    best_auc = state.best_auc, best_step = state.best_step, skipped_steps = state.skipped,
  }
  if state.aug_states then -- every rank's augmentation stream, rank 0's first
    local h = {}
    for r, s in ipairs(state.aug_states) do h[r] = hex(s) end
    meta.augment_states, meta.processes = table.concat(h, ","), #h
  end
  return { tensors = tensors, metadata = meta }
end

local function save_checkpoint(net, path, state, opt)
  local ok, err = net:save(path, checkpoint_extra(state, opt))
  if not ok then error("faceid.train: cannot write checkpoint: " .. tostring(err), 0) end
end

--- Train. Returns a table: steps, epochs, last_loss, first_loss, best_auc,
-- best_step, eval (the last evaluation, faceid.metrics.evaluate's table),
-- history (per step: step, epoch, loss, lr, beta1, images_per_s, and
-- val_auc, val_accuracy, val_eer on steps that evaluated), interrupted (true after Ctrl-C), net;
-- over processes also rank, processes and allreduce_s (seconds spent
-- averaging gradients).
local train_loop
function M.run(opts)
  local o = options(opts)
  local D, owner = setup_dist(o)
  if not D then return train_loop(o) end
  D.catch_signals()
  local ok, result = pcall(train_loop, o, D)
  D.release_signals()
  -- an error leaves MPI running: the process ends with it and faceid.dist
  -- then aborts every rank (another rank may be waiting in a collective)
  if not ok then error(result, 0) end
  if owner then D.finalize() end
  return result
end

-- the loop itself; D is faceid.dist when training over processes
train_loop = function(o, D)
  local rank, nproc = D and D.rank() or 0, D and D.size() or 1
  local root = rank == 0
  if D and not root then o.quiet = true end
  if D and o.batch < nproc then
    error(("faceid.train.run: batch (%d pairs) must be at least the number of processes (%d)")
      :format(o.batch, nproc), 0)
  end
  faceid.set_num_threads(o.threads)
  local data = o.data
  if type(data) == "string" then data = assert(faceid.data.open(data)) end
  local train_ds, val_ds = data, o.val or nil
  if not val_ds and o.holdout and o.holdout ~= 0 then
    local people = data:n_people()
    local held = o.holdout < 1 and math.max(1, math.floor(people * o.holdout + 0.5)) or o.holdout
    train_ds, val_ds = data:split_by_identity({ counts = { people - held, held }, seed = o.seed })
  end

  -- the model, the loss, the optimizer, the schedule
  local net, resumed = o.net, nil
  if o.resume then
    local t, meta = faceid.load(o.resume)
    if not t then error("faceid.train: cannot resume: " .. tostring(meta), 0) end
    if meta.format_train ~= "faceid.checkpoint" then
      error("faceid.train: " .. o.resume .. " is a model file, not a training checkpoint", 0)
    end
    net = assert(faceid.DenseNet.load(o.resume))
    resumed = { tensors = t, meta = meta }
  elseif type(net) ~= "userdata" then
    local cfg = {}
    for k, v in pairs(net or {}) do cfg[k] = v end
    cfg.input = cfg.input or o.input
    cfg.embedding = cfg.embedding or o.embedding
    cfg.seed = cfg.seed or o.seed
    net = faceid.DenseNet(cfg)
  end
  if D then D.broadcast(net) end -- rank 0's weights everywhere
  local input = net:config().input
  net:train()
  local loss = faceid.ContrastiveLoss({ margin = o.margin })
  local opt
  if o.optimizer == "adam" then
    opt = faceid.Adam(net, { lr = o.lr, beta1 = o.beta1, beta2 = o.beta2, eps = o.eps,
      weight_decay = o.weight_decay })
  elseif o.optimizer == "sgd" then
    opt = faceid.SGD(net, { lr = o.lr, momentum = o.momentum, weight_decay = o.weight_decay })
  else
    error("faceid.train.run: optimizer must be \"adam\" or \"sgd\"", 2)
  end

  -- data: pairs re-drawn every epoch from pairs_gen, augmentation from aug
  -- (over processes: one pairs stream everywhere, an augmentation stream per rank)
  local pairs_gen, aug = faceid.Generator(o.seed + 1), faceid.Generator(o.seed + 2 + 0x9E3779B9 * rank)
  local loader = faceid.augment.Loader(train_ds, { size = input, reuse = true,
    recipe = o.augment ~= false and o.augment or nil, cache = o.cache })
  -- augment = false: the evaluation path (centre crops, no randomness)
  local function next_batch(pairs_list, first, n)
    if o.augment == false then return loader:eval_batch(pairs_list, first, n) end
    return loader:batch(pairs_list, first, n, aug)
  end
  local val_loader, val_pairs = nil, nil
  if val_ds and root then
    val_loader = faceid.augment.Loader(val_ds, { size = input, cache = o.cache })
    -- as many pairs as asked, or as the held-out people allow: half of
    -- them same-person pairs
    local n_same = math.min(o.eval_pairs // 2, faceid.pairs.same_count(val_ds))
    if n_same < 1 then
      error("faceid.train.run: the held-out people need at least two photos each (no same-person pair)", 0)
    end
    local n_diff = n_same == o.eval_pairs // 2 and o.eval_pairs - n_same or n_same
    val_pairs = faceid.pairs.fixed(val_ds, o.seed + 3, { n_same = n_same, n_diff = n_diff })
  end
  local epoch_pairs = function(state)
    state.pairs_state = pairs_gen:state()
    return faceid.pairs.epoch(train_ds, pairs_gen, { ratio = o.ratio })
  end

  local state = { step = 0, epoch = 1, position = 1, best_auc = -1, best_step = 0, skipped = 0, aug = aug }
  local list
  if resumed then
    local m, t = resumed.meta, resumed.tensors
    state.step, state.epoch = tonumber(m.step), tonumber(m.epoch)
    state.position, state.skipped = tonumber(m.position), tonumber(m.skipped_steps)
    state.best_auc, state.best_step = tonumber(m.best_auc), tonumber(m.best_step)
    local ost = { step = tonumber(m.optimizer_step) }
    for k, v in pairs(t) do
      local name = k:match("^optimizer%.(.*)$")
      if name then ost[name] = v end
    end
    opt:load_state(ost)
    pairs_gen:set_state(unhex(m.pairs_state))
    list = epoch_pairs(state) -- the same draw as before the stop
    local saved = {}
    for h in (m.augment_states or m.augment_state):gmatch("%x+") do saved[#saved + 1] = h end
    if saved[rank + 1] then
      aug:set_state(unhex(saved[rank + 1]))
    else -- more processes than saved streams: a fresh one, fixed by rank and step
      aug = faceid.Generator(o.seed + 2 + 0x9E3779B9 * rank + 0x632BE5AB * state.step)
    end
    state.aug = aug
  else
    list = epoch_pairs(state)
  end
  local steps_per_epoch = math.max(1, #list // o.batch)
  local total = o.steps or (o.epochs and o.epochs * steps_per_epoch) or 10 * steps_per_epoch
  local sched = o.schedule
  if type(sched) == "string" then
    if sched == "seed" then
      sched = faceid.schedule.seed({ steps_per_epoch = steps_per_epoch })
    elseif sched == "one_cycle" then
      sched = faceid.schedule.one_cycle({ max_lr = o.lr, steps = total })
    elseif sched == "cosine" then
      sched = faceid.schedule.cosine({ lr = o.lr, steps = total, warmup = math.min(100, total // 10) })
    elseif sched == "constant" then
      sched = faceid.schedule.constant({ lr = o.lr })
    else
      error("faceid.train.run: unknown schedule '" .. sched .. "'", 2)
    end
  end

  local log
  if o.out and root then
    -- the output folder is made and checked before any step runs
    os.execute("mkdir -p -- '" .. o.out:gsub("'", "'\\''") .. "' 2>/dev/null")
    local f, why = io.open(o.out .. "/log.csv", resumed and "a" or "w")
    if not f then
      error(("faceid.train: cannot write to output folder '%s': %s"):format(o.out,
        (tostring(why):gsub("^.-: ([^:]+)$", "%1"))), 0)
    end
    log = f
    if not resumed then log:write("step,epoch,loss,lr,beta1,images_per_s,val_auc,val_accuracy\n") end
  end

  local result = { history = {}, net = net }
  -- before rank 0 evaluates or saves: the mean of the ranks' batch-norm
  -- running averages everywhere, and every rank's augmentation state
  local function sync()
    if not D then return end
    D.average_buffers(net)
    state.aug_states = D.allgather_string(aug:state())
  end
  local function evaluate()
    state.evaluated_at = state.step
    if not val_pairs then return nil end
    local d, y = M.distances(net, val_loader, val_pairs)
    local r = faceid.metrics.evaluate(d, y, { folds = false })
    result.eval = r
    if r.auc > state.best_auc then
      state.best_auc, state.best_step = r.auc, state.step
      if o.out then save_checkpoint(net, o.out .. "/best.safetensors", state, opt) end
    end
    if not o.quiet then
      print(("eval  step %d: AUC %.4f  accuracy@1.0 %.3f  best accuracy %.3f (threshold %.3f)  EER %.3f")
        :format(state.step, r.auc, r.accuracy, r.best_accuracy, r.best_threshold, r.eer))
    end
    return r
  end

  local _, grads = net:flat()
  local t_start, images = faceid.clock(), 0
  local deadline = o.minutes and t_start + 60 * o.minutes or math.huge
  local after_step, dist_step
  -- on_nan = "skip": the step is dropped and counted; a run of
  -- MAX_SKIPS dropped steps in a row stops (it would never end otherwise)
  local skips_in_a_row = 0
  local function skip(what)
    state.skipped = state.skipped + 1
    skips_in_a_row = skips_in_a_row + 1
    if skips_in_a_row >= M.MAX_SKIPS then
      error(("faceid.train: step %d: %s in %d steps in a row (%d skipped in all); stopped"
        .. " (the last checkpoint is intact)"):format(state.step + 1, what, skips_in_a_row, state.skipped), 0)
    end
  end
  local function train_step()
    if state.position + o.batch - 1 > #list then
      state.epoch, state.position = state.epoch + 1, 1
      list = epoch_pairs(state)
    end
    local hyper = sched(opt:step_count())
    if o.optimizer == "sgd" then hyper = { lr = hyper.lr } end
    opt:set(hyper)
    local beta1 = o.optimizer == "adam" and opt.beta1 or 0
    if D then return dist_step(hyper, beta1) end
    local x, y = next_batch(list, state.position, o.batch)
    state.position = state.position + o.batch
    if not x then return nil end
    local emb = net:forward(x)
    local l = loss:forward(emb, y)
    net:backward(loss:backward())
    local g = grads:sum()
    if not finite(l) or not finite(g) then
      local what = not finite(l) and ("loss is " .. tostring(l)) or "a gradient is not finite"
      if o.on_nan == "stop" then
        error(("faceid.train: step %d: %s; stopped (the last checkpoint is intact)")
          :format(state.step + 1, what), 0)
      end
      skip(what)
      net:zero_grad()
      return l
    end
    opt:step()
    net:zero_grad()
    return after_step(l, x:size(1), hyper, beta1)
  end

  -- the rest of a step that updated the weights: history, evaluation,
  -- log, progress, checkpoint
  after_step = function(l, n_images, hyper, beta1)
    skips_in_a_row = 0
    state.step = state.step + 1
    images = images + n_images
    local row = { step = state.step, epoch = state.epoch, loss = l, lr = hyper.lr, beta1 = beta1 }
    result.history[#result.history + 1] = row
    result.first_loss = result.first_loss or l
    result.last_loss = l
    local val = nil
    local do_eval = o.eval_every and state.step % o.eval_every == 0
    local do_save = o.out and o.checkpoint_every and state.step % o.checkpoint_every == 0
    if (do_eval and val_ds) or do_save then sync() end
    if do_eval then val = evaluate() end
    if val then row.val_auc, row.val_accuracy, row.val_eer = val.auc, val.best_accuracy, val.eer end
    local elapsed = faceid.clock() - t_start
    local ips = images / math.max(elapsed, 1e-9)
    row.images_per_s = ips
    if log then
      log:write(("%d,%d,%.6g,%.6g,%.6g,%.1f,%s,%s\n"):format(state.step, state.epoch, l, hyper.lr,
        beta1, ips, val and ("%.6g"):format(val.auc) or "",
        val and ("%.6g"):format(val.best_accuracy) or ""))
      log:flush()
    end
    if not o.quiet and (state.step % o.print_every == 0 or state.step == total) then
      local eta = math.min((total - state.step) * 2 * o.batch / ips,
        o.minutes and (60 * o.minutes - elapsed) or math.huge)
      print(("step %d/%d  epoch %d  loss %.4f  lr %.3g  beta1 %.3f  %.1f img/s  ETA %s")
        :format(state.step, total, state.epoch, l, hyper.lr, beta1, ips, fmt_time(eta)))
    end
    if do_save and root then
      save_checkpoint(net, o.out .. "/last.safetensors", state, opt)
    end
    return l
  end

  -- one step over processes: each rank its share of the batch; then one
  -- small collective for (pairs, loss, non-finite, signal, time) and one for the
  -- gradients, weighted by each rank's pairs, so the update is the one of
  -- the combined batch
  local meta = faceid.zeros(5)
  dist_step = function(hyper, beta1)
    local first, count = D.shard(o.batch, rank, nproc)
    local x, y = next_batch(list, state.position + first - 1, count)
    state.position = state.position + o.batch
    local n, l, bad = 0, 0, false
    if x then
      n = y:size(1)
      l = loss:forward(net:forward(x), y)
      net:backward(loss:backward())
      bad = not finite(l) or not finite(grads:sum())
    end
    meta:set(1, n)
    meta:set(2, bad and 0 or n * l)
    meta:set(3, bad and 1 or 0)
    meta:set(4, D.signalled() and 1 or 0)
    meta:set(5, faceid.clock() >= deadline and 1 or 0)
    D.allreduce(meta, "sum")
    local total_n = meta:get(1)
    -- every rank takes the same decision from the shared flags
    if meta:get(4) > 0 then
      state.stop = "signal"
    elseif meta:get(5) > 0 then
      state.stop = "time"
    end
    if total_n == 0 then return nil end
    l = meta:get(2) / total_n
    if meta:get(3) > 0 then
      if o.on_nan == "stop" then
        error(("faceid.train: step %d: a loss or gradient is not finite on %d of %d processes; stopped"
          .. " (the last checkpoint is intact)"):format(state.step + 1, math.floor(meta:get(3)), nproc), 0)
      end
      skip("a loss or gradient is not finite")
      net:zero_grad()
      return 0 / 0
    end
    local t0 = faceid.clock()
    D.allreduce(grads, "sum", n / total_n)
    state.allreduce_s = (state.allreduce_s or 0) + faceid.clock() - t0
    opt:step()
    net:zero_grad()
    return after_step(l, 2 * math.floor(total_n), hyper, beta1)
  end

  if not o.quiet then
    print(("training %s\n  on %s\n  held out: %s\n  %d pairs per epoch, batch %d pairs, %d steps")
      :format(tostring(net):match("^[^\n]+"), tostring(train_ds), val_ds and tostring(val_ds) or "none",
        #list, o.batch, total))
    if D then
      print(("  on %d processes (MPI, %s) x %d threads; %d pairs per process and step")
        :format(nproc, D.library() or "?", o.threads, o.batch // nproc))
    end
  end
  while state.step < total do
    if state.stop == "time" or (not D and faceid.clock() >= deadline) then
      if not o.quiet then print(("time budget of %g minutes reached at step %d"):format(o.minutes, state.step)) end
      break
    end
    local ok, err = pcall(train_step)
    if ok and state.stop == "signal" then ok, err = false, "interrupted!" end
    if not ok then
      if not D and tostring(err):find("interrupted!", 1, true) or state.stop == "signal" then
        result.interrupted = true
        sync()
        if o.out and root then save_checkpoint(net, o.out .. "/last.safetensors", state, opt) end
        if not o.quiet then
          print(("stopped at step %d%s"):format(state.step,
            o.out and (", checkpoint saved to " .. o.out .. "/last.safetensors") or ""))
        end
        break
      end
      if log then log:close() end
      error(err, 0)
    end
  end
  if not result.interrupted then
    local final_eval = val_ds and state.evaluated_at ~= state.step
    if final_eval or o.out then sync() end
    if final_eval then
      local r, last = evaluate(), result.history[#result.history]
      if r and last and last.step == state.step then
        last.val_auc, last.val_accuracy, last.val_eer = r.auc, r.best_accuracy, r.eer
      end
    end
    if o.out and root then save_checkpoint(net, o.out .. "/last.safetensors", state, opt) end
  end
  if log then log:close() end
  result.steps, result.epochs, result.skipped = state.step, state.epoch, state.skipped
  result.best_auc, result.best_step = state.best_auc, state.best_step
  result.loader = loader
  if D then
    result.rank, result.processes = rank, nproc
    result.allreduce_s = state.allreduce_s
  end
  return result
end

return M
