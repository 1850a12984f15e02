-- spec/doc_spec.lua - every public function, method and constant of faceid
-- is mentioned in doc/: its qualified name ("faceid.image.load",
-- "Tensor:add_", "faceid.core.dir_list") must appear in a heading or an
-- inline code span of a doc/*.md file. The names are enumerated from the
-- live objects (the faceid.core table, the method tables of constructed
-- objects, each module's exports), so a new function fails here until it
-- is documented. Names starting with "_" are private (except _VERSION),
-- and so are metamethods ("__len", ...). The `faceid` command is checked
-- the same way: every subcommand ("faceid train") must be mentioned, and
-- every option its --help lists must be in a code span of that
-- subcommand's section of doc/cli.md (the "## `faceid train`" heading up to
-- the next "## "); the options every subcommand takes (--threads, --help)
-- may be documented once, in its "## Conventions" section.
local helper = require("helper")
local faceid = require("faceid")

-- ---- what doc/ mentions ------------------------------------------------------

local DOC = "doc"

local function doc_files()
  local names, kinds = faceid.core.dir_list(DOC)
  assert(names, kinds)
  local files = {}
  for _, n in ipairs(names) do
    if kinds[n] == "file" and n:match("%.md$") then files[#files + 1] = n end
  end
  table.sort(files)
  return files
end

-- headings and inline code spans (fenced blocks are examples, not mentions)
local function mentions_of(text, out)
  local prose = {}
  local fenced = false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      fenced = not fenced
    elseif not fenced then
      if line:match("^#") then out[#out + 1] = line end
      prose[#prose + 1] = line
    end
  end
  -- a code span may wrap onto the next line
  for span in table.concat(prose, "\n"):gmatch("`([^`]+)`") do
    out[#out + 1] = span
  end
  return out
end

local mentions, headings = {}, {}
for _, f in ipairs(doc_files()) do
  mentions_of(helper.read_file(DOC .. "/" .. f), mentions)
end
-- doc/cli.md by subcommand: name -> the mentions of its "## `faceid name`" section
local cli_sections = {}
do
  local name, lines = nil, {}
  local function close()
    if name then cli_sections[name] = mentions_of(table.concat(lines, "\n"), {}) end
  end
  for line in (helper.read_file(DOC .. "/cli.md") .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^## ") then
      close()
      name, lines = line:match("^## `faceid (%w+)`") or (line:match("^## Conventions") and "*"), {}
    end
    lines[#lines + 1] = line
  end
  close()
end
for _, m in ipairs(mentions) do
  if m:match("^#") then headings[#headings + 1] = m end
end

local function escape(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- `name` as a whole token: not preceded by a name character, dot or colon,
-- not followed by a name character; in a heading or code span, or (within) in
-- the given list only
local function documented(name, within)
  local pat = "%f[%w_.:]" .. escape(name) .. "%f[^%w_]"
  for _, m in ipairs(within or mentions) do
    if (" " .. m .. " "):find(pat) then return true end
  end
  return false
end

-- an option ("--eval-every") as a whole token in the given mentions: not
-- preceded by a name character or dash, not followed by one
local function documented_option(opt, within)
  local pat = "%f[%w%-]" .. escape(opt) .. "%f[^%w_%-]"
  for _, m in ipairs(within) do
    if (" " .. m .. " "):find(pat) then return true end
  end
  return false
end

-- ---- what the code exports -----------------------------------------------------

local function public(key)
  return type(key) == "string" and (key == "_VERSION" or not key:match("^_"))
end

-- the method table of an object: methods / __index of its metatable, or
-- the table a C __index closure looks names up in
local function methods_of(obj)
  local mt = getmetatable(obj)
  assert(type(mt) == "table", "no metatable")
  if type(mt.methods) == "table" then return mt.methods end
  local idx = mt.__index
  if type(idx) == "table" then return idx end
  assert(type(idx) == "function", "no __index")
  for i = 1, 8 do
    local name, v = debug.getupvalue(idx, i)
    if name == nil then break end
    if type(v) == "table" then return v end
  end
  error("no method table behind __index")
end

-- required names, each with where it came from
local required, origin = {}, {}
local function need(name, from)
  if not origin[name] then
    required[#required + 1] = name
    origin[name] = from
  end
end

local function exports(prefix, mod, from)
  for k in pairs(mod) do
    if public(k) then need(prefix .. "." .. k, from) end
  end
end

local function methods(label, obj)
  local n = 0
  for k, v in pairs(methods_of(obj)) do
    if public(k) and type(v) == "function" then
      need(label .. ":" .. k, label .. " methods")
      n = n + 1
    end
  end
  return n
end

-- the facade's lazily loaded submodules: field -> module name
local function submodules()
  local idx = getmetatable(faceid).__index
  for i = 1, 8 do
    local name, v = debug.getupvalue(idx, i)
    if name == "submodules" then return v end
    if name == nil then break end
  end
  error("lua/faceid/init.lua: no 'submodules' table behind faceid's __index")
end

local core = require("faceid.core")
local counts = {}

-- faceid.core: documented as faceid.core.X or, for the public ones, faceid.X
local core_names = {}
for k in pairs(core) do
  if public(k) then core_names[#core_names + 1] = k end
end
counts.core = #core_names

-- the facade's own fields (not copied from core)
for k in pairs(faceid) do
  if public(k) and core[k] == nil then need("faceid." .. k, "faceid facade") end
end
local subs = submodules()
for field, modname in pairs(subs) do
  need("faceid." .. field, "faceid facade (submodule)")
  exports("faceid." .. field, require(modname), modname)
end
local cli = require("faceid.cli")
need("faceid.cli", "lua/faceid/cli.lua")
exports("faceid.cli", cli, "faceid.cli")

-- the command: each subcommand, and each option its --help lists
local cli_options = {} -- {command, option}
local takes = {} -- option -> number of commands that take it
counts.commands, counts.options = 0, 0
for name, cmd in pairs(cli.commands) do
  need("faceid " .. name, "faceid command")
  counts.commands = counts.commands + 1
  for opt in cli.help(cmd):gmatch("\n  (%-%-[%w%-]+)") do
    cli_options[#cli_options + 1] = { name, opt }
    takes[opt] = (takes[opt] or 0) + 1
    counts.options = counts.options + 1
  end
end

-- objects: build one of each and walk its method table
local dir = helper.tmpdir()
for _, p in ipairs({ "ann", "bob" }) do
  os.execute("mkdir -p '" .. dir .. "/" .. p .. "'")
  for i = 1, 2 do
    assert(faceid.image.save(faceid.full({ 3, 8, 8 }, i / 4), ("%s/%s/%d.png"):format(dir, p, i)))
  end
end
local ds = assert(faceid.data.folders(dir, { on_skip = function() end }))
local gen = faceid.Generator(1)
local net = faceid.DenseNet({ growth = 2, blocks = { 1 }, stem = "small", input = 8, embedding = 4 })
local _, indices = faceid.nn.max_pool2d(faceid.ones(1, 1, 2, 2), 2)
local cache_file = dir .. "/faces.fidcache"
assert(faceid.cache.prepare(ds, cache_file, { size = 8, threads = 1 }))
local prepared = assert(faceid.cache.open(cache_file, ds))
local mapped = assert(core.cache_open(cache_file))
local writer = assert(core.cache_writer(dir .. "/w.fidcache", 8, 3, 1))
local canvas = core.Canvas(64, 64)
local objects = {
  { "Tensor", faceid.zeros(1) },
  { "Generator", gen },
  { "DenseNet", net },
  { "ContrastiveLoss", faceid.ContrastiveLoss() },
  { "Optimizer", faceid.Adam(net) },
  { "Optimizer", faceid.SGD(net) },
  { "PackedImage", faceid.augment.pack(faceid.ones(3, 2, 2)) },
  { "PoolIndices", indices },
  { "Dataset", ds },
  { "PairList", faceid.pairs.epoch(ds, gen) },
  { "Recipe", faceid.augment.Recipe() },
  { "Cache", faceid.augment.Cache() },
  { "Loader", faceid.augment.Loader(ds, { size = 8 }) },
  { "Schedule", faceid.schedule.constant({ lr = 1 }) },
  { "Canvas", canvas },
  { "Gallery", faceid.gallery.new() },
  { "Prepared", prepared },
  { "faceid.Cache", mapped },
  { "faceid.CacheWriter", writer },
}
for _, o in ipairs(objects) do
  counts[o[1]] = methods(o[1], o[2])
end
for _, o in ipairs({ prepared, mapped, writer, canvas }) do o:close() end
helper.rmtree(dir)

local function missing()
  local out = {}
  for _, name in ipairs(required) do
    if not documented(name) then out[#out + 1] = name .. "  (" .. origin[name] .. ")" end
  end
  for _, k in ipairs(core_names) do
    local full = "faceid.core." .. k
    if not documented(full) and not documented("faceid." .. k) then
      out[#out + 1] = full .. "  (faceid.core)"
    end
  end
  for _, c in ipairs(cli_options) do
    local section = cli_sections[c[1]]
    if not section then
      out[#out + 1] = ("faceid %s %s  (doc/cli.md has no \"## `faceid %s`\" section)"):format(c[1], c[2], c[1])
    elseif not documented_option(c[2], section)
      and not (takes[c[2]] == counts.commands and documented_option(c[2], cli_sections["*"] or {})) then
      out[#out + 1] = ("faceid %s %s  (faceid %s --help)"):format(c[1], c[2], c[1])
    end
  end
  table.sort(out)
  return out
end

describe("doc/", function()
  it("has an index linking every page", function()
    local index = helper.read_file(DOC .. "/README.md")
    for _, f in ipairs(doc_files()) do
      if f ~= "README.md" then
        assert.is_truthy(index:find("(" .. f .. ")", 1, true), "doc/README.md does not link " .. f)
      end
    end
  end)

  it("finds names only as whole tokens in headings and code spans", function()
    assert.is_true(documented("faceid.image.load"))
    assert.is_true(documented("Tensor:add_"))
    assert.is_false(documented("faceid.image.lo"))
    assert.is_false(documented("faceid.no_such_function"))
    assert.is_false(documented("Tensor:no_such_method"))
    assert.is_true(documented("faceid.image", headings))
    assert.is_false(documented("faceid.image.MAX", headings))
    local m = mentions_of("# `a.b`\ntext a.c text\n```\nx.y\n```\nsee `p.q\nr`", {})
    assert.are.same({ "# `a.b`", "a.b", "p.q\nr" }, m)
    assert.is_true(documented_option("--eval-every", { "--eval-every N" }))
    assert.is_false(documented_option("--eval", { "--eval-every N" }))
    assert.is_false(documented_option("--every", { "--eval-every N" }))
    assert.is_true(documented_option("--out", { "--out DIR" }))
  end)

  it("enumerates the exports it checks", function()
    -- guards against an enumeration that silently finds nothing
    assert.is_true(counts.core > 40)
    assert.is_true(counts.Tensor > 60)
    assert.is_true(counts.DenseNet > 15)
    assert.is_true(counts.Optimizer >= 9)
    assert.is_true(counts.Dataset > 10)
    assert.is_true(#required > 200)
    assert.is_truthy(origin["faceid.train.run"])
    assert.is_truthy(origin["Loader:batch"])
    assert.is_truthy(origin["ContrastiveLoss:forward"])
    assert.is_true(counts.Canvas >= 12)
    assert.is_true(counts.Gallery >= 8)
    assert.is_true(counts.Prepared >= 8)
    assert.is_true(counts["faceid.Cache"] >= 5)
    assert.is_true(counts["faceid.CacheWriter"] >= 4)
    assert.is_truthy(origin["faceid.plot.pairs"])
    assert.is_truthy(origin["faceid.cli.main"])
    assert.is_true(counts.commands >= 8)
    assert.is_true(counts.options > 60)
    assert.is_truthy(cli_sections.train and cli_sections.demo)
  end)

  it("mentions every public function, method and constant", function()
    local out = missing()
    assert(#out == 0, ("%d names are not documented in doc/ (a heading or a code span must name them):\n  %s")
      :format(#out, table.concat(out, "\n  ")))
  end)
end)
