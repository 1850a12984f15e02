--- faceid.cli: the `faceid` command (bin/faceid): train, eval, embed,
-- compare, enroll, identify, demo.
--
--   faceid train --data DIR --out run/        faceid compare --model M a.jpg b.jpg
--   faceid <command> --help                   lua5.4 -e 'os.exit(require("faceid.cli").main(arg))'
--
-- Each subcommand is an entry of M.commands ({summary, usage, options,
-- args, run}); add one and it gets its parser and --help. Options are
-- `--name value` or `--name=value`; unknown options are errors. Exit codes:
-- 0 success (compare: same person; identify: someone known), 1 a "no"
-- answer (compare: different people; identify: nobody known), 2 a usage or
-- input error, reported as one line on stderr: `faceid <command>: what to fix`.
--
-- A model file written by `faceid train` carries its input size, channels,
-- preprocessing and decision threshold in its metadata, so the commands
-- that use a model need no other flags; checkpoints and plain net:save
-- files fall back to the network's own config and a threshold of 1.0.
local faceid = require("faceid")

local M = {}

-- ---- errors ------------------------------------------------------------------

local Fail = {}
Fail.__index = Fail

--- Raise a usage or input error: main() prints "faceid <command>: msg" and
-- exits with 2.
local function fail(fmt, ...)
  error(setmetatable({ msg = select("#", ...) > 0 and fmt:format(...) or fmt }, Fail), 0)
end
M.fail = fail

-- a library message without its "faceid.x.y: " or "file:line: " prefix
local function clean(msg)
  msg = tostring(msg)
  msg = msg:gsub("^[^%s:]+%.lua:%d+: ", "")
  msg = msg:gsub("^faceid[%w_.]*: ", ""):gsub("^[A-Z]%w*:[%w_]+: ", "")
  return msg
end

local function printf(fmt, ...)
  io.stdout:write(fmt:format(...))
  io.stdout:flush()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function is_dir(path)
  return faceid.core.dir_list(path) ~= nil
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function mkdir(dir)
  if not os.execute("mkdir -p " .. shell_quote(dir)) or not is_dir(dir) then
    fail("cannot create the folder '%s'", dir)
  end
end

-- ---- the option parser -----------------------------------------------------------

-- kinds: "string", "int" (>= min, default 1), "number" (> 0 unless min),
-- "choice" (one of o.choices), "flag" (no value), "list" (comma-separated
-- positive integers)
local function convert(o, value)
  local name = "--" .. o.name
  if o.kind == "int" then
    local n = math.tointeger(tonumber(value))
    local min = o.min or 1
    if not n or n < min then
      fail("%s must be an integer >= %d, got '%s'", name, min, value)
    end
    return n
  elseif o.kind == "number" then
    local n = tonumber(value)
    if not n or n ~= n or n == math.huge or (o.min and n < o.min) or (not o.min and n <= 0) then
      fail("%s must be a %snumber, got '%s'", name, o.min and "" or "positive ", value)
    end
    return n
  elseif o.kind == "choice" then
    for _, c in ipairs(o.choices) do
      if c == value then return value end
    end
    fail("%s must be one of %s, got '%s'", name, table.concat(o.choices, ", "), value)
  elseif o.kind == "list" then
    local out = {}
    for w in value:gmatch("[^,]+") do
      local n = math.tointeger(tonumber(w))
      if not n or n < 1 then fail("%s must be positive integers separated by commas, got '%s'", name, value) end
      out[#out + 1] = n
    end
    if #out == 0 then fail("%s must be positive integers separated by commas, got '%s'", name, value) end
    return out
  end
  if value == "" then fail("%s needs a non-empty value", name) end
  return value
end

local COMMON = {
  { name = "threads", arg = "N", kind = "int", default = 2, help = "threads for the matrix products and layers" },
  { name = "help", kind = "flag", help = "show this help" },
}

local function specs_of(cmd)
  local list, by = {}, {}
  for _, group in ipairs({ cmd.options or {}, COMMON }) do
    for _, o in ipairs(group) do
      list[#list + 1] = o
      by[o.name] = o
      if o.alias then by[o.alias] = o end
    end
  end
  return list, by
end

--- Parse argv[first..] for a command: returns opts (keys with '_' for
-- '-'), positional arguments. Raises a usage error (see fail) on unknown
-- options, missing values and bad values; --help skips the checks of
-- required options and positional arguments.
function M.parse(cmd, argv, first)
  local _, by = specs_of(cmd)
  local opts, args, i, rest = {}, {}, first or 1, false
  while i <= #argv do
    local a = argv[i]
    if rest then
      args[#args + 1] = a
    elseif a == "--" then
      rest = true
    elseif a == "-h" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local o = by[name]
      if not o then
        if name:find("_") and by[name:gsub("_", "-")] then
          fail("unknown option --%s (did you mean --%s?)", name, (name:gsub("_", "-")))
        end
        fail("unknown option --%s (see faceid %s --help)", name, cmd.name)
      end
      local key = o.name:gsub("%-", "_")
      name = o.name
      if o.kind == "flag" then
        if value then fail("--%s takes no value", name) end
        opts[key] = true
      else
        if not value then
          i = i + 1
          value = argv[i]
          if value == nil then fail("--%s needs a value (%s)", name, o.arg or "VALUE") end
        end
        opts[key] = convert(o, value)
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      fail("unknown option %s (options start with --; see faceid %s --help)", a, cmd.name)
    else
      args[#args + 1] = a
    end
    i = i + 1
  end
  if opts.help then return opts, args end
  for _, o in ipairs((specs_of(cmd))) do
    local key = o.name:gsub("%-", "_")
    if opts[key] == nil and o.default ~= nil then opts[key] = o.default end
    if o.required and opts[key] == nil then
      fail("--%s %s is required (see faceid %s --help)", o.name, o.arg or "", cmd.name)
    end
  end
  local a = cmd.args or { min = 0, max = 0 }
  if #args < a.min then
    fail("expected %s (see faceid %s --help)", a.name, cmd.name)
  elseif a.max and #args > a.max then
    if a.max == 0 then fail("unexpected argument '%s' (see faceid %s --help)", args[1], cmd.name) end
    fail("expected %s, got %d arguments (see faceid %s --help)", a.name, #args, cmd.name)
  end
  return opts, args
end

--- The --help text of a command.
function M.help(cmd)
  local lines = { "usage: " .. cmd.usage, "", cmd.summary, "", "options:" }
  for _, o in ipairs((specs_of(cmd))) do
    local head = "  --" .. o.name .. (o.arg and (" " .. o.arg) or "")
    local help = o.help or ""
    if o.kind == "choice" then help = help .. " (" .. table.concat(o.choices, "|") .. ")" end
    if o.default ~= nil and o.kind ~= "flag" then
      local d = type(o.default) == "table" and table.concat(o.default, ",") or tostring(o.default)
      help = help .. "; default " .. d
    end
    if o.required then help = help .. "; required" end
    lines[#lines + 1] = #head < 24 and (head .. (" "):rep(24 - #head) .. help) or (head .. "\n" .. (" "):rep(24) .. help)
  end
  if cmd.more then
    lines[#lines + 1] = ""
    lines[#lines + 1] = cmd.more
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ---- models --------------------------------------------------------------------

--- The preprocessing recorded in a model file, beside the network config.
local NORMALIZE = "x*2-1" -- pixels in [0, 1] mapped to [-1, 1]

--- Metadata that makes a model file self-describing (for net:save's extra).
function M.model_metadata(net, extra)
  local c = net:config()
  local meta = { format_model = "faceid.model", resize = c.input, crop = "center", normalize = NORMALIZE,
    color = "rgb" }
  for k, v in pairs(extra or {}) do meta[k] = v end
  return { metadata = meta }
end

--- Load a model: {net, input, resize, threshold, threshold_source, meta, path}.
function M.load_model(path)
  if not exists(path) then fail("cannot open model '%s': no such file", path) end
  if is_dir(path) then fail("model '%s' is a folder; give a .safetensors file", path) end
  local _, meta = faceid.load(path)
  if not _ then fail("cannot load model '%s': %s", path, clean(meta)) end
  local net, msg = faceid.DenseNet.load(path)
  if not net then fail("cannot load model '%s': %s", path, clean(msg)) end
  local c = net:config()
  if c.channels ~= 3 then fail("model '%s' takes %d channels; faceid reads RGB photos (3)", path, c.channels) end
  if meta.normalize and meta.normalize ~= NORMALIZE then
    fail("model '%s' wants the normalisation '%s', which this version does not know", path, meta.normalize)
  end
  local m = { net = net, path = path, meta = meta, input = c.input, embedding = c.embedding }
  m.resize = math.tointeger(tonumber(meta.resize)) or c.input
  local t = tonumber(meta.threshold)
  m.threshold, m.threshold_source = t or 1.0, t and "the model's" or "default"
  net:evaluate()
  return m
end

-- a stand-in data set over a list of files, for faceid.augment.Loader
local function file_list(paths)
  return { path = function(_, i) return paths[i] end, bad = function() return nil end, mark_bad = function() end }
end

--- Embed image files with a model (the evaluation preprocessing: shorter
-- side to the model's resize, centre crop, map to [-1, 1]).
-- @return N x D tensor
function M.embed_files(model, paths, chunk)
  chunk = chunk or 32
  local loader = faceid.augment.Loader(file_list(paths), { size = model.input, resize = model.resize })
  for i, p in ipairs(paths) do
    if is_dir(p) then fail("cannot read image '%s': it is a folder", p) end
    local src, why = loader:source(i)
    if not src then fail("%s", clean(why)) end
  end
  local rows = {}
  for first = 1, #paths, chunk do
    local idx = {}
    for i = first, math.min(#paths, first + chunk - 1) do idx[#idx + 1] = i end
    local x = assert(loader:images(idx))
    rows[#rows + 1] = model.net:forward(x):clone()
  end
  return faceid.cat(rows, 1)
end

-- ---- data ---------------------------------------------------------------------------

local READERS = { auto = "open", celeba = "celeba", folders = "folders", yale = "yale", extended_yaleb = "extended_yaleb" }

local function open_data(dir, format)
  if not is_dir(dir) then fail("cannot open data folder '%s': no such folder", dir) end
  local ok, ds, msg = pcall(faceid.data[READERS[format or "auto"]], dir)
  if not ok then fail("cannot read data folder '%s': %s", dir, clean(ds)) end
  if not ds then fail("cannot read data folder '%s': %s", dir, clean(msg)) end
  if #ds == 0 then fail("no images found in '%s' (expected person/photo.jpg folders or CelebA)", dir) end
  if ds:n_people() < 2 then fail("'%s' has %d person; face verification needs at least 2", dir, ds:n_people()) end
  return ds
end

-- the people held out of training: count from a fraction or a count
local function held_count(people, holdout)
  local held = holdout < 1 and math.max(1, math.floor(people * holdout + 0.5)) or math.floor(holdout)
  if held < 2 or people - held < 2 then
    fail("cannot hold out %s of %d people: training and evaluation need at least 2 people each",
      tostring(holdout), people)
  end
  return held
end


local function split(ds, holdout, seed)
  local held = held_count(ds:n_people(), holdout)
  return ds:split_by_identity({ counts = { ds:n_people() - held, held }, seed = seed })
end

--- Fixed evaluation pairs among the people of ds: about n pairs (half the
-- same person), in up to 10 person-disjoint folds; fewer when the people
-- do not have that many distinct pairs.
function M.eval_pairs(ds, seed, n)
  -- different-person pairs stay within a fold: at least 2 people each
  local folds = math.max(1, math.min(10, ds:n_people() // 2))
  while folds >= 1 do
    local per = math.max(1, (n // 2) // folds)
    while per >= 1 do
      local ok, list = pcall(faceid.pairs.fixed, ds, seed, { n_same = per * folds, n_diff = per * folds, folds = folds })
      if ok then return list end
      per = per // 2
    end
    folds = folds - 1
  end
  fail("cannot draw evaluation pairs: the held-out people need at least two photos each")
end

-- distances and labels of a pairs list; keeps the loader for pictures
local function pair_distances(model, ds, list)
  local loader = faceid.augment.Loader(ds, { size = model.input, resize = model.resize })
  local d, y = faceid.train.distances(model.net, loader, list)
  if #d == 0 then fail("none of the pairs has two readable images") end
  -- pairs with an unreadable image are left out: then d no longer lines up
  -- with the list (no folds, no pictures)
  local aligned = #d == #list
  return d, y, aligned and loader or nil, aligned and (list.folds or 1) > 1 and list.fold or false
end

-- ---- reports and pictures -------------------------------------------------------

local function report(r, threshold_line)
  if r.kfold then
    printf("%d-fold accuracy: %.4f +- %.4f (threshold chosen on the other folds)\n", r.kfold.folds,
      r.kfold.mean, r.kfold.std)
  end
  printf("AUC: %.4f\n", r.auc)
  printf("EER: %.4f (threshold %.3f)\n", r.eer, r.eer_threshold)
  printf("TAR@FAR=%g: %.4f (threshold %.3f)\n", r.far, r.tar, r.tar_threshold)
  printf("accuracy at %s: %.4f\n", threshold_line, r.accuracy)
  printf("best threshold: %.3f (accuracy %.4f)\n", r.best_threshold, r.best_accuracy)
  printf("mean distance: same person %.3f, different people %.3f\n", r.mean_same or 0 / 0,
    r.mean_different or 0 / 0)
end

local function evaluate(d, y, threshold, folds)
  local ok, r = pcall(faceid.metrics.evaluate, d, y, { threshold = threshold, folds = folds })
  if not ok then fail("cannot evaluate: %s", clean(r)) end
  return r
end

local function load_plot()
  local ok, plot = pcall(require, "faceid.plot")
  if ok and type(plot) == "table" and faceid.core.Canvas then return plot end
  return nil
end

-- a few pairs to show: same and different, from both ends of the distances
local function pair_items(loader, list, d, y, count)
  if not loader then return {} end
  local idx = {}
  for k = 1, #d do idx[k] = k end
  table.sort(idx, function(a, b) return d[a] < d[b] end)
  local pick, seen = {}, {}
  local function take(k)
    if k and not seen[k] and #pick < count then
      seen[k] = true
      pick[#pick + 1] = k
    end
  end
  -- alternate: closest same, farthest different, farthest same, closest different
  local same, diff = {}, {}
  for _, k in ipairs(idx) do
    if y[k] == 0 then same[#same + 1] = k else diff[#diff + 1] = k end
  end
  for r = 1, count do
    take(same[r])
    take(diff[#diff - r + 1])
    take(same[#same - r + 1])
    take(diff[r])
  end
  local items = {}
  for _, k in ipairs(pick) do
    -- distances come from eval batches in list order; k indexes both
    local x = loader:eval_batch(list, k, 1)
    if x then
      items[#items + 1] = { a = x[1]:clone(), b = x[2]:clone(), distance = d[k], label = y[k] }
    end
  end
  return items
end

--- Write training.png, roc.png, histogram.png, pairs.png into dir (those
-- whose inputs are given). Prints what it wrote; returns the file names.
function M.write_plots(dir, p)
  local plot = load_plot()
  if not plot then
    printf("pictures skipped: faceid.plot is not available in this installation\n")
    return {}
  end
  mkdir(dir)
  local written = {}
  local function one(name, f, ...)
    local ok, res, msg = pcall(f, dir .. "/" .. name, ...)
    if ok and res then
      written[#written + 1] = name
    else
      io.stderr:write(("faceid: could not write %s/%s: %s\n"):format(dir, name, clean(ok and msg or res)))
    end
  end
  if p.history and #p.history > 0 then one("training.png", plot.training, p.history) end
  if p.distances then
    one("roc.png", plot.roc, p.distances, p.labels)
    one("histogram.png", plot.histogram, p.distances, p.labels, { threshold = p.threshold })
  end
  if p.items and #p.items > 0 then
    local wrong = 0
    for _, it in ipairs(p.items) do
      if (it.distance < p.threshold) ~= (it.label == 0) then wrong = wrong + 1 end
    end
    one("pairs.png", plot.pairs, p.items, { threshold = p.threshold, range = { -1, 1 }, width = 960,
      title = ("The easiest and the hardest held-out pairs: %d of %d misjudged at threshold %.2f")
        :format(wrong, #p.items, p.threshold) })
  end
  if #written > 0 then printf("wrote %s/{%s}\n", dir, table.concat(written, ",")) end
  return written
end

-- ---- networks and training ------------------------------------------------------------

--- Network presets for --net.
M.NETS = {
  densenet121 = { growth = 32, blocks = { 6, 12, 24, 16 }, stem = "imagenet" },
  small = { growth = 12, blocks = { 6, 6, 6 }, stem = "small" },
  mini = { growth = 12, blocks = { 3, 3, 3 }, stem = "imagenet" },
  tiny = { growth = 8, blocks = { 2, 2 }, stem = "small" },
}
local NET_NAMES = { "densenet121", "small", "mini", "tiny" }

local function net_config(o)
  local preset = M.NETS[o.net]
  local c = { growth = o.growth or preset.growth, blocks = o.blocks or preset.blocks, stem = o.stem or preset.stem,
    input = o.size, embedding = o.embedding, seed = o.seed }
  if c.stem == "imagenet" and c.input < 32 then
    fail("--size %d is too small for the %s network's 4x downsampling stem; use --size 32 or more, or --stem small",
      c.input, o.net)
  end
  return c
end

local function schedule_of(o, train_ds, total)
  local s = o.schedule
  -- one cycle needs room for its warm-up and its decay
  if s == "one_cycle" and total and total < 10 then return "constant" end
  if s == "seed" or s == "one_cycle" or s == "cosine" or s == "constant" then return s end
  local list = faceid.pairs.epoch(train_ds, faceid.Generator(o.seed + 1))
  local spe = math.max(1, #list // o.batch)
  if s == "triangular" then
    return faceid.schedule.triangular({ base_lr = o.lr / 3, max_lr = o.lr, step_size = 2 * spe })
  end
  return faceid.schedule.step({ lr = o.lr, gamma = 0.1, step_size = math.max(1, (total or 10 * spe) // 3) })
end

-- images per second of one training step of this network (a throwaway
-- copy, random inputs): what a time budget can buy
local function calibrate(cfg, batch)
  batch = math.min(batch, 16)
  local net = faceid.DenseNet(cfg)
  net:train()
  local x = faceid.randn(faceid.Generator(1), 2 * batch, 3, cfg.input, cfg.input)
  local t0
  for step = 1, 3 do
    if step == 2 then t0 = faceid.clock() end
    local e = net:forward(x)
    net:backward(e)
    net:zero_grad()
  end
  local ips = 2 * 2 * batch / math.max(faceid.clock() - t0, 1e-6)
  net:close()
  return ips
end

local TRAIN_OPTIONS = {
  { name = "data", arg = "DIR", help = "face folder: one folder per person, CelebA, Yale" },
  { name = "format", arg = "F", kind = "choice", choices = { "auto", "celeba", "folders", "yale", "extended_yaleb" },
    default = "auto", help = "layout of --data" },
  { name = "net", arg = "NAME", kind = "choice", choices = NET_NAMES, default = "densenet121",
    help = "network preset" },
  { name = "growth", arg = "K", kind = "int", help = "growth rate k (overrides the preset)" },
  { name = "blocks", arg = "L,L,..", kind = "list", help = "dense layers per block (overrides the preset)" },
  { name = "stem", arg = "S", kind = "choice", choices = { "imagenet", "small" }, help = "stem (overrides the preset)" },
  { name = "size", arg = "N", kind = "int", min = 8, default = 128, help = "input side in pixels", alias = "input" },
  { name = "embedding", arg = "N", kind = "int", default = 32, help = "embedding size" },
  { name = "batch", arg = "N", kind = "int", default = 64, help = "pairs per step" },
  { name = "steps", arg = "N", kind = "int", help = "optimizer steps (default: 10 epochs)" },
  { name = "epochs", arg = "N", kind = "int", help = "passes over the training pairs" },
  { name = "minutes", arg = "M", kind = "number", help = "time budget" },
  { name = "schedule", arg = "NAME", kind = "choice",
    choices = { "seed", "one_cycle", "cosine", "constant", "triangular", "step" }, default = "seed",
    help = "learning-rate schedule" },
  { name = "lr", arg = "X", kind = "number", default = 3e-4, help = "(peak) learning rate" },
  { name = "optimizer", arg = "NAME", kind = "choice", choices = { "adam", "sgd" }, default = "adam",
    help = "optimizer" },
  { name = "margin", arg = "M", kind = "number", default = 2.0, help = "contrastive margin" },
  { name = "holdout", arg = "X", kind = "number", default = 0.2, help = "people held out: a fraction or a count" },
  { name = "eval-every", arg = "N", kind = "int", default = 200, help = "steps between evaluations" },
  { name = "eval-pairs", arg = "N", kind = "int", min = 2, default = 1000, help = "held-out pairs per evaluation" },
  { name = "checkpoint-every", arg = "N", kind = "int", default = 500, help = "steps between checkpoints" },
  { name = "out", arg = "DIR", default = "run", help = "folder for model, checkpoints, log, pictures" },
  { name = "resume", arg = "FILE", help = "continue from a checkpoint (e.g. run/last.safetensors)" },
  { name = "seed", arg = "N", kind = "int", min = 0, default = 0, help = "seed of everything random" },
  { name = "no-augment", kind = "flag", help = "train without augmentation" },
  { name = "plots", kind = "flag", help = "write training.png, roc.png, histogram.png, pairs.png to --out" },
  { name = "cache", arg = "FILE", help = "read decoded faces from a prepared cache (faceid prepare; same --size)" },
  { name = "quiet", kind = "flag", help = "no progress lines" },
}

--- Train, then evaluate on the held-out people, export model.safetensors
-- and optionally draw. Shared by `train` and `demo`.
local function train_and_report(o, ds, source, plots)
  -- under mpirun (faceid.dist) every rank trains; rank 0 alone talks,
  -- evaluates and writes the model
  local mpi_rank = tonumber(os.getenv("OMPI_COMM_WORLD_RANK") or os.getenv("PMIX_RANK") or os.getenv("PMI_RANK") or "")
  local lead = not mpi_rank or mpi_rank == 0
  local printf = lead and printf or function() end
  local train_ds, val_ds = split(ds, o.holdout, o.seed)
  local cfg = net_config(o)
  if o.resume and not exists(o.resume) then fail("cannot resume: no such file '%s'", o.resume) end
  local steps = o.steps
  if o.minutes and not steps and not o.epochs then
    local ips = calibrate(cfg, o.batch)
    -- loading, augmentation, evaluation and a busy machine take their share
    steps = math.max(1, math.floor(0.65 * 60 * o.minutes * ips / (2 * o.batch)))
    if not o.quiet then
      printf("time budget %g min: about %.0f images/s here, so %d steps of %d pairs\n", o.minutes, ips, steps, o.batch)
    end
  end
  printf("data: %s\n  training on %d people (%d images), evaluating on %d held-out people (%d images)\n",
    source, train_ds:n_people(), #train_ds, val_ds:n_people(), #val_ds)
  local eval_every = o.eval_every
  if eval_every == "auto" then eval_every = math.max(10, (steps or 1000) // 6) end
  local cap = faceid.pairs.same_count(val_ds)
  if cap < 1 then fail("the held-out people need at least two photos each") end
  local ok, result = pcall(faceid.train.run, {
    data = train_ds, val = val_ds, net = o.resume and false or cfg, input = o.size, embedding = o.embedding,
    batch = o.batch, steps = steps, epochs = not steps and o.epochs or false, minutes = o.minutes or false,
    optimizer = o.optimizer, lr = o.lr, schedule = schedule_of(o, train_ds, steps), margin = o.margin,
    eval_every = eval_every, eval_pairs = 2 * math.min(o.eval_pairs // 2, cap), checkpoint_every = o.checkpoint_every,
    out = o.out, resume = o.resume or false, seed = o.seed, threads = o.threads, quiet = o.quiet or not lead,
    augment = o.no_augment and false or nil, print_every = o.print_every or 10, cache = o.cache or true,
  })
  if not ok then fail("%s", clean(result)) end
  if result.rank and result.rank ~= 0 then return nil, result end
  local net = result.net
  net:evaluate()
  local c = net:config()
  local model = { net = net, input = c.input, resize = c.input, embedding = c.embedding }
  local list = M.eval_pairs(val_ds, o.seed + 3, o.final_pairs or o.eval_pairs)
  local d, y, loader, folds = pair_distances(model, val_ds, list)
  local r = evaluate(d, y, 1.0, folds)
  local threshold = r.best_threshold
  printf("\nheld-out people (%d pairs of %d people never seen in training, %d folds):\n", r.n,
    val_ds:n_people(), r.kfold and r.kfold.folds or 1)
  report(r, "the article's threshold 1.00")
  local model_path = o.out .. "/model.safetensors"
  local saved, msg = net:save(model_path, M.model_metadata(net, {
    threshold = ("%.6g"):format(threshold), threshold_source = "best accuracy on held-out pairs",
    trained_on = source, data_people = ds:n_people(), holdout = o.holdout, split_seed = o.seed,
    steps = result.steps, heldout_auc = ("%.6g"):format(r.auc),
  }))
  if not saved then fail("cannot write '%s': %s", model_path, clean(msg)) end
  printf("wrote %s (threshold %.3f recorded; checkpoints and log.csv in %s/)\n", model_path, threshold, o.out)
  if plots then
    M.write_plots(o.out, { history = result.history, distances = d, labels = y, threshold = threshold,
      items = pair_items(loader, list, d, y, 8) })
  end
  return r, result, model_path
end

-- ---- the commands -----------------------------------------------------------------------

M.commands = {}
M.order = { "train", "prepare", "eval", "embed", "compare", "enroll", "identify", "demo" }

M.commands.train = {
  brief = "train a model on a face folder (people held out for evaluation)",
  summary = "Train a Siamese DenseNet on a face folder; people are held out for evaluation.\n"
    .. "Writes OUT/model.safetensors (with its input size, preprocessing and threshold),\n"
    .. "OUT/last.safetensors and OUT/best.safetensors (resumable checkpoints) and OUT/log.csv.",
  usage = "faceid train --data DIR [--size 128] [--steps N | --epochs N | --minutes M] [--out run] [options]",
  options = TRAIN_OPTIONS,
  more = "examples:\n  faceid train --data ../shared/data/att_faces --net mini --size 64 --batch 32 --minutes 5 --out run/att\n"
    .. "  faceid train --data ../shared/data/att_faces --net mini --size 64 --batch 32 --steps 2000 \\\n"
    .. "      --resume run/att/last.safetensors --out run/att",
  run = function(o)
    if not o.data then fail("--data DIR is required (a face folder; see faceid train --help)") end
    if o.steps and o.epochs then fail("give --steps or --epochs, not both") end
    if o.cache and not exists(o.cache) then fail("no such cache file '%s' (make one with faceid prepare)", o.cache) end
    local ds = open_data(o.data, o.format)
    train_and_report(o, ds, ("%s (%s)"):format(o.data, tostring(ds):match("%): (.*)$") or ""), o.plots)
    return 0
  end,
}

M.commands.prepare = {
  brief = "decode a face folder once into a memory-mapped cache for training",
  summary = "Decode every image of a face folder once, resized for training at --size, into one\n"
    .. "uint8 file that training memory-maps (faceid train --cache FILE): epochs then decode\n"
    .. "nothing. Unreadable images are reported and skipped; a cache whose folder changed is refused.",
  usage = "faceid prepare --data DIR [--size 128] [--out FILE]",
  options = {
    { name = "data", arg = "DIR", required = true, help = "face folder: one folder per person, CelebA, Yale" },
    { name = "format", arg = "F", kind = "choice", choices = { "auto", "celeba", "folders", "yale", "extended_yaleb" },
      default = "auto", help = "data layout" },
    { name = "size", arg = "N", kind = "int", min = 8, default = 128, help = "the training input side it serves",
      alias = "input" },
    { name = "out", arg = "FILE", help = "cache file; default: DIR's name with .fidcache, here" },
    { name = "quiet", kind = "flag", help = "no progress line" },
  },
  run = function(o)
    local ds = open_data(o.data, o.format)
    local out = o.out or ((o.data:gsub("/+$", ""):match("([^/]+)$") or "faces") .. ".fidcache")
    local progress = not o.quiet and function(done, total, failed)
      io.stderr:write(("\rprepared %d/%d, %d failed"):format(done, total, failed))
    end or nil
    local info, msg = faceid.cache.prepare(ds, out, { size = o.size, threads = o.threads, progress = progress })
    if progress then io.stderr:write("\n") end
    if not info then fail("%s", clean(msg)) end
    printf("wrote %s: %d images (%.1f MiB) in %.1f s, %d skipped\n", info.path, info.images, info.bytes / 2 ^ 20,
      info.seconds, info.failed)
    for _, sk in ipairs(info.skipped or {}) do printf("  skipped %s: %s\n", sk.path, sk.why) end
    printf("train from it with: faceid train --data %s --size %d --cache %s\n", o.data, o.size, info.path)
    return 0
  end,
}

local function model_option(required)
  return { name = "model", arg = "M", required = required, help = "model file (faceid train's model.safetensors)" }
end
local THRESHOLD = { name = "threshold", arg = "X", kind = "number", help = "distance below which two faces are one person; default: the model's, else 1.0" }

local function threshold_line(model, o)
  local t = o.threshold or model.threshold
  local src = o.threshold and "given" or model.threshold_source
  return t, ("threshold %.3f (%s)"):format(t, src)
end

M.commands.eval = {
  brief = "k-fold accuracy, AUC, EER, TAR@FAR on LFW pairs or held-out people",
  summary = "Measure a model on face pairs: LFW-style k-fold accuracy (mean +- std), AUC, EER, TAR@FAR.\n"
    .. "Either a pairs file in the LFW format (--pairs with --images), or fixed pairs drawn among the\n"
    .. "people of --data (by default those the training run held out, when the model records its split).",
  usage = "faceid eval --model M (--pairs pairs.txt --images DIR | --data DIR) [options]",
  options = {
    model_option(true),
    { name = "pairs", arg = "FILE", help = "pairs file, LFW format (pairs.txt)" },
    { name = "images", arg = "DIR", help = "image folder the pairs file names (LFW: DIR/name/name_0001.jpg)" },
    { name = "data", arg = "DIR", help = "face folder to draw fixed pairs from" },
    { name = "format", arg = "F", kind = "choice", choices = { "auto", "celeba", "folders", "yale", "extended_yaleb" },
      default = "auto", help = "layout of --data" },
    { name = "people", arg = "WHO", kind = "choice", choices = { "heldout", "all" }, default = "heldout",
      help = "with --data: the people the training run held out, or everyone" },
    { name = "n-pairs", arg = "N", kind = "int", min = 2, default = 1000, help = "with --data: pairs to draw" },
    { name = "seed", arg = "N", kind = "int", min = 0, help = "with --data: seed of the pairs; default: the training run's" },
    { name = "save-pairs", arg = "FILE", help = "with --data: write the pairs used (LFW format)" },
    THRESHOLD,
    { name = "far", arg = "X", kind = "number", default = 1e-3, help = "false accept rate for TAR@FAR" },
    { name = "plots", arg = "DIR", help = "write roc.png, histogram.png, pairs.png there" },
  },
  run = function(o)
    if (o.pairs == nil) == (o.data == nil) then
      fail("give --pairs FILE with --images DIR, or --data DIR (one of them)")
    end
    if o.pairs and not o.images then fail("--pairs needs --images DIR, the folder its names refer to") end
    faceid.set_num_threads(o.threads)
    local model = M.load_model(o.model)
    local ds, list, what
    if o.pairs then
      if not exists(o.pairs) then fail("cannot open pairs file '%s': no such file", o.pairs) end
      if not is_dir(o.images) then fail("cannot open image folder '%s': no such folder", o.images) end
      local missing = 0
      local lds, llist = faceid.data.lfw_pairs(o.pairs, o.images, { on_skip = function() missing = missing + 1 end })
      if lds and #llist > 0 and llist.dropped == 0 then
        ds, list = lds, llist
      else
        local fds = open_data(o.images, "auto")
        local flist, msg = faceid.pairs.load(o.pairs, fds)
        if not flist then
          if not lds then fail("%s", clean(llist)) end
          fail("%s", clean(msg))
        end
        ds, list = fds, flist
      end
      what = ("%s on %s"):format(o.pairs, o.images)
    else
      local all = open_data(o.data, o.format)
      local meta = model.meta
      local seed = math.tointeger(tonumber(meta.split_seed))
      ds, what = all, ("all %d people of %s"):format(all:n_people(), o.data)
      if o.people == "heldout" then
        if seed and tonumber(meta.data_people) == all:n_people() and tonumber(meta.holdout) then
          local _, val = split(all, tonumber(meta.holdout), seed)
          ds, what = val, ("the %d people of %s held out of training"):format(val:n_people(), o.data)
        else
          what = what .. " (the model does not record a training split of this folder)"
        end
      end
      list = M.eval_pairs(ds, o.seed or ((seed or 0) + 3), o.n_pairs)
      if o.save_pairs then
        local ok, msg = faceid.pairs.save(list, o.save_pairs)
        if not ok then fail("cannot write '%s': %s", o.save_pairs, clean(msg)) end
      end
    end
    local d, y, loader, folds = pair_distances(model, ds, list)
    local t, tline = threshold_line(model, o)
    local ok, r = pcall(faceid.metrics.evaluate, d, y,
      { threshold = t, far = o.far, folds = folds })
    if not ok then fail("cannot evaluate: %s", clean(r)) end
    printf("model: %s (%dx%d input, %d-d embedding)\npairs: %d (%d same, %d different) from %s\n", o.model,
      model.input, model.input, model.embedding, r.n, r.same, r.different, what)
    report(r, tline)
    if o.plots then
      M.write_plots(o.plots, { distances = d, labels = y, threshold = t, items = pair_items(loader, list, d, y, 8) })
    end
    return 0
  end,
}

-- JSON string
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return map[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function csv_field(s)
  if s:find('[,"\n\r]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function write_text(path, text)
  if not path or path == "-" then
    io.stdout:write(text)
    return
  end
  local tmp = path .. ".tmp"
  local f, msg = io.open(tmp, "wb")
  if not f then fail("cannot write '%s': %s", path, clean(msg)) end
  f:write(text)
  f:close()
  local ok, rmsg = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    fail("cannot write '%s': %s", path, clean(rmsg))
  end
end

M.commands.embed = {
  brief = "embeddings of photos as CSV, JSON or safetensors",
  summary = "Embeddings of face photos, one row per image: CSV (image,e1,...), JSON or safetensors\n"
    .. "(tensor 'embeddings', N x D, the file names in its metadata 'images', one per line).",
  usage = "faceid embed --model M [--format csv|json|safetensors] [--out FILE] IMAGES...",
  args = { min = 1, name = "one or more IMAGES" },
  options = {
    model_option(true),
    { name = "format", arg = "F", kind = "choice", choices = { "csv", "json", "safetensors" },
      help = "output format; default: from --out's extension, else csv" },
    { name = "out", arg = "FILE", help = "output file; default: standard output (csv, json)" },
  },
  run = function(o, args)
    local format = o.format
    if not format and o.out then
      local ext = o.out:match("%.(%w+)$")
      format = (ext == "json" or ext == "safetensors") and ext or "csv"
    end
    format = format or "csv"
    if format == "safetensors" and not o.out then fail("--format safetensors needs --out FILE") end
    faceid.set_num_threads(o.threads)
    local model = M.load_model(o.model)
    local e = M.embed_files(model, args)
    local n, dim = e:size(1), e:size(2)
    if format == "safetensors" then
      local ok, msg = faceid.save(o.out, { embeddings = e:contiguous() }, { metadata = {
        format = "faceid.embeddings", images = table.concat(args, "\n"), model = o.model } })
      if not ok then fail("cannot write '%s': %s", o.out, clean(msg)) end
    else
      local lines = {}
      if format == "csv" then
        local head = { "image" }
        for j = 1, dim do head[j + 1] = "e" .. j end
        lines[1] = table.concat(head, ",")
        for i = 1, n do
          local row = { csv_field(args[i]) }
          for j = 1, dim do row[j + 1] = ("%.7g"):format(e:get(i, j)) end
          lines[#lines + 1] = table.concat(row, ",")
        end
      else
        lines[1] = "["
        for i = 1, n do
          local v = {}
          for j = 1, dim do v[j] = ("%.7g"):format(e:get(i, j)) end
          lines[#lines + 1] = ('  {"image": %s, "embedding": [%s]}%s'):format(json_string(args[i]),
            table.concat(v, ", "), i < n and "," or "")
        end
        lines[#lines + 1] = "]"
      end
      write_text(o.out, table.concat(lines, "\n") .. "\n")
    end
    if o.out and o.out ~= "-" then printf("wrote %d embeddings (%d-d) to %s\n", n, dim, o.out) end
    return 0
  end,
}

M.commands.compare = {
  brief = "same person or not? (exit code 0 / 1)",
  summary = "Is this the same person? Prints the verdict with the distance and the threshold;\n"
    .. "exit code 0 for the same person, 1 for different people, 2 for errors.",
  usage = "faceid compare --model M [--threshold X] A.jpg B.jpg",
  args = { min = 2, max = 2, name = "two images" },
  options = { model_option(true), THRESHOLD },
  run = function(o, args)
    faceid.set_num_threads(o.threads)
    local model = M.load_model(o.model)
    local e = M.embed_files(model, args)
    local d = (e[1] - e[2]):norm()
    local t = o.threshold or model.threshold
    if d < t then
      printf("same person (distance %.2f < threshold %.2f)\n", d, t)
      return 0
    end
    printf("different people (distance %.2f >= threshold %.2f)\n", d, t)
    return 1
  end,
}

local function open_gallery(path, must_exist)
  local G = require("faceid.gallery")
  if not exists(path) then
    if must_exist then fail("cannot open gallery '%s': no such file (create it with faceid enroll)", path) end
    return G.new()
  end
  local g, msg = G.load(path)
  if not g then fail("cannot load gallery '%s': %s", path, clean(msg)) end
  return g
end

-- a short fingerprint of a model's weights, kept in galleries so that a
-- gallery is not searched with embeddings of another model
local function fingerprint(net)
  local params = net:flat()
  return ("%d:%.9g:%.9g"):format(params:numel(), params:sum(), params:abs():sum())
end

local GALLERY = { name = "gallery", arg = "G", required = true, help = "gallery file (safetensors)" }

M.commands.enroll = {
  brief = "add a person to a gallery",
  summary = "Add a person to a gallery with one or more photos (the gallery file is created when\n"
    .. "missing and rewritten atomically).",
  usage = "faceid enroll --model M --gallery G NAME IMAGES...",
  args = { min = 2, name = "NAME and one or more IMAGES" },
  options = { model_option(true), GALLERY,
    { name = "replace", kind = "flag", help = "replace the person's photos instead of adding to them" } },
  run = function(o, args)
    local name = args[1]
    if name == "" or name:find("%c") then fail("NAME must be non-empty, without line breaks or tabs") end
    local ext = (name:match("%.(%w+)$") or ""):lower()
    for _, e in ipairs(faceid.data.IMAGE_EXTENSIONS) do
      if ext == e and exists(name) then
        fail("the first argument is the person's NAME, but '%s' is an image file", name)
      end
    end
    faceid.set_num_threads(o.threads)
    local model = M.load_model(o.model)
    local g = open_gallery(o.gallery, false)
    local fp = fingerprint(model.net)
    if #g > 0 and g.metadata.model_fingerprint and g.metadata.model_fingerprint ~= fp then
      fail("gallery '%s' was made with another model (%s); enroll with that model or start a new gallery",
        o.gallery, g.metadata.model or "unknown")
    end
    g.metadata.model_fingerprint, g.metadata.model = fp, o.model
    local photos = table.move(args, 2, #args, 1, {})
    local e = M.embed_files(model, photos)
    if o.replace then g:remove(name) end
    local ok, err = pcall(g.enroll, g, name, e)
    if not ok then fail("%s", clean(err)) end
    local saved, msg = g:save(o.gallery)
    if not saved then fail("cannot write gallery '%s': %s", o.gallery, clean(msg)) end
    printf("enrolled %s: %d photo%s (gallery %s: %d %s, %d photos)\n", name, #photos, #photos == 1 and "" or "s",
      o.gallery, #g, #g == 1 and "person" or "people", g:count())
    return 0
  end,
}

M.commands.identify = {
  brief = "who is this, or nobody known? (exit code 0 / 1)",
  summary = "Who is this? The nearest enrolled person when closer than the threshold, else nobody;\n"
    .. "exit code 0 when someone is recognised, 1 for nobody known, 2 for errors.",
  usage = "faceid identify --model M --gallery G [--threshold X] PHOTO",
  args = { min = 1, max = 1, name = "one PHOTO" },
  options = { model_option(true), GALLERY, THRESHOLD,
    { name = "top", arg = "N", kind = "int", default = 1, help = "also list the N nearest people" } },
  run = function(o, args)
    faceid.set_num_threads(o.threads)
    local model = M.load_model(o.model)
    local g = open_gallery(o.gallery, true)
    if #g == 0 then fail("gallery '%s' is empty (add people with faceid enroll)", o.gallery) end
    if g.metadata.model_fingerprint and g.metadata.model_fingerprint ~= fingerprint(model.net) then
      fail("gallery '%s' was made with another model (%s); identify with that model", o.gallery,
        g.metadata.model or "unknown")
    end
    if g.dim ~= model.embedding then
      fail("gallery '%s' holds %d-d embeddings but the model gives %d-d", o.gallery, g.dim, model.embedding)
    end
    local e = M.embed_files(model, args)
    local t = o.threshold or model.threshold
    local name, d, nearest = g:identify(e[1], t)
    if name then
      printf("%s (distance %.2f < threshold %.2f)\n", name, d, t)
    else
      printf("nobody known (nearest: %s, distance %.2f >= threshold %.2f)\n", nearest, d, t)
    end
    if o.top > 1 then
      for k, r in ipairs(g:distances(e[1])) do
        if k > o.top then break end
        printf("  %d. %s %.3f\n", k, r.name, r.distance)
      end
    end
    return name and 0 or 1
  end,
}

M.commands.demo = {
  brief = "train a small model for a few minutes, evaluate it, draw the results",
  summary = "Train a small model for a few minutes on a built-in default, evaluate it on people held\n"
    .. "out of training, print the metrics and write training.png, roc.png, histogram.png and\n"
    .. "pairs.png. The default data is the AT&T faces in ../shared/data (or $FACEID_DATA) when\n"
    .. "present, otherwise a generated set of SYNTHETIC identities (faceid.synthetic), labelled so.",
  usage = "faceid demo [--minutes 3 | --steps N] [--data DIR|synthetic] [--out demo-out] [options]",
  options = {
    { name = "data", arg = "DIR", help = "face folder, or 'synthetic'; default: AT&T when present" },
    { name = "minutes", arg = "M", kind = "number", default = 3, help = "time budget (ignored with --steps)" },
    { name = "steps", arg = "N", kind = "int", help = "optimizer steps instead of a time budget" },
    { name = "out", arg = "DIR", default = "demo-out", help = "output folder" },
    { name = "net", arg = "NAME", kind = "choice", choices = NET_NAMES, default = "mini", help = "network preset" },
    { name = "size", arg = "N", kind = "int", min = 8, default = 64, help = "input side in pixels" },
    { name = "batch", arg = "N", kind = "int", default = 32, help = "pairs per step" },
    { name = "lr", arg = "X", kind = "number", default = 2e-3, help = "peak learning rate (one-cycle)" },
    { name = "holdout", arg = "N", kind = "number", default = 10, help = "people held out: a count or a fraction" },
    { name = "people", arg = "N", kind = "int", min = 4, default = 40, help = "synthetic people (with --data synthetic)" },
    { name = "seed", arg = "N", kind = "int", min = 0, default = 0, help = "seed of everything random" },
    { name = "quiet", kind = "flag", help = "fewer progress lines" },
  },
  run = function(o)
    net_config(o) -- a bad network is reported before anything is written
    local data, source = o.data, nil
    if not data then
      local root = os.getenv("FACEID_DATA") or "../shared/data"
      data = exists(root .. "/att_faces/s1/1.pgm") and (root .. "/att_faces") or "synthetic"
    end
    local ds
    if data == "synthetic" then
      local dir = o.out .. "/synthetic-faces"
      mkdir(o.out)
      local opts = { people = o.people, per_person = 10, size = math.max(o.size, 32), seed = 2018 + o.seed }
      local msg
      ds, msg = require("faceid.synthetic").dataset(dir, opts)
      if not ds then fail("%s", clean(msg)) end
      source = require("faceid.synthetic").describe(opts) .. ", written to " .. dir
      if not o.data then source = source .. "; no face data found, see README" end
    else
      ds = open_data(data, "auto")
      source = ("%s (%d people, %d images)"):format(data, ds:n_people(), #ds)
    end
    printf("faceid %s demo: a Siamese DenseNet trained for %s, judged on people it never saw\n", faceid._VERSION,
      o.steps and (o.steps .. " steps") or (o.minutes .. " minutes"))
    o.minutes = not o.steps and o.minutes or nil
    o.schedule, o.optimizer, o.embedding, o.margin = "one_cycle", "adam", 32, 2.0
    o.eval_every, o.eval_pairs, o.final_pairs, o.checkpoint_every = "auto", 200, 1000, 100000
    o.print_every = o.quiet and 1000000 or 25
    local r = train_and_report(o, ds, source, true)
    printf("chance is 0.50 accuracy and 0.50 AUC; try: faceid compare --model %s/model.safetensors A.jpg B.jpg\n",
      o.out)
    local _ = r
    return 0
  end,
}

for name, cmd in pairs(M.commands) do cmd.name = name end

--- The overview printed by `faceid --help`.
function M.overview()
  local lines = { ("faceid %s: train your own FaceID ConvNet"):format(faceid._VERSION), "",
    "usage: faceid <command> [options]     (faceid <command> --help for its options)", "", "commands:" }
  for _, name in ipairs(M.order) do
    local c = M.commands[name]
    lines[#lines + 1] = ("  %-9s %s"):format(name, c.brief or c.summary:match("^[^\n]*"))
  end
  for name, c in pairs(M.commands) do
    local listed = false
    for _, n in ipairs(M.order) do listed = listed or n == name end
    if not listed then lines[#lines + 1] = ("  %-9s %s"):format(name, c.brief or c.summary:match("^[^\n]*")) end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit codes: 0 success (or 'same'/'known'), 1 'different'/'nobody', 2 usage or input error"
  return table.concat(lines, "\n") .. "\n"
end

--- Run the command line argv (a list of strings, as `arg`); returns the
-- exit code. Errors are reported on stderr as one line.
function M.main(argv)
  argv = argv or {}
  local name = argv[1]
  if name == nil then
    io.stderr:write(M.overview())
    return 2
  end
  if name == "-h" or name == "--help" or name == "help" then
    local c = argv[2] and M.commands[argv[2]]
    io.stdout:write(c and M.help(c) or M.overview())
    return 0
  end
  if name == "--version" or name == "version" then
    printf("faceid %s\n", faceid._VERSION)
    return 0
  end
  local cmd = M.commands[name]
  if not cmd then
    local names = {}
    for n in pairs(M.commands) do names[#names + 1] = n end
    table.sort(names)
    io.stderr:write(("faceid: unknown command '%s' (commands: %s; see faceid --help)\n"):format(name,
      table.concat(names, ", ")))
    return 2
  end
  local ok, code = xpcall(function()
    local o, args = M.parse(cmd, argv, 2)
    if o.help then
      io.stdout:write(M.help(cmd))
      return 0
    end
    faceid.set_num_threads(o.threads)
    return cmd.run(o, args)
  end, function(e)
    if getmetatable(e) == Fail then return e end
    if os.getenv("FACEID_DEBUG") then return setmetatable({ msg = debug.traceback(tostring(e), 2) }, Fail) end
    return setmetatable({ msg = clean(e) }, Fail)
  end)
  if ok then return code or 0 end
  io.stdout:flush()
  io.stderr:write(("faceid %s: %s\n"):format(name, (code.msg:gsub("\n+$", ""))))
  return 2
end

return M
