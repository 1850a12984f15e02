--- faceid.metrics: face-verification metrics from pair distances.
--
-- Every function takes `dist` (distances) and `labels` (0 = same person,
-- 1 = different people) as Lua lists or 1-D tensors of equal length. A pair
-- is predicted "same" when its distance is below the threshold (d < t).
-- "Positive" means same: TAR (true accept rate, = TPR) is the fraction of
-- same pairs accepted, FAR (false accept rate, = FPR) the fraction of
-- different pairs accepted, FRR = 1 - TAR.
--
--   local m = faceid.metrics
--   m.accuracy(dist, labels [, threshold = 1.0])  -> acc, {tp=, fp=, tn=, fn=}
--   m.best_threshold(dist, labels)                -> threshold, accuracy
--   m.roc(dist, labels)                           -> {fpr=, tpr=, thresholds=}, auc
--   m.auc(dist, labels)                           -> area under the ROC curve
--   m.eer(dist, labels)                           -> equal error rate, threshold
--   m.tar_at_far(dist, labels [, far = 1e-3])     -> tar, threshold, achieved far
--   m.mean_distances(dist, labels)                -> mean same, mean different
--   m.kfold(dist, labels [, {folds = 10}])        -> {mean=, std=, accuracies=, thresholds=}
--   m.evaluate(dist, labels [, opts])             -> all of the above in one table
--
-- Operating points. Sorting the distinct distances v1 < ... < vk, the
-- thresholds that give different decisions are c0 = v1 (nothing accepted),
-- ci = (vi + vi+1) / 2 (accepts exactly the pairs with d <= vi) and
-- ck = vk + 1 (everything accepted). Pairs with equal distances are always
-- decided together, so ties move the ROC curve diagonally and the AUC
-- counts a tied same/different couple as one half (the Mann-Whitney
-- statistic).
local core = require("faceid.core")

local M = {}

local function fail(fname, msg)
  error(("faceid.metrics.%s: %s"):format(fname, msg), 0)
end

local function list_of(fname, what, x)
  if core.is_tensor(x) then
    if x:dim() ~= 1 then fail(fname, ("%s must be a 1-D tensor, got %d dimensions"):format(what, x:dim())) end
    return x:totable()
  elseif type(x) == "table" then
    return x
  end
  fail(fname, ("%s must be a list or a 1-D tensor, got %s"):format(what, type(x)))
end

-- checked copies of dist and labels: numbers, finite distances, 0/1 labels
local function inputs(fname, dist, labels)
  local d, y = list_of(fname, "distances", dist), list_of(fname, "labels", labels)
  local n = #d
  if n == 0 then fail(fname, "no pairs") end
  if #y ~= n then fail(fname, ("%d distances but %d labels"):format(n, #y)) end
  local dd, yy = {}, {}
  for i = 1, n do
    local v, l = d[i], y[i]
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      fail(fname, ("distance %d is %s; distances must be finite numbers"):format(i, tostring(v)))
    end
    if l ~= 0 and l ~= 1 then
      fail(fname, ("label %d is %s; labels must be 0 (same) or 1 (different)"):format(i, tostring(l)))
    end
    dd[i], yy[i] = v, math.tointeger(l)
  end
  return dd, yy, n
end

-- the operating points: thresholds c[0..k] and, at each, the numbers of
-- same and different pairs accepted (d < c[i]); nsame, ndiff in total
local function sweep(d, y, n)
  local idx = {}
  for i = 1, n do idx[i] = i end
  table.sort(idx, function(a, b) return d[a] < d[b] end)
  local c, acc_same, acc_diff = {}, {}, {}
  local nsame, ndiff = 0, 0
  for i = 1, n do
    if y[i] == 0 then nsame = nsame + 1 else ndiff = ndiff + 1 end
  end
  c[0], acc_same[0], acc_diff[0] = d[idx[1]], 0, 0
  local k, s, f, i = 0, 0, 0, 1
  while i <= n do
    local v = d[idx[i]]
    while i <= n and d[idx[i]] == v do
      if y[idx[i]] == 0 then s = s + 1 else f = f + 1 end
      i = i + 1
    end
    k = k + 1
    acc_same[k], acc_diff[k] = s, f
    if i <= n then
      local nxt = d[idx[i]]
      local mid = (v + nxt) / 2
      -- adjacent doubles: the midpoint may round down onto v
      if mid <= v then mid = nxt end
      c[k] = mid
    else
      c[k] = v + 1
    end
  end
  return { c = c, same = acc_same, diff = acc_diff, k = k, nsame = nsame, ndiff = ndiff, n = n }
end

local function need_both(fname, sw)
  if sw.nsame == 0 or sw.ndiff == 0 then
    fail(fname, ("needs both same and different pairs (got %d same, %d different)"):format(sw.nsame, sw.ndiff))
  end
end

--- accuracy(dist, labels [, threshold = 1.0]) -> fraction of pairs decided
-- right, and the counts {tp = same accepted, fn = same rejected,
-- fp = different accepted, tn = different rejected}
function M.accuracy(dist, labels, threshold)
  threshold = threshold == nil and 1.0 or threshold
  if type(threshold) ~= "number" or threshold ~= threshold then
    error("faceid.metrics.accuracy: threshold must be a number", 2)
  end
  local d, y, n = inputs("accuracy", dist, labels)
  local r = { tp = 0, fp = 0, tn = 0, fn = 0 }
  for i = 1, n do
    local accept = d[i] < threshold
    if y[i] == 0 then
      if accept then r.tp = r.tp + 1 else r.fn = r.fn + 1 end
    else
      if accept then r.fp = r.fp + 1 else r.tn = r.tn + 1 end
    end
  end
  return (r.tp + r.tn) / n, r
end

local function best_of(sw)
  local best, bi = -1, 0
  for i = 0, sw.k do
    local right = sw.same[i] + (sw.ndiff - sw.diff[i])
    if right > best then best, bi = right, i end
  end
  return sw.c[bi], best / sw.n
end

--- best_threshold(dist, labels) -> threshold, accuracy: the operating point
-- of highest accuracy (the smallest such threshold when several tie)
function M.best_threshold(dist, labels)
  local d, y, n = inputs("best_threshold", dist, labels)
  return best_of(sweep(d, y, n))
end

local function roc_of(sw)
  local fpr, tpr, th = {}, {}, {}
  for i = 0, sw.k do
    fpr[i + 1] = sw.diff[i] / sw.ndiff
    tpr[i + 1] = sw.same[i] / sw.nsame
    th[i + 1] = sw.c[i]
  end
  local auc = 0
  for i = 2, #fpr do
    auc = auc + (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2
  end
  return { fpr = fpr, tpr = tpr, thresholds = th }, auc
end

--- roc(dist, labels) -> {fpr = {...}, tpr = {...}, thresholds = {...}}, auc
-- One point per operating point, from (0, 0) (threshold c0) to (1, 1)
-- (threshold ck); the AUC is the trapezoidal area under those points.
function M.roc(dist, labels)
  local d, y, n = inputs("roc", dist, labels)
  local sw = sweep(d, y, n)
  need_both("roc", sw)
  return roc_of(sw)
end

--- auc(dist, labels) -> area under the ROC curve: the probability that a
-- same pair is closer than a different one, ties counting one half
function M.auc(dist, labels)
  local d, y, n = inputs("auc", dist, labels)
  local sw = sweep(d, y, n)
  need_both("auc", sw)
  local _, auc = roc_of(sw)
  return auc
end

local function eer_of(sw)
  -- FAR rises from 0 and FRR falls from 1 along the operating points: find
  -- the first point where FAR >= FRR and interpolate linearly from the one
  -- before (both rates, and the threshold)
  local function gap(i) return sw.diff[i] / sw.ndiff - (1 - sw.same[i] / sw.nsame) end
  for i = 1, sw.k do
    local g1 = gap(i)
    if g1 >= 0 then
      local g0 = gap(i - 1)
      local s = -g0 / (g1 - g0)
      local far0, far1 = sw.diff[i - 1] / sw.ndiff, sw.diff[i] / sw.ndiff
      return far0 + s * (far1 - far0), sw.c[i - 1] + s * (sw.c[i] - sw.c[i - 1])
    end
  end
  return 0.5, sw.c[sw.k] -- unreachable with both kinds of pairs present
end

--- eer(dist, labels) -> equal error rate, threshold: where FAR = FRR on the
-- ROC curve drawn as straight lines between operating points
function M.eer(dist, labels)
  local d, y, n = inputs("eer", dist, labels)
  local sw = sweep(d, y, n)
  need_both("eer", sw)
  return eer_of(sw)
end

local function tar_of(sw, far)
  local bi = 0
  for i = 0, sw.k do
    if sw.diff[i] / sw.ndiff <= far then bi = i end
  end
  return sw.same[bi] / sw.nsame, sw.c[bi], sw.diff[bi] / sw.ndiff
end

local function check_far(fname, far)
  if type(far) ~= "number" or not (far >= 0 and far <= 1) then
    error(("faceid.metrics.%s: far must be a number in [0, 1], got %s"):format(fname, tostring(far)), 3)
  end
end

--- tar_at_far(dist, labels [, far = 1e-3]) -> tar, threshold, achieved far:
-- the operating point accepting the most same pairs while accepting at most
-- a fraction `far` of the different ones (no interpolation: with fewer than
-- 1/far different pairs this means accepting none of them)
function M.tar_at_far(dist, labels, far)
  far = far == nil and 1e-3 or far
  check_far("tar_at_far", far)
  local d, y, n = inputs("tar_at_far", dist, labels)
  local sw = sweep(d, y, n)
  need_both("tar_at_far", sw)
  return tar_of(sw, far)
end

--- mean_distances(dist, labels) -> mean distance of same pairs, of
-- different pairs (nil for a kind with no pairs)
function M.mean_distances(dist, labels)
  local d, y, n = inputs("mean_distances", dist, labels)
  local sum, cnt = { [0] = 0, [1] = 0 }, { [0] = 0, [1] = 0 }
  for i = 1, n do
    sum[y[i]] = sum[y[i]] + d[i]
    cnt[y[i]] = cnt[y[i]] + 1
  end
  return cnt[0] > 0 and sum[0] / cnt[0] or nil, cnt[1] > 0 and sum[1] / cnt[1] or nil
end

-- fold number (1..k) of every pair, and k
local function fold_ids(fname, folds, n)
  if math.type(folds) == "integer" then
    if folds < 2 then fail(fname, "folds must be at least 2") end
    if folds > n then fail(fname, ("%d folds for %d pairs"):format(folds, n)) end
    local ids = {}
    for i = 1, n do ids[i] = (i - 1) * folds // n + 1 end
    return ids, folds
  end
  if type(folds) ~= "table" and not core.is_tensor(folds) then
    fail(fname, "folds must be an integer or a list of fold numbers, one per pair")
  end
  local ids = list_of(fname, "folds", folds)
  if #ids ~= n then fail(fname, ("%d fold numbers for %d pairs"):format(#ids, n)) end
  local k, seen = 0, {}
  for i = 1, n do
    local f = math.tointeger(ids[i])
    if not f or f < 1 then fail(fname, ("fold number %d is %s; folds are numbered from 1"):format(i, tostring(ids[i]))) end
    ids[i] = f
    seen[f] = true
    if f > k then k = f end
  end
  if k < 2 then fail(fname, "needs at least 2 folds") end
  for f = 1, k do
    if not seen[f] then fail(fname, ("fold %d is empty"):format(f)) end
  end
  return ids, k
end

local function kfold_of(fname, d, y, n, folds)
  local ids, k = fold_ids(fname, folds, n)
  local accs, ths = {}, {}
  for f = 1, k do
    local td, ty, vd, vy = {}, {}, {}, {}
    for i = 1, n do
      if ids[i] == f then
        vd[#vd + 1], vy[#vy + 1] = d[i], y[i]
      else
        td[#td + 1], ty[#ty + 1] = d[i], y[i]
      end
    end
    local th = best_of(sweep(td, ty, #td))
    local right = 0
    for i = 1, #vd do
      if (vd[i] < th) == (vy[i] == 0) then right = right + 1 end
    end
    accs[f], ths[f] = right / #vd, th
  end
  local mean = 0
  for f = 1, k do mean = mean + accs[f] end
  mean = mean / k
  local var = 0
  for f = 1, k do var = var + (accs[f] - mean) ^ 2 end
  return { mean = mean, std = math.sqrt(var / k), accuracies = accs, thresholds = ths, folds = k }
end

--- kfold(dist, labels [, {folds = 10}]) -> {mean =, std =, accuracies =,
-- thresholds =, folds = k}. The LFW protocol: for each fold, the best
-- threshold of the other folds is applied to it; mean and standard
-- deviation (population, as numpy's std) of the k accuracies. `folds` is a
-- count k (pairs assigned in order: the first n/k pairs to fold 1, ...) or
-- a list (or 1-D tensor) giving each pair's fold number 1..k.
function M.kfold(dist, labels, opts)
  local folds = 10
  if opts ~= nil then
    if type(opts) ~= "table" then error("faceid.metrics.kfold: options must be a table", 2) end
    for key in pairs(opts) do
      if key ~= "folds" then error(("faceid.metrics.kfold: unknown option '%s'"):format(tostring(key)), 2) end
    end
    if opts.folds ~= nil then folds = opts.folds end
  end
  local d, y, n = inputs("kfold", dist, labels)
  return kfold_of("kfold", d, y, n, folds)
end

--- evaluate(dist, labels [, {threshold = 1.0, far = 1e-3, folds = 10}]) ->
-- {n, same, different, accuracy (at threshold), threshold, best_threshold,
--  best_accuracy, auc, eer, eer_threshold, far, tar, tar_threshold,
--  mean_same, mean_different, kfold = {mean, std, ...}}; kfold is left out
-- when folds = false or there are fewer pairs than folds.
function M.evaluate(dist, labels, opts)
  local o = { threshold = 1.0, far = 1e-3, folds = 10 }
  if opts ~= nil then
    if type(opts) ~= "table" then error("faceid.metrics.evaluate: options must be a table", 2) end
    for key, v in pairs(opts) do
      if o[key] == nil then error(("faceid.metrics.evaluate: unknown option '%s'"):format(tostring(key)), 2) end
      o[key] = v
    end
  end
  check_far("evaluate", o.far)
  if type(o.threshold) ~= "number" then error("faceid.metrics.evaluate: threshold must be a number", 2) end
  local d, y, n = inputs("evaluate", dist, labels)
  local sw = sweep(d, y, n)
  need_both("evaluate", sw)
  local r = { n = n, same = sw.nsame, different = sw.ndiff, threshold = o.threshold, far = o.far }
  r.accuracy = M.accuracy(d, y, o.threshold)
  r.best_threshold, r.best_accuracy = best_of(sw)
  local _, auc = roc_of(sw)
  r.auc = auc
  r.eer, r.eer_threshold = eer_of(sw)
  r.tar, r.tar_threshold = tar_of(sw, o.far)
  r.mean_same, r.mean_different = M.mean_distances(d, y)
  local k = o.folds
  if k ~= false and not (math.type(k) == "integer" and k > n) then
    r.kfold = kfold_of("evaluate", d, y, n, k)
  end
  return r
end

return M
