--- faceid.schedule: learning-rate (and beta1) schedules as pure functions of
-- the step.
--
--   local sched = faceid.schedule.seed{steps_per_epoch = 3000}
--   for step = opt:step_count(), last do
--     opt:set(sched(opt:step_count()))   -- {lr = ..., beta1 = ...}
--     ... forward, backward ...
--     opt:step()
--   end
--   print(sched:table(20))               -- the first 20 values, as text
--
-- The step t counts the updates done so far: s(0) is what the first update
-- uses. Because a schedule depends on t alone, a run resumed from a
-- checkpoint (optimizer state included, so opt:step_count() continues)
-- follows the same values as one that never stopped.
--
-- Every schedule is an object: s(t) -> {lr = ..., beta1 = ...} (beta1 only
-- where the schedule moves it or was given one), s:table(n [, every]) -> the
-- rows {step =, lr =, beta1 =} for t = 0, every, ... < n, printable with
-- tostring. Options are tables; an unknown key is an error.
--
--   constant{lr, beta1}                          lr (and beta1) at every step
--   step{lr, gamma = 0.1, step_size | milestones, beta1}
--        lr * gamma^k, k = floor(t / step_size) or the number of milestones <= t
--   cosine{lr, steps, min_lr = 0, warmup = 0, warmup_lr = 0, beta1}
--        linear from warmup_lr (t = 0) to lr (t = warmup), then half a cosine
--        from lr (t = warmup) to min_lr (t = steps), min_lr afterwards
--   triangular{base_lr, max_lr, step_size, mode = "triangular", gamma = 1,
--              base_beta1, max_beta1}
--        Smith's cyclical rate (torch.optim.lr_scheduler.CyclicLR with
--        step_size_up = step_size_down = step_size): base_lr at t = 0, max_lr
--        at t = step_size, base_lr at 2 step_size, ...; mode "triangular2"
--        halves the amplitude every cycle, "exp_range" scales it by gamma^t.
--        With base_beta1 and max_beta1, beta1 moves the opposite way.
--   one_cycle{max_lr, steps, pct_start = 0.3, div_factor = 25,
--             final_div_factor = 1e4, anneal = "cos", base_beta1 = 0.85,
--             max_beta1 = 0.95, cycle_beta1 = true}
--        torch.optim.lr_scheduler.OneCycleLR (two phases): lr from
--        max_lr / div_factor up to max_lr at t = pct_start * steps - 1, then
--        down to max_lr / div_factor / final_div_factor at t = steps - 1
--        ("cos" or "linear" annealing); beta1 from max_beta1 down to
--        base_beta1 and back. After steps - 1 it stays at the final values.
--   seed{steps_per_epoch, ...}: the schedule of the original FaceID
--        training, defined below.
local M = {}

local Schedule = {}
Schedule.__index = Schedule

local function fail(fname, msg, level)
  error(("faceid.schedule.%s: %s"):format(fname, msg), level or 4)
end

-- opts with defaults filled in; unknown keys and missing required ones raise
local function options(fname, opts, spec)
  if opts ~= nil and type(opts) ~= "table" then
    fail(fname, "options must be a table, got " .. type(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if spec[k] == nil then
      local names = {}
      for name in pairs(spec) do names[#names + 1] = name end
      table.sort(names)
      fail(fname, ("unknown option '%s' (expected %s)"):format(tostring(k), table.concat(names, ", ")))
    end
  end
  local o = {}
  for k, d in pairs(spec) do
    local v = opts[k]
    if v == nil then v = d.default end
    if v == nil and d.required then fail(fname, ("option '%s' is required"):format(k)) end
    if v ~= nil and d.check then
      local ok, why = d.check(v)
      if not ok then fail(fname, ("option '%s' %s, got %s"):format(k, why, tostring(v))) end
    end
    o[k] = v
  end
  return o
end

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

local function positive(v)
  if finite(v) and v > 0 then return true end
  return false, "must be a number > 0"
end

local function nonneg(v)
  if finite(v) and v >= 0 then return true end
  return false, "must be a number >= 0"
end

local function beta(v)
  if finite(v) and v >= 0 and v < 1 then return true end
  return false, "must be a number in [0, 1)"
end

local function count(v)
  if math.type(v) == "integer" and v >= 1 then return true end
  return false, "must be an integer >= 1"
end

local function count0(v)
  if math.type(v) == "integer" and v >= 0 then return true end
  return false, "must be an integer >= 0"
end

local function one_of(...)
  local set = {}
  for _, s in ipairs({ ... }) do set[s] = true end
  local names = table.concat({ ... }, ", ")
  return function(v)
    if set[v] then return true end
    return false, "must be one of " .. names
  end
end

local function boolean(v)
  if type(v) == "boolean" then return true end
  return false, "must be true or false"
end

local function new(name, o, fn)
  return setmetatable({ name = name, options = o, fn = fn }, Schedule)
end

--- s(t) -> {lr = ..., beta1 = ...}
function Schedule.__call(s, t)
  if type(t) ~= "number" or t ~= t or t < 0 or t ~= math.floor(t) or t == math.huge then
    error(("faceid.schedule.%s: step must be an integer >= 0, got %s"):format(s.name, tostring(t)), 2)
  end
  local lr, beta1 = s.fn(t)
  return { lr = lr, beta1 = beta1 }
end

local Rows = {}
Rows.__tostring = function(rows)
  local has_beta1 = rows[1] and rows[1].beta1 ~= nil
  local lines = { has_beta1 and ("%8s  %-14s %s"):format("step", "lr", "beta1") or ("%8s  %s"):format("step", "lr") }
  for _, r in ipairs(rows) do
    lines[#lines + 1] = has_beta1 and ("%8d  %-14.6g %.6g"):format(r.step, r.lr, r.beta1)
      or ("%8d  %.6g"):format(r.step, r.lr)
  end
  return table.concat(lines, "\n")
end

--- s:table(n [, every = 1]) -> rows {step =, lr =, beta1 =} for t = 0,
-- every, 2 every, ... < n; tostring(rows) lays them out as columns.
function Schedule.table(s, n, every)
  every = every or 1
  if math.type(n) ~= "integer" or n < 0 then error("Schedule:table: n must be an integer >= 0", 2) end
  if math.type(every) ~= "integer" or every < 1 then error("Schedule:table: every must be an integer >= 1", 2) end
  local rows = setmetatable({}, Rows)
  for t = 0, n - 1, every do
    local v = s(t)
    rows[#rows + 1] = { step = t, lr = v.lr, beta1 = v.beta1 }
  end
  return rows
end

function Schedule.__tostring(s)
  local keys = {}
  for k in pairs(s.options) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = s.options[k]
    if type(v) == "table" then v = "{" .. table.concat(v, ", ") .. "}" end
    parts[#parts + 1] = ("%s=%s"):format(k, tostring(v))
  end
  return ("faceid.schedule.%s{%s}"):format(s.name, table.concat(parts, ", "))
end

--- constant{lr, beta1}
function M.constant(opts)
  local o = options("constant", opts, {
    lr = { required = true, check = nonneg }, beta1 = { check = beta },
  })
  return new("constant", o, function() return o.lr, o.beta1 end)
end

--- step{lr, gamma = 0.1, step_size = n | milestones = {t1, t2, ...}, beta1}
function M.step(opts)
  local o = options("step", opts, {
    lr = { required = true, check = nonneg }, gamma = { default = 0.1, check = nonneg },
    step_size = { check = count }, milestones = { check = function(v)
      if type(v) ~= "table" or #v == 0 then return false, "must be a non-empty list of steps" end
      for i, m in ipairs(v) do
        if math.type(m) ~= "integer" or m < 1 or (i > 1 and m <= v[i - 1]) then
          return false, "must list increasing integers >= 1"
        end
      end
      return true
    end }, beta1 = { check = beta },
  })
  if (o.step_size == nil) == (o.milestones == nil) then
    fail("step", "give exactly one of 'step_size' and 'milestones'", 3)
  end
  return new("step", o, function(t)
    local k = 0
    if o.step_size then
      k = t // o.step_size
    else
      for _, m in ipairs(o.milestones) do
        if t >= m then k = k + 1 end
      end
    end
    return o.lr * o.gamma ^ k, o.beta1
  end)
end

--- cosine{lr, steps, min_lr = 0, warmup = 0, warmup_lr = 0, beta1}
function M.cosine(opts)
  local o = options("cosine", opts, {
    lr = { required = true, check = nonneg }, steps = { required = true, check = count },
    min_lr = { default = 0, check = nonneg }, warmup = { default = 0, check = count0 },
    warmup_lr = { default = 0, check = nonneg }, beta1 = { check = beta },
  })
  if o.warmup >= o.steps then fail("cosine", "'warmup' must be smaller than 'steps'", 3) end
  return new("cosine", o, function(t)
    if t < o.warmup then
      return o.warmup_lr + (o.lr - o.warmup_lr) * t / o.warmup, o.beta1
    elseif t >= o.steps then
      return o.min_lr, o.beta1
    end
    local f = (t - o.warmup) / (o.steps - o.warmup)
    return o.min_lr + (o.lr - o.min_lr) * (1 + math.cos(math.pi * f)) / 2, o.beta1
  end)
end

-- beta1 options that come as a pair (both or neither)
local function beta1_pair(fname, o)
  if (o.base_beta1 == nil) ~= (o.max_beta1 == nil) then
    fail(fname, "give both 'base_beta1' and 'max_beta1' or neither", 4)
  end
  if o.base_beta1 and o.base_beta1 > o.max_beta1 then
    fail(fname, "'base_beta1' must not exceed 'max_beta1'", 4)
  end
end

--- triangular{base_lr, max_lr, step_size, mode = "triangular", gamma = 1, base_beta1, max_beta1}
function M.triangular(opts)
  local o = options("triangular", opts, {
    base_lr = { required = true, check = nonneg }, max_lr = { required = true, check = nonneg },
    step_size = { required = true, check = count },
    mode = { default = "triangular", check = one_of("triangular", "triangular2", "exp_range") },
    gamma = { default = 1.0, check = positive },
    base_beta1 = { check = beta }, max_beta1 = { check = beta },
  })
  beta1_pair("triangular", o)
  return new("triangular", o, function(t)
    local cycle = math.floor(1 + t / (2 * o.step_size))
    local x = math.abs(t / o.step_size - 2 * cycle + 1)
    local scale = 1
    if o.mode == "triangular2" then
      scale = 1 / 2 ^ (cycle - 1)
    elseif o.mode == "exp_range" then
      scale = o.gamma ^ t
    end
    local h = math.max(0, 1 - x) * scale
    local lr = o.base_lr + (o.max_lr - o.base_lr) * h
    if o.max_beta1 then return lr, o.max_beta1 - (o.max_beta1 - o.base_beta1) * h end
    return lr
  end)
end

--- one_cycle{max_lr, steps, pct_start = 0.3, div_factor = 25, final_div_factor = 1e4,
-- anneal = "cos", base_beta1 = 0.85, max_beta1 = 0.95, cycle_beta1 = true}
function M.one_cycle(opts)
  local o = options("one_cycle", opts, {
    max_lr = { required = true, check = nonneg }, steps = { required = true, check = count },
    pct_start = { default = 0.3, check = function(v)
      if finite(v) and v > 0 and v < 1 then return true end
      return false, "must be a number in (0, 1)"
    end },
    div_factor = { default = 25, check = positive }, final_div_factor = { default = 1e4, check = positive },
    anneal = { default = "cos", check = one_of("cos", "linear") },
    base_beta1 = { default = 0.85, check = beta }, max_beta1 = { default = 0.95, check = beta },
    cycle_beta1 = { default = true, check = boolean },
  })
  beta1_pair("one_cycle", o)
  local initial = o.max_lr / o.div_factor
  local final = initial / o.final_div_factor
  -- torch's phase boundaries: the peak at pct_start * steps - 1, the end at steps - 1
  local peak, last = o.pct_start * o.steps - 1, o.steps - 1
  if not (peak > 0 and last > peak) then
    fail("one_cycle", "'steps' is too small for 'pct_start': the warm-up or the decay would be empty", 3)
  end
  local function anneal(a, b, pct)
    if o.anneal == "linear" then return (b - a) * pct + a end
    return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)
  end
  return new("one_cycle", o, function(t)
    local lr, b1
    if t <= peak then
      local pct = t / peak
      lr, b1 = anneal(initial, o.max_lr, pct), anneal(o.max_beta1, o.base_beta1, pct)
    else
      local pct = math.min(1, (t - peak) / (last - peak))
      lr, b1 = anneal(o.max_lr, final, pct), anneal(o.base_beta1, o.max_beta1, pct)
    end
    if o.cycle_beta1 then return lr, b1 end
    return lr
  end)
end

--- seed{steps_per_epoch, base_lr = 1e-4, max_lr = 3e-4, base_beta1 = 0.85,
-- max_beta1 = 0.95, half_cycle = 2, decay_epochs = 1, decay = 0.15}
--
-- The original FaceID training's schedule (Adam, fast.ai "super-convergence"
-- style), as a closed form. With S = half_cycle * steps_per_epoch (2 epochs),
-- H = decay_epochs * steps_per_epoch (1 epoch) and a period P = 2S + H:
--   period p = floor(t / P), u = t - p P, its base b = base_lr (1 - decay)^p
--   0 <= u <= S      lr rises linearly from b to max_lr while beta1 falls
--                    from max_beta1 to base_beta1
--   S <= u <= 2S     both go back: lr to b, beta1 to max_beta1
--   2S <= u < P      lr falls linearly from b to b (1 - decay), the next
--                    period's base; beta1 stays at max_beta1
-- so the peak stays at max_lr while the base drops 15 % each period: over
-- 50 epochs (10 periods) the base goes from 1e-4 to about 2e-5. The
-- original generator stepped by accumulated increments (and started at
-- base_lr, max_beta1 before its first update, which is s(0) here); this
-- computes each value directly, so there is no drift and any step can be
-- asked for.
function M.seed(opts)
  local o = options("seed", opts, {
    steps_per_epoch = { required = true, check = count },
    base_lr = { default = 1e-4, check = nonneg }, max_lr = { default = 3e-4, check = nonneg },
    base_beta1 = { default = 0.85, check = beta }, max_beta1 = { default = 0.95, check = beta },
    half_cycle = { default = 2, check = count }, decay_epochs = { default = 1, check = count },
    decay = { default = 0.15, check = function(v)
      if finite(v) and v >= 0 and v < 1 then return true end
      return false, "must be a number in [0, 1)"
    end },
  })
  beta1_pair("seed", o)
  if o.base_lr > o.max_lr then fail("seed", "'base_lr' must not exceed 'max_lr'", 3) end
  local S = o.half_cycle * o.steps_per_epoch
  local H = o.decay_epochs * o.steps_per_epoch
  local P = 2 * S + H
  return new("seed", o, function(t)
    local p = t // P
    local u = t - p * P
    local b = o.base_lr * (1 - o.decay) ^ p
    if u <= 2 * S then
      local f = (u <= S) and u / S or (2 * S - u) / S
      return b + (o.max_lr - b) * f, o.max_beta1 - (o.max_beta1 - o.base_beta1) * f
    end
    return b - b * o.decay * (u - 2 * S) / H, o.max_beta1
  end)
end

return M
