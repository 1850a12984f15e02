--- faceid.gallery: the people a device knows, as embeddings, and the
-- question "who is this?".
--
--   local g = faceid.gallery.new()
--   g:enroll("ada", net:forward(x_ada))        -- N x D embeddings (or one D vector)
--   local name, d = g:identify(emb, 1.0)       -- "ada", 0.41   or nil, 1.7, "ada"
--   assert(g:save("gallery.safetensors"))      -- atomic
--   g = assert(faceid.gallery.load("gallery.safetensors"))
--
-- A person is known by every embedding enrolled for them; the distance of
-- a face to a person is the smallest Euclidean distance to one of those
-- (nearest neighbour, the same distance `faceid compare` thresholds).
-- The file holds one tensor `embeddings` (N x D, rows grouped by person),
-- one tensor `person` (N: each row's person, 1-based) and the names, in
-- order, in the metadata (`names`, one per line), with `format` =
-- "faceid.gallery"; any other metadata given to new() (e.g. the model the
-- embeddings came from) is kept through save and load.
local core = require("faceid.core")

local M = {}

local Gallery = {}
Gallery.__index = Gallery

local function check_name(fname, name)
  if type(name) ~= "string" or name == "" then
    error(("%s: name must be a non-empty string, got %s"):format(fname, type(name) == "string" and "''"
      or type(name)), 3)
  end
  if name:find("[%c]") then
    error(("%s: name %q contains a control character (a line break or tab)"):format(fname, name), 3)
  end
end

--- A new, empty gallery.
-- @param opts optional: `metadata` (a table of strings kept in the file)
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("faceid.gallery.new: options must be a table, got " .. type(opts), 2)
  end
  for k in pairs(opts or {}) do
    if k ~= "metadata" then error(("faceid.gallery.new: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local meta = {}
  for k, v in pairs(opts and opts.metadata or {}) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      error("faceid.gallery.new: metadata must map strings to strings", 2)
    end
    meta[k] = tostring(v)
  end
  return setmetatable({ names = {}, rows = {}, dim = nil, metadata = meta }, Gallery)
end

-- rows of a 1-D (D) or 2-D (N x D) tensor, as contiguous D vectors
local function rows_of(fname, e, dim)
  if not core.is_tensor(e) then
    error(("%s: embeddings must be a faceid.Tensor, got %s"):format(fname, type(e)), 3)
  end
  if e:dim() == 1 then e = e:reshape(1, e:size(1)) end
  if e:dim() ~= 2 or e:size(1) < 1 or e:size(2) < 1 then
    error(("%s: embeddings must be D or N x D, got %s"):format(fname, table.concat(e:size(), "x")), 3)
  end
  if dim and e:size(2) ~= dim then
    error(("%s: embeddings have %d values but the gallery holds %d-d embeddings"):format(fname,
      e:size(2), dim), 3)
  end
  local s = e:sum()
  if s ~= s or s == math.huge or s == -math.huge then
    error(("%s: embeddings contain NaN or infinite values"):format(fname), 3)
  end
  local out = {}
  for i = 1, e:size(1) do out[i] = e[i]:clone() end
  return out, e:size(2)
end

--- Add embeddings of a person (a new one, or more photos of a known one).
-- @param name a non-empty string without control characters
-- @param embeddings N x D tensor, or one D vector
-- @return the gallery
function Gallery:enroll(name, embeddings)
  local fname = "Gallery:enroll"
  check_name(fname, name)
  local rows, dim = rows_of(fname, embeddings, self.dim)
  self.dim = dim
  local list = self.rows[name]
  if not list then
    list = {}
    self.rows[name] = list
    self.names[#self.names + 1] = name
  end
  for _, r in ipairs(rows) do list[#list + 1] = r end
  return self
end

--- Forget a person. @return true if they were known
function Gallery:remove(name)
  if not self.rows[name] then return false end
  self.rows[name] = nil
  for i, n in ipairs(self.names) do
    if n == name then
      table.remove(self.names, i)
      break
    end
  end
  if #self.names == 0 then self.dim = nil end
  return true
end

--- The people, in enrolment order (a new table).
function Gallery:people()
  return table.move(self.names, 1, #self.names, 1, {})
end

--- Number of embeddings of a person (0 when unknown), or of everyone.
function Gallery:count(name)
  if name ~= nil then return self.rows[name] and #self.rows[name] or 0 end
  local n = 0
  for _, list in pairs(self.rows) do n = n + #list end
  return n
end

function Gallery:__len()
  return #self.names
end

function Gallery:__tostring()
  return ("faceid.gallery(%d people, %d embeddings%s)"):format(#self.names, self:count(),
    self.dim and (", " .. self.dim .. "-d") or "")
end

--- Every person's distance to an embedding, nearest first:
-- { {name =, distance =}, ... }
function Gallery:distances(embedding)
  local fname = "Gallery:distances"
  local rows = rows_of(fname, embedding, self.dim)
  if #rows ~= 1 then error(fname .. ": give one embedding (a D vector or 1 x D)", 2) end
  local e = rows[1]
  local out = {}
  for _, name in ipairs(self.names) do
    local best = math.huge
    for _, r in ipairs(self.rows[name]) do
      local d = (r - e):norm()
      if d < best then best = d end
    end
    out[#out + 1] = { name = name, distance = best }
  end
  table.sort(out, function(a, b)
    if a.distance ~= b.distance then return a.distance < b.distance end
    return a.name < b.name
  end)
  return out
end

--- The nearest person: name, distance; nil when the gallery is empty.
function Gallery:nearest(embedding)
  local d = self:distances(embedding)
  if #d == 0 then return nil end
  return d[1].name, d[1].distance
end

--- Who is this? The nearest person when their distance is below the
-- threshold.
-- @param embedding a D vector (or 1 x D)
-- @param threshold a number (default 1.0)
-- @return name, distance when known; nil, distance, nearest name when
--   nobody is close enough (nil, nil, nil for an empty gallery)
function Gallery:identify(embedding, threshold)
  threshold = threshold == nil and 1.0 or threshold
  if type(threshold) ~= "number" or threshold ~= threshold then
    error("Gallery:identify: threshold must be a number", 2)
  end
  local name, d = self:nearest(embedding)
  if not name then return nil end
  if d < threshold then return name, d end
  return nil, d, name
end

--- Write the gallery as safetensors (atomically: a temporary file, then a
-- rename). @return true, or nil and a message
function Gallery:save(path)
  local fname = "Gallery:save"
  if type(path) ~= "string" then error(fname .. ": path must be a string", 2) end
  local meta = {}
  for k, v in pairs(self.metadata) do meta[k] = v end
  meta.format = "faceid.gallery"
  meta.names = table.concat(self.names, "\n")
  meta.people = tostring(#self.names)
  local tensors = {}
  if #self.names > 0 then
    local all, owner = {}, {}
    for p, name in ipairs(self.names) do
      for _, r in ipairs(self.rows[name]) do
        all[#all + 1] = r:reshape(1, self.dim)
        owner[#owner + 1] = p
      end
    end
    tensors.embeddings = core.cat(all, 1)
    tensors.person = core.tensor(owner)
  end
  return core.save(path, tensors, { metadata = meta })
end

--- Read a gallery written by save.
-- @return a gallery, or nil and a message (missing file, not a gallery)
function M.load(path)
  local fname = "faceid.gallery.load"
  if type(path) ~= "string" then error(fname .. ": path must be a string", 2) end
  local t, meta = core.load(path)
  if not t then return nil, meta end
  if meta.format ~= "faceid.gallery" then
    return nil, ("%s: '%s' is not a gallery (its format is %s)"):format(fname, path,
      meta.format and ("'" .. meta.format .. "'") or "not recorded")
  end
  local names = {}
  if meta.names and meta.names ~= "" then
    for n in (meta.names .. "\n"):gmatch("([^\n]*)\n") do names[#names + 1] = n end
  end
  local g = M.new()
  for k, v in pairs(meta) do
    if k ~= "format" and k ~= "names" and k ~= "people" then g.metadata[k] = v end
  end
  if #names == 0 then return g end
  local e, owner = t.embeddings, t.person
  if not e or not owner or e:dim() ~= 2 or owner:dim() ~= 1 or owner:size(1) ~= e:size(1) then
    return nil, ("%s: '%s': the embeddings or person tensors are missing or malformed"):format(fname, path)
  end
  local groups = {}
  for i = 1, e:size(1) do
    local p = math.tointeger(owner:get(i))
    if not p or p < 1 or p > #names then
      return nil, ("%s: '%s': row %d belongs to person %s of %d"):format(fname, path, i,
        tostring(owner:get(i)), #names)
    end
    groups[p] = groups[p] or {}
    groups[p][#groups[p] + 1] = i
  end
  for p, name in ipairs(names) do
    if not groups[p] or g.rows[name] then
      return nil, ("%s: '%s': person '%s' has no embeddings or is listed twice"):format(fname, path, name)
    end
    local rows = {}
    for k, i in ipairs(groups[p]) do rows[k] = e[i]:reshape(1, e:size(2)) end
    g:enroll(name, core.cat(rows, 1))
  end
  return g
end

return M
