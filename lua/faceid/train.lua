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
--   eval_every, eval_pairs, checkpoint_every, print_every
--   out         folder for last.safetensors, best.safetensors, log.csv
--   resume      a checkpoint to continue from (exactly where it stopped)
--   on_nan      "stop" (default) or "skip" (the step is dropped, counted)
--   seed        seed of everything random (0); threads (2)
--   quiet       no progress lines
local faceid = require("faceid")

local M = {}

M.DEFAULTS = {
  data = false, val = false, holdout = 0.2, net = false, input = 128, embedding = 32, batch = 64,
  steps = false, epochs = false, optimizer = "adam", lr = 3e-4, beta1 = 0.9, beta2 = 0.99, eps = 1e-8,
  weight_decay = 0, momentum = 0.9, schedule = "seed", margin = 2.0, ratio = 1, augment = nil,
  eval_every = 200, eval_pairs = 1000, checkpoint_every = 500, print_every = 10, out = false,
  resume = false, on_nan = "stop", seed = 0, threads = 2, quiet = false, cache = true, minutes = false,
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
  return { tensors = tensors, metadata = meta }
end

local function save_checkpoint(net, path, state, opt)
  local ok, err = net:save(path, checkpoint_extra(state, opt))
  if not ok then error("faceid.train: cannot write checkpoint: " .. tostring(err), 0) end
end

--- Train. Returns a table: steps, epochs, last_loss, first_loss, best_auc,
-- best_step, eval (the last evaluation, faceid.metrics.evaluate's table),
-- history (per step: step, epoch, loss, lr, beta1, images_per_s, and
-- val_auc, val_accuracy, val_eer on steps that evaluated), interrupted (true after Ctrl-C), net.
function M.run(opts)
  local o = options(opts)
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
  local pairs_gen, aug = faceid.Generator(o.seed + 1), faceid.Generator(o.seed + 2)
  local loader = faceid.augment.Loader(train_ds, { size = input, reuse = true,
    recipe = o.augment ~= false and o.augment or nil, cache = o.cache })
  local val_loader, val_pairs = nil, nil
  if val_ds then
    val_loader = faceid.augment.Loader(val_ds, { size = input, cache = o.cache })
    val_pairs = faceid.pairs.fixed(val_ds, o.seed + 3,
      { n_same = o.eval_pairs // 2, n_diff = o.eval_pairs - o.eval_pairs // 2 })
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
    aug:set_state(unhex(m.augment_state))
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
  if o.out then
    os.execute("mkdir -p '" .. o.out .. "'")
    log = assert(io.open(o.out .. "/log.csv", resumed and "a" or "w"))
    if not resumed then log:write("step,epoch,loss,lr,beta1,images_per_s,val_auc,val_accuracy\n") end
  end

  local result = { history = {}, net = net }
  local function evaluate()
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
  local function train_step()
    if state.position + o.batch - 1 > #list then
      state.epoch, state.position = state.epoch + 1, 1
      list = epoch_pairs(state)
    end
    local hyper = sched(opt:step_count())
    if o.optimizer == "sgd" then hyper = { lr = hyper.lr } end
    opt:set(hyper)
    local beta1 = o.optimizer == "adam" and opt.beta1 or 0
    local x, y = loader:batch(list, state.position, o.batch, aug)
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
      state.skipped = state.skipped + 1
      net:zero_grad()
      return l
    end
    opt:step()
    net:zero_grad()
    state.step = state.step + 1
    images = images + x:size(1)
    local row = { step = state.step, epoch = state.epoch, loss = l, lr = hyper.lr, beta1 = beta1 }
    result.history[#result.history + 1] = row
    result.first_loss = result.first_loss or l
    result.last_loss = l
    local val = nil
    if o.eval_every and state.step % o.eval_every == 0 then val = evaluate() end
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
    if o.out and o.checkpoint_every and state.step % o.checkpoint_every == 0 then
      save_checkpoint(net, o.out .. "/last.safetensors", state, opt)
    end
    return l
  end

  if not o.quiet then
    print(("training %s\n  on %s\n  held out: %s\n  %d pairs per epoch, batch %d pairs, %d steps")
      :format(tostring(net):match("^[^\n]+"), tostring(train_ds), val_ds and tostring(val_ds) or "none",
        #list, o.batch, total))
  end
  local deadline = o.minutes and t_start + 60 * o.minutes or math.huge
  while state.step < total do
    if faceid.clock() >= deadline then
      if not o.quiet then print(("time budget of %g minutes reached at step %d"):format(o.minutes, state.step)) end
      break
    end
    local ok, err = pcall(train_step)
    if not ok then
      if tostring(err):find("interrupted!", 1, true) then
        result.interrupted = true
        if o.out then save_checkpoint(net, o.out .. "/last.safetensors", state, opt) end
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
    if val_pairs and (not result.eval or state.step % (o.eval_every or 1) ~= 0) then
      local r, last = evaluate(), result.history[#result.history]
      if r and last and last.step == state.step then
        last.val_auc, last.val_accuracy, last.val_eer = r.auc, r.best_accuracy, r.eer
      end
    end
    if o.out then save_checkpoint(net, o.out .. "/last.safetensors", state, opt) end
  end
  if log then log:close() end
  result.steps, result.epochs, result.skipped = state.step, state.epoch, state.skipped
  result.best_auc, result.best_step = state.best_auc, state.best_step
  result.loader = loader
  return result
end

return M
