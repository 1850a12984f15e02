-- Tensor: construction, inspection, views, arithmetic, reductions, matmul.
-- Expected values come from naive Lua loops over totable(), never from the
-- kernels under test.
local faceid = require("faceid")
local helper = require("helper")

local function close(a, b, tol)
  return math.abs(a - b) <= (tol or 1e-5) * math.max(1, math.abs(a), math.abs(b))
end

local flatten = helper.flatten

local function assert_values(t, expected, tol)
  local got = flatten(t:totable())
  local want = flatten(expected)
  assert.are.equal(#want, #got)
  for i = 1, #want do
    assert(close(got[i], want[i], tol), ("element %d: got %.9g, want %.9g"):format(i, got[i], want[i]))
  end
end

describe("environment", function()
  it("runs under Lua 5.4", function()
    assert.are.equal("Lua 5.4", _VERSION)
  end)

  it("reports the faceid version", function()
    assert.is_string(faceid._VERSION)
    assert.truthy(faceid._VERSION:match("^%d+%.%d+%.%d+$"))
  end)
end)

describe("construction", function()
  it("builds from nested tables", function()
    local t = faceid.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    assert.are.same({ 2, 3 }, t:size())
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, t:totable())
    local t4 = faceid.tensor({ { { { 1 }, { 2 } } }, { { { 3 }, { 4 } } } })
    assert.are.same({ 2, 1, 2, 1 }, t4:size())
    assert.are.equal(4, t4:get(2, 1, 2, 1))
  end)

  it("stores float32", function()
    local t = faceid.tensor({ 0.1 })
    assert.are.equal(string.unpack("<f", string.pack("<f", 0.1)), t:get(1))
    assert.are_not.equal(0.1, t:get(1))
  end)

  it("makes zeros, ones, full, empty with sizes as varargs or a table", function()
    assert.are.same({ { 0, 0 }, { 0, 0 }, { 0, 0 } }, faceid.zeros(3, 2):totable())
    assert.are.same({ 1, 1, 1, 1 }, faceid.ones({ 4 }):totable())
    assert.are.same({ { 7.5, 7.5 } }, faceid.full({ 1, 2 }, 7.5):totable())
    assert.are.same({ { 2, 2 } }, faceid.full(1, 2, 2):totable())
    assert.are.same({ 2, 3, 4, 5 }, faceid.empty(2, 3, 4, 5):size())
  end)

  it("makes ranges with the stop excluded", function()
    assert.are.same({ 0, 1, 2, 3 }, faceid.arange(4):totable())
    assert.are.same({ 2, 4, 6 }, faceid.arange(2, 8, 2):totable())
    assert.are.same({ 1, 0.5 }, faceid.arange(1, 0.25, -0.5):totable())
  end)

  it("draws reproducible random tensors from an explicit generator", function()
    local a = faceid.randn(faceid.Generator(7), 4, 5)
    local b = faceid.randn(faceid.Generator(7), { 4, 5 })
    local c = faceid.randn(faceid.Generator(8), 4, 5)
    assert.is_true(a:equal(b))
    assert.is_false(a:equal(c))
  end)

  it("gives standard normals and uniforms with the right moments", function()
    local g = faceid.Generator(1)
    local n = faceid.randn(g, 100, 100)
    local s, s2 = 0, 0
    for _, v in ipairs(flatten(n:totable())) do
      s, s2 = s + v, s2 + v * v
    end
    local mean, var = s / 1e4, s2 / 1e4 - (s / 1e4) ^ 2
    assert.is_true(math.abs(mean) < 0.03, "mean " .. mean)
    assert.is_true(math.abs(var - 1) < 0.05, "variance " .. var)
    local u = faceid.rand(g, 10000)
    local lo, hi, su = 1, 0, 0
    for _, v in ipairs(u:totable()) do
      lo, hi, su = math.min(lo, v), math.max(hi, v), su + v
    end
    assert.is_true(lo >= 0 and hi < 1)
    assert.is_true(math.abs(su / 1e4 - 0.5) < 0.01)
  end)

  it("fills in place from a generator", function()
    local t = faceid.zeros(1000):uniform_(faceid.Generator(3), -2, -1)
    assert.is_true(t:max() < -1 and t:min() >= -2)
    local m = faceid.zeros(20000):normal_(faceid.Generator(3), 5, 0.5)
    assert.is_true(math.abs(m:mean() - 5) < 0.02)
  end)
end)

describe("generator", function()
  it("draws integers like math.random", function()
    local g = faceid.Generator(11)
    local seen = {}
    for _ = 1, 600 do
      local v = g:random(6)
      assert.is_true(v >= 1 and v <= 6 and math.type(v) == "integer")
      seen[v] = true
    end
    for v = 1, 6 do assert.is_true(seen[v]) end
    for _ = 1, 100 do
      local v = g:random(-3, 3)
      assert.is_true(v >= -3 and v <= 3)
    end
  end)

  it("makes permutations", function()
    local p = faceid.Generator(5):randperm(50)
    local seen = {}
    for _, v in ipairs(p) do seen[v] = (seen[v] or 0) + 1 end
    for v = 1, 50 do assert.are.equal(1, seen[v]) end
    assert.are_not.same(faceid.Generator(5):randperm(50), faceid.Generator(6):randperm(50))
  end)

  it("saves and restores its state exactly", function()
    local g = faceid.Generator(99)
    g:normal()
    local st = g:state()
    local a = { g:normal(), g:random(), g:random(1000) }
    g:set_state(st)
    assert.are.same(a, { g:normal(), g:random(), g:random(1000) })
    local c = g:clone()
    assert.are.equal(g:random(), c:random())
    assert.are.equal(faceid.Generator(5):state(), faceid.Generator(5):state())
    assert.are_not.equal(faceid.Generator(5):state(), faceid.Generator(6):state())
    assert.has_error(function() g:set_state("short") end)
  end)
end)

describe("inspection", function()
  local t = faceid.arange(24):view(2, 3, 4)

  it("reports size, dim, numel and length", function()
    assert.are.same({ 2, 3, 4 }, t:size())
    assert.are.equal(3, t:size(2))
    assert.are.equal(4, t:size(-1))
    assert.are.equal(3, t:dim())
    assert.are.equal(24, t:numel())
    assert.are.equal(2, #t)
  end)

  it("gets and sets 1-based elements", function()
    local u = t:clone()
    assert.are.equal(0, u:get(1, 1, 1))
    assert.are.equal(23, u:get(2, 3, 4))
    assert.are.equal(1 * 12 + 1 * 4 + 2, u:get(2, 2, 3)) -- row-major offset
    u:set(2, 1, 3, -5)
    assert.are.equal(-5, u:get(2, 1, 3))
    assert.are.equal(14, t:get(2, 1, 3))
  end)

  it("indexes and assigns along the first dimension", function()
    local u = t:clone()
    assert.are.same({ 4, 5, 6, 7 }, u[1][2]:totable())
    assert.are.equal(6, u[1][2][3])
    u[2] = 0
    assert.are.equal(0, u:sum(1):sum() - t[1]:sum())
    local v = faceid.zeros(3, 2)
    v[2] = faceid.tensor({ 8, 9 })
    assert.are.same({ { 0, 0 }, { 8, 9 }, { 0, 0 } }, v:totable())
  end)

  it("prints values when small and the shape when large", function()
    local s = tostring(faceid.tensor({ { 1, 2 }, { 3, 4.5 } }))
    assert.truthy(s:find("[[1, 2],", 1, true))
    assert.truthy(s:find("[3, 4.5]]", 1, true))
    assert.truthy(s:find("faceid.Tensor(2x2)", 1, true))
    assert.are.equal("faceid.Tensor(32x3x128x128)", tostring(faceid.empty(32, 3, 128, 128)))
  end)
end)

describe("views and copies", function()
  it("view shares storage and infers -1", function()
    local a = faceid.zeros(2, 6)
    local v = a:view(3, -1)
    assert.are.same({ 3, 4 }, v:size())
    v:set(3, 4, 9)
    assert.are.equal(9, a:get(2, 6))
  end)

  it("narrow is a view along any dimension", function()
    local a = faceid.arange(24):view(2, 3, 4)
    local n = a:narrow(3, 2, 2)
    assert.are.same({ 2, 3, 2 }, n:size())
    assert.is_false(n:is_contiguous())
    assert.are.same({ { 1, 2 }, { 5, 6 }, { 9, 10 } }, n:totable()[1])
    n:fill_(-1)
    assert.are.equal(-1, a:get(1, 1, 2))
    assert.are.equal(3, a:get(1, 1, 4))
    local r = a:narrow(1, 2, 1)
    assert.are.same({ 1, 3, 4 }, r:size())
    assert.is_true(r:is_contiguous())
  end)

  it("select drops a dimension", function()
    local a = faceid.arange(12):view(3, 4)
    assert.are.same({ 4, 5, 6, 7 }, a:select(1, 2):totable())
    assert.are.same({ 2, 6, 10 }, a:select(2, 3):totable())
    assert.are.equal(5, a:select(1, 2):select(1, 2))
  end)

  it("transpose swaps dimensions without copying", function()
    local a = faceid.arange(6):view(2, 3)
    local t = a:t()
    assert.are.same({ { 0, 3 }, { 1, 4 }, { 2, 5 } }, t:totable())
    t:set(3, 1, 42)
    assert.are.equal(42, a:get(1, 3))
    assert.are.same({ 4, 3, 2 }, faceid.zeros(2, 3, 4):transpose(1, 3):size())
  end)

  it("reshape copies when it must, contiguous only when needed", function()
    local a = faceid.arange(6):view(2, 3)
    local r = a:t():reshape(6)
    assert.are.same({ 0, 3, 1, 4, 2, 5 }, r:totable())
    assert.has_error(function() a:t():view(6) end)
    local c = a:contiguous()
    c:set(1, 1, 100)
    assert.are.equal(100, a:get(1, 1)) -- already contiguous: the same tensor
    local d = a:t():contiguous()
    assert.is_true(d:is_contiguous())
    d:set(1, 1, -7)
    assert.are.equal(100, a:get(1, 1))
  end)

  it("clone is independent; copy follows row-major order", function()
    local a = faceid.arange(4)
    local b = a:clone()
    b:fill_(0)
    assert.are.same({ 0, 1, 2, 3 }, a:totable())
    local m = faceid.zeros(2, 2):copy(a)
    assert.are.same({ { 0, 1 }, { 2, 3 } }, m:totable())
    local dst = faceid.zeros(2, 2)
    dst:t():copy(faceid.arange(4))
    assert.are.same({ { 0, 2 }, { 1, 3 } }, dst:totable())
  end)

  it("keeps the owner alive while a view exists", function()
    local v
    do
      local a = faceid.arange(1000)
      v = a:narrow(1, 501, 3)
    end
    collectgarbage()
    collectgarbage()
    assert.are.same({ 500, 501, 502 }, v:totable())
  end)

  it("joins tensors with cat", function()
    local a, b = faceid.ones(2, 3), faceid.zeros(1, 3)
    assert.are.same({ { 1, 1, 1 }, { 1, 1, 1 }, { 0, 0, 0 } }, faceid.cat({ a, b }):totable())
    local c = faceid.cat({ faceid.ones(2, 1), faceid.full({ 2, 2 }, 3) }, 2)
    assert.are.same({ { 1, 3, 3 }, { 1, 3, 3 } }, c:totable())
  end)
end)

describe("arithmetic", function()
  local g = faceid.Generator(2024)
  local a = faceid.randn(g, 3, 4)
  local b = faceid.randn(g, 3, 4):add(3) -- away from zero for division
  local av, bv = flatten(a:totable()), flatten(b:totable())

  local function expect(t, f)
    local got = flatten(t:totable())
    for i = 1, #av do
      local want = f(av[i], bv[i])
      assert(close(got[i], want, 1e-6), ("element %d: %g vs %g"):format(i, got[i], want))
    end
  end

  it("adds, subtracts, multiplies and divides tensors", function()
    expect(a + b, function(x, y) return x + y end)
    expect(a - b, function(x, y) return x - y end)
    expect(a * b, function(x, y) return x * y end)
    expect(a / b, function(x, y) return x / y end)
    expect(-a, function(x) return -x end)
  end)

  it("mixes tensors and scalars on either side", function()
    expect(a + 2, function(x) return x + 2 end)
    expect(2 - a, function(x) return 2 - x end)
    expect(a * 0.5, function(x) return x * 0.5 end)
    expect(3 / b, function(_, y) return 3 / y end)
    expect(b / 4, function(_, y) return y / 4 end)
  end)

  it("works on strided views", function()
    local bt = b:t():contiguous():t() -- same values, transposed strides
    assert.is_false(bt:is_contiguous())
    expect(a + bt, function(x, y) return x + y end)
    expect(bt:mul(2), function(_, y) return 2 * y end)
  end)

  it("broadcasts like PyTorch", function()
    local row = faceid.tensor({ { 10, 20, 30, 40 } })      -- 1x4
    local col = faceid.tensor({ { 1 }, { 2 }, { 3 } })     -- 3x1
    local r = a + row
    assert.are.same({ 3, 4 }, r:size())
    local at, rt = a:totable(), r:totable()
    for i = 1, 3 do
      for j = 1, 4 do assert(close(rt[i][j], at[i][j] + 10 * j, 1e-6)) end
    end
    assert.are.same({ { 11, 21, 31, 41 }, { 12, 22, 32, 42 }, { 13, 23, 33, 43 } }, (col + row):totable())
    assert.are.same({ 2, 3, 4 }, (faceid.zeros(2, 1, 4) - faceid.ones(3, 1)):size())
    assert.are.same({ { 0, 1 }, { 2, 3 } }, (faceid.arange(4):view(2, 2) * faceid.ones(2)):totable())
    local c = faceid.zeros(3, 4):add_(faceid.tensor({ 1, 2, 3, 4 }))
    assert.are.same({ 1, 2, 3, 4 }, c[3]:totable())
    assert.are.same({ { 0.5, 1 }, { 1.5, 2 } },
      (faceid.tensor({ { 1, 2 }, { 3, 4 } }) / faceid.tensor({ 2 })):totable())
  end)

  it("has in-place variants that return the receiver", function()
    local c = a:clone()
    assert.are.equal(c, c:add_(b))
    expect(c, function(x, y) return x + y end)
    c = a:clone():mul_(b):sub_(1):div_(2)
    expect(c, function(x, y) return (x * y - 1) / 2 end)
    c = a:clone():axpy_(b, -0.5)
    expect(c, function(x, y) return x - 0.5 * y end)
  end)

  it("has unary maps and clamp", function()
    expect(a:abs(), function(x) return math.abs(x) end)
    expect(b:sqrt(), function(_, y) return math.sqrt(y) end)
    expect(a:exp(), function(x) return math.exp(x) end)
    expect(b:log(), function(_, y) return math.log(y) end)
    expect(a:relu(), function(x) return math.max(x, 0) end)
    expect(a:clamp(-0.5, 0.5), function(x) return math.min(math.max(x, -0.5), 0.5) end)
    expect(a:pow(2), function(x) return x * x end)
    expect(a:maximum(b), function(x, y) return math.max(x, y) end)
  end)
end)

describe("reductions", function()
  local g = faceid.Generator(31)
  local x = faceid.randn(g, 3, 4, 5)
  local xt = x:totable()

  it("reduce the whole tensor", function()
    local s, mx, mn, sq, ab = 0, -math.huge, math.huge, 0, 0
    for _, v in ipairs(flatten(xt)) do
      s, sq, ab = s + v, sq + v * v, ab + math.abs(v)
      mx, mn = math.max(mx, v), math.min(mn, v)
    end
    assert.is_true(close(x:sum(), s, 1e-9))
    assert.is_true(close(x:mean(), s / 60, 1e-9))
    assert.are.equal(mx, x:max())
    assert.are.equal(mn, x:min())
    assert.is_true(close(x:norm(), math.sqrt(sq), 1e-9))
    assert.is_true(close(x:norm(1), ab, 1e-9))
    assert.is_true(close(x:norm(math.huge), math.max(mx, -mn), 1e-9))
  end)

  it("reduce along each dimension, dropping it unless keepdim", function()
    -- naive: sum over dim d of the 3x4x5 nested table
    local dims = { 3, 4, 5 }
    for d = 1, 3 do
      local s = x:sum(d)
      local expected_size = {}
      for k = 1, 3 do if k ~= d then expected_size[#expected_size + 1] = dims[k] end end
      assert.are.same(expected_size, s:size())
      local keep = x:mean(d, true)
      local ks = { 3, 4, 5 }
      ks[d] = 1
      assert.are.same(ks, keep:size())
      for i = 1, 3 do
        for j = 1, 4 do
          for k = 1, 5 do
            local idx = { i, j, k }
            if idx[d] == 1 then
              local acc = 0
              for m = 1, dims[d] do
                idx[d] = m
                acc = acc + xt[idx[1]][idx[2]][idx[3]]
              end
              idx[d] = 1
              local rest = {}
              for q = 1, 3 do if q ~= d then rest[#rest + 1] = idx[q] end end
              assert.is_true(close(s:get(rest[1], rest[2]), acc, 1e-5))
              assert.is_true(close(keep:get(idx[1], idx[2], idx[3]), acc / dims[d], 1e-5))
            end
          end
        end
      end
    end
  end)

  it("max and min along a dimension return values and 1-based indices", function()
    local m = faceid.tensor({ { 1, 9, 3 }, { 7, 2, 8 } })
    local v, i = m:max(2)
    assert.are.same({ 9, 8 }, v:totable())
    assert.are.same({ 2, 3 }, i:totable())
    v, i = m:min(1)
    assert.are.same({ 1, 2, 3 }, v:totable())
    assert.are.same({ 1, 2, 1 }, i:totable())
  end)

  it("propagates NaN through max like torch", function()
    local m = faceid.tensor({ 1, 0 / 0, 3 })
    assert.is_true(m:max() ~= m:max())
  end)

  it("computes dot products", function()
    local a, b = faceid.tensor({ 1, 2, 3 }), faceid.tensor({ 4, -5, 6 })
    assert.are.equal(12, a:dot(b))
  end)
end)

describe("matmul", function()
  local function naive(a, b)
    local at, bt = a:totable(), b:totable()
    local m, k, n = #at, #bt, #bt[1]
    local out = {}
    for i = 1, m do
      out[i] = {}
      for j = 1, n do
        local s = 0
        for q = 1, k do s = s + at[i][q] * bt[q][j] end
        out[i][j] = s
      end
    end
    return out
  end

  it("matches a naive Lua product (golden values)", function()
    local a = faceid.tensor({ { 1, 2 }, { 3, 4 }, { 5, 6 } })
    local b = faceid.tensor({ { 7, 8, 9, 10 }, { 11, 12, 13, 14 } })
    assert.are.same({ { 29, 32, 35, 38 }, { 65, 72, 79, 86 }, { 101, 112, 123, 134 } },
      faceid.matmul(a, b):totable())
  end)

  it("matches naive loops on random and transposed operands", function()
    local g = faceid.Generator(5)
    local a, b = faceid.randn(g, 17, 9), faceid.randn(g, 9, 13)
    assert_values(faceid.matmul(a, b), naive(a, b), 1e-5)
    local at = faceid.randn(g, 9, 17):t()
    local bt = faceid.randn(g, 13, 9):t()
    assert_values(faceid.matmul(at, bt), naive(at, bt), 1e-5)
    assert_values(at:matmul(b), naive(at, b), 1e-5)
    local strided = faceid.randn(g, 17, 20):narrow(2, 3, 9)
    assert_values(faceid.matmul(strided, b), naive(strided, b), 1e-5)
  end)

  it("agrees with the naive C twin on large sizes", function()
    local g = faceid.Generator(6)
    local a, b = faceid.randn(g, 130, 257), faceid.randn(g, 257, 67)
    assert.is_true(faceid.matmul(a, b):allclose(faceid.core.matmul_naive(a, b), 1e-4, 1e-4))
  end)
end)

describe("lifetime", function()
  it("closes tensors early and makes their views refuse use", function()
    local a = faceid.ones(10)
    local v = a:narrow(1, 1, 5)
    a:close()
    assert.has_error(function() return v:sum() end)
    assert.has_error(function() return a + 1 end)
    assert.are.equal("faceid.Tensor(closed)", tostring(a))
    a:close() -- idempotent
  end)

  it("supports to-be-closed variables", function()
    local v
    do
      local t <close> = faceid.ones(4)
      v = t:view(2, 2)
    end
    local ok, err = pcall(function() return v:sum() end)
    assert.is_false(ok)
    assert.truthy(err:find("closed"))
  end)
end)
