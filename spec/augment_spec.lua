-- faceid.augment: the warp against a naive Lua reference on tiny images,
-- exact crops and flips, the colour ops against naive formulas and
-- values computed with python3, the recipe's geometry and jitter
-- statistics, and batches of pairs (layout, labels, ranges, determinism,
-- the cache, broken images).
local faceid = require("faceid")
local A = require("faceid.augment")
local data = require("faceid.data")
local P = require("faceid.pairs")
local image = require("faceid.image")
local helper = require("helper")

local function random_image(gen, c, h, w)
  return faceid.rand(gen, c, h, w)
end

local function max_diff(a, b)
  return (a - b):abs():max()
end

-- the documented warp, one output pixel at a time: source point
-- (cx, cy) + R(angle) (du, dv) / zoom, mirrored x -> W - x when flip,
-- bilinear between pixel centres with the border repeated
local function naive_warp(img, oh, ow, p)
  local C, H, W = img:size(1), img:size(2), img:size(3)
  local px = img:totable()
  local out = faceid.zeros(C, oh, ow)
  local c, s = math.cos(p.angle or 0), math.sin(p.angle or 0)
  local z = p.zoom or 1
  for v = 0, oh - 1 do
    for u = 0, ow - 1 do
      local du, dv = u + 0.5 - ow / 2, v + 0.5 - oh / 2
      local X = p.cx + (c * du - s * dv) / z
      local Y = p.cy + (s * du + c * dv) / z
      if p.flip then
        X = W - X
      end
      local x = math.min(math.max(X - 0.5, 0), W - 1)
      local y = math.min(math.max(Y - 0.5, 0), H - 1)
      local x0, y0 = math.floor(x), math.floor(y)
      local x1, y1 = math.min(x0 + 1, W - 1), math.min(y0 + 1, H - 1)
      local fx, fy = x - x0, y - y0
      for ch = 1, C do
        local q = px[ch]
        local val = (1 - fy) * ((1 - fx) * q[y0 + 1][x0 + 1] + fx * q[y0 + 1][x1 + 1])
          + fy * ((1 - fx) * q[y1 + 1][x0 + 1] + fx * q[y1 + 1][x1 + 1])
        out:set(ch, v + 1, u + 1, val)
      end
    end
  end
  return out
end

describe("faceid.augment.warp", function()
  local gen = faceid.Generator(20181129)

  it("matches the naive reference on tiny images", function()
    local img = random_image(gen, 3, 5, 7)
    local cases = {
      { angle = 0.3, zoom = 1.3, cx = 3.2, cy = 2.7 },
      { angle = -0.2, zoom = 0.8, cx = 4, cy = 2, flip = true },
      { angle = 1.0, zoom = 2.5, cx = 0.3, cy = 4.9 }, -- corners outside: edge replicate
      { angle = 0, zoom = 0.5, cx = 3.5, cy = 2.5 },
    }
    for _, p in ipairs(cases) do
      local got = A.warp(img, 6, 4, p)
      assert.is_true(max_diff(got, naive_warp(img, 6, 4, p)) < 1e-5)
    end
    -- an 8-bit source reads value / 255
    local packed = A.pack(img)
    local p = cases[1]
    assert.is_true(max_diff(A.warp(packed, 6, 4, p), naive_warp(packed:unpack(), 6, 4, p)) < 1e-5)
  end)

  it("with identity parameters reproduces the crop exactly", function()
    local img = random_image(gen, 3, 9, 11)
    for _, w in ipairs({ { 4, 5, 2, 3 }, { 9, 11, 0, 0 }, { 1, 1, 8, 10 } }) do
      local h, ww, top, left = w[1], w[2], w[3], w[4]
      local got = A.warp(img, h, ww, { cx = left + ww / 2, cy = top + h / 2 })
      assert.same({ 3, h, ww }, got:size())
      assert.equal(0, max_diff(got, image.crop(img, top + 1, left + 1, h, ww)))
    end
    local grey = A.pack(random_image(gen, 1, 6, 6))
    local got = A.warp(grey, 3, 4, { cx = 1 + 2, cy = 2 + 1.5 }, 3)
    assert.same({ 3, 3, 4 }, got:size())
    local want = image.crop(grey:unpack(), 3, 2, 3, 4)
    for ch = 1, 3 do
      assert.equal(0, max_diff(got[ch], want[1]))
    end
  end)

  it("flips exactly, and twice is the identity", function()
    local img = random_image(gen, 3, 6, 9)
    local full = { flip = true, cx = 4.5, cy = 3 }
    local once = A.warp(img, 6, 9, full)
    assert.equal(0, max_diff(once, image.hflip(img)))
    assert.equal(0, max_diff(A.warp(once, 6, 9, full), img))
  end)

  it("rejects bad parameters", function()
    local img = random_image(gen, 3, 4, 4)
    assert.has_error(function() A.warp(img, 2, 2, { cx = 1 }) end,
      "faceid.augment.warp: parameters 'cx' and 'cy' are required")
    assert.has_error(function() A.warp(img, 2, 2, { cx = 1, cy = 1, zoom = 0 }) end,
      "faceid.augment.warp: zoom must be > 0, got 0.0")
    assert.has_error(function() A.warp(img, 2, 2, { cx = 1, cy = 1, zom = 2 }) end,
      "faceid.augment.warp: unknown parameter 'zom'")
    assert.has_error(function() A.warp(img, 2, 2, { cx = 0 / 0, cy = 1 }) end,
      "faceid.augment.warp: parameter 'cx' must be finite")
    assert.has_error(function() faceid.core.augment_warp(faceid.zeros(1, 2, 2), img, { cx = 1, cy = 1 }) end)
    assert.has_error(function() faceid.core.augment_warp(faceid.zeros(2, 2), img, { cx = 1, cy = 1 }) end)
    assert.has_error(function() A.warp("img", 2, 2, { cx = 1, cy = 1 }) end)
  end)
end)

describe("colour ops", function()
  local gen = faceid.Generator(7)
  local function pixel(r, g, b)
    return faceid.tensor({ { { r } }, { { g } }, { { b } } })
  end
  local function rgb(t)
    return { t:get(1, 1, 1), t:get(2, 1, 1), t:get(3, 1, 1) }
  end
  local function close(want, got, tol)
    for k = 1, #want do
      assert.is_true(math.abs(want[k] - got[k]) < (tol or 1e-5), ("%d: %f vs %f"):format(k, want[k], got[k]))
    end
  end

  it("brightness adds, contrast scales around each channel's mean", function()
    local img = random_image(gen, 3, 4, 5)
    assert.is_true(max_diff(A.brightness(img, 0.1), img + 0.1) < 1e-6)
    local got = A.contrast(img, 1.5)
    for ch = 1, 3 do
      local m = img[ch]:mean()
      assert.is_true(max_diff(got[ch], (img[ch] - m) * 1.5 + m) < 1e-5)
      assert.is_true(math.abs(got[ch]:mean() - m) < 1e-5)
    end
    local grey = random_image(gen, 1, 3, 3) -- brightness and contrast work on one plane
    assert.is_true(max_diff(A.brightness(grey, -0.2), grey - 0.2) < 1e-6)
  end)

  it("saturation blends with the luma grey", function()
    local img = random_image(gen, 3, 3, 4)
    local luma = img[1] * 0.299 + img[2] * 0.587 + img[3] * 0.114
    local flat = A.saturation(img, 0)
    for ch = 1, 3 do
      assert.is_true(max_diff(flat[ch], luma) < 1e-6)
    end
    assert.is_true(max_diff(A.saturation(img, 1), img) < 1e-6)
    local got = A.saturation(img, 1.4)
    for ch = 1, 3 do
      assert.is_true(max_diff(got[ch], luma + (img[ch] - luma) * 1.4) < 1e-5)
    end
    assert.has_error(function() A.saturation(faceid.zeros(1, 2, 2), 1.2) end,
      "faceid.augment.color: saturation: needs a 3xHxW image, got 1x2x2")
  end)

  it("hue rotates the YIQ chroma (values from python3)", function()
    -- python3: T = the RGB->YIQ matrix of csrc/augment.c, inverted by
    -- Gauss-Jordan; rgb' = T^-1 R(2 pi h) T rgb with R rotating (I, Q)
    close({ 0.8399636, 0.3069405, 0.5743580 }, rgb(A.hue(pixel(0.8, 0.4, 0.2), 0.1)))
    close({ 0.2358131, 0.4817939, 1.1524464 }, rgb(A.hue(pixel(0.1, 0.6, 0.9), -0.07)))
    close({ 0.1936000, 0.5936000, 0.7936000 }, rgb(A.hue(pixel(0.8, 0.4, 0.2), 0.5)))
    local img = random_image(gen, 3, 4, 4)
    assert.is_true(max_diff(A.hue(img, 0), img) < 1e-6)
    assert.is_true(max_diff(A.hue(img, 1), img) < 1e-5)          -- a full turn
    assert.is_true(max_diff(A.hue(A.hue(img, 0.08), -0.08), img) < 1e-5)
    local luma = function(t) return t[1] * 0.299 + t[2] * 0.587 + t[3] * 0.114 end
    assert.is_true(max_diff(luma(A.hue(img, 0.3)), luma(img)) < 1e-5)
    local grey = faceid.full({ 3, 2, 2 }, 0.4)
    assert.is_true(max_diff(A.hue(grey, 0.2), grey) < 1e-6)
  end)

  it("changes the image in place with color(), and names bad ops", function()
    local img = faceid.zeros(3, 2, 2)
    assert.equal(img, A.color(img, "brightness", 0.25))
    assert.equal(0.25, img:get(2, 2, 2))
    assert.has_error(function() A.color(img, "gamma", 1) end,
      "faceid.augment.color: colour op must be brightness, contrast, saturation or hue, got gamma")
    assert.has_error(function() A.color(img, "hue", 0 / 0) end, "faceid.augment.color: amount must be a finite number")
  end)
end)

describe("the recipe", function()
  it("places the window as documented", function()
    local gen = faceid.Generator(9)
    local img = random_image(gen, 3, 10, 8) -- shorter side 8
    local out = faceid.zeros(3, 5, 4)
    local p = { angle = 0.1, scale = 1.05, tx = 0.3, ty = 0.8, resize = 6, flip = true, clip = false, normalize = false }
    A.image(out, nil, img, p)
    local zoom = 1.05 * 6 / 8
    local ww, wh = 4 / zoom, 5 / zoom
    local want = naive_warp(img, 5, 4, { angle = 0.1, zoom = zoom, flip = true,
      cx = 0.3 * (8 - ww) + ww / 2, cy = 0.8 * (10 - wh) + wh / 2 })
    assert.is_true(max_diff(out, want) < 1e-5)
    -- a window larger than the image is centred
    A.image(out, nil, img, { scale = 0.5, tx = 0, ty = 1, resize = 6, clip = false, normalize = false })
    assert.is_true(max_diff(out, naive_warp(img, 5, 4, { zoom = 0.375, cx = 4, cy = 5 })) < 1e-5)
  end)

  it("evaluates by an exact centre crop mapped to [-1, 1]", function()
    local gen = faceid.Generator(10)
    local img = random_image(gen, 3, 13, 10)
    local out = faceid.zeros(3, 10, 10)
    local p = A.eval_params()
    p.resize = 10
    A.image(out, nil, img, p)
    assert.is_true(max_diff(out, image.center_crop(img, 10, 10) * 2 - 1) < 1e-6)
    local batch = faceid.zeros(2, 3, 6, 6)
    p.resize = 6
    A.image(batch, 2, image.resize(img, 8, 6), p)
    assert.is_true(max_diff(batch[2], image.center_crop(image.resize(img, 8, 6), 6, 6) * 2 - 1) < 1e-6)
    assert.equal(0, batch[1]:abs():max())
  end)

  it("clips to [0, 1] before mapping to [-1, 1]", function()
    local img = faceid.full({ 3, 4, 4 }, 0.9)
    local out = faceid.zeros(3, 4, 4)
    A.image(out, nil, img, { resize = 4, color = { { "brightness", 0.5 } } })
    assert.equal(1, out:min())
    A.image(out, nil, img, { resize = 4, color = { { "brightness", -2 } } })
    assert.equal(-1, out:max())
    A.image(out, nil, img, { resize = 4, color = { { "brightness", 0.5 } }, clip = false, normalize = false })
    assert.is_true(math.abs(out:min() - 1.4) < 1e-6)
  end)

  it("draws flips, angles, scales and colour ops with the documented statistics", function()
    local r = A.Recipe()
    local gen = faceid.Generator(11)
    local N = 4000
    local flips, applied, nops = 0, {}, { [0] = 0, 0, 0 }
    for _ = 1, N do
      local a, b = r:draw_pair(gen)
      assert.equal(a.angle, b.angle)
      assert.equal(a.scale, b.scale)
      assert.is_true(math.abs(a.angle) <= 0.2 and a.scale >= 0.9 and a.scale <= 1.1)
      assert.are_not.equal(a.tx, b.tx)
      for _, side in ipairs({ a, b }) do
        flips = flips + (side.flip and 1 or 0)
        nops[#side.color] = nops[#side.color] + 1
        if #side.color == 2 then
          assert.are_not.equal(side.color[1][1], side.color[2][1])
        end
        for _, op in ipairs(side.color) do
          applied[op[1]] = (applied[op[1]] or 0) + 1
          local lo, hi = table.unpack(A.DEFAULTS.color[op[1]])
          assert.is_true(op[2] >= lo and op[2] <= hi)
        end
      end
    end
    local n = 2 * N
    assert.is_true(math.abs(flips / n - 0.5) < 0.03)
    -- each op is picked with probability 2/4 and then applied with 1/2
    for _, kind in ipairs({ "contrast", "brightness", "saturation", "hue" }) do
      assert.is_true(math.abs(applied[kind] / n - 0.25) < 0.02, kind)
    end
    assert.is_true(math.abs(nops[0] / n - 0.25) < 0.02)
    assert.is_true(math.abs(nops[1] / n - 0.5) < 0.02)
    assert.is_true(math.abs(nops[2] / n - 0.25) < 0.02)
    -- no colour at all, and custom ranges
    local plain = A.Recipe({ color = false, rotation = 0, scale = { 1, 1 }, flip = 0 })
    local p = plain:draw_pair(gen)
    assert.same({ false, 0, 1, {} }, { p.flip, p.angle, p.scale, p.color })
    assert.has_error(function() A.Recipe({ flip = 2 }) end)
    assert.has_error(function() A.Recipe({ color = { hue = { 0.2, 0.1 } } }) end)
    assert.has_error(function() A.Recipe({ colour = false }) end, "faceid.augment.Recipe: unknown option 'colour'")
  end)
end)

describe("batches of pairs", function()
  local root, ds, jpgs
  setup(function()
    root = helper.tmpdir()
    local gen = faceid.Generator(12)
    jpgs = 0
    for p = 1, 4 do
      assert(os.execute(("mkdir -p '%s/p%d'"):format(root, p)))
      for k = 1, 3 do
        local img = random_image(gen, 3, 20 + p, 16 + k)
        assert(image.save(img, ("%s/p%d/%d.png"):format(root, p, k)))
      end
    end
    helper.write_file(root .. "/p4/4.jpg", "\255\216\255\224" .. string.rep("junk", 20))
    ds = assert(data.folders(root, { on_skip = function() end }))
  end)
  teardown(function()
    helper.rmtree(root)
  end)

  it("stacks first images, then second images, with their labels", function()
    local good = ds:filter({ people = { "p1", "p2", "p3" } })
    local list = P.epoch(good, faceid.Generator(1))
    local loader = A.Loader(good, { size = 12 })
    local x, y, kept = loader:eval_batch(list, 3, 5)
    assert.same({ 10, 3, 12, 12 }, x:size())
    assert.same({ 3, 4, 5, 6, 7 }, kept)
    local firsts, seconds = {}, {}
    for k = 1, 5 do
      local a, b, label = list:get(2 + k)
      firsts[k], seconds[k] = a, b
      assert.equal(label, y:get(k))
    end
    assert.equal(0, max_diff(x:narrow(1, 1, 5), loader:images(firsts)))
    assert.equal(0, max_diff(x:narrow(1, 6, 5), loader:images(seconds)))
    -- the evaluation image is the centre crop of the face resized to 12
    local i = firsts[1]
    local img = image.load(good:path(i))
    local h, w = img:size(2), img:size(3)
    local small = image.resize(img, math.floor(h * 12 / w + 0.5), 12)
    local want = A.pack(image.center_crop(small, 12, 12)):unpack() * 2 - 1
    assert.is_true(max_diff(x[1], want) < 1e-6)
    -- the last batch is short
    local xs, ys = loader:eval_batch(list, #list - 1, 32)
    assert.equal(4, xs:size(1))
    assert.equal(2, ys:size(1))
  end)

  it("augments within [-1, 1], deterministically, whatever the cache", function()
    local good = ds:filter({ people = { "p1", "p2", "p3" } })
    local list = P.epoch(good, faceid.Generator(2))
    local l1 = A.Loader(good, { size = 16 })
    local l2 = A.Loader(good, { size = 16, cache = false })
    local g1, g2 = faceid.Generator(3), faceid.Generator(3)
    local x1 = l1:batch(list, 1, 6, g1)
    l1:batch(list, 1, 6, faceid.Generator(4)) -- warms the cache
    local x2 = l2:batch(list, 1, 6, g2)
    assert.equal(0, max_diff(x1, x2))
    for _ = 1, 3 do -- both generators advanced alike
      assert.equal(g1:random(1 << 40), g2:random(1 << 40))
    end
    assert.is_true(x1:min() >= -1 and x1:max() <= 1)
    local x3 = l1:batch(list, 1, 6, faceid.Generator(3))
    assert.equal(0, max_diff(x1, x3))
    local x4 = l1:batch(list, 1, 6, faceid.Generator(5))
    assert.is_true(max_diff(x1, x4) > 0.1)
    assert.truthy(l1.cache:stats().hits > 0)
    assert.is_nil(l2.cache)
    assert.equal(12, l2.decoded) -- without a cache every use decodes
  end)

  it("reuses its output tensors when asked", function()
    local good = ds:filter({ people = { "p1", "p2" } })
    local list = P.epoch(good, faceid.Generator(2))
    local loader = A.Loader(good, { size = 8, reuse = true })
    local x1 = loader:batch(list, 1, 2, faceid.Generator(1))
    local x2 = loader:batch(list, 3, 2, faceid.Generator(1))
    assert.equal(x1, x2)
  end)

  it("leaves out pairs with an image that fails to decode, and reports it once", function()
    local seen = {}
    local broken = assert(data.folders(root, { on_skip = function(path, why)
      seen[#seen + 1] = path .. " | " .. why
    end }))
    local bad = broken:find("p4", 4)
    assert.truthy(broken:path(bad):find("4.jpg", 1, true))
    local other = broken:find("p1", 1)
    local list = P.new(broken, { other, bad, other }, { broken:find("p1", 2), other, broken:find("p2", 1) }, { 0, 1, 1 })
    local loader = A.Loader(broken, { size = 8 })
    local x, y, kept = loader:batch(list, 1, 3, faceid.Generator(1))
    assert.same({ 1, 3 }, kept)
    assert.equal(4, x:size(1))
    assert.same({ 0, 1 }, { y:get(1), y:get(2) })
    assert.equal(1, #seen)
    assert.truthy(seen[1]:find("4.jpg", 1, true), seen[1])
    assert.equal(1, broken:n_bad())
    assert.truthy(tostring(broken):find("1 failed to decode", 1, true))
    loader:batch(list, 1, 3, faceid.Generator(1))
    assert.equal(1, #seen) -- not decoded again
    local none, msg = loader:batch(list, 2, 1, faceid.Generator(1))
    assert.is_nil(none)
    assert.truthy(msg:find("no pair in 2..2", 1, true), msg)
    for seed = 1, 20 do -- later epochs avoid it
      local l = P.epoch(broken, faceid.Generator(seed))
      for k = 1, #l do
        local a, b = l:get(k)
        assert.is_true(a ~= bad and b ~= bad)
      end
    end
  end)

  it("rejects a list of another data set and bad ranges", function()
    local good = ds:filter({ people = { "p1", "p2" } })
    local list = P.epoch(good, faceid.Generator(2))
    local loader = A.Loader(ds, { size = 8 })
    assert.has_error(function() loader:batch(list, 1, 2, faceid.Generator(1)) end,
      "Loader:batch: the pairs list refers to another data set than the loader's")
    local own = A.Loader(good, { size = 8 })
    assert.has_error(function() own:batch(list, 0, 2, faceid.Generator(1)) end)
    assert.has_error(function() own:batch(list, 1, 2) end, "Loader:batch: expected a faceid.Generator, got nil")
    assert.has_error(function() A.Loader(good, { size = 0 }) end)
    assert.has_error(function() A.Loader(good, { sise = 8 }) end, "faceid.augment.Loader: unknown option 'sise'")
  end)
end)

describe("8-bit packing", function()
  it("rounds, clamps and keeps grey faces as one plane", function()
    local t = faceid.tensor({ { { 0, 0.5, 1, 1.5 } }, { { -1, 0.2, 0.999, 0 / 0 } }, { { 0, 0, 0, 0 } } })
    local p = A.pack(t)
    assert.same({ 3, 1, 4 }, { p:size() })
    local u = p:unpack()
    local want = { 0, 128 / 255, 1, 1, 0, 51 / 255, 1, 0 }
    for k = 1, 8 do
      local ch, x = (k - 1) // 4 + 1, (k - 1) % 4 + 1
      assert.is_true(math.abs(u:get(ch, 1, x) - want[k]) < 1e-7)
    end
    local g = faceid.full({ 3, 2, 5 }, 0.25)
    local pg = A.pack(g)
    assert.same({ 1, 2, 5 }, { pg:size() })
    assert.equal(10, pg:nbytes())
    assert.same({ 3, 2, 5 }, pg:unpack(3):size())
    assert.same({ 3, 2, 5 }, { A.pack(g, true):size() })
    assert.equal("faceid.PackedImage(1x2x5)", tostring(pg))
  end)
end)

describe("the shared face data", function()
  it("AT&T pairs at 64x64", function()
    local dir, why = helper.need_data("att_faces")
    if not dir then return pending(why) end
    local ds = assert(data.folders(dir))
    local gen = faceid.Generator(1)
    local list = P.epoch(ds, gen)
    local x, y = A.Loader(ds, { size = 64 }):batch(list, 1, 8, gen)
    assert.same({ 16, 3, 64, 64 }, x:size())
    assert.equal(8, y:size(1))
    assert.is_true(x:min() >= -1 and x:max() <= 1)
    -- grey faces give three equal channels: saturation and hue keep grey
    -- grey (up to rounding), contrast and brightness act on equal planes alike
    assert.is_true(max_diff(x[1][1], x[1][2]) < 1e-5)
  end)
end)
