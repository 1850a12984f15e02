-- Bad arguments from Lua: every function of faceid.core and every method
-- of its userdata types, found by walking the module and the metatables
-- (so a new function without an entry below fails the first test), is
-- called with wrong types, nil, negative, zero, huge and non-finite
-- numbers, mismatched shapes and closed objects. Each call either works or
-- raises a Lua error with a non-empty message; none crashes. Chosen calls
-- check the message itself. Under `make sanitize` the same calls must be
-- ASan/LSan clean.
local faceid = require("faceid")
local core = require("faceid.core")
local helper = require("helper")

local fails_with = helper.fails_with
local tmp = helper.tmpdir()

local function net(extra)
  local o = { input = 16, growth = 4, blocks = { 1 }, stem = "small", embedding = 4, seed = 1 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return faceid.DenseNet(o)
end
local function closed_tensor() local t = core.zeros(2, 3); t:close(); return t end
local function closed_net() local n = net(); n:close(); return n end

-- the methods of a userdata type: its __index table, the table a
-- function __index closes over, or the Tensor's `methods`
local function methods_of(mt)
  local idx = mt.methods or mt.__index
  if type(idx) == "function" then idx = select(2, debug.getupvalue(idx, 1)) end
  return type(idx) == "table" and idx or {}
end

-- every faceid.* metatable in the registry
local function types()
  local t = {}
  for k, v in pairs(debug.getregistry()) do
    if type(k) == "string" and k:match("^faceid") and type(v) == "table" then t[k] = v end
  end
  return t
end

-- receivers for each type's methods: a few states, the broken ones included
local receivers = {
  ["faceid.Tensor"] = { function() return core.zeros(2, 3) end, function() return core.ones(2, 3, 4, 5) end,
    closed_tensor, function() return core.zeros(2, 4):narrow(2, 2, 2) end,
    function() local t = core.zeros(4, 4); local v = t:narrow(1, 1, 2); t:close(); return v end },
  ["faceid.Generator"] = { function() return core.Generator(3) end },
  ["faceid.DenseNet"] = { net, closed_net, function() local n = net(); n:evaluate(); return n end },
  ["faceid.Optimizer"] = { function() return core.Adam(net()) end, function() return core.SGD(net()) end,
    function() local o = core.Adam(net()); o:close(); return o end,
    function() local n = net(); local o = core.Adam(n); n:close(); return o end },
  ["faceid.ContrastiveLoss"] = { function() return core.ContrastiveLoss() end,
    function() local l = core.ContrastiveLoss(); l:close(); return l end },
  ["faceid.PackedImage"] = { function() return core.augment_pack(core.zeros(3, 8, 8)) end },
  ["faceid.PoolIndices"] = { function() return select(2, core._nn.max_pool2d(core.zeros(1, 1, 4, 4), 2, 2, 2, 2, 0, 0)) end },
  ["faceid.Canvas"] = { function() return core.Canvas(8, 6) end,
    function() local c = core.Canvas(4, 4); c:close(); return c end },
  ["faceid.CacheWriter"] = { function() return assert(core.cache_writer(tmp .. "/w.cache", 8, 3, 1)) end,
    function() local w = assert(core.cache_writer(tmp .. "/c.cache", 8, 3, 1)); w:close(); return w end },
  -- an empty cache (no strings: the writer's string buffer was never made)
  ["faceid.Cache"] = { function()
    local w = assert(core.cache_writer(tmp .. "/r.cache", 8, 3, 1))
    w:finish()
    return assert(core.cache_open(tmp .. "/r.cache"))
  end },
}
-- types with no methods of their own (internal handles)
local no_methods = { ["faceid.ThreadPool"] = true, ["faceid.core.Dir"] = true,
  ["faceid.SafetensorsReader"] = true }
-- calls the sweep leaves out, and why
local skip = {
  set_num_threads = "changes the process-wide thread count; checked below",
  ["_nn.set_threads"] = "changes the state's pool; checked below",
  ["faceid.DenseNet:threads"] = "changes the network's pool; checked below",
}
-- core entries that are not functions to call
local values = { _VERSION = true, image_max_pixels = true, image_max_side = true, canvas_max_side = true,
  Tensor = true,
  DenseNet_methods = true, DenseNet_metatable = true, _nn = true }

-- Arguments of the sweep: wrong types, nil, sizes that are negative, zero,
-- huge or not numbers, tensors of odd shapes, closed objects.
local pool = {
  true, false, "x", "", "\0", {}, { 1, 2 }, { { 1 } }, function() end, -1, 0, 1, 3, 2.5, 1e300, math.huge,
  -math.huge, 0 / 0, math.mininteger, math.maxinteger, 1 << 40, core.zeros(2, 3), core.zeros(1),
  core.zeros(1, 1, 1, 1), core.zeros(2, 3, 4, 5), core.zeros(3, 8, 8), closed_tensor(), core.Generator(1),
  core.zeros(2, 4), closed_net(), coroutine.create(function() end),
}
local CALLS = helper.sanitize and 25 or 60 -- random argument lists per function and receiver

-- Lua-defined methods (lua/faceid/*.lua) that fail with a Lua slip
-- ("attempt to index a number") instead of a checked message
local slips = {}

local function sweep(label, f, recv, g)
  for _ = 1, CALLS do
    local n, a = g:random(6) - 1, {}
    for j = 1, n do
      local k = g:random(#pool + 1)
      a[j] = pool[k] -- #pool + 1 gives nil
      -- never write into the working directory: a path (Lua turns numbers
      -- into strings too) given to a writer goes to the temporary folder
      if (type(a[j]) == "string" or type(a[j]) == "number") and (label:find("save") or label:find("writer"))
        and (j == 1 or recv) then
        a[j] = tmp .. "/f" .. j .. ".png"
      end
    end
    local ok, err
    if recv then
      ok, err = pcall(f, recv(), table.unpack(a, 1, n))
    else
      ok, err = pcall(f, table.unpack(a, 1, n))
    end
    if not ok then
      assert(type(err) == "string" and #err > 0, ("%s: error is not a message: %s"):format(label, tostring(err)))
      if err:find("attempt to ", 1, true) then
        assert(debug.getinfo(f, "S").what == "Lua", ("%s: a Lua slip, not a checked argument: %s"):format(label, err))
        slips[label] = err
      end
    end
  end
end

describe("every exposed function", function()
  it("is known to this spec (a new one needs its bad-argument cases here)", function()
    local unknown = {}
    for k, v in pairs(core) do
      if type(v) == "function" then
        if not values[k] and type(v) ~= "function" then unknown[#unknown + 1] = k end
      elseif not values[k] then
        unknown[#unknown + 1] = k
      end
    end
    for name, mt in pairs(types()) do
      if not receivers[name] and not no_methods[name] and next(methods_of(mt)) then
        unknown[#unknown + 1] = name
      end
      if no_methods[name] then
        assert.is_nil(next(methods_of(mt)), name .. " has methods now: give it receivers here")
      end
    end
    table.sort(unknown)
    assert.are.same({}, unknown)
  end)

  it("survives random bad arguments (faceid.core functions)", function()
    local g = core.Generator(20240601)
    local n = 0
    for k, f in pairs(core) do
      if type(f) == "function" and not skip[k] then
        sweep(k, f, nil, g)
        n = n + 1
      end
    end
    for k, f in pairs(core._nn) do
      if not skip["_nn." .. k] and k ~= "_pool_overhead" then
        sweep("_nn." .. k, f, nil, g)
        n = n + 1
      end
    end
    assert.is_true(n > 40)
  end)

  it("survives random bad arguments (methods of every userdata type)", function()
    local g = core.Generator(7)
    local n = 0
    for name, recvs in pairs(receivers) do
      local mt = assert(debug.getregistry()[name], name)
      for m, f in pairs(methods_of(mt)) do
        if not skip[name .. ":" .. m] then
          for _, r in ipairs(recvs) do sweep(name .. ":" .. m, f, r, g) end
          n = n + 1
        end
      end
      -- metamethods too (arithmetic, length, tostring, indexing)
      for mm, f in pairs(mt) do
        if type(f) == "function" and mm ~= "__gc" and mm ~= "__close" and mm ~= "__index" then
          for _, r in ipairs(recvs) do sweep(name .. "." .. mm, f, r, g) end
        end
      end
    end
    assert.is_true(n > 100)
  end)

  it("check their arguments when written in Lua too", function()
    local list = {}
    for label, err in pairs(slips) do list[#list + 1] = label .. " (" .. err .. ")" end
    table.sort(list)
    assert(#list == 0, "Lua methods without argument checks: " .. table.concat(list, "; "))
  end)
end)

describe("chosen bad calls", function()
  it("finish an empty cache without undefined behaviour", function()
    local w = assert(core.cache_writer(tmp .. "/empty.cache", 8, 3, 1))
    assert.is_true(w:finish())
    local c = assert(core.cache_open(tmp .. "/empty.cache"))
    assert.are.equal(0, c:info().count)
    c:close()
  end)

  it("refuse wrong types and nil with the function's name", function()
    fails_with("faceid.Tensor expected, got nil", core.matmul, nil, core.zeros(2, 2))
    fails_with("faceid.Tensor expected, got string", core.matmul, "x", core.zeros(2, 2))
    fails_with("faceid.image.resize", core.image_resize, core.zeros(3, 4, 4), -1, 5)
    fails_with("faceid.image.resize", core.image_resize, core.zeros(3, 4, 4), 5, 1 << 40)
    fails_with("faceid.core.image_decode: expected the encoded image as a string, got table",
      core.image_decode, {})
    fails_with("channels must be 1 or 3, got 2", core.image_decode, "x", 2)
    fails_with("faceid.save", core.save, tmp .. "/x.safetensors", { a = "not a tensor" })
    fails_with("path contains a NUL byte", core.load, "a\0b")
  end)

  it("refuse negative, zero and huge sizes before allocating", function()
    fails_with("faceid.zeros: size 1 must be a positive integer", core.zeros, -3)
    fails_with("faceid.zeros: size 1 must be a positive integer", core.zeros, 0)
    fails_with("too large", core.zeros, 1 << 62)
    fails_with("faceid.empty: size 1 must be a positive integer", core.empty, 0 / 0)
    fails_with("too large", core.randn, core.Generator(1), 1 << 31, 1 << 31)
    fails_with("nn._pool_overhead: jobs must be 1..10000000", core._nn._pool_overhead, 1 << 40)
    fails_with("nn._pool_overhead: jobs must be 1..10000000", core._nn._pool_overhead, 0)
  end)

  it("refuse mismatched shapes naming both", function()
    local n = net()
    fails_with("DenseNet:forward", n.forward, n, core.zeros(2, 3, 8, 8))
    local l = core.ContrastiveLoss()
    fails_with("ContrastiveLoss", l.forward, l, core.zeros(4, 3), core.zeros(5))
    fails_with("2x3", core.matmul, core.zeros(2, 3), core.zeros(2, 3))
  end)

  it("refuse closed tensors, networks, optimizers and losses", function()
    local t = closed_tensor()
    fails_with("tensor has been closed", core.matmul, t, t)
    fails_with("faceid.save: tensor 'a' has been closed", core.save, tmp .. "/x.safetensors", { a = t })
    local n = closed_net()
    fails_with("network has been closed", n.forward, n, core.zeros(2, 3, 16, 16))
    fails_with("network has been closed", core.Adam, n)
    local n2 = net()
    local o = core.Adam(n2)
    n2:close()
    fails_with("Adam:step: the network has been closed", o.step, o)
    local l = core.ContrastiveLoss()
    l:close()
    assert.has_error(function() l:forward(core.zeros(2, 4), core.zeros(1)) end)
  end)

  it("refuse a model in the wrong mode: backward before forward", function()
    local n = net()
    fails_with("DenseNet:backward: backward needs a training-mode forward first", n.backward, n, core.zeros(2, 4))
    n:evaluate()
    n:forward(core.zeros(2, 3, 16, 16))
    fails_with("DenseNet:backward: backward needs a training-mode forward first", n.backward, n, core.zeros(2, 4))
    local l = core.ContrastiveLoss()
    fails_with("ContrastiveLoss:backward: no forward to go back through", l.backward, l)
  end)

  it("bound the thread counts", function()
    local before = core.get_num_threads()
    assert.has_error(function() core.set_num_threads(-1) end)
    assert.has_error(function() core.set_num_threads("x") end)
    assert.has_error(function() core._nn.set_threads(0) end)
    assert.has_error(function() core._nn.set_threads(1 << 40) end)
    local n = net()
    assert.has_error(function() n:threads(-2) end)
    assert.are.equal(before, core.get_num_threads())
  end)
end)

describe("memory", function()
  it("is returned by collectgarbage() after dropping models and tensors", function()
    local mem = core.memory
    if not select(2, mem()) then return pending("faceid.memory() is unavailable here") end
    if helper.sanitize then return pending("RSS is meaningless under ASan's allocator") end
    collectgarbage()
    collectgarbage()
    local _, base = mem()
    do
      local big = {}
      for i = 1, 8 do big[i] = core.ones(1024, 1024) end -- 32 MiB
      local nets = {}
      for i = 1, 4 do nets[i] = net({ input = 64, growth = 16, blocks = { 4, 4 } }) end
      local _, during = mem()
      assert.is_true(during - base > 24 * 2 ^ 20, "the allocations did not show in RSS")
    end
    collectgarbage()
    collectgarbage()
    local _, after = mem()
    assert.is_true(after - base < 8 * 2 ^ 20, ("%.1f MiB still held after collectgarbage()"):format((after - base) / 2 ^ 20))
  end)
end)

teardown(function() helper.rmtree(tmp) end)
