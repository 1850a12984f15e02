--- faceid.augment: augmentation recipes and batches of image pairs.
-- Lua describes the recipe and draws its random parameters from a
-- faceid.Generator; the pixels are done in C (csrc/augment.c): one
-- bilinear affine warp takes the decoded face straight to the network
-- input (flip, rotation, scale and crop in a single pass), then colour
-- jitter, clip to [0, 1] and map to [-1, 1].
--
-- The recipe of the original (the defaults, see M.DEFAULTS):
--   per image   a horizontal flip with probability 0.5;
--   per pair    ONE rotation, uniform in +-0.2 rad, and ONE scale, uniform
--               in [0.9, 1.1], shared by both images;
--   per image   a random crop to the input size: the window sits at a
--               uniform position (tx, ty) along the room the image leaves;
--   per image   two of {contrast 0.5..1.5, brightness +-32/255,
--               saturation 0.5..1.5, hue +-0.1}: two different ops are
--               chosen uniformly (all 12 ordered choices alike) and each is
--               applied, in that order, with probability 0.5, its amount
--               uniform in its range (so 0, 1 or 2 ops run, with
--               probabilities 1/4, 1/2, 1/4);
--   then        clip to [0, 1], then x * 2 - 1.
-- The ops are defined in csrc/augment.h: contrast around each channel's
-- mean, saturation as a blend with the luma grey, hue as a rotation of the
-- YIQ chroma by 2 pi h (h in turns), all before one clip at the end.
--
-- Geometry: every source is first seen as resized so that its shorter side
-- is `resize` pixels (default: the larger side of the output). Images
-- larger than that are shrunk once with stb's filter when they are loaded
-- (no aliasing); smaller ones are enlarged by the warp itself. A zoom of
-- `scale` then shows OUT / scale source pixels in the window; outside the
-- image the border pixels are repeated (edge replicate). The evaluation
-- path has no randomness: zoom 1 and a centred window on whole pixels, i.e.
-- resize the shorter side to `resize` and take the central crop exactly as
-- faceid.image.center_crop does, then map to [-1, 1].
--
-- Grey images (AT&T, Yale) become three equal channels.
local core = require("faceid.core")
local image = require("faceid.image")
local prepared_cache = require("faceid.cache")

local M = {}

--- The original's recipe.
M.DEFAULTS = {
  flip = 0.5,               -- probability of a mirror, per image
  rotation = 0.2,           -- largest |angle| in radians, one angle per pair
  scale = { 0.9, 1.1 },     -- zoom range, one zoom per pair
  color = {
    pick = 2,               -- ops chosen per image (distinct, random order)
    p = 0.5,                -- probability that a chosen op is applied
    contrast = { 0.5, 1.5 },
    brightness = { -32 / 255, 32 / 255 },
    saturation = { 0.5, 1.5 },
    hue = { -0.1, 0.1 },
  },
}

local COLOR_OPS = { "contrast", "brightness", "saturation", "hue" }

local function check_opts(fname, opts, allowed, level)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    error(("%s: opts must be a table, got %s"):format(fname, type(opts)), level or 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), level or 3)
    end
  end
  return opts
end

-- the registered type name of a userdata ("faceid.Tensor", ...), or nil
local function type_name(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return type(mt) == "table" and mt.__name or nil
end

local function is_generator(g)
  return type_name(g) == "faceid.Generator"
end

-- ---- single-image kernels -------------------------------------------------------

--- Pack a CxHxW image in [0, 1] into 8-bit planes (a faceid.PackedImage:
-- :size() -> C, H, W; :unpack([channels]) -> Tensor; :nbytes()); a colour
-- image whose three planes are equal is kept as one plane unless
-- keep_channels. Values are clamped and rounded: round(x * 255).
-- @function pack
M.pack = core.augment_pack

--- Warp a source (CxHxW tensor or PackedImage) into a new C' x h x w
-- tensor: output pixel (u, v), centre (u + 0.5, v + 0.5), shows the source
-- point (cx, cy) + R(angle) (u + 0.5 - w/2, v + 0.5 - h/2) / zoom, in
-- continuous coordinates where source pixel (x, y) covers [x, x+1) x
-- [y, y+1), y down; flip mirrors the source first (x -> W - x). Bilinear,
-- edge replicate. With angle 0, zoom 1 and cx = left + w/2, cy = top + h/2
-- (whole left, top) it is exactly a crop.
-- @param src source image
-- @param h, w output size
-- @param params { flip = false, angle = 0, zoom = 1, cx = ..., cy = ... }
-- @param channels optional output channels: the source's (default) or 3
function M.warp(src, h, w, params, channels)
  local fname = "faceid.augment.warp"
  if math.type(h) ~= "integer" or math.type(w) ~= "integer" or h < 1 or w < 1 then
    error(("%s: output size must be integers >= 1, got %s x %s"):format(fname, tostring(h), tostring(w)), 2)
  end
  if channels ~= nil and channels ~= 1 and channels ~= 3 then
    error(("%s: channels must be 1 or 3, got %s"):format(fname, tostring(channels)), 2)
  end
  local c
  if type_name(src) == "faceid.PackedImage" then
    c = src:size()
  elseif type_name(src) == "faceid.Tensor" and src:dim() == 3 then
    c = src:size(1)
  end
  local out = core.empty(channels or c or 3, h, w)
  return core.augment_warp(out, src, params)
end

--- Colour op in place on a CxHxW tensor: kind "brightness" (x + d),
-- "contrast" ((x - m_c) f + m_c), "saturation" (blend with the luma grey;
-- C = 3), "hue" (YIQ chroma rotation by 2 pi h; C = 3). Nothing is clipped.
-- @function color
-- @return img
M.color = core.augment_color

for _, kind in ipairs(COLOR_OPS) do
  --- brightness(img, d), contrast(img, f), saturation(img, f), hue(img, h):
  -- a new tensor
  M[kind] = function(img, amount)
    return core.augment_color(img:clone(), kind, amount)
  end
end

--- The whole recipe for one image into `out` (CxHxW), or into image k of
-- `out` (NxCxHxW): params = { flip, angle, scale, tx, ty, resize, snap,
-- color = { {kind, amount}, ... }, clip = true, normalize = true }, as
-- documented in csrc/augment.h.
-- @function image
M.image = core.augment_image

-- ---- recipes ----------------------------------------------------------------------

local Recipe = {}
Recipe.__index = Recipe

local function range_of(fname, what, v, lo_min)
  if type(v) == "number" then
    v = { -v, v }
  end
  if type(v) ~= "table" or type(v[1]) ~= "number" or type(v[2]) ~= "number" or not (v[1] <= v[2])
    or v[1] == -math.huge or v[2] == math.huge or (lo_min and v[1] < lo_min) then
    error(("%s: %s must be a range {lo, hi} with lo <= hi%s"):format(fname, what,
      lo_min and (" and lo >= " .. lo_min) or ""), 4)
  end
  return { v[1], v[2] }
end

local function prob_of(fname, what, v)
  if type(v) ~= "number" or not (v >= 0 and v <= 1) then
    error(("%s: %s must be a probability in [0, 1], got %s"):format(fname, what, tostring(v)), 4)
  end
  return v
end

--- A recipe: M.DEFAULTS with the given fields replaced.
-- @param opts optional: `flip` (probability), `rotation` (largest |angle|,
--   or a range {lo, hi}), `scale` ({lo, hi}, lo > 0), `color` (false for
--   none, or a table with `pick`, `p` and a range per op; missing fields
--   take the defaults; an op whose range is false is never chosen)
function M.Recipe(opts)
  local fname = "faceid.augment.Recipe"
  if getmetatable(opts) == Recipe then
    return opts
  end
  opts = check_opts(fname, opts, { flip = true, rotation = true, scale = true, color = true })
  local d = M.DEFAULTS
  local r = setmetatable({}, Recipe)
  r.flip = prob_of(fname, "flip", opts.flip == nil and d.flip or opts.flip)
  r.rotation = range_of(fname, "rotation", opts.rotation == nil and d.rotation or opts.rotation)
  r.scale = range_of(fname, "scale", opts.scale or d.scale, 1e-6)
  if opts.color == false then
    r.color = false
  else
    local c = opts.color or {}
    check_opts(fname .. " color", c, { pick = true, p = true, contrast = true, brightness = true,
      saturation = true, hue = true }, 4)
    local rc = { ops = {}, range = {} }
    for _, kind in ipairs(COLOR_OPS) do
      local v = c[kind]
      if v == nil then
        v = d.color[kind]
      end
      if v ~= false then
        rc.range[kind] = range_of(fname, "color." .. kind, v)
        rc.ops[#rc.ops + 1] = kind
      end
    end
    rc.p = prob_of(fname, "color.p", c.p == nil and d.color.p or c.p)
    rc.pick = c.pick == nil and math.min(d.color.pick, #rc.ops) or c.pick
    if math.type(rc.pick) ~= "integer" or rc.pick < 0 or rc.pick > #rc.ops then
      error(("%s: color.pick must be an integer in 0..%d, got %s"):format(fname, #rc.ops, tostring(rc.pick)), 2)
    end
    r.color = rc
  end
  return r
end

-- colour ops of one image: `pick` distinct ops (partial Fisher-Yates),
-- each kept with probability p
local function draw_color(c, gen)
  local out = {}
  if not c or c.pick == 0 then
    return out
  end
  local ops = table.move(c.ops, 1, #c.ops, 1, {})
  for i = 1, c.pick do
    local j = gen:random(i, #ops)
    ops[i], ops[j] = ops[j], ops[i]
    if gen:uniform() < c.p then
      local rg = c.range[ops[i]]
      out[#out + 1] = { ops[i], gen:uniform(rg[1], rg[2]) }
    end
  end
  return out
end

local function draw_side(self, gen, angle, scale)
  local flip = gen:uniform() < self.flip
  local tx, ty = gen:uniform(), gen:uniform()
  return { flip = flip, angle = angle, scale = scale, tx = tx, ty = ty, color = draw_color(self.color, gen) }
end

--- The random parameters of one pair: two tables for augment.image (less
-- `resize`), sharing angle and scale.
-- Draw order: angle, scale, then per image: flip, tx, ty, colour.
function Recipe:draw_pair(gen)
  local angle = gen:uniform(self.rotation[1], self.rotation[2])
  local scale = gen:uniform(self.scale[1], self.scale[2])
  return draw_side(self, gen, angle, scale), draw_side(self, gen, angle, scale)
end

--- The random parameters of a single image (its own angle and scale).
function Recipe:draw_image(gen)
  local angle = gen:uniform(self.rotation[1], self.rotation[2])
  local scale = gen:uniform(self.scale[1], self.scale[2])
  return draw_side(self, gen, angle, scale)
end

--- The evaluation parameters: no randomness, centred crop on whole pixels.
function M.eval_params()
  return { flip = false, angle = 0, scale = 1, tx = 0.5, ty = 0.5, snap = true }
end

-- ---- the decoded-face cache ---------------------------------------------------------

local Cache = {}
Cache.__index = Cache

--- A cache of decoded, pre-resized faces as 8-bit planes, keyed by path
-- and resize target. Memory is C x H x W bytes per face (grey faces keep
-- one plane), e.g. 29 KB for an 89x109 CelebA face, 60 KB for a 178x218
-- one shrunk to 128x157, 5 KB for an AT&T face at 64x78; the whole
-- 10,000-image CelebA subset takes about 290 MB. When max_bytes would be
-- exceeded new faces are not kept (no eviction: with a cache smaller than
-- the data set, a fixed part of it stays cached instead of none).
-- A cache made once and kept between runs is faceid.cache (a prepared,
-- memory-mapped file holding the same bytes); a Loader takes either.
-- @param opts optional: `max_bytes` (default unlimited)
function M.Cache(opts)
  local fname = "faceid.augment.Cache"
  opts = check_opts(fname, opts, { max_bytes = true })
  local max = opts.max_bytes or math.huge
  if type(max) ~= "number" or max < 0 then
    error(("%s: max_bytes must be a number >= 0, got %s"):format(fname, tostring(max)), 2)
  end
  return setmetatable({ entries = {}, bytes = 0, count = 0, hits = 0, misses = 0, max_bytes = max }, Cache)
end

function Cache:get(key)
  local e = self.entries[key]
  if e then
    self.hits = self.hits + 1
  else
    self.misses = self.misses + 1
  end
  return e
end

function Cache:put(key, packed)
  if self.entries[key] then
    return true
  end
  local n = packed:nbytes()
  if self.bytes + n > self.max_bytes then
    return false
  end
  self.entries[key] = packed
  self.bytes = self.bytes + n
  self.count = self.count + 1
  return true
end

function Cache:clear()
  self.entries, self.bytes, self.count = {}, 0, 0
end

--- { faces, bytes, hits, misses }
function Cache:stats()
  return { faces = self.count, bytes = self.bytes, hits = self.hits, misses = self.misses }
end

function Cache:__tostring()
  return ("faceid.augment.Cache(%d faces, %.1f MB, %d hits, %d misses)"):format(
    self.count, self.bytes / 1e6, self.hits, self.misses)
end

-- ---- batches ------------------------------------------------------------------------

local Loader = {}
Loader.__index = Loader

--- A batch builder over a data set.
-- @param ds data set (faceid.data)
-- @param opts optional:
--   `size` output side (default 128) or {h, w};
--   `resize` shorter side the faces are brought to (default max(h, w));
--   `recipe` a Recipe or its options (default M.DEFAULTS);
--   `cache` true (default: a new unlimited Cache), false, a Cache to share,
--   or a prepared cache (faceid.cache.open, or the path of its file): the
--   faces come decoded from the mapped file and batches are bit-identical
--   to those of the in-memory Cache; it must have been prepared at the
--   loader's `resize` and is checked against ds (a stale one is an error);
--   `reuse` (default false): fill the same output tensors on every call
--   instead of allocating new ones (the previous batch is overwritten, so
--   use it before asking for the next; fresh memory costs a page fault per
--   4 KB on first touch, which is a good part of the time where faults are
--   slow)
function M.Loader(ds, opts)
  local fname = "faceid.augment.Loader"
  if type(ds) ~= "table" or type(ds.path) ~= "function" then
    error(("%s: expected a data set (faceid.data), got %s"):format(fname, type(ds)), 2)
  end
  opts = check_opts(fname, opts, { size = true, resize = true, recipe = true, cache = true, reuse = true })
  local h, w
  local size = opts.size or 128
  if type(size) == "table" then
    h, w = size[1], size[2]
  else
    h, w = size, size
  end
  if math.type(h) ~= "integer" or math.type(w) ~= "integer" or h < 1 or w < 1 then
    error(("%s: size must be an integer >= 1 or {h, w}, got %s"):format(fname, tostring(size)), 2)
  end
  local resize = opts.resize or math.max(h, w)
  if math.type(resize) ~= "integer" or resize < 1 then
    error(("%s: resize must be an integer >= 1, got %s"):format(fname, tostring(resize)), 2)
  end
  local cache, prepared, entries = opts.cache, nil, nil
  if type(cache) == "string" then
    local why
    prepared, why = prepared_cache.open(cache)
    if not prepared then
      error(("%s: %s"):format(fname, why), 2)
    end
    cache = false
  elseif prepared_cache.is_prepared(cache) then
    prepared, cache = cache, false
  elseif cache == nil or cache == true then
    cache = M.Cache()
  elseif cache ~= false and getmetatable(cache) ~= Cache then
    error(("%s: cache must be true, false, a faceid.augment.Cache or a prepared cache"):format(fname), 2)
  end
  if prepared then
    if prepared.resize ~= resize then
      error(("%s: the prepared cache '%s' holds faces brought to shorter side %d, this loader needs %d"
        .. " (prepare it with size = %d)"):format(fname, prepared.path, prepared.resize, resize, resize), 2)
    end
    local why
    entries, why = prepared:check(ds)
    if not entries then
      error(("%s: %s"):format(fname, why), 2)
    end
  end
  return setmetatable({
    ds = ds, height = h, width = w, resize = resize, recipe = M.Recipe(opts.recipe),
    cache = cache or nil, prepared = prepared, _entries = entries, decoded = 0, failed = 0,
    reuse = opts.reuse and true or false, _out = {},
  }, Loader)
end

-- the prepared cache's entry of image i, or nil, message for an image
-- that failed when the cache was prepared (marked bad, as a failed decode)
function Loader:_entry(i)
  local j = self._entries[i]
  local bad = self.ds:bad(i)
  if bad then
    return nil, bad
  end
  local why = self.prepared:reason(j)
  if why then
    self.failed = self.failed + 1
    self.ds:mark_bad(i, why)
    return nil, why
  end
  return j
end

--- The source of image i: its face decoded (3 channels), shrunk when its
-- shorter side exceeds `resize` (to exactly `resize`) and packed to 8
-- bits; from the cache when there (from the prepared cache, a copy). On
-- failure the image is marked bad in the data set (reported once) and
-- nil, message is returned.
function Loader:source(i)
  if self.prepared then
    local j, why = self:_entry(i)
    if not j then
      return nil, why
    end
    return self.prepared:packed(j)
  end
  local path = self.ds:path(i)
  local key = path .. "\0" .. self.resize
  local cache = self.cache
  local src = cache and cache:get(key)
  if src then
    return src
  end
  local bad = self.ds:bad(i)
  if bad then
    return nil, bad
  end
  local img, why = image.load(path, { channels = 3 })
  if not img then
    self.failed = self.failed + 1
    self.ds:mark_bad(i, why)
    return nil, why
  end
  self.decoded = self.decoded + 1
  local _, H, W = img:size(1), img:size(2), img:size(3)
  local short = math.min(H, W)
  if short > self.resize then
    local nh = H == short and self.resize or math.max(1, math.floor(H * self.resize / short + 0.5))
    local nw = W == short and self.resize or math.max(1, math.floor(W * self.resize / short + 0.5))
    img = image.resize(img, nh, nw)
  end
  src = core.augment_pack(img)
  img:close()
  if cache then
    cache:put(key, src)
  end
  return src
end

-- a new output tensor, or with reuse the one kept under `name` when its
-- size still fits
function Loader:_buffer(name, n)
  local t = self._out[name]
  if t and t:size(1) == n then
    return t
  end
  if name == "labels" then
    t = core.empty(n)
  else
    t = core.empty(n, 3, self.height, self.width)
  end
  if self.reuse then
    self._out[name] = t
  end
  return t
end

-- one image's job for the prepared cache (csrc/lcache.c reads it): row of
-- the output, cache entry, then the parameters as augment.image reads them
local COLOR_KIND = { brightness = 0, contrast = 1, saturation = 2, hue = 3 }

local function flag(v, default)
  if v == nil then
    return default
  end
  return v and 1 or 0
end

local function pack_job(row, entry, p)
  local color = p.color or {}
  local parts = { string.pack("<i4i4BBBBBddddd", row, entry, flag(p.flip, 0), flag(p.snap, 0), flag(p.clip, 1),
    flag(p.normalize, 1), #color, p.angle or 0, p.scale or 1, p.tx or 0.5, p.ty or 0.5, p.resize) }
  for k, op in ipairs(color) do
    parts[k + 1] = string.pack("<Bd", COLOR_KIND[op[1]], op[2])
  end
  return table.concat(parts)
end

local function check_range(fname, list, first, n)
  if math.type(first) ~= "integer" or first < 1 or first > #list then
    error(("%s: first must be an integer in 1..%d, got %s"):format(fname, #list, tostring(first)), 3)
  end
  if math.type(n) ~= "integer" or n < 1 then
    error(("%s: n must be an integer >= 1, got %s"):format(fname, tostring(n)), 3)
  end
  return math.min(n, #list - first + 1)
end

-- builds the batch of pairs first..first+n-1 with per-pair params from
-- draw(k) -> pa, pb
function Loader:_pairs(fname, list, first, n, draw)
  if type(list) ~= "table" or type(list.get) ~= "function" then
    error(("%s: expected a pairs list (faceid.pairs), got %s"):format(fname, type(list)), 3)
  end
  if list.ds ~= self.ds then
    error(("%s: the pairs list refers to another data set than the loader's"):format(fname), 3)
  end
  n = check_range(fname, list, first, n)
  local params = {}
  for k = 1, n do
    local pa, pb = draw(k)
    pa.resize, pb.resize = self.resize, self.resize
    params[k] = { pa, pb }
  end
  local source = self.prepared and self._entry or self.source
  local kept, srcs = {}, {}
  for k = 1, n do
    local p = first + k - 1
    local a, b = list:get(p)
    local sa, sb = source(self, a), source(self, b)
    if sa and sb then
      kept[#kept + 1] = p
      srcs[#srcs + 1] = { sa, sb, params[k] }
    end
  end
  local m = #kept
  if m == 0 then
    return nil, ("%s: no pair in %d..%d has two usable images"):format(fname, first, first + n - 1)
  end
  local x, y = self:_buffer("pairs", 2 * m), self:_buffer("labels", m)
  if self.prepared then
    local jobs = {}
    for r, s in ipairs(srcs) do
      jobs[#jobs + 1] = pack_job(r, s[1], s[3][1])
      jobs[#jobs + 1] = pack_job(m + r, s[2], s[3][2])
    end
    self.prepared:_augment(x, table.concat(jobs))
  else
    for r, s in ipairs(srcs) do
      core.augment_image(x, r, s[1], s[3][1])
      core.augment_image(x, m + r, s[2], s[3][2])
    end
  end
  for r = 1, m do
    local _, _, label = list:get(kept[r])
    y:set(r, label)
  end
  return x, y, kept
end

--- Training batch: pairs first..first+n-1 of list (fewer at the end of
-- the list), augmented with parameters drawn from gen in pair order
-- before any image is decoded, so the stream of random numbers does not
-- depend on the cache or on failed images. A pair with an image that
-- fails to decode is left out (the image is reported and marked bad).
-- @return x (2m x 3 x H x W: rows 1..m the first images, m+1..2m the
--   second), y (m labels, 0 same / 1 different), kept (the list indices of
--   the m pairs); or nil, message when no pair is usable
function Loader:batch(list, first, n, gen)
  local fname = "Loader:batch"
  if not is_generator(gen) then
    error(("%s: expected a faceid.Generator, got %s"):format(fname, type(gen)), 2)
  end
  local recipe = self.recipe
  return self:_pairs(fname, list, first, n, function()
    return recipe:draw_pair(gen)
  end)
end

--- Evaluation batch: as batch, with no randomness (centre crops).
function Loader:eval_batch(list, first, n)
  return self:_pairs("Loader:eval_batch", list, first, n, function()
    return M.eval_params(), M.eval_params()
  end)
end

--- Single images (e.g. to embed each image once): N x 3 x H x W for the
-- given indices, augmented with Recipe:draw_image when gen is given, else
-- the evaluation path.
-- @return x, kept (the indices used); or nil, message
function Loader:images(indices, gen)
  local fname = "Loader:images"
  if type(indices) ~= "table" or #indices == 0 then
    error(("%s: indices must be a non-empty list"):format(fname), 2)
  end
  if gen ~= nil and not is_generator(gen) then
    error(("%s: gen must be a faceid.Generator or nil, got %s"):format(fname, type(gen)), 2)
  end
  local params = {}
  for k = 1, #indices do
    params[k] = gen and self.recipe:draw_image(gen) or M.eval_params()
    params[k].resize = self.resize
  end
  local source = self.prepared and self._entry or self.source
  local kept, srcs = {}, {}
  for k, i in ipairs(indices) do
    local s = source(self, i)
    if s then
      kept[#kept + 1] = i
      srcs[#srcs + 1] = { s, params[k] }
    end
  end
  if #kept == 0 then
    return nil, ("%s: none of the %d images is usable"):format(fname, #indices)
  end
  local x = self:_buffer("images", #kept)
  if self.prepared then
    local jobs = {}
    for r, s in ipairs(srcs) do
      jobs[r] = pack_job(r, s[1], s[2])
    end
    self.prepared:_augment(x, table.concat(jobs))
  else
    for r, s in ipairs(srcs) do
      core.augment_image(x, r, s[1], s[2])
    end
  end
  return x, kept
end

function Loader:__tostring()
  local c = self.cache or self.prepared
  return ("faceid.augment.Loader(%dx%d from shorter side %d, %d decoded, %d failed%s)"):format(
    self.height, self.width, self.resize, self.decoded, self.failed, c and (", " .. tostring(c)) or "")
end

--- Training batch without keeping a loader: Loader(ds, opts):batch(...).
-- Pass opts.cache = a Cache to keep decoded faces between calls.
function M.batch(ds, list, first, n, gen, opts)
  return M.Loader(ds, opts):batch(list, first, n, gen)
end

--- Evaluation batch without keeping a loader.
function M.eval_batch(ds, list, first, n, opts)
  return M.Loader(ds, opts):eval_batch(list, first, n)
end

return M
