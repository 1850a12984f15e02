-- faceid.cache: prepare a tiny tree (with a corrupt file) and AT&T, read
-- the file back by the documented layout (header fields, checksum), check
-- each stored face against an independent decode-resize-pack, batches
-- bit-identical to the in-memory cache, and refusals of truncated,
-- damaged and stale caches.
local faceid = require("faceid")
local A = require("faceid.augment")
local C = require("faceid.cache")
local data = require("faceid.data")
local P = require("faceid.pairs")
local image = require("faceid.image")
local helper = require("helper")

local function max_diff(a, b)
  return (a - b):abs():max()
end

local function quiet()
  return { on_skip = function() end }
end

-- FNV-1a 64 over a string (Lua integers wrap like uint64 on * and ~)
local function fnv1a(h, s)
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001b3
  end
  return h
end
local FNV_OFFSET = 0xcbf29ce484222325 -- wraps to a negative integer, as intended

-- a number rounded to float32
local function f32(x)
  return (string.unpack("<f", string.pack("<f", x)))
end

-- 8-bit planes of a C x H x W tensor as faceid.augment.pack documents
-- them, round(clamp(v, 0, 1) * 255) in float32 arithmetic, back in [0, 1]
local function packed_reference(img, planes)
  local t = img:totable()
  local out = faceid.zeros(planes, img:size(2), img:size(3))
  for c = 1, planes do
    for y = 1, img:size(2) do
      for x = 1, img:size(3) do
        local v = math.min(math.max(t[c][y][x], 0), 1)
        out:set(c, y, x, math.floor(f32(f32(v * 255) + 0.5)) / 255)
      end
    end
  end
  return out
end

-- the documented header fields
local function header(bytes)
  local f = {}
  f.magic, f.version, f.header, f.count, f.resize, f.channels, f.failed, f.pix_off, f.pix_bytes, f.tab_off,
    f.str_off, f.str_bytes, f.file_bytes, f.pix_sum = string.unpack("<c8I4I4I8I4I4I8I8I8I8I8I8I8i8", bytes)
  f.sum = string.unpack("<i8", bytes, 121)
  return f
end

-- change byte k (1-based) of a file
local function poke(path, k)
  local s = helper.read_file(path)
  helper.write_file(path, s:sub(1, k - 1) .. string.char((s:byte(k) + 1) % 256) .. s:sub(k + 1))
end

local function copy(src, dst)
  helper.write_file(dst, helper.read_file(src))
end

local function files_in(dir)
  local names = faceid.core.dir_list(dir)
  table.sort(names)
  return names
end

describe("faceid.cache", function()
  local root, out, ds, summary, cpath, seen
  setup(function()
    root, out = helper.tmpdir(), helper.tmpdir()
    local gen = faceid.Generator(31)
    for p = 1, 3 do
      assert(os.execute(("mkdir -p '%s/p%d'"):format(root, p)))
      for k = 1, 3 do
        -- sides from 9 to 23: some shorter than 12 (kept), most shrunk
        local img = faceid.rand(gen, 3, 15 + 3 * p - k, 9 + 2 * k + p)
        assert(image.save(img, ("%s/p%d/%d.png"):format(root, p, k)))
      end
    end
    assert(image.save(faceid.rand(gen, 1, 17, 14), root .. "/p3/4.png")) -- grey
    helper.write_file(root .. "/p2/9.jpg", "\255\216\255\224" .. string.rep("junk", 20))
    seen = {}
    ds = assert(data.folders(root, { on_skip = function(path, why) seen[#seen + 1] = { path, why } end }))
    cpath = out .. "/faces.fidcache"
    local calls = {}
    summary = assert(C.prepare(ds, cpath, { size = 12, threads = 2, progress = function(done, total, failed)
      calls[#calls + 1] = { done, total, failed }
    end }))
    assert.same({ { 11, 11, 1 } }, calls)
  end)
  teardown(function()
    helper.rmtree(root)
    helper.rmtree(out)
  end)

  it("reports and counts an image it cannot decode, and leaves no temporary file", function()
    assert.equal(11, summary.images)
    assert.equal(1, summary.failed)
    assert.equal(1, #summary.skipped)
    assert.truthy(summary.skipped[1].path:find("p2/9.jpg", 1, true))
    assert.truthy(summary.skipped[1].why:find("cannot decode", 1, true), summary.skipped[1].why)
    assert.equal(1, #seen) -- through the data set's on_skip, with the path
    assert.truthy(seen[1][1]:find("p2/9.jpg", 1, true))
    assert.equal(1, ds:n_bad())
    assert.same({ "faces.fidcache" }, files_in(out))
  end)

  it("writes the documented layout", function()
    local bytes = helper.read_file(cpath)
    local h = header(bytes)
    assert.equal("FIDCACHE", h.magic)
    assert.same({ 1, 128, 11, 12, 3, 1, 128 }, { h.version, h.header, h.count, h.resize, h.channels, h.failed,
      h.pix_off })
    assert.equal(#bytes, h.file_bytes)
    assert.equal(summary.bytes, #bytes)
    assert.equal(h.pix_off + h.pix_bytes, h.tab_off)
    assert.equal(h.tab_off + 88 * h.count, h.str_off)
    assert.equal(h.str_off + h.str_bytes, #bytes)
    assert.equal(fnv1a(fnv1a(FNV_OFFSET, bytes:sub(1, 120)), bytes:sub(h.tab_off + 1)), h.sum)
    assert.equal(fnv1a(FNV_OFFSET, bytes:sub(129, 128 + h.pix_bytes)), h.pix_sum)
    -- entry table: pixels tile the pixel area in order, strings are paths
    local pos = 0
    for j = 1, h.count do
      local e = h.tab_off + 88 * (j - 1) + 1
      local off, ch, hh, ww, _, path_off, path_len = string.unpack("<I8I4I4I4I4I8I4", bytes, e)
      assert.equal(ds:path(j), bytes:sub(h.str_off + path_off + 1, h.str_off + path_off + path_len))
      if ch > 0 then
        assert.equal(pos, off)
        pos = pos + ch * hh * ww
      end
    end
    assert.equal(h.pix_bytes, pos)
  end)

  it("stores each face as the Loader's in-memory cache does", function()
    local c <close> = assert(C.open(cpath, ds))
    assert.equal(11, #c)
    assert.equal(12, c.resize)
    for i = 1, #ds do
      local j = c:lookup(ds:path(i))
      local e = c:entry(j)
      assert.equal(ds:identity(i), e.identity)
      if ds:path(i):find("9.jpg", 1, true) then
        assert.is_nil(c:image(j))
        assert.truthy(e.reason:find("cannot decode", 1, true))
      else
        -- independently: load, shrink the shorter side to 12 (the other
        -- side rounded), 8 bits; grey stays one plane
        local img = image.load(ds:path(i))
        local H, W = img:size(2), img:size(3)
        local s = math.min(H, W)
        if s > 12 then
          local nh = H == s and 12 or math.floor(H * 12 / s + 0.5)
          local nw = W == s and 12 or math.floor(W * 12 / s + 0.5)
          img = image.resize(img, nh, nw)
        end
        local grey = ds:path(i):find("p3/4.png", 1, true) ~= nil
        assert.equal(grey and 1 or 3, e.channels)
        local want = packed_reference(img, e.channels)
        assert.same(want:size(), c:image(j):size())
        assert.is_true(max_diff(c:image(j), want) < 1e-6)
        helper.same(c:packed(j):unpack(), A.Loader(ds, { size = 12 }):source(i):unpack(), ds:path(i))
      end
    end
  end)

  it("gives batches bit-identical to the in-memory cache", function()
    local c <close> = assert(C.open(cpath, ds))
    local bad = ds:find("p2", 4) -- 9.jpg
    assert.equal(7, bad)
    local list = P.new(ds, { 1, 2, bad, 5, 9 }, { 3, 6, 10, 8, 11 }, { 0, 1, 1, 0, 1 })
    local mem = A.Loader(ds, { size = 10, resize = 12 })
    local map = A.Loader(ds, { size = 10, resize = 12, cache = c })
    local map2 = A.Loader(ds, { size = { 12, 9 }, cache = cpath })
    local mem2 = A.Loader(ds, { size = { 12, 9 } })
    for seed = 1, 3 do
      local x1, y1, k1 = mem:batch(list, 1, 5, faceid.Generator(seed))
      local x2, y2, k2 = map:batch(list, 1, 5, faceid.Generator(seed))
      assert.same({ 1, 2, 4, 5 }, k1)
      assert.same(k1, k2)
      helper.same(x2, x1, "batch")
      helper.same(y2, y1, "labels")
      local x3 = map2:batch(list, 2, 4, faceid.Generator(seed))
      helper.same(x3, mem2:batch(list, 2, 4, faceid.Generator(seed)), "batch 12x9")
    end
    helper.same(map:eval_batch(list, 1, 5), mem:eval_batch(list, 1, 5), "eval batch")
    helper.same(map:images({ 3, 1, 11 }), mem:images({ 3, 1, 11 }), "images")
    helper.same(map:images({ 3, 1, 11 }, faceid.Generator(8)), mem:images({ 3, 1, 11 }, faceid.Generator(8)),
      "augmented images")
    assert.equal(0, map.decoded)
    assert.is_nil(map:source(bad))
    local none = map:images({ bad })
    assert.is_nil(none)
    assert.truthy(tostring(map):find("faceid.cache.Prepared", 1, true))
  end)

  it("serves subsets and splits of the data set", function()
    local a, b = ds:split_by_identity({ counts = { 2, 1 }, seed = 3 })
    local list = P.epoch(a, faceid.Generator(4))
    local mem = A.Loader(a, { size = 8, resize = 12 })
    local map = A.Loader(a, { size = 8, resize = 12, cache = cpath })
    helper.same(map:batch(list, 1, 4, faceid.Generator(5)), mem:batch(list, 1, 4, faceid.Generator(5)), "split")
    local all = {}
    for i = 1, #b do all[i] = i end
    mem = A.Loader(b, { size = 8, resize = 12 })
    map = A.Loader(b, { size = 8, resize = 12, cache = cpath })
    helper.same(map:images(all, faceid.Generator(6)), mem:images(all, faceid.Generator(6)), "other side")
  end)

  it("refuses a loader of another size, and closed caches", function()
    local c = assert(C.open(cpath))
    helper.fails_with("holds faces brought to shorter side 12, this loader needs 16", A.Loader, ds,
      { size = 16, cache = c })
    c:close()
    helper.fails_with("is closed", function() return c:entry(1) end)
    helper.fails_with("is closed", A.Loader, ds, { size = 12, cache = c })
    assert.truthy(tostring(c):find("closed", 1, true))
  end)

  it("refuses truncated and damaged files with a message", function()
    local bytes = helper.read_file(cpath)
    local h = header(bytes)
    local bad = out .. "/bad.fidcache"
    local function refused(pattern, opts)
      local c, msg = C.open(bad, nil, opts)
      assert.is_nil(c)
      assert.truthy(msg:find(pattern, 1, true), msg)
    end
    helper.write_file(bad, bytes:sub(1, #bytes - 1))
    refused("is truncated: the header says " .. #bytes .. " bytes, the file has " .. (#bytes - 1))
    helper.write_file(bad, bytes:sub(1, 100))
    refused("shorter than its 128-byte header")
    helper.write_file(bad, "")
    refused("shorter than its 128-byte header")
    helper.write_file(bad, "NOTCACHE" .. bytes:sub(9))
    refused("is not a faceid cache")
    helper.write_file(bad, bytes:sub(1, 8) .. string.pack("<I4", 2) .. bytes:sub(13))
    refused("is a version 2 cache")
    helper.write_file(bad, bytes .. "x")
    refused("the header says " .. #bytes .. " bytes, the file has " .. (#bytes + 1))
    -- a count that would run past the file, with sizes that add up
    copy(cpath, bad)
    poke(bad, 17)
    refused("do not add up")
    -- a damaged entry or path: the checksum
    copy(cpath, bad)
    poke(bad, h.tab_off + 13)
    refused("checksum of its header and index does not match")
    copy(cpath, bad)
    poke(bad, h.str_off + 3)
    refused("checksum of its header and index does not match")
    -- entries that lie, under a checksum that matches: still refused
    local function forged(entry_field, value, pattern)
      local e = h.tab_off + entry_field -- entry 1
      local b = bytes:sub(1, e) .. string.pack("<I4", value) .. bytes:sub(e + 5)
      local sum = fnv1a(fnv1a(FNV_OFFSET, b:sub(1, 120)), b:sub(h.tab_off + 1))
      helper.write_file(bad, b:sub(1, 120) .. string.pack("<i8", sum) .. b:sub(129))
      refused(pattern)
    end
    forged(16, 9000, "the pixels of entry 1 lie outside the file") -- width
    forged(12, 16385, "entry 1 is 16385x") -- height
    forged(0, 1 << 30, "the pixels of entry 1 lie outside the file") -- pixel offset
    forged(8, 2, "entry 1 has 2 channels")
    forged(32, 1 << 20, "entry 1 has a string outside the file") -- path length
    -- a damaged pixel: found when asked to verify
    copy(cpath, bad)
    poke(bad, 200)
    assert.truthy(C.open(bad))
    refused("checksum of its pixels does not match", { verify = true })
    assert.truthy(C.open(cpath, nil, { verify = true }))
    local none, msg = C.open(out .. "/absent.fidcache")
    assert.is_nil(none)
    assert.truthy(msg:find("cannot open", 1, true), msg)
  end)

  it("refuses a stale cache, naming the difference", function()
    local tree = helper.tmpdir()
    assert(os.execute(("cp -rp '%s/.' '%s'"):format(root, tree)))
    local p = tree .. "/stale.fidcache"
    local d1 = assert(data.folders(tree, quiet()))
    assert(C.prepare(d1, p, { size = 12 }))
    assert.truthy(C.open(p, assert(data.folders(tree, quiet()))))
    local function stale(d, pattern)
      local c, msg = C.open(p, d)
      assert.is_nil(c)
      assert.truthy(msg:find("stale cache '" .. p .. "'", 1, true), msg)
      assert.truthy(msg:find(pattern, 1, true), msg)
      helper.fails_with(pattern, A.Loader, d, { size = 12, cache = p })
    end
    -- an image added
    assert(image.save(faceid.rand(faceid.Generator(1), 3, 14, 14), tree .. "/p1/7.png"))
    stale(assert(data.folders(tree, quiet())), "the data set has 1 image the cache lacks, e.g. '" .. tree
      .. "/p1/7.png'")
    os.remove(tree .. "/p1/7.png")
    -- an image removed
    os.rename(tree .. "/p1/2.png", tree .. "/p1-2.png")
    stale(assert(data.folders(tree, quiet())), "the cache holds 1 image the data set no longer lists, e.g. '"
      .. tree .. "/p1/2.png'")
    os.rename(tree .. "/p1-2.png", tree .. "/p1/2.png")
    -- an image replaced (another size)
    assert(image.save(faceid.rand(faceid.Generator(2), 3, 30, 30), tree .. "/p2/1.png"))
    stale(assert(data.folders(tree, quiet())), "'" .. tree .. "/p2/1.png' changed since the cache was prepared")
    -- ... which check_files = false lets pass
    assert.truthy(C.open(p, assert(data.folders(tree, quiet())), { check_files = false }))
    -- another identity for the same file
    local fake = setmetatable({ path = function(_, i) return d1:path(i) end,
      identity = function(_, i) return i == 2 and "someone" or d1:identity(i) end, derived = true },
      { __len = function() return #d1 end })
    local _, msg = C.open(p, fake, { check_files = false })
    assert.truthy(msg:find("is person 'someone' in the data set but 'p1' in the cache", 1, true), msg)
    helper.rmtree(tree)
  end)

  it("checks its arguments and reports a file it cannot write", function()
    local none, msg = C.prepare(ds, out .. "/no/such/dir/x.fidcache")
    assert.is_nil(none)
    assert.truthy(msg:find("faceid.cache.prepare: cannot write", 1, true), msg)
    helper.fails_with("faceid.cache.prepare: expected a data set", C.prepare, {}, "x")
    helper.fails_with("unknown option 'sise'", C.prepare, ds, "x", { sise = 1 })
    helper.fails_with("size must be an integer in 1..16384", C.prepare, ds, "x", { size = 0 })
    helper.fails_with("channels must be 1 or 3", C.prepare, ds, "x", { channels = 2 })
    helper.fails_with("threads must be an integer in 1..64", C.prepare, ds, "x", { threads = 0 })
    helper.fails_with("faceid.cache.open: path must be", C.open, 7)
    -- malformed jobs are errors, not crashes
    local c <close> = assert(C.open(cpath))
    local x = faceid.zeros(2, 3, 8, 8)
    local ok = string.pack("<i4i4BBBBBddddd", 1, 1, 0, 0, 1, 1, 0, 0, 1, 0.5, 0.5, 12)
    c:_augment(x, ok)
    assert.is_true(x:min() >= -1 and x:max() <= 1 and x:narrow(1, 1, 1):abs():max() > 0)
    helper.fails_with("row 3 out of range 1..2", c._augment, c, x,
      string.pack("<i4i4BBBBBddddd", 3, 1, 0, 0, 1, 1, 0, 0, 1, 0.5, 0.5, 12))
    helper.fails_with("entry 99 out of range", c._augment, c, x,
      string.pack("<i4i4BBBBBddddd", 1, 99, 0, 0, 1, 1, 0, 0, 1, 0.5, 0.5, 12))
    helper.fails_with("job 2 is cut short", c._augment, c, x, ok .. ok:sub(1, 20))
    helper.fails_with("is malformed", c._augment, c, x, ok:sub(1, 12) .. "\9" .. ok:sub(14))
    helper.fails_with("bad parameters", c._augment, c, x,
      string.pack("<i4i4BBBBBddddd", 1, 1, 0, 0, 1, 1, 0, 0, -1, 0.5, 0.5, 12))
    local failed = c:lookup(ds:path(ds:find("p2", 4)))
    helper.fails_with("failed", c._augment, c, x,
      string.pack("<i4i4BBBBBddddd", 1, failed, 0, 0, 1, 1, 0, 0, 1, 0.5, 0.5, 12))
  end)

  it("prepares grey faces as one plane with channels = 1", function()
    local p = out .. "/grey.fidcache"
    local s = assert(C.prepare(ds, p, { size = 12, channels = 1, threads = 1 }))
    assert.equal(1, s.failed)
    local c <close> = assert(C.open(p, ds))
    assert.equal(1, c.channels)
    local j = c:lookup(ds:path(1))
    assert.equal(1, c:entry(j).channels)
    local list = P.epoch(ds, faceid.Generator(6))
    local x = A.Loader(ds, { size = 12, cache = c, recipe = { color = false } }):batch(list, 1, 3,
      faceid.Generator(6))
    helper.same(x:select(2, 1), x:select(2, 3), "grey planes")
  end)
end)

describe("faceid.cache on AT&T", function()
  it("prepares the 400 faces and serves identical batches", function()
    local dir, why = helper.need_data("att_faces", "s1/1.pgm")
    if not dir then return pending(why) end
    local out = helper.tmpdir()
    local ds = assert(data.folders(dir))
    local p = out .. "/att-64.fidcache"
    local s = assert(C.prepare(ds, p, { size = 64 }))
    assert.same({ 400, 0 }, { s.images, s.failed })
    local c <close> = assert(C.open(p, ds))
    -- 92x112 grey faces shrunk to 64x78 (112 * 64 / 92 = 77.9), one plane
    local e = c:entry(1)
    assert.same({ 1, 78, 64 }, { e.channels, e.height, e.width })
    assert.equal(128 + 400 * 64 * 78 + 400 * 88, header(helper.read_file(p)).str_off)
    local list = P.epoch(ds, faceid.Generator(1))
    local mem, map = A.Loader(ds, { size = 64 }), A.Loader(ds, { size = 64, cache = c })
    helper.same(map:batch(list, 1, 8, faceid.Generator(2)), mem:batch(list, 1, 8, faceid.Generator(2)), "AT&T")
    helper.same(map:eval_batch(list, 9, 8), mem:eval_batch(list, 9, 8), "AT&T eval")
    helper.rmtree(out)
  end)
end)
