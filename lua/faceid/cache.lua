--- faceid.cache: a prepared cache of decoded faces, made once and
-- memory-mapped for training, so that no epoch decodes anything.
--
--   faceid.cache.prepare(ds, "celeba-128.fidcache", { size = 128 })
--   local loader = faceid.augment.Loader(ds, { size = 128,
--     cache = faceid.cache.open("celeba-128.fidcache", ds) })
--
-- prepare decodes every image of a data set (on `threads` threads), brings
-- it to the size faceid.augment's Loader works from (shorter side `size`,
-- the Loader's `resize`, which defaults to its input size) and stores it
-- as 8-bit planes exactly as the Loader's in-memory Cache keeps it, so
-- batches from the prepared cache are bit-identical to batches from the
-- in-memory one. The file also holds each image's path, identity, file
-- size and modification time: it is checked against the data set when
-- used, and a cache of a data set that has changed since is refused with
-- a message naming the difference. The format is described in
-- csrc/cache.h; a file that is truncated or damaged is refused before any
-- pixel is read.
--
-- Memory: the file holds C x H x W bytes per face (grey faces one plane),
-- e.g. 290 MB for the 10,000 CelebA faces of 89x109 at size 128; the
-- mapping is shared with the page cache, so only the faces used are read,
-- and several loaders (training, validation) share the same pages.
local core = require("faceid.core")

local M = {}

--- Images decoded per call into C between progress reports.
M.WINDOW = 64

local Prepared = {}
Prepared.__index = Prepared
Prepared.__name = "faceid.cache.Prepared"
M.Prepared = Prepared

local check_opts = require("faceid.data")._check_opts

local function check_dataset(fname, ds)
  if type(ds) ~= "table" or type(ds.path) ~= "function" or type(ds.identity) ~= "function" then
    error(("%s: expected a data set (faceid.data), got %s"):format(fname, type(ds)), 3)
  end
end

local function check_path(fname, path)
  if type(path) ~= "string" or path == "" then
    error(("%s: path must be a non-empty string, got %s"):format(fname, type(path)), 3)
  end
  if path:find("\0", 1, true) then
    error(("%s: path contains a zero byte"):format(fname), 3)
  end
end

local function integer_in(fname, what, v, lo, hi)
  if math.type(v) ~= "integer" or v < lo or v > hi then
    error(("%s: %s must be an integer in %d..%d, got %s"):format(fname, what, lo, hi, tostring(v)), 3)
  end
  return v
end

--- Decode every image of a data set once into a cache file.
-- Images that cannot be read or decoded are reported with their paths
-- through the data set (ds:mark_bad: the reader's on_skip, once per file;
-- faceid.pairs then avoids them), kept in the file as failed entries and
-- counted. The file is written to a temporary file beside `path`, synced
-- and renamed, so `path` never holds a partial cache.
-- @param ds data set (faceid.data)
-- @param path the cache file
-- @param opts optional: `size` the shorter side the faces are brought to
--   (default 128: use the Loader's `resize`, i.e. its input size unless
--   given); `channels` 3 (default: as the Loader decodes; grey faces keep
--   one plane) or 1 (every face as grey); `threads` decoding threads
--   (default 2); `progress` function(done, total, failed) called after
--   every M.WINDOW images
-- @return a summary { path, images, failed, bytes (of the file), seconds,
--   skipped = { {path = ..., why = ...}, ... } }; or nil and a message
--   when the file cannot be written
function M.prepare(ds, path, opts)
  local fname = "faceid.cache.prepare"
  check_dataset(fname, ds)
  check_path(fname, path)
  opts = check_opts(fname, opts, { size = true, channels = true, threads = true, progress = true })
  local size = integer_in(fname, "size", opts.size or 128, 1, 16384)
  local channels = opts.channels or 3
  if channels ~= 1 and channels ~= 3 then
    error(("%s: channels must be 1 or 3, got %s"):format(fname, tostring(channels)), 2)
  end
  local threads = integer_in(fname, "threads", opts.threads or 2, 1, 64)
  local progress = opts.progress
  if progress ~= nil and type(progress) ~= "function" then
    error(("%s: progress must be a function, got %s"):format(fname, type(progress)), 2)
  end
  local t0 = core.clock()
  local w <close>, msg = core.cache_writer(path, size, math.tointeger(channels), threads)
  if not w then
    return nil, ("%s: %s"):format(fname, msg)
  end
  local n, skipped = #ds, {}
  for first = 1, n, M.WINDOW do
    local last = math.min(n, first + M.WINDOW - 1)
    local paths, ids = {}, {}
    for i = first, last do
      paths[#paths + 1], ids[#ids + 1] = ds:path(i), ds:identity(i)
    end
    local failures, err = w:add(paths, ids)
    if not failures then
      return nil, ("%s: %s"):format(fname, err)
    end
    for k = 1, #paths do
      local why = failures[k]
      if why then
        skipped[#skipped + 1] = { path = paths[k], why = why }
        ds:mark_bad(first + k - 1, why)
      end
    end
    if progress then
      progress(last, n, #skipped)
    end
  end
  local _, _, pixels = w:stats()
  local ok, err = w:finish()
  if not ok then
    return nil, ("%s: %s"):format(fname, err)
  end
  local f = io.open(path, "rb")
  local bytes = f and f:seek("end") or pixels
  if f then
    f:close()
  end
  return { path = path, images = n, failed = #skipped, bytes = bytes, seconds = core.clock() - t0,
    skipped = skipped }
end

--- Open a prepared cache (memory-mapped, read-only).
-- @param path the cache file
-- @param ds optional data set to check it against (see Prepared:check)
-- @param opts optional: `verify` (also check the pixels' checksum, which
--   reads the whole file; default false: the header, index and paths are
--   always checked), `check_files` (compare each image file's size and
--   modification time with the recorded ones when checking against a
--   data set; default true)
-- @return a Prepared cache, or nil and a message (missing, not a cache,
--   truncated, damaged, or stale for ds)
function M.open(path, ds, opts)
  local fname = "faceid.cache.open"
  check_path(fname, path)
  if ds ~= nil then
    check_dataset(fname, ds)
  end
  opts = check_opts(fname, opts, { verify = true, check_files = true })
  local ud, msg = core.cache_open(path, opts.verify and true or false)
  if not ud then
    return nil, ("%s: %s"):format(fname, msg)
  end
  local info = ud:info()
  local paths, ids, reasons = ud:entries()
  local index = {}
  for j, p in ipairs(paths) do
    if index[p] then
      ud:close()
      return nil, ("%s: '%s' is damaged: '%s' is listed twice"):format(fname, path, p)
    end
    index[p] = j
  end
  local self = setmetatable({
    path = path, count = info.count, failed = info.failed, resize = info.resize, channels = info.channels,
    bytes = info.file_bytes, pixel_bytes = info.pixel_bytes, check_files = opts.check_files ~= false,
    _ud = ud, _paths = paths, _ids = ids, _reasons = reasons, _index = index,
  }, Prepared)
  if ds ~= nil then
    local ok, why = self:check(ds)
    if not ok then
      self:close()
      return nil, ("%s: %s"):format(fname, why)
    end
  end
  return self
end

--- Check the cache against a data set: every image of ds must be in it
-- with the same identity and, unless check_files is off, a file of the
-- same size and modification time as when it was prepared; a data set
-- read from disk (not a subset or split) must also have no fewer images.
-- @return the cache entry of each image of ds (a list), or nil and a
--   message naming the difference
function Prepared:check(ds)
  check_dataset("Prepared:check", ds)
  local ud = self:_handle("Prepared:check")
  local stale = "stale cache '" .. self.path .. "': "
  local entries, seen, missing = {}, {}, {}
  for i = 1, #ds do
    local p = ds:path(i)
    local j = self._index[p]
    if not j then
      missing[#missing + 1] = p
    else
      local id = ds:identity(i)
      if self._ids[j] ~= id then
        return nil, ("%s'%s' is person '%s' in the data set but '%s' in the cache"):format(stale, p, id,
          self._ids[j])
      end
      entries[i], seen[j] = j, true
    end
  end
  if #missing > 0 then
    return nil, ("%sthe data set has %d image%s the cache lacks, e.g. '%s' (prepare it again)"):format(stale,
      #missing, #missing == 1 and "" or "s", missing[1])
  end
  if not ds.derived and #ds < self.count then
    for j, p in ipairs(self._paths) do
      if not seen[j] then
        local extra = self.count - #ds
        return nil, ("%sthe cache holds %d image%s the data set no longer lists, e.g. '%s' (prepare it again)")
          :format(stale, extra, extra == 1 and "" or "s", p)
      end
    end
  end
  if self.check_files then
    for i = 1, #ds do
      local e = ud:entry(entries[i])
      local size, sec, nsec = core.cache_file_stat(e.path)
      local now = size and ("%d bytes, modified %d.%09d"):format(size, sec, nsec) or "missing"
      local was = e.file_size and ("%d bytes, modified %d.%09d"):format(e.file_size, e.mtime_sec, e.mtime_nsec)
        or "missing"
      if now ~= was then
        return nil, ("%s'%s' changed since the cache was prepared (then %s, now %s)"):format(stale, e.path, was, now)
      end
    end
  end
  return entries
end

function Prepared:_handle(fname)
  if not self._ud then
    error(("%s: the cache '%s' is closed"):format(fname, self.path), 3)
  end
  return self._ud
end

--- The entry of a path, or nil.
function Prepared:lookup(path)
  return self._index[path]
end

--- Entry j: { path, identity, channels, height, width, reason (failed
-- images), file_size, mtime_sec, mtime_nsec }.
function Prepared:entry(j)
  return self:_handle("Prepared:entry"):entry(j)
end

--- The reason entry j failed at prepare time, or nil.
function Prepared:reason(j)
  self:_handle("Prepared:reason")
  return self._reasons[j]
end

--- Entry j as a C x H x W tensor in [0, 1] (channels: optional 3 for a
-- grey face), or nil, reason for a failed image.
function Prepared:image(j, channels)
  return self:_handle("Prepared:image"):unpack(j, channels)
end

--- Entry j as a faceid.PackedImage, byte for byte what the Loader's
-- in-memory Cache holds for that face; or nil, reason.
function Prepared:packed(j)
  local img, why = self:_handle("Prepared:packed"):unpack(j)
  if not img then
    return nil, why
  end
  local p = core.augment_pack(img)
  img:close()
  return p
end

--- Augmented images straight from the mapping: `jobs` is a string of
-- records as faceid.augment packs them (see csrc/lcache.c). Used by the
-- Loader.
function Prepared:_augment(x, jobs)
  return core.cache_augment(x, self:_handle("Prepared:augment"), jobs)
end

--- { faces, failed, bytes, resize, channels }
function Prepared:stats()
  return { faces = self.count - self.failed, failed = self.failed, bytes = self.bytes, resize = self.resize,
    channels = self.channels }
end

--- Unmap the file (also on garbage collection and at the end of a
-- `local c <close>` scope); later use is an error.
function Prepared:close()
  if self._ud then
    self._ud:close()
    self._ud = nil
  end
end
Prepared.__close = Prepared.close

function Prepared:__len()
  return self.count
end

function Prepared:__tostring()
  return ("faceid.cache.Prepared('%s': %d faces, %d failed, %.1f MB, shorter side %d%s)"):format(self.path,
    self.count - self.failed, self.failed, self.bytes / 1e6, self.resize, self._ud and "" or ", closed")
end

--- True when v is a Prepared cache.
function M.is_prepared(v)
  return getmetatable(v) == Prepared
end

return M
