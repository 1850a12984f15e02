--- faceid.data: face data sets as lists of (image path, identity).
-- Readers for the CelebA layout, one-folder-per-person trees (AT&T,
-- Extended Yale B, LFW, any `person/photo.jpg`), the flat Yale layout
-- (`subjectNN.condition`) and the LFW pairs protocol files. Readers only
-- list files; images are decoded later, by faceid.augment.
--
-- A data set `ds` is an object:
--   #ds                      number of images; images are numbered 1..#ds
--   ds:path(i), ds:identity(i)   file and person (a string) of image i
--   ds:number(i)             image i's number within its person: 1, 2, ...
--                            in reading order (natural file-name order), or
--                            the LFW image number; kept by subsets, so that
--                            (person, number) names an image in pair files
--   ds:find(person, number)  the index of that image, or nil
--   ds:people()              the persons, in natural order
--   ds:images_of(person)     indices of that person's images (a new table)
--   ds:subset(indices), ds:filter{...}, ds:split_by_identity{...}
--   tostring(ds)             a summary: images, people, skipped files
--
-- Files that cannot be listed, or that fail the optional `verify` check,
-- are skipped and recorded in ds.skipped ({path = ..., why = ...}). Images
-- that fail to decode later (during training) are reported once, marked
-- with ds:mark_bad and avoided from then on by faceid.pairs; data sets
-- made from one reader share that record. Reports go to opts.on_skip
-- (default: a line on stderr).
local core = require("faceid.core")

local M = {}

--- File name extensions read as images (lower case).
M.IMAGE_EXTENSIONS = { "jpg", "jpeg", "png", "bmp", "pgm", "ppm", "pnm", "gif" }

-- ---- helpers ----------------------------------------------------------------

local function check_opts(fname, opts, allowed)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    error(("%s: opts must be a table, got %s"):format(fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3)
    end
  end
  return opts
end
M._check_opts = check_opts -- shared with faceid.pairs and faceid.cache

local function check_string(fname, what, v)
  if type(v) ~= "string" then
    error(("%s: %s must be a string, got %s"):format(fname, what, type(v)), 3)
  end
end

-- "img12.jpg" < "img2.jpg" by number: digit runs compare as numbers (their
-- length without leading zeros first), ties broken by the plain string
local function natural_key(s)
  return (s:gsub("%d+", function(d)
    local z = d:match("^0*(%d.*)$") or "0"
    return ("%04d"):format(#z) .. z
  end))
end

--- Sort a list of strings in place in natural order ("2.pgm" before
-- "10.pgm"); returns it.
local function natural_sort(list)
  local keys = {}
  for _, s in ipairs(list) do
    keys[s] = keys[s] or natural_key(s)
  end
  table.sort(list, function(a, b)
    local ka, kb = keys[a], keys[b]
    if ka ~= kb then
      return ka < kb
    end
    return a < b
  end)
  return list
end
M.natural_sort = natural_sort

-- entries of dir sorted naturally, and their kinds; or nil, message
local function list_dir(dir)
  local names, kinds = core.dir_list(dir)
  if not names then
    return nil, kinds
  end
  return natural_sort(names), kinds
end

local function join(dir, name)
  if dir:sub(-1) == "/" then
    return dir .. name
  end
  return dir .. "/" .. name
end

local function is_dir(path)
  local names = core.dir_list(path)
  return names ~= nil
end

local function is_file(path)
  local f = io.open(path, "rb")
  if not f then
    return false
  end
  local _, err = f:read(0) -- a directory opens, but reading it fails
  f:close()
  return err == nil
end

local function extension(name)
  return (name:match("%.([^./]+)$") or ""):lower()
end

local IMAGE_EXT = {}
for _, e in ipairs(M.IMAGE_EXTENSIONS) do
  IMAGE_EXT[e] = true
end

local function default_on_skip(path, why)
  io.stderr:write(("faceid.data: skipping '%s': %s\n"):format(path, why))
end

local function check_fn(fname, what, f)
  if f ~= nil and type(f) ~= "function" then
    error(("%s: %s must be a function, got %s"):format(fname, what, type(f)), 3)
  end
end


-- ---- the data set object -------------------------------------------------------

local Dataset = {}
Dataset.__index = Dataset

-- fields: kind, root, paths, ids, numbers (optional), skipped, info, registry
local function new_dataset(f)
  local ds = setmetatable({
    kind = f.kind,
    root = f.root,
    skipped = f.skipped or {},
    info = f.info or {},
    _paths = f.paths,
    _ids = f.ids,
    _numbers = f.numbers or {},
    _registry = f.registry,
    _by_id = {},
    _people = {},
  }, Dataset)
  local by_id = ds._by_id
  for i, id in ipairs(f.ids) do
    local list = by_id[id]
    if not list then
      list = {}
      by_id[id] = list
      ds._people[#ds._people + 1] = id
    end
    list[#list + 1] = i
    if not f.numbers then
      ds._numbers[i] = #list
    end
  end
  natural_sort(ds._people)
  return ds
end

-- persons are strings; 7 and 7.0 both name "7"
local function person_key(p)
  return tostring(math.tointeger(p) or p)
end

local function new_registry(on_skip)
  return { bad = {}, count = 0, on_skip = on_skip or default_on_skip }
end

function Dataset:__len()
  return #self._paths
end

local function check_index(self, fname, i)
  if math.type(i) ~= "integer" then
    if math.type(i) == "float" and i == math.floor(i) then
      i = math.tointeger(i)
    else
      error(("%s: image index must be an integer, got %s"):format(fname, tostring(i)), 3)
    end
  end
  if i < 1 or i > #self._paths then
    error(("%s: image index %d out of range 1..%d"):format(fname, i, #self._paths), 3)
  end
  return i
end

--- File of image i.
function Dataset:path(i)
  return self._paths[check_index(self, "Dataset:path", i)]
end

--- Person (a string) of image i.
function Dataset:identity(i)
  return self._ids[check_index(self, "Dataset:identity", i)]
end

--- Number of image i within its person (see the module comment).
function Dataset:number(i)
  return self._numbers[check_index(self, "Dataset:number", i)]
end

--- The persons, in natural order (a new table).
function Dataset:people()
  return table.move(self._people, 1, #self._people, 1, {})
end

--- Number of persons.
function Dataset:n_people()
  return #self._people
end

--- Indices of the images of `person` (a string; numbers are converted),
-- in data set order; empty when the person is unknown.
function Dataset:images_of(person)
  local list = self._by_id[person_key(person)]
  if not list then
    return {}
  end
  return table.move(list, 1, #list, 1, {})
end

--- The index of image `number` of `person`, or nil.
function Dataset:find(person, number)
  if not self._find then
    local map = {}
    for i, id in ipairs(self._ids) do
      map[id .. "\0" .. self._numbers[i]] = i
    end
    self._find = map
  end
  return self._find[person_key(person) .. "\0" .. person_key(number)]
end

--- Record that image i (or a path) could not be used; reported once
-- through on_skip, then avoided by faceid.pairs.
function Dataset:mark_bad(i, why)
  local path = type(i) == "string" and i or self:path(i)
  local reg = self._registry
  if not reg.bad[path] then
    reg.bad[path] = tostring(why or "unusable")
    reg.count = reg.count + 1
    reg.on_skip(path, reg.bad[path])
  end
end

--- The reason image i was marked bad, or nil.
function Dataset:bad(i)
  return self._registry.bad[self:path(i)]
end

--- Number of images that failed to decode (shared by related data sets).
function Dataset:n_bad()
  return self._registry.count
end

local function derived(self, keep)
  local paths, ids, numbers = {}, {}, {}
  for k, i in ipairs(keep) do
    paths[k] = self._paths[i]
    ids[k] = self._ids[i]
    numbers[k] = self._numbers[i]
  end
  local ds = new_dataset({
    kind = self.kind,
    root = self.root,
    paths = paths,
    ids = ids,
    numbers = numbers,
    skipped = self.skipped,
    info = self.info,
    registry = self._registry,
  })
  ds.derived = true
  return ds
end

--- A data set of the given images (a list of indices, no repeats), in
-- that order. Numbers are kept, so pair files name the same images.
function Dataset:subset(indices)
  local fname = "Dataset:subset"
  if type(indices) ~= "table" then
    error(("%s: indices must be a list, got %s"):format(fname, type(indices)), 2)
  end
  local seen, keep = {}, {}
  for k, i in ipairs(indices) do
    i = check_index(self, fname, i)
    if seen[i] then
      error(("%s: image %d is listed twice (positions %d and %d)"):format(fname, i, seen[i], k), 2)
    end
    seen[i] = k
    keep[k] = i
  end
  return derived(self, keep)
end

--- A data set of the persons that pass all given tests:
-- `min_images` (at least that many images), `max_images` (keep only the
-- first that many images of each person), `people` (a list of persons).
function Dataset:filter(opts)
  local fname = "Dataset:filter"
  opts = check_opts(fname, opts, { min_images = true, max_images = true, people = true })
  for _, k in ipairs({ "min_images", "max_images" }) do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
      error(("%s: %s must be an integer >= 0, got %s"):format(fname, k, tostring(v)), 2)
    end
  end
  local wanted
  if opts.people ~= nil then
    if type(opts.people) ~= "table" then
      error(("%s: people must be a list, got %s"):format(fname, type(opts.people)), 2)
    end
    wanted = {}
    for _, p in ipairs(opts.people) do
      wanted[person_key(p)] = true
    end
  end
  local keep_id, taken, keep = {}, {}, {}
  for _, id in ipairs(self._people) do
    keep_id[id] = (not wanted or wanted[id]) and #self._by_id[id] >= (opts.min_images or 0)
  end
  for i, id in ipairs(self._ids) do
    if keep_id[id] then
      taken[id] = (taken[id] or 0) + 1
      if not opts.max_images or taken[id] <= opts.max_images then
        keep[#keep + 1] = i
      end
    end
  end
  return derived(self, keep)
end

local function generator_of(fname, opts)
  if opts.gen ~= nil then
    if opts.seed ~= nil then
      error(("%s: give seed or gen, not both"):format(fname), 3)
    end
    return opts.gen
  end
  if math.type(opts.seed) ~= "integer" then
    error(("%s: seed must be an integer (or give gen = a faceid.Generator), got %s")
      :format(fname, tostring(opts.seed)), 3)
  end
  return core.Generator(opts.seed)
end

--- Split the persons into disjoint groups: `fractions` = {0.8, 0.2} (of
-- the persons, rounded so that the sizes add up; fractions summing to 1
-- use everyone) or `counts` = {30, 10} (persons); the persons are shuffled
-- by `seed` (or `gen`, a faceid.Generator). No person is on two sides.
-- @return one data set per fraction or count
function Dataset:split_by_identity(opts)
  local fname = "Dataset:split_by_identity"
  opts = check_opts(fname, opts, { fractions = true, counts = true, seed = true, gen = true })
  if (opts.fractions == nil) == (opts.counts == nil) then
    error(("%s: give fractions or counts (one of them)"):format(fname), 2)
  end
  local P = #self._people
  local sizes = {}
  if opts.fractions then
    local sum = 0
    if type(opts.fractions) ~= "table" or #opts.fractions == 0 then
      error(("%s: fractions must be a non-empty list"):format(fname), 2)
    end
    local prev = 0
    for k, f in ipairs(opts.fractions) do
      if type(f) ~= "number" or f < 0 or f ~= f then
        error(("%s: fraction %d must be a number >= 0, got %s"):format(fname, k, tostring(f)), 2)
      end
      sum = sum + f
      local bound = math.floor(math.min(sum, 1) * P + 0.5)
      if math.abs(sum - 1) < 1e-9 then
        bound = P
      end
      sizes[k] = bound - prev
      prev = bound
    end
    if sum > 1 + 1e-9 then
      error(("%s: fractions add up to %s, more than 1"):format(fname, tostring(sum)), 2)
    end
  else
    if type(opts.counts) ~= "table" or #opts.counts == 0 then
      error(("%s: counts must be a non-empty list"):format(fname), 2)
    end
    local sum = 0
    for k, c in ipairs(opts.counts) do
      if math.type(c) ~= "integer" or c < 0 then
        error(("%s: count %d must be an integer >= 0, got %s"):format(fname, k, tostring(c)), 2)
      end
      sum = sum + c
      sizes[k] = c
    end
    if sum > P then
      error(("%s: counts add up to %d persons, the data set has %d"):format(fname, sum, P), 2)
    end
  end
  local gen = generator_of(fname, opts)
  local perm = gen:randperm(P)
  local group, pos = {}, 0
  for k, n in ipairs(sizes) do
    for _ = 1, n do
      pos = pos + 1
      group[self._people[perm[pos]]] = k
    end
  end
  local keeps = {}
  for k = 1, #sizes do
    keeps[k] = {}
  end
  for i, id in ipairs(self._ids) do
    local k = group[id]
    if k then
      keeps[k][#keeps[k] + 1] = i
    end
  end
  local out = {}
  for k = 1, #sizes do
    out[k] = derived(self, keeps[k])
  end
  return table.unpack(out, 1, #sizes)
end

function Dataset:__tostring()
  local extra = {}
  local info = self.derived and {} or self.info
  local function add(n, one, many)
    if n and n > 0 then
      extra[#extra + 1] = ("%d %s"):format(n, n == 1 and one or many)
    end
  end
  add(info.empty_folders, "empty folder", "empty folders")
  add(info.ignored, "other file ignored", "other files ignored")
  add(info.excluded, "file excluded", "files excluded")
  add(info.absent, "listed image absent", "listed images absent")
  add(info.unlabelled, "unlabelled image", "unlabelled images")
  add(info.other_partition, "image in other partitions", "images in other partitions")
  add(self._registry.count, "failed to decode", "failed to decode")
  local s = ("faceid.data.%s('%s')%s: %d images, %d people, %d skipped"):format(
    self.kind, tostring(self.root), self.derived and " part" or "", #self._paths, #self._people,
    #self.skipped)
  if #extra > 0 then
    s = s .. " (" .. table.concat(extra, ", ") .. ")"
  end
  return s
end

-- ---- readers ---------------------------------------------------------------

-- drop the images whose files fail image.info (opts.verify)
local function verify_images(paths, ids, skipped, on_skip)
  local image = require("faceid.image")
  local p2, i2 = {}, {}
  for k, path in ipairs(paths) do
    local ok, why = image.info(path)
    if ok then
      p2[#p2 + 1] = path
      i2[#i2 + 1] = ids[k]
    else
      skipped[#skipped + 1] = { path = path, why = why }
      on_skip(path, why)
    end
  end
  return p2, i2
end

local function patterns_of(fname, v)
  if v == nil then
    return {}
  end
  if type(v) == "string" then
    return { v }
  end
  if type(v) ~= "table" then
    error(("%s: exclude must be a Lua pattern or a list of them, got %s"):format(fname, type(v)), 4)
  end
  return v
end

local function extensions_of(fname, v)
  if v == nil then
    return IMAGE_EXT
  end
  if type(v) ~= "table" then
    error(("%s: extensions must be a list, got %s"):format(fname, type(v)), 4)
  end
  local set = {}
  for _, e in ipairs(v) do
    set[tostring(e):lower():gsub("^%.", "")] = true
  end
  return set
end

local FOLDER_OPTS = { exclude = true, extensions = true, verify = true, on_skip = true }

local function read_folders(fname, kind, root, opts)
  check_string(fname, "root", root)
  check_fn(fname, "on_skip", opts.on_skip)
  local exclude = patterns_of(fname, opts.exclude)
  local exts = extensions_of(fname, opts.extensions)
  local on_skip = opts.on_skip or default_on_skip
  local names, kinds = list_dir(root)
  if not names then
    return nil, ("%s: %s"):format(fname, kinds)
  end
  local paths, ids, skipped = {}, {}, {}
  local info = { empty_folders = 0, ignored = 0, excluded = 0 }
  local folders = 0
  for _, person in ipairs(names) do
    if kinds[person] == "dir" and person:sub(1, 1) ~= "." then
      folders = folders + 1
      local dir = join(root, person)
      local files, fkinds = list_dir(dir)
      local n = 0
      if not files then
        skipped[#skipped + 1] = { path = dir, why = fkinds }
        on_skip(dir, fkinds)
      else
        for _, file in ipairs(files) do
          if fkinds[file] == "file" and file:sub(1, 1) ~= "." and exts[extension(file)] then
            local excluded = false
            for _, pat in ipairs(exclude) do
              if file:find(pat) then
                excluded = true
              end
            end
            if excluded then
              info.excluded = info.excluded + 1
            else
              n = n + 1
              paths[#paths + 1] = join(dir, file)
              ids[#ids + 1] = person
            end
          else
            info.ignored = info.ignored + 1
          end
        end
        if n == 0 then
          info.empty_folders = info.empty_folders + 1
        end
      end
    end
  end
  if folders == 0 then
    return nil, ("%s: no person folders in '%s' (for the flat subjectNN.condition layout use "
      .. "faceid.data.yale)"):format(fname, root)
  end
  if #paths == 0 then
    return nil, ("%s: no images in the %d person folders of '%s'"):format(fname, folders, root)
  end
  if opts.verify then
    paths, ids = verify_images(paths, ids, skipped, on_skip)
  end
  return new_dataset({ kind = kind, root = root, paths = paths, ids = ids, skipped = skipped,
    info = info, registry = new_registry(opts.on_skip) })
end

--- One folder per person: root/<person>/<photo>, e.g. AT&T (sN/M.pgm),
-- Extended Yale B, LFW (name/name_0001.jpg). Files whose extension is not
-- an image's (README, .info, hidden files) are ignored and counted; a
-- person folder without images is counted as empty and is no person.
-- Files in root itself are ignored. Images are in natural order (2.pgm
-- before 10.pgm), and so are the persons.
-- @param root directory
-- @param opts optional: `exclude` (Lua pattern or list, matched against
--   file names), `extensions` (list, default IMAGE_EXTENSIONS), `verify`
--   (read each file's header now and skip the broken ones; default false),
--   `on_skip` (function(path, why))
-- @return a data set, or nil and a message (root unreadable, no folders)
function M.folders(root, opts)
  local fname = "faceid.data.folders"
  opts = check_opts(fname, opts, FOLDER_OPTS)
  return read_folders(fname, "folders", root, opts)
end

--- Extended Yale B, cropped: root/CroppedYale/yaleBxx/*.pgm (root may also
-- be the CroppedYale folder). The 640x480 `*_Ambient.pgm` images are left
-- out unless opts.ambient.
-- @param opts optional: `ambient` (boolean), and those of folders()
function M.extended_yaleb(root, opts)
  local fname = "faceid.data.extended_yaleb"
  local allowed = { ambient = true }
  for k in pairs(FOLDER_OPTS) do
    allowed[k] = true
  end
  opts = check_opts(fname, opts, allowed)
  check_string(fname, "root", root)
  if is_dir(join(root, "CroppedYale")) then
    root = join(root, "CroppedYale")
  end
  local o = {}
  for k, v in pairs(opts) do
    o[k] = v
  end
  o.ambient = nil
  if not opts.ambient then
    local ex = patterns_of(fname, opts.exclude)
    o.exclude = table.move(ex, 1, #ex, 2, { "_Ambient%.[^.]*$" })
  end
  return read_folders(fname, "extended_yaleb", root, o)
end

--- The flat Yale layout: root/subjectNN.condition (GIF files without an
-- extension). The person is the part of the name before the first dot.
-- @param opts optional: `pattern` (Lua pattern whose first capture is the
--   person; default "^(subject%d+)%.[^.]+$"; other files are ignored),
--   `verify`, `on_skip` as for folders()
function M.yale(root, opts)
  local fname = "faceid.data.yale"
  opts = check_opts(fname, opts, { pattern = true, verify = true, on_skip = true })
  check_string(fname, "root", root)
  check_fn(fname, "on_skip", opts.on_skip)
  local pattern = opts.pattern or "^(subject%d+)%.[^.]+$"
  check_string(fname, "pattern", pattern)
  local on_skip = opts.on_skip or default_on_skip
  local names, kinds = list_dir(root)
  if not names then
    return nil, ("%s: %s"):format(fname, kinds)
  end
  local paths, ids, skipped, info = {}, {}, {}, { ignored = 0 }
  for _, name in ipairs(names) do
    local person = kinds[name] == "file" and name:match(pattern)
    if person then
      paths[#paths + 1] = join(root, name)
      ids[#ids + 1] = person
    else
      info.ignored = info.ignored + 1
    end
  end
  if #paths == 0 then
    return nil, ("%s: no file in '%s' matches %s"):format(fname, root, pattern)
  end
  if opts.verify then
    paths, ids = verify_images(paths, ids, skipped, on_skip)
  end
  return new_dataset({ kind = "yale", root = root, paths = paths, ids = ids, skipped = skipped,
    info = info, registry = new_registry(opts.on_skip) })
end

local PARTITIONS = { train = "0", val = "1", valid = "1", validation = "1", test = "2" }

-- map image -> field 2 of a "<image> <value>" file, and the number of
-- entries; or nil, message naming the line. A first line without a file
-- name (a count, or "image identity") is a header and skipped.
local function read_two_columns(fname, path)
  local f, msg = io.open(path, "rb")
  if not f then
    return nil, ("%s: cannot open '%s': %s"):format(fname, path, msg)
  end
  local text = f:read("a")
  f:close()
  if not text then
    return nil, ("%s: cannot read '%s'"):format(fname, path)
  end
  local map, count, n = {}, 0, 0
  for line in text:gmatch("([^\n]*)\n?") do
    n = n + 1
    local a, b = line:match("^%s*(%S+)%s+(%S+)%s*$")
    if a and not (n == 1 and not a:find(".", 1, true)) then
      if map[a] then
        return nil, ("%s: %s:%d: '%s' is listed twice"):format(fname, path, n, a)
      end
      map[a] = b
      count = count + 1
    elseif not a and line:find("%S") and not (n == 1 and line:match("^%s*%d+%s*$")) then
      return nil, ("%s: %s:%d: expected '<image> <value>', got '%s'"):format(fname, path, n, line)
    end
  end
  return map, count
end

--- CelebA: root/img_align_celeba/NNNNNN.jpg (or the 89x109 copy in
-- root/img_align_celeba_89x109; the full-size folder wins when both
-- exist) with identities from root/identity_subset.txt when present (a
-- shorter file for a subset), else root/identity_CelebA.txt. Only images
-- present on disk are listed; listed images that are absent and images
-- without an identity are counted in the summary.
-- @param opts optional: `partition` ("train", "val" or "test": the
--   official split in list_eval_partition.txt), `identities` (list of
--   identities to keep), `folder` and `identity_file` (override the
--   names above, relative to root), `verify`, `on_skip` as for folders()
-- @return a data set, or nil and a message (missing files, a malformed
--   line named with its line number)
function M.celeba(root, opts)
  local fname = "faceid.data.celeba"
  opts = check_opts(fname, opts, { partition = true, identities = true, folder = true,
    identity_file = true, verify = true, on_skip = true })
  check_string(fname, "root", root)
  check_fn(fname, "on_skip", opts.on_skip)
  local on_skip = opts.on_skip or default_on_skip
  local want_part
  if opts.partition ~= nil then
    want_part = PARTITIONS[opts.partition]
    if not want_part then
      error(("%s: partition must be 'train', 'val' or 'test', got %s"):format(fname, tostring(opts.partition)), 2)
    end
  end
  local wanted
  if opts.identities ~= nil then
    if type(opts.identities) ~= "table" then
      error(("%s: identities must be a list, got %s"):format(fname, type(opts.identities)), 2)
    end
    wanted = {}
    for _, id in ipairs(opts.identities) do
      wanted[person_key(id)] = true
    end
  end
  local folder
  if opts.folder then
    check_string(fname, "folder", opts.folder)
    folder = join(root, opts.folder)
  else
    for _, f in ipairs({ "img_align_celeba", "img_align_celeba_89x109" }) do
      if not folder and is_dir(join(root, f)) then
        folder = join(root, f)
      end
    end
    if not folder then
      return nil, ("%s: no img_align_celeba or img_align_celeba_89x109 folder in '%s'"):format(fname, root)
    end
  end
  local names, kinds = list_dir(folder)
  if not names then
    return nil, ("%s: %s"):format(fname, kinds)
  end
  local id_file = opts.identity_file and join(root, opts.identity_file)
  if not id_file then
    id_file = join(root, "identity_subset.txt")
    if not is_file(id_file) then
      id_file = join(root, "identity_CelebA.txt")
    end
  end
  local ident, n_listed = read_two_columns(fname, id_file)
  if not ident then
    return nil, n_listed
  end
  local part
  if want_part then
    local msg
    part, msg = read_two_columns(fname, join(root, "list_eval_partition.txt"))
    if not part then
      return nil, msg
    end
  end
  local info = { absent = n_listed, unlabelled = 0, other_partition = 0 }
  local paths, ids, skipped = {}, {}, {}
  for _, n in ipairs(names) do -- natural order
    local id = ident[n]
    if kinds[n] ~= "file" then
      info.ignored = (info.ignored or 0) + 1
    elseif not id then
      if IMAGE_EXT[extension(n)] then
        info.unlabelled = info.unlabelled + 1
      end
    else
      info.absent = info.absent - 1
      if want_part and part[n] ~= want_part then
        info.other_partition = info.other_partition + 1
      elseif not wanted or wanted[id] then
        paths[#paths + 1] = join(folder, n)
        ids[#ids + 1] = id
      end
    end
  end
  if opts.verify then
    paths, ids = verify_images(paths, ids, skipped, on_skip)
  end
  return new_dataset({ kind = "celeba", root = root, paths = paths, ids = ids, skipped = skipped,
    info = info, registry = new_registry(opts.on_skip) })
end

--- The LFW protocol: `pairs.txt` (first line "10 300": folds and pairs per
-- fold, then per fold 300 same-person lines `name i j` and 300
-- different-person lines `name1 i name2 j`) or `pairsDevTrain.txt` /
-- `pairsDevTest.txt` (first line: the count). Image number i of `name` is
-- images_root/name/name_%04d.jpg.
-- @param opts optional: `on_skip` (reports images missing on disk; their
--   pairs are dropped and counted in list.dropped)
-- @return a data set of the images the pairs use (numbers are the LFW
--   image numbers) and its pairs list (faceid.pairs, with folds); or nil
--   and a message naming the line of a malformed entry
function M.lfw_pairs(pairs_txt, images_root, opts)
  local fname = "faceid.data.lfw_pairs"
  opts = check_opts(fname, opts, { on_skip = true })
  check_string(fname, "pairs_txt", pairs_txt)
  check_string(fname, "images_root", images_root)
  check_fn(fname, "on_skip", opts.on_skip)
  local on_skip = opts.on_skip or default_on_skip
  local P = require("faceid.pairs")
  local file, msg = P.parse(pairs_txt)
  if not file then
    return nil, fname .. ": " .. msg
  end
  local keys, seen = {}, {}
  local function add(name, n)
    local key = name .. "\0" .. n
    if not seen[key] then
      seen[key] = { name = name, n = n }
      keys[#keys + 1] = key
    end
  end
  for _, r in ipairs(file.records) do
    add(r.name1, r.n1)
    add(r.name2, r.n2)
  end
  table.sort(keys, function(a, b)
    local x, y = seen[a], seen[b]
    if x.name ~= y.name then
      return x.name < y.name
    end
    return x.n < y.n
  end)
  local paths, ids, numbers, skipped, index = {}, {}, {}, {}, {}
  for _, key in ipairs(keys) do
    local e = seen[key]
    local path = join(join(images_root, e.name), ("%s_%04d.jpg"):format(e.name, e.n))
    if is_file(path) then
      paths[#paths + 1] = path
      ids[#ids + 1] = e.name
      numbers[#numbers + 1] = e.n
      index[key] = #paths
    else
      skipped[#skipped + 1] = { path = path, why = "no such file" }
      on_skip(path, "no such file")
    end
  end
  local ds = new_dataset({ kind = "lfw_pairs", root = images_root, paths = paths, ids = ids,
    numbers = numbers, skipped = skipped, info = {}, registry = new_registry(opts.on_skip) })
  local a, b, label, fold = {}, {}, {}, {}
  local dropped = 0
  for _, r in ipairs(file.records) do
    local i, j = index[r.name1 .. "\0" .. r.n1], index[r.name2 .. "\0" .. r.n2]
    if i and j then
      a[#a + 1], b[#b + 1] = i, j
      label[#label + 1] = r.same and 0 or 1
      fold[#fold + 1] = r.fold
    else
      dropped = dropped + 1
    end
  end
  local list = P.new(ds, a, b, label, fold)
  list.folds = file.folds
  list.dropped = dropped
  return ds, list
end

--- Open a data set folder, recognising its layout: CelebA (an identity
-- file), Extended Yale B (a CroppedYale folder or yaleBxx folders), the
-- flat Yale layout (subjectNN.* files), else one folder per person.
-- @param opts passed on to the reader
function M.open(root, opts)
  local fname = "faceid.data.open"
  check_string(fname, "root", root)
  local names, kinds = list_dir(root)
  if not names then
    return nil, ("%s: %s"):format(fname, kinds)
  end
  local has = {}
  local subject_files, yaleb_dirs = 0, 0
  for _, n in ipairs(names) do
    has[n] = kinds[n]
    if kinds[n] == "file" and n:match("^subject%d+%.[^.]+$") then
      subject_files = subject_files + 1
    end
    if kinds[n] == "dir" and n:match("^yaleB%d+$") then
      yaleb_dirs = yaleb_dirs + 1
    end
  end
  if has["identity_CelebA.txt"] == "file" or has["identity_subset.txt"] == "file" then
    return M.celeba(root, opts)
  elseif has.CroppedYale == "dir" or (yaleb_dirs > 0 and yaleb_dirs == #names) then
    return M.extended_yaleb(root, opts)
  elseif subject_files > 0 then
    return M.yale(root, opts)
  end
  return M.folders(root, opts)
end

return M
