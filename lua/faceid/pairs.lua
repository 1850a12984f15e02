--- faceid.pairs: pairs of face images for the contrastive loss.
-- A pair is two images of a data set (faceid.data) and a label: 0 when
-- they show the same person, 1 when they show two people.
--
-- Training pairs are re-drawn every epoch (faceid.pairs.epoch): each
-- anchor image X_i of a person with at least two images gets a positive,
-- another image of the same person (label 0), and negatives, images of
-- other people (label 1); persons with a single image appear only as
-- negatives. Evaluation pairs are drawn once (faceid.pairs.fixed) and kept
-- in a text file in the LFW pairs format (save/load), so that results stay
-- comparable. All randomness comes from a faceid.Generator or a seed.
--
-- A pairs list `list` is an object:
--   #list                   number of pairs
--   list:get(k)             a, b, label, fold of pair k (indices into list.ds)
--   list.ds                 the data set the indices refer to
--   list.a, list.b, list.label, list.fold   the columns (fold may be nil)
--   list.folds              number of folds (1 when there are none)
--   list:counts()           number of same and of different pairs
--   list:fold_indices(f)    the pairs of fold f, as a list of k
local core = require("faceid.core")

local M = {}

-- option tables: unknown keys are errors (shared with faceid.data)
local check_opts = require("faceid.data")._check_opts

local function check_ds(fname, ds)
  if type(ds) ~= "table" or type(ds.images_of) ~= "function" or type(ds.people) ~= "function" then
    error(("%s: expected a data set (faceid.data), got %s"):format(fname, type(ds)), 3)
  end
end

local function check_gen(fname, gen)
  local mt = type(gen) == "userdata" and getmetatable(gen)
  if type(mt) ~= "table" or mt.__name ~= "faceid.Generator" then
    error(("%s: expected a faceid.Generator, got %s"):format(fname, type(gen)), 3)
  end
end

-- ---- the list object ----------------------------------------------------------

local List = {}
List.__index = List

function List:__len()
  return #self.a
end

--- a, b, label, fold of pair k.
function List:get(k)
  if math.type(k) ~= "integer" or k < 1 or k > #self.a then
    error(("PairList:get: pair index must be an integer in 1..%d, got %s"):format(#self.a, tostring(k)), 2)
  end
  return self.a[k], self.b[k], self.label[k], self.fold and self.fold[k] or 1
end

--- Number of same-person (label 0) and different-person (label 1) pairs.
function List:counts()
  local same = 0
  for _, l in ipairs(self.label) do
    if l == 0 then
      same = same + 1
    end
  end
  return same, #self.label - same
end

--- The indices k of the pairs in fold f.
function List:fold_indices(f)
  local out = {}
  for k = 1, #self.a do
    if (self.fold and self.fold[k] or 1) == f then
      out[#out + 1] = k
    end
  end
  return out
end

function List:__tostring()
  local s, d = self:counts()
  return ("faceid.pairs(%d pairs: %d same, %d different, %d fold%s)"):format(
    #self.a, s, d, self.folds, self.folds == 1 and "" or "s")
end

--- Make a pairs list from its columns (validated).
-- @param ds the data set
-- @param a, b lists of image indices
-- @param label list of 0 (same person) / 1 (different)
-- @param fold optional list of fold numbers 1..F
function M.new(ds, a, b, label, fold)
  local fname = "faceid.pairs.new"
  check_ds(fname, ds)
  if type(a) ~= "table" or type(b) ~= "table" or type(label) ~= "table" then
    error(("%s: a, b and label must be lists"):format(fname), 2)
  end
  local n, size = #a, #ds
  if #b ~= n or #label ~= n or (fold and #fold ~= n) then
    error(("%s: columns differ in length (a %d, b %d, label %d%s)"):format(fname, n, #b, #label,
      fold and (", fold " .. #fold) or ""), 2)
  end
  local folds = 1
  for k = 1, n do
    local i, j, l = a[k], b[k], label[k]
    if math.type(i) ~= "integer" or math.type(j) ~= "integer" or i < 1 or j < 1 or i > size or j > size then
      error(("%s: pair %d: image indices must be integers in 1..%d, got %s, %s"):format(
        fname, k, size, tostring(i), tostring(j)), 2)
    end
    if l ~= 0 and l ~= 1 then
      error(("%s: pair %d: label must be 0 or 1, got %s"):format(fname, k, tostring(l)), 2)
    end
    if fold then
      local f = fold[k]
      if math.type(f) ~= "integer" or f < 1 then
        error(("%s: pair %d: fold must be an integer >= 1, got %s"):format(fname, k, tostring(f)), 2)
      end
      folds = math.max(folds, f)
    end
  end
  return setmetatable({ ds = ds, a = a, b = b, label = label, fold = fold, folds = folds }, List)
end

-- ---- drawing ---------------------------------------------------------------------

-- the usable images of ds by person: groups = { {id, images, first, last} }
-- in people order (bad images left out, persons without images dropped),
-- flat = all their images, person by person (group g owns flat[first..last])
local function usable(ds)
  local groups, flat = {}, {}
  for _, id in ipairs(ds:people()) do
    local imgs = {}
    for _, i in ipairs(ds:images_of(id)) do
      if not ds:bad(i) then
        imgs[#imgs + 1] = i
      end
    end
    if #imgs > 0 then
      local g = { id = id, images = imgs, first = #flat + 1 }
      table.move(imgs, 1, #imgs, #flat + 1, flat)
      g.last = #flat
      groups[#groups + 1] = g
    end
  end
  return groups, flat
end

-- an image of another person than group g's, uniform over those images
local function draw_negative(gen, flat, g)
  local cnt = g.last - g.first + 1
  local r = gen:random(#flat - cnt)
  if r >= g.first then
    r = r + cnt
  end
  return flat[r]
end

-- another image of group g than its p-th, uniform
local function draw_positive(gen, g, p)
  local r = gen:random(#g.images - 1)
  if r >= p then
    r = r + 1
  end
  return g.images[r]
end

local function ratio_of(fname, r)
  if r == nil then
    return 1
  end
  if type(r) == "table" then
    local s, d = r[1], r[2]
    if type(s) ~= "number" or type(d) ~= "number" or s <= 0 or d < 0 or s ~= s or d ~= d or s == math.huge
      or d == math.huge then
      error(("%s: ratio {same, different} needs same > 0 and different >= 0, finite"):format(fname), 3)
    end
    return d / s
  end
  if type(r) ~= "number" or r < 0 or r ~= r or r == math.huge then
    error(("%s: ratio (different pairs per same pair) must be a finite number >= 0, got %s")
      :format(fname, tostring(r)), 3)
  end
  return r
end

--- The pairs of one training epoch, freshly drawn.
-- Every usable image of a person with two or more usable images is an
-- anchor; in a random order, each anchor gets one positive (another image
-- of its person, uniform; label 0), and anchors in the same order, cycled
-- as needed, get ratio negatives per positive (an image of any other
-- person, uniform over images; label 1). The anchor is the first image of
-- each pair. The pairs are then shuffled together. Images marked bad
-- (ds:mark_bad) are never drawn.
-- Draw order, for reproducibility: randperm(#anchors), per positive one
-- random(), per negative one random(), then randperm(#pairs).
-- @param ds data set
-- @param gen faceid.Generator (advanced)
-- @param opts optional: `ratio` (different pairs per same pair, default 1;
--   or {same, different}, e.g. {1, 3}), `max_pairs` (cap on the total,
--   same and different in the ratio)
-- @return a pairs list
function M.epoch(ds, gen, opts)
  local fname = "faceid.pairs.epoch"
  check_ds(fname, ds)
  check_gen(fname, gen)
  opts = check_opts(fname, opts, { ratio = true, max_pairs = true })
  local ratio = ratio_of(fname, opts.ratio)
  local max_pairs = opts.max_pairs
  if max_pairs ~= nil and (math.type(max_pairs) ~= "integer" or max_pairs < 1) then
    error(("%s: max_pairs must be an integer >= 1, got %s"):format(fname, tostring(max_pairs)), 2)
  end
  local groups, flat = usable(ds)
  local anchors = {}
  for _, g in ipairs(groups) do
    if #g.images >= 2 then
      for p, i in ipairs(g.images) do
        anchors[#anchors + 1] = { i = i, g = g, p = p }
      end
    end
  end
  if #anchors == 0 then
    error(("%s: no person has two usable images, so there is no same-person pair (%d people)")
      :format(fname, #groups), 2)
  end
  local n_same = #anchors
  if max_pairs then
    n_same = math.min(n_same, math.floor(max_pairs / (1 + ratio)))
    if n_same < 1 then
      error(("%s: max_pairs %d leaves no room for one same pair at ratio %s"):format(fname, max_pairs,
        tostring(ratio)), 2)
    end
  end
  local n_diff = math.floor(n_same * ratio + 0.5)
  if max_pairs then
    n_diff = math.min(n_diff, max_pairs - n_same)
  end
  if n_diff > 0 and #groups < 2 then
    error(("%s: different-person pairs need two people, the data set has %d"):format(fname, #groups), 2)
  end
  local perm = gen:randperm(#anchors)
  local a, b, label = {}, {}, {}
  for k = 1, n_same do
    local anc = anchors[perm[k]]
    a[k], b[k], label[k] = anc.i, draw_positive(gen, anc.g, anc.p), 0
  end
  for k = 1, n_diff do
    local anc = anchors[perm[(k - 1) % #anchors + 1]]
    local m = n_same + k
    a[m], b[m], label[m] = anc.i, draw_negative(gen, flat, anc.g), 1
  end
  local order = gen:randperm(n_same + n_diff)
  local A, B, L = {}, {}, {}
  for k, o in ipairs(order) do
    A[k], B[k], L[k] = a[o], b[o], label[o]
  end
  return M.new(ds, A, B, L)
end

-- n distinct unordered pairs from `capacity` possible ones: by rejection
-- when they are plenty, else by enumerating them all (`each` calls its
-- argument with every candidate pair) and shuffling
local function distinct(gen, n, capacity, draw, each)
  local out, seen = {}, {}
  local function key(i, j)
    return i < j and (i .. "," .. j) or (j .. "," .. i)
  end
  if n * 2 <= capacity then
    local tries = 0
    while #out < n do
      tries = tries + 1
      if tries > 100 * n + 1000 then
        error("faceid.pairs.fixed: could not draw distinct pairs (internal)", 0)
      end
      local i, j = draw()
      local k = key(i, j)
      if not seen[k] then
        seen[k] = true
        out[#out + 1] = { i, j }
      end
    end
    return out
  end
  local all = {}
  each(function(i, j)
    all[#all + 1] = { i, j }
  end)
  for k = 1, n do
    local r = gen:random(k, #all)
    all[k], all[r] = all[r], all[k]
    out[k] = all[k]
  end
  return out
end

--- The number of distinct same-person pairs of ds: sum of k(k-1)/2 over
-- its people, k their images (the most n_same M.fixed can draw, folds = 1).
function M.same_count(ds)
  check_ds("faceid.pairs.same_count", ds)
  local n = 0
  for _, person in ipairs(ds:people()) do
    local k = #ds:images_of(person)
    n = n + k * (k - 1) // 2
  end
  return n
end

--- A fixed list of evaluation pairs, drawn once from a seed: distinct
-- pairs (no pair twice, in either order), no image paired with itself.
-- With folds > 1 the persons are shuffled and dealt to the folds in turn,
-- and each fold draws n_same / folds and n_diff / folds pairs among its
-- own persons (no person in two folds, as in LFW's 10 folds). In the list,
-- each fold's same pairs come first, then its different pairs.
-- @param ds data set
-- @param seed integer
-- @param opts `n_same`, `n_diff` (integers >= 0; divisible by folds),
--   `folds` (default 1)
-- @return a pairs list; a Lua error when a fold has fewer distinct pairs
--   than asked
function M.fixed(ds, seed, opts)
  local fname = "faceid.pairs.fixed"
  check_ds(fname, ds)
  if math.type(seed) ~= "integer" then
    error(("%s: seed must be an integer, got %s"):format(fname, tostring(seed)), 2)
  end
  opts = check_opts(fname, opts, { n_same = true, n_diff = true, folds = true })
  local F = opts.folds or 1
  for _, k in ipairs({ "n_same", "n_diff" }) do
    local v = opts[k]
    if math.type(v) ~= "integer" or v < 0 then
      error(("%s: %s must be an integer >= 0, got %s"):format(fname, k, tostring(v)), 2)
    end
  end
  if math.type(F) ~= "integer" or F < 1 then
    error(("%s: folds must be an integer >= 1, got %s"):format(fname, tostring(F)), 2)
  end
  if opts.n_same % F ~= 0 or opts.n_diff % F ~= 0 then
    error(("%s: n_same (%d) and n_diff (%d) must be multiples of folds (%d)"):format(
      fname, opts.n_same, opts.n_diff, F), 2)
  end
  local gen = core.Generator(seed)
  local groups = usable(ds)
  local perm = gen:randperm(#groups)
  local fold_groups = {}
  for f = 1, F do
    fold_groups[f] = {}
  end
  for k, g in ipairs(perm) do
    local fg = fold_groups[(k - 1) % F + 1]
    fg[#fg + 1] = groups[g]
  end
  local a, b, label, fold = {}, {}, {}, {}
  local function add(list, l, f)
    for _, p in ipairs(list) do
      a[#a + 1], b[#b + 1], label[#label + 1], fold[#fold + 1] = p[1], p[2], l, f
    end
  end
  for f = 1, F do
    local fg = {}
    for _, g in ipairs(fold_groups[f]) do
      fg[#fg + 1] = g
    end
    table.sort(fg, function(x, y)
      return x.first < y.first
    end)
    local flat, anchors, cap_same, sq = {}, {}, 0, 0
    for _, g in ipairs(fg) do
      local m = #g.images
      local lg = { images = g.images, first = #flat + 1 }
      table.move(g.images, 1, m, #flat + 1, flat)
      lg.last = #flat
      if m >= 2 then
        for p in ipairs(g.images) do
          anchors[#anchors + 1] = { g = lg, p = p }
        end
      end
      cap_same = cap_same + m * (m - 1) // 2
      sq = sq + m * m
      g.local_ = lg
    end
    local cap_diff = (#flat * #flat - sq) // 2
    local ns, nd = opts.n_same // F, opts.n_diff // F
    local where = F > 1 and (" fold %d"):format(f) or ""
    if ns > cap_same then
      error(("%s:%s has only %d distinct same-person pairs, %d asked"):format(fname, where, cap_same, ns), 2)
    end
    if nd > cap_diff then
      error(("%s:%s has only %d distinct different-person pairs, %d asked"):format(fname, where, cap_diff, nd), 2)
    end
    local same = distinct(gen, ns, cap_same, function()
      local anc = anchors[gen:random(#anchors)]
      return anc.g.images[anc.p], draw_positive(gen, anc.g, anc.p)
    end, function(emit)
      for _, g in ipairs(fg) do
        for x = 1, #g.images do
          for y = x + 1, #g.images do
            emit(g.images[x], g.images[y])
          end
        end
      end
    end)
    local owner = {}
    for _, g in ipairs(fg) do
      for p = g.local_.first, g.local_.last do
        owner[p] = g.local_
      end
    end
    local diff = distinct(gen, nd, cap_diff, function()
      local p = gen:random(#flat)
      return flat[p], draw_negative(gen, flat, owner[p])
    end, function(emit)
      for p = 1, #flat do
        for q = owner[p].last + 1, #flat do
          emit(flat[p], flat[q])
        end
      end
    end)
    add(same, 0, f)
    add(diff, 1, f)
  end
  return M.new(ds, a, b, label, fold)
end

-- ---- the LFW pairs format ------------------------------------------------------------

--- Read a pairs file in the LFW format: a header ("N": one fold of N same
-- and N different pairs, as pairsDevTrain.txt; "F N": F folds of N and N,
-- as pairs.txt; "F S D": F folds of S same and D different pairs), then
-- per fold its same lines `name i j` and its different lines
-- `name1 i name2 j` (fields separated by blanks or tabs; blank lines and
-- CR are ignored).
-- @return { folds, n_same, n_diff, records = { {line, fold, same, name1,
--   n1, name2, n2} } }, or nil and "path:line: what is wrong"
function M.parse(path)
  if type(path) ~= "string" then
    error(("faceid.pairs.parse: path must be a string, got %s"):format(type(path)), 2)
  end
  local f, msg = io.open(path, "rb")
  if not f then
    return nil, ("cannot open '%s': %s"):format(path, msg)
  end
  local text = f:read("a")
  f:close()
  if not text then
    return nil, ("cannot read '%s'"):format(path)
  end
  local function fail(n, fmt, ...)
    return nil, ("%s:%d: " .. fmt):format(path, n, ...)
  end
  local out = { records = {} }
  local total, c, n = nil, 0, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    local fields = {}
    for w in line:gmatch("%S+") do
      fields[#fields + 1] = w
    end
    if #fields > 0 then
      if not total then
        local nums = {}
        for k, w in ipairs(fields) do
          nums[k] = w:match("^%d+$") and math.tointeger(tonumber(w))
        end
        if #fields == 1 and nums[1] then
          out.folds, out.n_same, out.n_diff = 1, nums[1], nums[1]
        elseif #fields == 2 and nums[1] and nums[2] then
          out.folds, out.n_same, out.n_diff = nums[1], nums[2], nums[2]
        elseif #fields == 3 and nums[1] and nums[2] and nums[3] then
          out.folds, out.n_same, out.n_diff = nums[1], nums[2], nums[3]
        else
          return fail(n, "expected a header 'count' or 'folds pairs_per_fold', got '%s'", line)
        end
        if out.folds < 1 then
          return fail(n, "the header announces %d folds", out.folds)
        end
        total = out.folds * (out.n_same + out.n_diff)
      else
        if c >= total then
          return fail(n, "more pair lines than the header announces (%d)", total)
        end
        local per = out.n_same + out.n_diff
        local fold, pos = c // per + 1, c % per
        local same = pos < out.n_same
        local r = { line = n, fold = fold, same = same }
        local want = same and "a same-person line 'name i j'" or "a different-person line 'name1 i name2 j'"
        if same and #fields == 3 then
          r.name1, r.n1, r.name2, r.n2 = fields[1], fields[2], fields[1], fields[3]
        elseif not same and #fields == 4 then
          r.name1, r.n1, r.name2, r.n2 = fields[1], fields[2], fields[3], fields[4]
        else
          return fail(n, "expected %s (fold %d, pair %d), got '%s'", want, fold, pos + 1, line)
        end
        for _, key in ipairs({ "n1", "n2" }) do
          local v = r[key]:match("^%d+$") and math.tointeger(tonumber(r[key]))
          if not v or v < 1 then
            return fail(n, "image number must be a positive integer, got '%s'", r[key])
          end
          r[key] = v
        end
        c = c + 1
        out.records[c] = r
      end
    end
  end
  if not total then
    return nil, ("%s: empty pairs file"):format(path)
  end
  if c < total then
    return nil, ("%s:%d: the header announces %d pair lines, the file has %d"):format(path, n, total, c)
  end
  return out
end

--- Write a pairs list in the LFW format (see parse), through a temporary
-- file renamed over path. Persons are written by name (ds:identity) and
-- images by ds:number. The pairs are grouped by fold, same pairs first, in
-- list order within each group; every fold must hold as many same and as
-- many different pairs as the others.
-- @return true, or nil and a message
function M.save(list, path)
  local fname = "faceid.pairs.save"
  if getmetatable(list) ~= List then
    error(("%s: expected a pairs list, got %s"):format(fname, type(list)), 2)
  end
  if type(path) ~= "string" then
    error(("%s: path must be a string, got %s"):format(fname, type(path)), 2)
  end
  local ds, F = list.ds, list.folds
  local groups = {}
  for f = 1, F do
    groups[f] = { {}, {} }
  end
  for k = 1, #list do
    local _, _, l, f = list:get(k)
    local g = groups[f][l + 1]
    g[#g + 1] = k
  end
  local S, D = #groups[1][1], #groups[1][2]
  for f = 2, F do
    if #groups[f][1] ~= S or #groups[f][2] ~= D then
      error(("%s: fold %d has %d same and %d different pairs, fold 1 has %d and %d"):format(
        fname, f, #groups[f][1], #groups[f][2], S, D), 2)
    end
  end
  local lines = {}
  if F == 1 and S == D then
    lines[1] = tostring(S)
  elseif S == D then
    lines[1] = ("%d\t%d"):format(F, S)
  else
    lines[1] = ("%d\t%d\t%d"):format(F, S, D)
  end
  local function name(i)
    local id = ds:identity(i)
    if id:find("%s") or id == "" then
      error(("%s: person '%s' has blanks in its name, which the format cannot hold"):format(fname, id), 3)
    end
    return id
  end
  for f = 1, F do
    for _, k in ipairs(groups[f][1]) do
      local a, b = list.a[k], list.b[k]
      lines[#lines + 1] = ("%s\t%d\t%d"):format(name(a), ds:number(a), ds:number(b))
      if ds:identity(b) ~= ds:identity(a) then
        error(("%s: pair %d has label 0 but shows two people"):format(fname, k), 2)
      end
    end
    for _, k in ipairs(groups[f][2]) do
      local a, b = list.a[k], list.b[k]
      lines[#lines + 1] = ("%s\t%d\t%s\t%d"):format(name(a), ds:number(a), name(b), ds:number(b))
    end
  end
  local tmp = path .. ".tmp"
  local fh, msg = io.open(tmp, "wb")
  if not fh then
    return nil, ("%s: %s"):format(fname, msg)
  end
  local ok, wmsg = fh:write(table.concat(lines, "\n"), "\n")
  local closed, cmsg = fh:close()
  if not ok or not closed then
    os.remove(tmp)
    return nil, ("%s: cannot write '%s': %s"):format(fname, tmp, tostring(wmsg or cmsg))
  end
  local renamed, rmsg = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    return nil, ("%s: %s"):format(fname, rmsg)
  end
  return true
end

--- Read a pairs file written by save (or any LFW-format file) against a
-- data set: each (person, number) is looked up with ds:find.
-- @return a pairs list with folds, or nil and "path:line: message" for a
--   malformed line or an image the data set does not have
function M.load(path, ds)
  local fname = "faceid.pairs.load"
  check_ds(fname, ds)
  local file, msg = M.parse(path)
  if not file then
    return nil, fname .. ": " .. msg
  end
  local a, b, label, fold = {}, {}, {}, {}
  for k, r in ipairs(file.records) do
    local i, j = ds:find(r.name1, r.n1), ds:find(r.name2, r.n2)
    if not i or not j then
      local name, num = r.name1, r.n1
      if i then
        name, num = r.name2, r.n2
      end
      return nil, ("%s: %s:%d: the data set has no image %d of '%s'"):format(fname, path, r.line, num, name)
    end
    a[k], b[k], label[k], fold[k] = i, j, r.same and 0 or 1, r.fold
  end
  local list = M.new(ds, a, b, label, fold)
  list.folds = file.folds
  return list
end

return M
