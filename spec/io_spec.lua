-- Safetensors I/O: faceid.save, faceid.load, faceid.load_bytes.
-- Expected bytes are assembled by hand here with string.pack; expected
-- values of the fixture come from spec/fixtures/io_fixture.py (Python's
-- struct + json); conversions are checked against values computed with
-- Python's struct ('e' format) and exact fractions, pasted below.
local faceid = require("faceid")
local helper = require("helper")

local function f32(x)
  return (string.unpack("<f", string.pack("<f", x)))
end

local flatten = helper.flatten

local function same_values(a, b)
  assert.are.same(a:size(), b:size())
  assert.are.same(a:totable(), b:totable())
end

local function listdir(dir)
  local p = assert(io.popen("ls -A '" .. dir .. "'"))
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

-- a file from a header string and a data section of `ndata` bytes (or a string)
local function st(header, data)
  if type(data) ~= "string" then data = string.rep("\0", data or 0) end
  return string.pack("<I8", #header) .. header .. data
end

local function entry(name, dtype, shape, b, e)
  return ('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%s,%s]}'):format(
    name, dtype, table.concat(shape, ","), b, e)
end

-- refused with nil + a message (optionally matching `pattern`), never an error
local function refused(bytes, pattern)
  local ok, t, msg = pcall(faceid.load_bytes, bytes)
  assert(ok, "load_bytes raised instead of returning nil: " .. tostring(t))
  assert(t == nil, "a malformed file was accepted: " .. ("%q"):format(bytes:sub(1, 200)))
  assert.is_string(msg)
  assert.truthy(msg:match("^faceid%.load_bytes: "), msg)
  if pattern then
    assert(msg:find(pattern, 1, true), ("message %q lacks %q"):format(msg, pattern))
  end
  return msg
end

local tmp
before_each(function() tmp = helper.tmpdir() end)
after_each(function() helper.rmtree(tmp) end)

describe("faceid.save and faceid.load", function()
  it("round-trips several shapes, including 4-D, bit for bit", function()
    local g = faceid.Generator(11)
    local tensors = {
      vec = faceid.randn(g, 7),
      mat = faceid.randn(g, 3, 5),
      cube = faceid.randn(g, 2, 3, 4),
      conv = faceid.randn(g, 4, 3, 2, 5),
      one = faceid.tensor({ 42 }),
    }
    local path = tmp .. "/m.safetensors"
    assert.is_true(faceid.save(path, tensors))
    local got, meta, dtypes = faceid.load(path)
    assert.are.same({}, meta)
    for name, t in pairs(tensors) do
      assert.is_true(got[name]:is_contiguous())
      same_values(t, got[name])
      assert.are.equal("F32", dtypes[name])
    end
    local n = 0
    for _ in pairs(got) do n = n + 1 end
    assert.are.equal(5, n)
  end)

  it("saves narrowed and transposed views in row-major order", function()
    local base = faceid.arange(120):view(2, 3, 4, 5)
    local views = {
      narrowed = base:narrow(3, 2, 2),                  -- 2x3x2x5
      transposed = base:transpose(1, 4),                -- 5x3x4x2
      both = base:transpose(2, 3):narrow(4, 2, 3),      -- 2x4x3x3
      col = faceid.arange(12):view(3, 4):select(2, 2),  -- 3, stride 4
      t2 = faceid.arange(6):view(2, 3):t(),
    }
    assert.is_false(views.transposed:is_contiguous())
    assert.is_true(faceid.save(tmp .. "/v.safetensors", views))
    local got = faceid.load(tmp .. "/v.safetensors")
    for name, v in pairs(views) do same_values(v, got[name]) end
    -- element by element against naive indexing of the base
    local tr = got.transposed
    for a = 1, 5 do
      for b = 1, 3 do
        for c = 1, 4 do
          for d = 1, 2 do
            assert.are.equal(base:get(d, b, c, a), tr:get(a, b, c, d))
          end
        end
      end
    end
    assert.are.same({ { 0, 3 }, { 1, 4 }, { 2, 5 } }, got.t2:totable())
    assert.are.same({ 1, 5, 9 }, got.col:totable())
  end)

  it("keeps metadata and names with quotes, backslashes, control characters and unicode", function()
    local meta = {
      ['quote"d'] = 'say "hi"',
      ["back\\slash"] = "C:\\path\\",
      ["unicode"] = "h\u{e9}llo \u{4e16}\u{754c} \u{1F600}",
      ["lines"] = "a\nb\tc\r\0d\1",
      [""] = "",
    }
    local tensors = { ['w"x\\y'] = faceid.ones(2), ["\u{e9}t\u{e9}"] = faceid.zeros(1) }
    assert.is_true(faceid.save(tmp .. "/m.safetensors", tensors, { metadata = meta }))
    local got, m = faceid.load(tmp .. "/m.safetensors")
    assert.are.same(meta, m)
    same_values(tensors['w"x\\y'], got['w"x\\y'])
    same_values(tensors["\u{e9}t\u{e9}"], got["\u{e9}t\u{e9}"])
    -- the header itself is valid JSON with the escapes we expect
    local bytes = helper.read_file(tmp .. "/m.safetensors")
    local header = bytes:sub(9, 8 + string.unpack("<I8", bytes))
    assert.truthy(header:find('"quote\\"d":"say \\"hi\\""', 1, true))
    assert.truthy(header:find('"back\\\\slash":"C:\\\\path\\\\"', 1, true))
    assert.truthy(header:find('"a\\nb\\tc\\r\\u0000d\\u0001"', 1, true))
  end)

  it("writes and reads every writable dtype", function()
    local vals = { 0.5, -1.25, 3, 1024, -0.0078125, 6 }
    local t = faceid.tensor(vals):view(2, 3)
    local ints = faceid.tensor({ -7, 0, 2 ^ 40, -2 ^ 31, 123456789, 1 })
    local tensors = { f32 = t, f64 = t, f16 = t, bf16 = t, i64 = ints }
    local dtypes = { f64 = "F64", f16 = "F16", bf16 = "BF16", i64 = "I64" }
    assert.is_true(faceid.save(tmp .. "/d.safetensors", tensors, { dtypes = dtypes }))
    local got, _, dt = faceid.load(tmp .. "/d.safetensors")
    for _, name in ipairs({ "f32", "f64", "f16", "bf16" }) do
      assert.are.same({ { 0.5, -1.25, 3 }, { 1024, -0.0078125, 6 } }, got[name]:totable())
    end
    assert.are.same({ -7, 0, 2 ^ 40, -2 ^ 31, f32(123456789), 1 }, got.i64:totable())
    assert.are.same({ f32 = "F32", f64 = "F64", f16 = "F16", bf16 = "BF16", i64 = "I64" }, dt)
  end)

  it("rounds to half and bfloat16 to nearest even, like Python", function()
    -- Python: struct.unpack('<e', struct.pack('<e', float32(v))); bfloat16 by
    -- choosing the nearer of the two neighbours with fractions.Fraction
    local x = faceid.tensor({ 0.1, 1 / 3, 1e-7, 3e-8, 2 ^ -25, 65519, 1e5, -1e5, 1e-4 })
    local y = faceid.tensor({ 0.1, 1 / 3, 3.14159, -1e-3 })
    assert.is_true(faceid.save(tmp .. "/r.safetensors", { x = x, y = y },
      { dtypes = { x = "F16", y = "BF16" } }))
    local got = faceid.load(tmp .. "/r.safetensors")
    assert.are.same({ 0.0999755859375, 0.333251953125, 1.1920928955078125e-07, 5.960464477539063e-08,
      0.0, 65504.0, math.huge, -math.huge, 0.00010001659393310547 }, got.x:totable())
    assert.are.same({ 0.10009765625, 0.333984375, 3.140625, -0.00099945068359375 }, got.y:totable())
    -- and the bytes on disk (struct.pack('<e', ...).hex(): 662e 5535 0200 0100 ...)
    local bytes = helper.read_file(tmp .. "/r.safetensors")
    local data = bytes:sub(9 + string.unpack("<I8", bytes))
    assert.are.equal("\x66\x2e\x55\x35\x02\x00\x01\x00\x00\x00\xff\x7b\x00\x7c\x00\xfc\x8e\x06",
      data:sub(1, 18))
    assert.are.equal("\xcd\x3d\xab\x3e\x49\x40\x83\xba", data:sub(19, 26))
  end)

  it("produces exactly the bytes of a hand-assembled file", function()
    local a = faceid.tensor({ 0.5, -1 })
    local b = faceid.tensor({ { 1, 2 }, { 3, 4 } })
    local c = faceid.tensor({ -3, 2 ^ 33 })
    assert.is_true(faceid.save(tmp .. "/x.safetensors", { b = b, a = a, c = c, d = faceid.tensor({ 0.25 }) },
      { metadata = { k = "v" }, dtypes = { c = "I64", d = "F64" } }))
    local json = '{"__metadata__":{"k":"v"},'
      .. '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
      .. '"b":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},'
      .. '"c":{"dtype":"I64","shape":[2],"data_offsets":[24,40]},'
      .. '"d":{"dtype":"F64","shape":[1],"data_offsets":[40,48]}}'
    json = json .. string.rep(" ", (8 - (8 + #json) % 8) % 8)
    local want = string.pack("<I8", #json) .. json
      .. string.pack("<ff", 0.5, -1) .. string.pack("<ffff", 1, 2, 3, 4)
      .. string.pack("<i8i8", -3, 2 ^ 33) .. string.pack("<d", 0.25)
    assert.are.equal(0, (8 + #json) % 8)
    assert.are.equal(want, helper.read_file(tmp .. "/x.safetensors"))
    -- without metadata there is no "__metadata__" key at all
    assert.is_true(faceid.save(tmp .. "/y.safetensors", { a = a }))
    json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    json = json .. string.rep(" ", (8 - (8 + #json) % 8) % 8)
    assert.are.equal(string.pack("<I8", #json) .. json .. string.pack("<ff", 0.5, -1),
      helper.read_file(tmp .. "/y.safetensors"))
  end)

  it("writes scalars with shape [] as PyTorch stores 0-dim tensors", function()
    local nbt = faceid.tensor({ 3 })
    assert.is_true(faceid.save(tmp .. "/s.safetensors", { n = nbt, v = faceid.ones(1) },
      { dtypes = { n = "I64" }, scalars = { n = true, v = false } }))
    local json = '{"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
      .. '"v":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}'
    json = json .. string.rep(" ", (8 - (8 + #json) % 8) % 8)
    assert.are.equal(string.pack("<I8", #json) .. json .. string.pack("<i8f", 3, 1),
      helper.read_file(tmp .. "/s.safetensors"))
    local t = faceid.load(tmp .. "/s.safetensors")
    assert.are.same({ 1 }, t.n:size())
    assert.are.equal(3, t.n:get(1))
  end)

  it("loads a file written independently by Python (spec/fixtures/io_fixture.py)", function()
    local t, meta, dtypes = faceid.load("spec/fixtures/io_fixture.safetensors")
    assert(t, meta)
    assert.are.same({ format = "pt", note = 'h\u{e9}llo "faceid" \\ \u{1F600}' }, meta)
    assert.are.same({ weight = "F32", half = "F16", count = "I64", double = "F64", scalar = "I32",
      brain = "BF16", small = "I16", tiny = "I8", bytes = "U8", flags = "BOOL" }, dtypes)
    assert.are.same({ { 0.5, -1.5, 2.25 }, { 0, 100, -0.125 } }, t.weight:totable())
    assert.are.same({ 1, -2.5, 65504, 2 ^ -24 }, t.half:totable())
    assert.are.same({ -7, 0, 2 ^ 40 }, t.count:totable())
    assert.are.same({ 2, 1, 1, 2 }, t.double:size())
    assert.are.same({ f32(0.1), -2, f32(1e10), 3 }, flatten(t.double:totable()))
    assert.are.same({ 1 }, t.scalar:size())
    assert.are.equal(-123456, t.scalar:get(1))
    assert.are.same({ 1.5, -0.15625 }, t.brain:totable())
    assert.are.same({ -32768, 32767 }, t.small:totable())
    assert.are.same({ -128, 127 }, t.tiny:totable())
    assert.are.same({ 0, 200, 255 }, t.bytes:totable())
    assert.are.same({ 1, 0, 1 }, t.flags:totable())
    -- load_bytes gives the same
    local t2, meta2, dtypes2 = faceid.load_bytes(helper.read_file("spec/fixtures/io_fixture.safetensors"))
    assert.are.same(meta, meta2)
    assert.are.same(dtypes, dtypes2)
    for name, v in pairs(t) do same_values(v, t2[name]) end
  end)

  it("accepts what the format allows: scalars, gaps, unknown entry keys, white space, null metadata", function()
    local h = '{ "__metadata__" : null , "s" : { "dtype":"F32", "shape":[], "data_offsets":[4,8],'
      .. ' "extra": {"x": [1, -2.5e3, true, false, null, "\\u00e9"]} } }\n\t  '
    local t, meta = faceid.load_bytes(st(h, string.pack("<ff", 9, 7)))
    assert(t, meta)
    assert.are.same({}, meta)
    assert.are.same({ 7 }, t.s:totable())
    local empty, m, d = faceid.load_bytes(st("{}"))
    assert.are.same({}, empty)
    assert.are.same({}, m)
    assert.are.same({}, d)
  end)
end)

describe("faceid.save writes atomically", function()
  it("leaves no temporary file behind and replaces an existing file", function()
    local path = tmp .. "/w.safetensors"
    assert.is_true(faceid.save(path, { a = faceid.ones(3) }))
    assert.is_true(faceid.save(path, { b = faceid.zeros(2) }))
    assert.are.same({ "w.safetensors" }, listdir(tmp))
    local t = faceid.load(path)
    assert.is_nil(t.a)
    assert.are.same({ 0, 0 }, t.b:totable())
  end)

  it("returns nil and a message for a missing or unwritable directory", function()
    local ok, msg = faceid.save(tmp .. "/missing/dir/w.safetensors", { a = faceid.ones(1) })
    assert.is_nil(ok)
    assert.truthy(msg:find(tmp .. "/missing/dir/w.safetensors", 1, true), msg)
    assert.truthy(msg:find("No such file", 1, true), msg)
    ok, msg = faceid.save("/proc/faceid-w.safetensors", { a = faceid.ones(1) })
    assert.is_nil(ok)
    assert.truthy(msg:match("^faceid%.save: /proc/faceid%-w%.safetensors: "), msg)
    assert.are.same({}, listdir(tmp))
  end)

  it("refuses a read-only directory (when not running as root)", function()
    local p = io.popen("id -u")
    local uid = p:read("l")
    p:close()
    if uid == "0" then pending("root ignores directory permissions") end
    local dir = tmp .. "/ro"
    assert(os.execute("mkdir '" .. dir .. "' && chmod 555 '" .. dir .. "'"))
    local ok, msg = faceid.save(dir .. "/w.safetensors", { a = faceid.ones(1) })
    os.execute("chmod 755 '" .. dir .. "'")
    assert.is_nil(ok)
    assert.truthy(msg:find("Permission denied", 1, true), msg)
    assert.are.same({}, listdir(dir))
  end)

  it("keeps an existing good file when a save fails", function()
    local path = tmp .. "/good.safetensors"
    assert.is_true(faceid.save(path, { a = faceid.arange(4) }))
    local before = helper.read_file(path)
    -- a programming error: raised before anything is written
    assert.has_error(function() faceid.save(path, { a = faceid.tensor({ 0.5 }) }, { dtypes = { a = "I64" } }) end,
      "faceid.save: tensor 'a': I64 needs integral values, found 0.5")
    assert.are.equal(before, helper.read_file(path))
    -- the rename fails: the target is a directory
    local dirpath = tmp .. "/adir"
    assert(os.execute("mkdir '" .. dirpath .. "'"))
    local ok, msg = faceid.save(dirpath, { a = faceid.ones(2) })
    assert.is_nil(ok)
    assert.truthy(msg:find("renaming", 1, true), msg)
    assert.are.same({ "adir", "good.safetensors" }, listdir(tmp))
  end)

  it("keeps an existing good file when the disk fills up mid-write", function()
    -- a child process with a small file size limit and SIGXFSZ ignored, so
    -- writes fail with EFBIG the way they fail with ENOSPC on a full disk
    local path = tmp .. "/good.safetensors"
    assert.is_true(faceid.save(path, { a = faceid.arange(4) }))
    local before = helper.read_file(path)
    local script = tmp .. "/child.lua"
    helper.write_file(script, ([[
      package.path = %q
      package.cpath = %q
      local faceid = require("faceid")
      local ok, msg = faceid.save(%q, { big = faceid.zeros(100000) })
      io.write("RESULT ", tostring(ok), " ", tostring(msg))
    ]]):format(package.path, package.cpath, path))
    local p = io.popen("sh -c 'ulimit -f 64; trap \"\" XFSZ; exec lua5.4 \"" .. script .. "\"' 2>&1")
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("RESULT nil faceid.save: " .. path .. ": writing the temporary file failed: ", 1, true), out)
    assert.are.equal(before, helper.read_file(path))
    assert.are.same({ "child.lua", "good.safetensors" }, listdir(tmp))
  end)
end)

describe("faceid.save checks its arguments", function()
  local t = faceid.ones(2)
  local cases = {
    { "table expected, got nil", function() faceid.save(tmp .. "/e", nil) end },
    { "keys must be strings", function() faceid.save(tmp .. "/e", { t }) end },
    { "'a' is a number, not a tensor", function() faceid.save(tmp .. "/e", { a = 1 }) end },
    { "unknown option 'metdata'", function() faceid.save(tmp .. "/e", { a = t }, { metdata = {} }) end },
    { "option 'dtypes' must be a table", function() faceid.save(tmp .. "/e", { a = t }, { dtypes = "F16" }) end },
    { "not among the tensors", function() faceid.save(tmp .. "/e", { a = t }, { dtypes = { b = "F16" } }) end },
    { "got I32", function() faceid.save(tmp .. "/e", { a = t }, { dtypes = { a = "I32" } }) end },
    { "metadata 'k' is a number", function() faceid.save(tmp .. "/e", { a = t }, { metadata = { k = 1 } }) end },
    { "must not be empty", function() faceid.save(tmp .. "/e", { [""] = t }) end },
    { "control character", function() faceid.save(tmp .. "/e", { ["a\nb"] = t }) end },
    { "not valid UTF-8", function() faceid.save(tmp .. "/e", { ["\xff"] = t }) end },
    { "not valid UTF-8", function() faceid.save(tmp .. "/e", { a = t }, { metadata = { k = "\xc3" } }) end },
    { "reserved", function() faceid.save(tmp .. "/e", { __metadata__ = t }) end },
    { "I64 needs integral values, found inf",
      function() faceid.save(tmp .. "/e", { a = faceid.tensor({ 1 / 0 }) }, { dtypes = { a = "I64" } }) end },
    { "I64 needs integral values",
      function() faceid.save(tmp .. "/e", { a = faceid.tensor({ 2 ^ 63 }) }, { dtypes = { a = "I64" } }) end },
    { "has 2 elements and cannot be saved as a scalar",
      function() faceid.save(tmp .. "/e", { a = t }, { scalars = { a = true } }) end },
    { "scalars names 'b', which is not among the tensors",
      function() faceid.save(tmp .. "/e", { a = t }, { scalars = { b = true } }) end },
    { "scalars 'a' must be true or false", function() faceid.save(tmp .. "/e", { a = t }, { scalars = { a = 1 } }) end },
    { "path contains a NUL byte", function() faceid.save(tmp .. "/e\0x", { a = t }) end },
  }
  for _, case in ipairs(cases) do
    it("raises '" .. case[1] .. "'", function()
      local ok, err = pcall(case[2])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(case[1], 1, true), err)
      assert.are.same({}, listdir(tmp))
    end)
  end

  it("raises for a closed tensor", function()
    local c = faceid.ones(2)
    c:close()
    assert.has_error(function() faceid.save(tmp .. "/e", { c = c }) end, "faceid.save: tensor 'c' has been closed")
  end)

  it("accepts the extreme integral values of I64 exactly", function()
    local x = faceid.tensor({ -2 ^ 63, 2 ^ 62, -1 })
    assert.is_true(faceid.save(tmp .. "/i.safetensors", { x = x }, { dtypes = { x = "I64" } }))
    local bytes = helper.read_file(tmp .. "/i.safetensors")
    assert.are.equal(string.pack("<i8i8i8", math.mininteger, 1 << 62, -1), bytes:sub(-24))
  end)
end)

describe("faceid.load refuses hostile files", function()
  local good = st("{" .. entry("a", "F32", { 2 }, 0, 8) .. "," .. entry("b", "I64", { 1 }, 8, 16) .. "}",
    string.pack("<ffi8", 1, 2, 3))

  it("reports a missing file and names it", function()
    local t, msg = faceid.load(tmp .. "/nope.safetensors")
    assert.is_nil(t)
    assert.truthy(msg:find(tmp .. "/nope.safetensors", 1, true), msg)
    t, msg = faceid.load(tmp)
    assert.is_nil(t)
    assert.truthy(msg:find("not a regular file", 1, true), msg)
  end)

  it("refuses a file truncated at every length", function()
    assert(faceid.load_bytes(good))
    for n = 0, #good - 1 do
      refused(good:sub(1, n))
    end
    -- and the same through the file system for a few lengths
    for _, n in ipairs({ 0, 7, 8, 20, #good - 1 }) do
      local path = tmp .. "/t" .. n
      helper.write_file(path, good:sub(1, n))
      local t, msg = faceid.load(path)
      assert.is_nil(t)
      assert.truthy(msg:find("faceid.load: " .. path .. ": ", 1, true), msg)
    end
  end)

  it("refuses impossible header lengths", function()
    refused(string.pack("<I8", 100) .. "{}", "header length 100 exceeds the 2 bytes")
    refused(string.pack("<I8", 100000001) .. "{}", "exceeds the limit")
    refused(string.pack("<i8", -1) .. "{}", "exceeds the limit")
    refused(string.pack("<I8", 0), "expected '{'")
  end)

  it("refuses invalid JSON", function()
    local e = entry("a", "F32", { 1 }, 0, 4)
    local bad = {
      "", " ", "[]", "{", "}", "{,}", '{"a"}', '{"a":}', '{"a":1', "{" .. e, "{" .. e .. ",}",
      "{" .. e .. "}x", "{" .. e .. "}{}", "{" .. e .. "}\0", '{"a\1":{}}', '{"\\x":{}}', '{"\\u12":{}}',
      '{"\\ud800":{}}', '{"\\udc00x":{}}', '{"\\ud800\\u0041":{}}', '{"\xff":{}}', '{"\xc0\xaf":{}}',
      '{"\xed\xa0\x80":{}}', '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[' .. string.rep("[", 100)
      .. string.rep("]", 100) .. "]}}", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":tru}}',
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1.}}',
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":-}}',
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1e}}',
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":"unterminated}}',
      "{'a':1}", '{"a":{"dtype":"F32","shape":[1,],"data_offsets":[0,4]}}',
    }
    for _, h in ipairs(bad) do refused(st(h, 4)) end
  end)

  it("refuses wrong types, unknown dtypes and missing keys, naming the tensor", function()
    local cases = {
      { '{"w":5}', "tensor 'w': expected an object" },
      { '{"w":{}}', "tensor 'w': missing" },
      { '{"w":{"dtype":5,"shape":[1],"data_offsets":[0,4]}}', "tensor 'w': expected a string" },
      { '{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', "tensor 'w': unknown dtype 'F33'" },
      { '{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', "unsupported dtype 'F8_E4M3'" },
      { '{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}', "unknown dtype 'f32'" },
      { '{"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}', "tensor 'w': \"shape\" must be an array" },
      { '{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', "must be an integer" },
      { '{"w":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}', "must be an integer" },
      { '{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', "must be non-negative" },
      { '{"w":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}', "leading zero" },
      { '{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}', "must be an integer" },
      { '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', "two integers" },
      { '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', "two integers" },
      { '{"w":{"dtype":"F32","shape":[1],"data_offsets":{}}}', "must be an array" },
      { '{"w":{"dtype":"F32","shape":[1]}}', "tensor 'w': missing \"data_offsets\"" },
      { '{"w":{"shape":[1],"data_offsets":[0,4]}}', "tensor 'w': missing \"dtype\"" },
      { '{"w":{"dtype":"F32","data_offsets":[0,4]}}', "tensor 'w': missing \"shape\"" },
      { '{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "duplicate key \"dtype\"" },
      { '{"__metadata__":[],"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "must be an object" },
      { '{"__metadata__":{"k":1}}', "values must be strings" },
      { '{"__metadata__":{"k":"v"},"__metadata__":{}}', "duplicate \"__metadata__\"" },
      { '{"__metadata__":{"k":"v","k":"w"}}', "duplicate \"__metadata__\" key 'k'" },
    }
    for _, c in ipairs(cases) do refused(st(c[1], 4), c[2]) end
  end)

  it("refuses offsets out of range, overlapping, reversed or not matching the shape", function()
    local two = function(a, b) return st("{" .. a .. "," .. b .. "}", 16) end
    refused(st("{" .. entry("w", "F32", { 2 }, 0, 8) .. "}", 7), "tensor 'w': data_offsets [0, 8] run past the 7-byte")
    refused(st("{" .. entry("w", "F32", { 2 }, 12, 20) .. "}", 16), "run past")
    refused(st("{" .. entry("w", "F32", { 2 }, 0, 12) .. "}", 16), "hold 12 bytes but F32 2 needs 8")
    refused(st("{" .. entry("w", "F16", { 2, 2 }, 0, 16) .. "}", 16), "F16 2x2 needs 8")
    refused(st("{" .. entry("w", "F32", { 1 }, 8, 4) .. "}", 16), "reversed")
    refused(two(entry("a", "F32", { 2 }, 0, 8), entry("b", "F32", { 2 }, 4, 12)), "tensors 'a' and 'b' overlap")
    refused(two(entry("a", "F32", { 2 }, 8, 16), entry("b", "F32", { 4 }, 0, 16)), "overlap")
    refused(two(entry("a", "F32", { 2 }, 0, 8), entry("a", "F32", { 2 }, 8, 16)), "duplicate tensor name 'a'")
    refused(st("{" .. entry("w", "F32", { 1 }, 0, "18446744073709551615") .. "}", 16), "hold 18446744073709551615 bytes")
    refused(st('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}', 16), "too large")
  end)

  it("refuses empty, too many and overflowing dimensions", function()
    refused(st("{" .. entry("w", "F32", { 2, 0 }, 0, 0) .. "}", 8), "tensor 'w': a dimension is 0")
    refused(st("{" .. entry("w", "F32", { 1, 1, 1, 1, 1 }, 0, 4) .. "}", 8), "tensor 'w': more than 4 dimensions")
    refused(st("{" .. entry("w", "F32", { 4294967296, 4294967296, 4294967296 }, 0, 0) .. "}", 8), "is too large")
    refused(st("{" .. entry("w", "U8", { 4294967296, 4294967296 }, 0, 0) .. "}", 8), "is too large")
    refused(st("{" .. entry("w", "F64", { 2305843009213693952 }, 0, 0) .. "}", 8), "is too large")
    -- a shape that fits but claims more data than the file holds
    refused(st("{" .. entry("w", "F32", { 1000000, 1000 }, 0, 4000000000) .. "}", 8), "run past")
  end)

  it("survives a seeded random-byte sweep", function()
    local g = faceid.Generator(20181129)
    local function noise(n, alphabet)
      local out = {}
      for i = 1, n do
        if alphabet then
          local k = g:random(#alphabet)
          out[i] = alphabet:sub(k, k)
        else
          out[i] = string.char(g:random(0, 255))
        end
      end
      return table.concat(out)
    end
    local rounds = helper.sanitize and 300 or 1500
    local json = '{}[]:,"\\u0123456789abcdefF3I6BUdtypeshapedata_offsets__metadata__ -.eE'
    for _ = 1, rounds do
      refused(noise(g:random(0, 40)))
      local h = noise(g:random(0, 60), json)
      refused(string.pack("<I8", #h) .. h .. noise(g:random(0, 3)))
    end
    -- mutations of a valid file must load or be refused, never crash
    local loaded = 0
    for _ = 1, rounds do
      local bytes = { good:byte(1, -1) }
      for _ = 1, g:random(1, 4) do
        bytes[g:random(#bytes)] = g:random(0, 255)
      end
      local s = string.char(table.unpack(bytes))
      local ok, t, msg = pcall(faceid.load_bytes, s)
      assert(ok, t)
      if t then
        loaded = loaded + 1
        for _, v in pairs(t) do assert.is_true(faceid.is_tensor(v)) end
        assert.is_table(msg)
      else
        assert.is_string(msg)
      end
    end
    assert.truthy(loaded > 0 and loaded < rounds, "mutations that load: " .. loaded)
  end)
end)
