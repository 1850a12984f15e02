-- The layers' thread pool (csrc/parallel.c): how nn.set_threads cuts a
-- range into chunks and hands them to its workers, its errors, and that
-- the layer kernels give bitwise the same results on any thread count
-- (the per-layer specs compare each fused or parallel path with its serial,
-- unfused form in detail).
local faceid = require("faceid")
local nn = faceid.nn
local C = require("faceid.core")._nn

local function fails_with(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), ("error %q does not mention %q"):format(tostring(err), pattern))
end

-- f() with the state's pool at n threads that split every job (grain 0),
-- restored to serial afterwards
local function with_threads(n, f)
  C.set_threads(n, 0)
  assert.are.equal(n, nn.threads())
  local ok, a, b, c, d = pcall(f)
  nn.set_threads(1)
  assert(ok, a)
  return a, b, c, d
end

local function same(a, b, what)
  assert.are.same(b:size(), a:size())
  assert(a:equal(b), ("%s: differs by up to %.3g"):format(what, (a - b):abs():max()))
end

describe("nn.set_threads", function()
  after_each(function() nn.set_threads(1) end)

  it("starts serial and reports the count it was given", function()
    assert.are.equal(1, nn.threads())
    nn.set_threads(3)
    assert.are.equal(3, nn.threads())
    nn.set_threads(2)
    assert.are.equal(2, nn.threads())
    nn.set_threads(1)
    assert.are.equal(1, nn.threads())
  end)

  it("refuses counts that are not integers 1..256, and negative grains", function()
    fails_with("grain must not be negative", C.set_threads, 2, -1)
    fails_with("nn.set_threads: thread count must be an integer 1..256, got 0", nn.set_threads, 0)
    fails_with("nn.set_threads: thread count must be an integer 1..256, got 257", nn.set_threads, 257)
    fails_with("nn.set_threads: thread count must be an integer 1..256, got 1.5", nn.set_threads, 1.5)
    fails_with("nn.set_threads: thread count must be an integer 1..256, got two", nn.set_threads, "two")
    assert.are.equal(1, nn.threads())
  end)
end)

describe("the pool's chunks", function()
  after_each(function() nn.set_threads(1) end)

  -- checks that [0, n) was covered once, by contiguous chunks of sizes
  -- differing by at most one, min(T, n) of them, all but the first run by
  -- a worker thread
  local function check_cover(T, n)
    local seen, chunk, others = C._pool_probe(n)
    local begins, sizes = {}, {}
    for i = 1, n do
      assert.are.equal(1, seen[i], ("T=%d n=%d: index %d visited %d times"):format(T, n, i - 1, seen[i]))
      local b = chunk[i]
      if not sizes[b] then begins[#begins + 1] = b end
      sizes[b] = (sizes[b] or 0) + 1
      -- the chunk holding i starts at or before it and after the previous one's start
      assert(b <= i - 1 and (i == 1 or b >= chunk[i - 1]), ("T=%d n=%d: index %d in chunk %d"):format(T, n, i - 1, b))
    end
    local want = math.min(T, n)
    assert.are.equal(want, #begins, ("T=%d n=%d: chunk count"):format(T, n))
    local lo, hi = math.huge, 0
    for _, b in ipairs(begins) do
      lo, hi = math.min(lo, sizes[b]), math.max(hi, sizes[b])
      -- a chunk is contiguous: it ends where the next begins
      for i = b + 1, b + sizes[b] do assert.are.equal(b, chunk[i]) end
    end
    assert(hi - lo <= 1, ("T=%d n=%d: chunk sizes from %d to %d"):format(T, n, lo, hi))
    assert.are.equal(want - 1, others, ("T=%d n=%d: chunks run by workers"):format(T, n))
  end

  it("runs everything on the caller without a pool", function()
    local seen, chunk, others = C._pool_probe(10)
    for i = 1, 10 do
      assert.are.equal(1, seen[i])
      assert.are.equal(0, chunk[i])
    end
    assert.are.equal(0, others)
  end)

  for _, T in ipairs({ 2, 3, 4 }) do
    it(("cuts ranges into even contiguous chunks on %d threads"):format(T), function()
      nn.set_threads(T)
      for _, n in ipairs({ 1, 2, 3, 5, 7, 64, 1001 }) do check_cover(T, n) end
      -- many jobs in a row: the workers come back for each
      for _ = 1, 200 do check_cover(T, 9) end
    end)
  end

  it("survives replacing the pool between jobs", function()
    for _, T in ipairs({ 2, 4, 1, 3, 2 }) do
      nn.set_threads(T)
      check_cover(T, 17)
    end
  end)

  it("measures a job's overhead", function()
    nn.set_threads(2)
    local s = C._pool_overhead(100)
    assert(s > 0 and s < 0.1, "seconds per empty job: " .. tostring(s))
  end)
end)

describe("the layers on several threads", function()
  -- one forward and backward of a small dense unit, large enough that every
  -- kernel splits (a job runs serially under 32768 floats)
  local function unit()
    local g = faceid.Generator(77)
    local n, c, h = 4, 24, 20
    local x = faceid.randn(g, n, c, h, h) * 2 + 0.3
    local gamma, beta = faceid.randn(g, c), faceid.randn(g, c)
    local rm, rv = faceid.zeros(c), faceid.ones(c)
    local w = faceid.randn(g, 8, c, 3, 3) * 0.1
    local a, save = nn.batchnorm2d(x, gamma, beta, rm, rv, { relu = true })
    local y = nn.conv2d(a, w, { padding = 1 })
    local p = nn.avg_pool2d(y, 2)
    local dp = faceid.randn(g, p:size())
    local dy = nn.avg_pool2d_backward(dp, y, 2)
    local da, dw = faceid.zeros(a:size()), faceid.zeros(w:size())
    nn.conv2d_backward(dy, a, w, { padding = 1 }, da, dw)
    local dx, dg, db = faceid.zeros(x:size()), faceid.zeros(c), faceid.zeros(c)
    nn.batchnorm2d_relu_backward(da, x, gamma, beta, save, {}, dx, dg, db)
    return { a = a, save = save, rm = rm, rv = rv, y = y, p = p, dy = dy, da = da, dw = dw, dx = dx, dg = dg,
      db = db }
  end

  it("gives bitwise the same results on 2 and 3 threads, and the serial ones within rounding", function()
    -- the memory-bound kernels match the serial run bit for bit; the pool
    -- cuts each gemm into panels of single-threaded BLAS calls that depend on
    -- the shape only, so results downstream of a gemm match across thread
    -- counts bit for bit and the serial (whole-call) results within rounding
    local pre_gemm = { a = true, save = true, rm = true, rv = true }
    local blas = faceid.get_num_threads()
    faceid.set_num_threads(1)
    local ref = unit()
    faceid.set_num_threads(blas)
    local two = with_threads(2, unit)
    for k, v in pairs(ref) do
      if pre_gemm[k] then
        same(two[k], v, k .. " on 2 threads")
      else
        local tol = 1e-5 * math.max(1, v:abs():max())
        assert((two[k] - v):abs():max() <= tol, k .. " on 2 threads: not within rounding of serial")
      end
    end
    local three = with_threads(3, unit)
    for k, v in pairs(two) do same(three[k], v, k .. " on 3 threads") end
    -- and with the default grain, where only the larger jobs split
    nn.set_threads(2)
    local got = unit()
    nn.set_threads(1)
    for k, v in pairs(two) do same(got[k], v, k .. " with the default grain") end
  end)
end)
