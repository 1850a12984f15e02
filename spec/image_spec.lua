-- faceid.image: decoding, channel conversion, crops and flips, resizing,
-- saving, hostile files and the shared face data. Expected pixels come from
-- files built byte by byte below (PGM/PPM, BMP, stored-deflate PNG, GIF with
-- 3-bit LZW codes) and from naive loops, never from the code under test.
local faceid = require("faceid")
local image = require("faceid.image")
local helper = require("helper")

-- ---- encoders for fixtures -------------------------------------------------

local function pnm(magic, w, h, maxval, samples, header_extra)
  local wide = maxval > 255
  local out = {}
  for i, v in ipairs(samples) do
    out[i] = wide and string.pack(">I2", v) or string.char(v)
  end
  return ("%s\n%s%d %d\n%d\n"):format(magic, header_extra or "", w, h, maxval) .. table.concat(out)
end

-- 24-bit BMP; px(y, x) -> r, g, b with y, x 0-based from the top.
-- Rows are stored bottom-up (or top-down with a negative height), BGR,
-- each padded to a multiple of 4 bytes.
local function bmp24(w, h, px, topdown)
  local rowlen = (3 * w + 3) // 4 * 4
  local rows = {}
  for i = 0, h - 1 do
    local y = topdown and i or h - 1 - i
    local r = {}
    for x = 0, w - 1 do
      local R, G, B = px(y, x)
      r[#r + 1] = string.char(B, G, R)
    end
    r[#r + 1] = string.rep("\0", rowlen - 3 * w)
    rows[#rows + 1] = table.concat(r)
  end
  local data = table.concat(rows)
  return "BM" .. string.pack("<I4I2I2I4", 54 + #data, 0, 0, 54)
    .. string.pack("<I4i4i4I2I2I4I4i4i4I4I4", 40, w, topdown and -h or h, 1, 24, 0, #data, 2835, 2835, 0, 0)
    .. data
end

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    c = (c & 1 == 1) and (0xEDB88320 ~ (c >> 1)) or (c >> 1)
  end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8)
  end
  return c ~ 0xFFFFFFFF
end

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do
    a = (a + s:byte(i)) % 65521
    b = (b + a) % 65521
  end
  return (b << 16) | a
end

local function chunk(kind, data)
  return string.pack(">I4", #data) .. kind .. data .. string.pack(">I4", crc32(kind .. data))
end

-- PNG with one stored (uncompressed) deflate block; rows[y] holds the raw
-- bytes of row y (filter type 0 is prepended); color 0 = grey, 2 = RGB
local function png(w, h, depth, color, rows)
  local raw = {}
  for y = 1, h do
    raw[y] = "\0" .. rows[y]
  end
  raw = table.concat(raw)
  local zlib = "\x78\x01\x01" .. string.pack("<I2I2", #raw, ~#raw & 0xFFFF) .. raw .. string.pack(">I4", adler32(raw))
  return "\x89PNG\r\n\x1a\n" .. chunk("IHDR", string.pack(">I4I4BBBBB", w, h, depth, color, 0, 0, 0))
    .. chunk("IDAT", zlib) .. chunk("IEND", "")
end

-- GIF with a 4-colour global palette; idx holds 0-based palette indices,
-- row by row. LZW minimum code size 2 (clear = 4, end = 5, 3-bit codes);
-- a clear code before every two pixels keeps the dictionary from growing
-- past 8 entries, so every code stays 3 bits wide.
local function gif(w, h, palette, idx)
  local codes = {}
  for i = 1, #idx, 2 do
    codes[#codes + 1] = 4
    codes[#codes + 1] = idx[i]
    codes[#codes + 1] = idx[i + 1]
  end
  codes[#codes + 1] = 5
  local bytes, acc, nbits = {}, 0, 0
  for _, c in ipairs(codes) do
    acc = acc | (c << nbits)
    nbits = nbits + 3
    while nbits >= 8 do
      bytes[#bytes + 1] = string.char(acc & 0xFF)
      acc, nbits = acc >> 8, nbits - 8
    end
  end
  if nbits > 0 then
    bytes[#bytes + 1] = string.char(acc & 0xFF)
  end
  local data = table.concat(bytes)
  local pal = {}
  for i, rgb in ipairs(palette) do
    pal[i] = string.char(rgb[1], rgb[2], rgb[3])
  end
  return "GIF89a" .. string.pack("<I2I2BBB", w, h, 0x81, 0, 0) .. table.concat(pal)
    .. "," .. string.pack("<I2I2I2I2B", 0, 0, w, h, 0) .. "\2" .. string.char(#data) .. data .. "\0;"
end

-- ---- checks ----------------------------------------------------------------

-- a temporary directory removed when the test ends, passed or failed
local function scratch()
  local dir = helper.tmpdir()
  finally(function() helper.rmtree(dir) end)
  return dir
end

-- the data folder, or the test is marked pending (busted's `pending`
-- lives in the spec's environment)
local function need_data(name, probe)
  local dir, why = helper.need_data(name, probe)
  if not dir then pending(why) end
  return dir
end

-- value(c, y, x) (1-based) is the expected float
local function assert_pixels(img, C, H, W, value, tol)
  assert.are.same({ C, H, W }, img:size())
  local t = img:totable()
  for c = 1, C do
    for y = 1, H do
      for x = 1, W do
        local want = value(c, y, x)
        local got = t[c][y][x]
        assert(math.abs(got - want) <= (tol or 1e-6),
          ("pixel (%d,%d,%d): got %.9g, want %.9g"):format(c, y, x, got, want))
      end
    end
  end
end

local function assert_same(a, b, tol)
  assert.are.same(a:size(), b:size())
  local fa, fb = a:contiguous():view(-1):totable(), b:contiguous():view(-1):totable()
  for i = 1, #fa do
    assert(math.abs(fa[i] - fb[i]) <= (tol or 0), ("element %d: %.9g vs %.9g"):format(i, fa[i], fb[i]))
  end
end

-- (pattern, nil, message): pattern first, so a call can pass both results
local function assert_fails(pattern, img, msg)
  assert.is_nil(img)
  assert.is_string(msg)
  if pattern then
    assert(msg:find(pattern, 1, true), ("message %q lacks %q"):format(msg, pattern))
  end
end

-- a random image whose values are exact 8-bit levels k / 255
local function levels(g, c, h, w)
  local t = faceid.rand(g, c, h, w):mul(255)
  local v = t:view(-1)
  for i = 1, #v do
    v[i] = math.floor(v[i]) / 255
  end
  return t
end

-- the same pixels from naive loops: f(c, y, x) -> source (c, y, x), 1-based
local function naive(src, C, H, W, f)
  local s = src:totable()
  local out = faceid.zeros(C, H, W)
  for c = 1, C do
    for y = 1, H do
      for x = 1, W do
        out:set(c, y, x, s[f(c, y, x)[1]][f(c, y, x)[2]][f(c, y, x)[3]])
      end
    end
  end
  return out
end

local PPM_RGB = { -- 3x2 pixels, row by row
  { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 },
  { 10, 20, 30 }, { 128, 64, 32 }, { 1, 254, 77 },
}

local function ppm_value(c, y, x)
  return PPM_RGB[(y - 1) * 3 + x][c] / 255
end

local function luma(r, g, b)
  return 0.299 * r + 0.587 * g + 0.114 * b
end

-- ---- decoding ------------------------------------------------------------

describe("faceid.image decoding", function()
  it("reads a hand-written PGM exactly", function()
    local v = { 0, 1, 2, 128, 254, 255 }
    local img = assert(image.from_bytes(pnm("P5", 3, 2, 255, v)))
    assert_pixels(img, 3, 2, 3, function(_, y, x) return v[(y - 1) * 3 + x] / 255 end)
    local grey = assert(image.from_bytes(pnm("P5", 3, 2, 255, v), { channels = 1 }))
    assert_pixels(grey, 1, 2, 3, function(_, y, x) return v[(y - 1) * 3 + x] / 255 end)
  end)

  it("reads PGM comments and scales by the maximum value", function()
    local v = { 0, 3, 7, 15, 9, 1 }
    local img = assert(image.from_bytes(pnm("P5", 3, 2, 15, v, "# a comment\n")))
    assert_pixels(img, 1 * 3, 2, 3, function(_, y, x) return v[(y - 1) * 3 + x] / 15 end)
  end)

  it("reads 16-bit PGM samples big-endian", function()
    local v = { 0x0102, 0x8000, 0xFFFF, 0, 1, 0xFF00 }
    local img = assert(image.from_bytes(pnm("P5", 3, 2, 65535, v), { channels = 1 }))
    assert_pixels(img, 1, 2, 3, function(_, y, x) return v[(y - 1) * 3 + x] / 65535 end, 1e-7)
    local w = { 0, 250, 500, 999, 1000, 1 }
    img = assert(image.from_bytes(pnm("P5", 3, 2, 1000, w), { channels = 1 }))
    assert_pixels(img, 1, 2, 3, function(_, y, x) return w[(y - 1) * 3 + x] / 1000 end, 1e-7)
  end)

  it("reads a hand-written PPM into R, G, B planes", function()
    local s = {}
    for _, p in ipairs(PPM_RGB) do
      s[#s + 1], s[#s + 2], s[#s + 3] = p[1], p[2], p[3]
    end
    local img = assert(image.from_bytes(pnm("P6", 3, 2, 255, s)))
    assert_pixels(img, 3, 2, 3, ppm_value)
  end)

  it("reads a hand-written 24-bit BMP, bottom-up and top-down", function()
    local function px(y, x) return table.unpack(PPM_RGB[y * 3 + x + 1]) end
    for _, topdown in ipairs({ false, true }) do
      local img = assert(image.from_bytes(bmp24(3, 2, px, topdown)))
      assert_pixels(img, 3, 2, 3, ppm_value)
    end
  end)

  it("reads a hand-written PNG: 8-bit RGB, 8-bit grey, 16-bit grey", function()
    local rows = {}
    for y = 1, 2 do
      local r = {}
      for x = 1, 3 do
        r[x] = string.char(table.unpack(PPM_RGB[(y - 1) * 3 + x]))
      end
      rows[y] = table.concat(r)
    end
    assert_pixels(assert(image.from_bytes(png(3, 2, 8, 2, rows))), 3, 2, 3, ppm_value)

    local g8 = { { 0, 100, 255 }, { 7, 8, 9 } }
    local grey = assert(image.from_bytes(png(3, 2, 8, 0, { string.char(table.unpack(g8[1])),
      string.char(table.unpack(g8[2])) })))
    assert_pixels(grey, 3, 2, 3, function(_, y, x) return g8[y][x] / 255 end)

    local g16 = { { 0x0102, 0x8000, 0xFFFF }, { 0, 1, 0x7FFF } }
    local bytes = png(3, 2, 16, 0, { string.pack(">I2I2I2", table.unpack(g16[1])),
      string.pack(">I2I2I2", table.unpack(g16[2])) })
    local wide = assert(image.from_bytes(bytes, { channels = 1 }))
    assert_pixels(wide, 1, 2, 3, function(_, y, x) return g16[y][x] / 65535 end, 1e-7)
  end)

  it("reads a hand-written GIF through its palette", function()
    local palette = { { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 }, { 10, 20, 30 } }
    local idx = { 0, 1, 2, 3, 3, 1 }
    local img = assert(image.from_bytes(gif(3, 2, palette, idx)))
    assert_pixels(img, 3, 2, 3, function(c, y, x) return palette[idx[(y - 1) * 3 + x] + 1][c] / 255 end)
  end)

  it("loads a file as from_bytes decodes its contents, and reports its size", function()
    local dir = scratch()
    local bytes = bmp24(3, 2, function(y, x) return table.unpack(PPM_RGB[y * 3 + x + 1]) end)
    helper.write_file(dir .. "/a.bmp", bytes)
    helper.write_file(dir .. "/noext", bytes) -- the contents decide, not the name
    assert_same(assert(image.load(dir .. "/a.bmp")), assert(image.from_bytes(bytes)))
    assert_same(assert(image.load(dir .. "/noext")), assert(image.from_bytes(bytes)))
    local w, h, c, format = image.info(dir .. "/a.bmp")
    assert.are.same({ 3, 2, 3, "BMP" }, { w, h, c, format })
  end)
end)

describe("faceid.image channels", function()
  local s = {}
  for _, p in ipairs(PPM_RGB) do
    s[#s + 1], s[#s + 2], s[#s + 3] = p[1], p[2], p[3]
  end
  local ppm = pnm("P6", 3, 2, 255, s)

  it("turns colour into grey with weights 0.299, 0.587, 0.114", function()
    local grey = assert(image.from_bytes(ppm, { channels = 1 }))
    assert_pixels(grey, 1, 2, 3, function(_, y, x)
      local p = PPM_RGB[(y - 1) * 3 + x]
      return luma(p[1], p[2], p[3]) / 255
    end, 1e-6)
  end)

  it("copies grey to all three planes by default", function()
    local v = { 5, 50, 150, 200, 250, 0 }
    local img = assert(image.from_bytes(pnm("P5", 3, 2, 255, v)))
    assert_same(img:select(1, 1), img:select(1, 2))
    assert_same(img:select(1, 1), img:select(1, 3))
  end)

  it("keeps grey exact through channels = 1 when R = G = B", function()
    local s3 = {}
    for i, v in ipairs({ 3, 77, 129, 200, 254, 255 }) do
      s3[3 * i - 2], s3[3 * i - 1], s3[3 * i] = v, v, v
    end
    local grey = assert(image.from_bytes(pnm("P6", 3, 2, 255, s3), { channels = 1 }))
    local plain = assert(image.from_bytes(pnm("P6", 3, 2, 255, s3)))
    assert_same(grey:select(1, 1), plain:select(1, 1))
  end)

  it("rejects bad options", function()
    assert.error_matches(function() image.from_bytes(ppm, { channels = 2 }) end,
      "opts.channels must be 1 or 3, got 2", 1, true)
    assert.error_matches(function() image.from_bytes(ppm, { chanels = 1 }) end,
      "faceid.image.from_bytes: unknown option 'chanels'", 1, true)
    assert.error_matches(function() image.load("x.png", { flip = true }) end,
      "faceid.image.load: unknown option 'flip'", 1, true)
    assert.error_matches(function() image.from_bytes(ppm, "grey") end, "opts must be a table", 1, true)
    assert.error_matches(function() image.from_bytes(42) end, "bytes must be a string, got number", 1, true)
    assert.error_matches(function() image.load(nil) end, "faceid.image.load: path must be a string", 1, true)
    assert.error_matches(function() image.load("a\0b") end, "zero byte", 1, true)
  end)
end)

-- ---- crops and flips ------------------------------------------------------

describe("faceid.image crop, center_crop, hflip", function()
  local g = faceid.Generator(7)
  local img = faceid.rand(g, 3, 7, 9)

  it("crop matches a naive copy of the window", function()
    local out = image.crop(img, 2, 3, 4, 5)
    assert_same(out, naive(img, 3, 4, 5, function(c, y, x) return { c, y + 1, x + 2 } end))
    assert.is_true(out:is_contiguous())
    assert_same(image.crop(img, 1, 1, 7, 9), img)
    assert_same(image.crop(img, 7, 9, 1, 1), naive(img, 3, 1, 1, function(c) return { c, 7, 9 } end))
  end)

  it("crop reads non-contiguous views", function()
    local big = faceid.rand(g, 3, 9, 12)
    local view = big:narrow(3, 2, 9):narrow(2, 2, 7) -- 3x7x9, rows 12 apart
    assert.is_false(view:is_contiguous())
    assert_same(image.crop(view, 2, 3, 4, 5), image.crop(view:contiguous(), 2, 3, 4, 5))
    local swapped = faceid.rand(g, 3, 9, 7):transpose(2, 3) -- 3x7x9, columns 7 apart
    assert_same(image.crop(swapped, 1, 2, 6, 6), image.crop(swapped:contiguous(), 1, 2, 6, 6))
  end)

  it("crop refuses windows outside the image", function()
    for _, w in ipairs({ { 0, 1, 2, 2 }, { 1, 0, 2, 2 }, { 7, 1, 2, 1 }, { 1, 9, 1, 2 }, { 8, 1, 1, 1 },
      { 1, 1, 8, 1 }, { 1, 1, 1, 10 } }) do
      assert.error_matches(function() image.crop(img, table.unpack(w)) end,
        "faceid.image.crop: a %d+x%d+ window at top %-?%d+, left %-?%d+ does not fit in the 3x7x9 image")
    end
    assert.error_matches(function() image.crop(img, 1, 1, 0, 2) end, "height must be 1..16384, got 0", 1, true)
    assert.error_matches(function() image.crop(img, 1.5, 1, 1, 2) end, "top must be an integer", 1, true)
  end)

  it("center_crop takes the window floor((H - h) / 2), floor((W - w) / 2) in", function()
    assert_same(image.center_crop(img, 4, 4), naive(img, 3, 4, 4, function(c, y, x) return { c, y + 1, x + 2 } end))
    assert_same(image.center_crop(img, 7, 9), img)
    assert_same(image.center_crop(img, 6, 8), naive(img, 3, 6, 8, function(c, y, x) return { c, y, x } end))
    assert.error_matches(function() image.center_crop(img, 8, 2) end,
      "faceid.image.center_crop: a 8x2 window does not fit in the 3x7x9 image", 1, true)
  end)

  it("hflip mirrors columns of CxHxW and NxCxHxW, views included", function()
    assert_same(image.hflip(img), naive(img, 3, 7, 9, function(c, y, x) return { c, y, 10 - x } end))
    local grey = faceid.rand(g, 1, 4, 5)
    assert_same(image.hflip(grey), naive(grey, 1, 4, 5, function(c, y, x) return { c, y, 6 - x } end))
    local batch = faceid.rand(g, 2, 3, 4, 5)
    local flipped = image.hflip(batch)
    assert.are.same({ 2, 3, 4, 5 }, flipped:size())
    for n = 1, 2 do
      assert_same(flipped[n], image.hflip(batch[n]))
    end
    local view = faceid.rand(g, 3, 9, 7):transpose(2, 3)
    assert_same(image.hflip(view), image.hflip(view:contiguous()))
    assert_same(image.hflip(image.hflip(img)), img)
  end)
end)

-- ---- resize --------------------------------------------------------------

describe("faceid.image.resize", function()
  local g = faceid.Generator(11)

  it("returns an exact copy at the same size", function()
    local img = faceid.rand(g, 3, 6, 5)
    local out = image.resize(img, 6, 5)
    assert_same(out, img)
    out:fill_(0)
    assert.is_true(img:max() > 0) -- a new tensor, not the input
  end)

  it("keeps a constant image constant when shrinking and enlarging", function()
    for _, size in ipairs({ { 5, 3 }, { 1, 1 }, { 20, 33 }, { 13, 4 } }) do
      local out = image.resize(faceid.full(3, 10, 8, 0.37), size[1], size[2])
      assert.are.same({ 3, size[1], size[2] }, out:size())
      assert_pixels(out, 3, size[1], size[2], function() return 0.37 end, 1e-5)
    end
  end)

  -- A symmetric filter whose weights sum to 1 keeps a linear ramp and
  -- averages a checkerboard to grey wherever its samples fall symmetrically
  -- about the output pixel's centre: always the case for a whole shrink
  -- factor. Near the edges stb clamps, which bends both patterns a little.
  local function ramp(H, W)
    -- value at pixel centre (y - 0.5, x - 0.5): their mean, scaled to [0, 1]
    local img = faceid.zeros(1, H, W)
    for y = 1, H do
      for x = 1, W do
        img:set(1, y, x, ((y - 0.5) / H + (x - 0.5) / W) / 2)
      end
    end
    return img
  end

  local function interior(i, n)
    return i >= 3 and i <= n - 2
  end

  it("shrinks a linear ramp by whole factors to its value at each output centre", function()
    for _, s in ipairs({ { 32, 40, 8, 10 }, { 30, 16, 10, 8 } }) do
      local H, W, h, w = table.unpack(s)
      local out = image.resize(ramp(H, W), h, w)
      for y = 1, h do
        for x = 1, w do
          local want = ((y - 0.5) / h + (x - 0.5) / w) / 2
          local tol = (interior(y, h) and interior(x, w)) and 1e-5 or 0.03
          local got = out:get(1, y, x)
          assert(math.abs(got - want) <= tol, ("%dx%d to %dx%d, pixel (%d, %d): got %.6g, want %.6g")
            :format(H, W, h, w, y, x, got, want))
        end
      end
    end
  end)

  it("keeps a ramp within a small error at fractional factors", function()
    local out = image.resize(ramp(30, 29), 7, 11)
    for y = 1, 7 do
      for x = 1, 11 do
        local want = ((y - 0.5) / 7 + (x - 0.5) / 11) / 2
        local tol = (interior(y, 7) and interior(x, 11)) and 2e-3 or 0.04
        assert(math.abs(out:get(1, y, x) - want) <= tol, ("pixel (%d, %d)"):format(y, x))
      end
    end
  end)

  it("averages a one-pixel checkerboard to grey when halving", function()
    local img = faceid.zeros(3, 16, 20)
    for c = 1, 3 do
      for y = 1, 16 do
        for x = 1, 20 do
          img:set(c, y, x, (x + y) % 2)
        end
      end
    end
    local out = image.resize(img, 8, 10)
    assert_pixels(out, 3, 8, 10, function(_, y, x)
      return 0.5
    end, 0.2)
    for y = 3, 6 do
      for x = 3, 8 do
        assert(math.abs(out:get(2, y, x) - 0.5) <= 1e-5, ("pixel (%d, %d)"):format(y, x))
      end
    end
  end)

  it("reads non-contiguous views as their contiguous copies", function()
    local big = faceid.rand(g, 3, 12, 14)
    local view = big:narrow(3, 3, 10):narrow(2, 2, 9)
    assert_same(image.resize(view, 5, 4), image.resize(view:contiguous(), 5, 4))
    local swapped = faceid.rand(g, 1, 10, 9):transpose(2, 3)
    assert_same(image.resize(swapped, 20, 18), image.resize(swapped:contiguous(), 20, 18))
  end)

  it("names the function and the shape on bad arguments", function()
    assert.has_error(function() image.resize(faceid.zeros(2, 5), 3, 3) end,
      "faceid.image.resize: expected a CxHxW tensor with C = 1 or 3, got 2x5")
    assert.has_error(function() image.resize(faceid.zeros(4, 5, 5), 3, 3) end,
      "faceid.image.resize: expected a CxHxW tensor with C = 1 or 3, got 4x5x5")
    assert.has_error(function() image.resize("img", 3, 3) end,
      "faceid.image.resize: expected a CxHxW tensor with C = 1 or 3, got a string")
    assert.has_error(function() image.resize(nil, 3, 3) end,
      "faceid.image.resize: expected a CxHxW tensor with C = 1 or 3, got nil")
    assert.has_error(function() image.resize(faceid.zeros(3, 5, 5), 0, 3) end,
      "faceid.image.resize: height must be 1..16384, got 0")
    assert.has_error(function() image.resize(faceid.zeros(3, 5, 5), 3) end,
      "faceid.image.resize: width must be an integer, got nil")
    assert.has_error(function() image.hflip(faceid.zeros(5, 5)) end,
      "faceid.image.hflip: expected a CxHxW or NxCxHxW tensor with C = 1 or 3, got 5x5")
    assert.has_error(function() image.center_crop(faceid.zeros(2, 3, 5, 5), 1, 1) end,
      "faceid.image.center_crop: expected a CxHxW tensor with C = 1 or 3, got 2x3x5x5")
  end)
end)

-- ---- save ------------------------------------------------------------------

describe("faceid.image.save", function()
  local g = faceid.Generator(3)

  it("round-trips PNG and BMP exactly, colour and grey", function()
    local dir = scratch()
    for _, ext in ipairs({ "png", "bmp", "PNG" }) do
      local rgb, grey = levels(g, 3, 5, 7), levels(g, 1, 6, 3)
      local p = dir .. "/rgb." .. ext
      assert.is_true(image.save(rgb, p))
      assert_same(assert(image.load(p)), rgb, 1e-6)
      assert.is_true(image.save(grey, dir .. "/grey." .. ext))
      assert_same(assert(image.load(dir .. "/grey." .. ext, { channels = 1 })), grey, 1e-6)
      local three = assert(image.load(dir .. "/grey." .. ext))
      assert_same(three:select(1, 3), grey:select(1, 1), 1e-6)
    end
  end)

  it("round-trips JPEG within tolerance, and quality trades size for error", function()
    local dir = scratch()
    local img = faceid.zeros(3, 32, 40) -- smooth gradients compress well
    for c = 1, 3 do
      for y = 1, 32 do
        for x = 1, 40 do
          img:set(c, y, x, (c * x + 2 * y) / (3 * 40 + 64))
        end
      end
    end
    assert.is_true(image.save(img, dir .. "/a.jpg"))
    assert.is_true(image.save(img, dir .. "/b.jpeg", { quality = 10 }))
    local a, b = assert(image.load(dir .. "/a.jpg")), assert(image.load(dir .. "/b.jpeg"))
    local err_a = (a - img):abs():mean()
    local err_b = (b - img):abs():mean()
    assert(err_a < 0.01, "quality 95 mean error " .. err_a)
    assert(err_b < 0.06 and err_b > err_a, ("quality 10 error %g vs %g"):format(err_b, err_a))
    assert(#helper.read_file(dir .. "/b.jpeg") < #helper.read_file(dir .. "/a.jpg"))
    local grey = img:narrow(1, 1, 1)
    assert.is_true(image.save(grey, dir .. "/g.jpg"))
    assert(((assert(image.load(dir .. "/g.jpg", { channels = 1 })) - grey):abs():mean()) < 0.01)
  end)

  it("clamps to [0, 1] and rounds to the nearest 8-bit level", function()
    local dir = scratch()
    local vals = { -0.5, 0 / 0, 1.5, 0.4 / 255, 0.6 / 255, 127.49 / 255, 127.51 / 255, 1 }
    local want = { 0, 0, 255, 0, 1, 127, 128, 255 }
    local img = faceid.zeros(1, 1, #vals)
    for i, v in ipairs(vals) do
      img:set(1, 1, i, v)
    end
    assert.is_true(image.save(img, dir .. "/c.png"))
    local back = assert(image.load(dir .. "/c.png", { channels = 1 }))
    assert_pixels(back, 1, 1, #vals, function(_, _, x) return want[x] / 255 end)
  end)

  it("saves non-contiguous views", function()
    local dir = scratch()
    local view = levels(g, 3, 9, 6):transpose(2, 3)
    assert.is_true(image.save(view, dir .. "/v.png"))
    assert_same(assert(image.load(dir .. "/v.png")), view, 1e-6)
  end)

  it("rejects bad arguments with errors", function()
    local img = faceid.zeros(3, 2, 2)
    assert.error_matches(function() image.save(img, "/tmp/x.tif") end,
      "faceid.image.save: cannot tell the format of '/tmp/x.tif'", 1, true)
    assert.error_matches(function() image.save(img, "/tmp/x.jpg", { quality = 0 }) end,
      "quality must be 1..100, got 0", 1, true)
    assert.error_matches(function() image.save(img, "/tmp/x.jpg", { quality = 9.5 }) end,
      "quality must be an integer", 1, true)
    assert.error_matches(function() image.save(img, "/tmp/x.jpg", { qualty = 90 }) end,
      "unknown option 'qualty'", 1, true)
    assert.error_matches(function() image.save(faceid.zeros(2, 2, 2), "/tmp/x.png") end,
      "faceid.image.save: expected a CxHxW tensor with C = 1 or 3, got 2x2x2", 1, true)
  end)
end)

describe("faceid.image.save atomic write", function()
  local img = faceid.full(3, 4, 4, 100 / 255)

  local function listing(dir)
    local p = io.popen("ls -A '" .. dir .. "'")
    local names = {}
    for line in p:lines() do
      names[#names + 1] = line
    end
    p:close()
    table.sort(names)
    return names
  end

  it("leaves only the finished file, replacing an old one", function()
    local dir = scratch()
    helper.write_file(dir .. "/a.png", "old contents")
    assert.is_true(image.save(img, dir .. "/a.png"))
    assert.are.same({ "a.png" }, listing(dir))
    assert_same(assert(image.load(dir .. "/a.png")), img, 1e-6)
  end)

  it("gives nil and a message for an unwritable place, leaving nothing behind", function()
    local dir = scratch()
    assert_fails(nil, image.save(img, dir .. "/missing/a.png"))
    local ok, msg = image.save(img, dir .. "/missing/a.png")
    assert.is_nil(ok)
    assert.truthy(msg:find("faceid.image.save: cannot write '" .. dir .. "/missing/a.png'", 1, true))
    -- a directory in the way: the temporary file is written, the rename fails
    assert(os.execute("mkdir '" .. dir .. "/d.png'"))
    assert_fails("d.png", image.save(img, dir .. "/d.png"))
    assert.are.same({ "d.png" }, listing(dir))
  end)
end)

-- ---- hostile input -----------------------------------------------------------

describe("faceid.image hostile input", function()
  local g = faceid.Generator(20181129)
  local samples = {}

  setup(function()
    local dir = helper.tmpdir()
    local img = levels(g, 3, 6, 8)
    for _, ext in ipairs({ "png", "jpg", "bmp" }) do
      assert(image.save(img, dir .. "/s." .. ext))
      samples["saved " .. ext] = helper.read_file(dir .. "/s." .. ext)
    end
    helper.rmtree(dir)
    samples["hand PNG"] = png(2, 2, 8, 0, { "\1\2", "\3\4" })
    samples["hand GIF"] = gif(3, 2, { { 1, 2, 3 }, { 4, 5, 6 }, { 7, 8, 9 }, { 0, 0, 0 } }, { 0, 1, 2, 3, 2, 1 })
    samples["hand BMP"] = bmp24(3, 2, function() return 1, 2, 3 end)
    samples["PGM"] = pnm("P5", 3, 2, 255, { 1, 2, 3, 4, 5, 6 })
    samples["PPM 16-bit"] = pnm("P6", 2, 1, 65535, { 1, 2, 3, 4, 5, 6 })
  end)

  it("decodes every sample whole", function()
    for name, bytes in pairs(samples) do
      assert(image.from_bytes(bytes), name)
    end
  end)

  it("refuses every truncated prefix cleanly", function()
    for name, bytes in pairs(samples) do
      for n = 0, #bytes - 1 do
        local img, msg = image.from_bytes(bytes:sub(1, n))
        assert(img == nil and type(msg) == "string", ("%s cut to %d bytes was accepted"):format(name, n))
      end
    end
  end)

  it("refuses random bytes", function()
    for _ = 1, 300 do
      local n = g:random(0, 200)
      local b = {}
      for i = 1, n do
        b[i] = string.char(g:random(0, 255))
      end
      local img, msg = image.from_bytes(table.concat(b))
      assert_fails(nil, img, msg)
      assert.is_nil(image.from_bytes(table.concat(b), { channels = 1 }))
    end
  end)

  it("survives random bytes behind each signature and random corruption", function()
    local magics = { "\x89PNG\r\n\x1a\n", "\xff\xd8\xff", "GIF89a", "BM", "P5\n", "P6 4 4 255\n" }
    local function check(bytes, what)
      local img, msg = image.from_bytes(bytes)
      if img then
        assert(faceid.is_tensor(img) and img:size()[1] == 3, what)
      else
        assert(type(msg) == "string", what)
      end
    end
    for _, m in ipairs(magics) do
      for _ = 1, 60 do
        local b = { m }
        for i = 2, g:random(1, 120) do
          b[i] = string.char(g:random(0, 255))
        end
        check(table.concat(b), "random after " .. m)
      end
    end
    for name, bytes in pairs(samples) do
      for _ = 1, 150 do
        local b = { bytes:byte(1, -1) }
        for _ = 1, g:random(1, 4) do
          b[g:random(1, #b)] = g:random(0, 255)
        end
        check(string.char(table.unpack(b)), "corrupted " .. name)
      end
    end
  end)

  it("refuses absurd dimensions before allocating", function()
    local big = "60000x60000"
    assert_fails(big, image.from_bytes("P5\n60000 60000\n255\n\0\0\0\0"))
    assert_fails("above the limit", image.from_bytes("P6\n99999999999999999999 2\n255\n\0"))
    assert_fails("16385x1", image.from_bytes("P5\n16385 1\n255\n" .. string.rep("\0", 16385)))
    assert_fails("16384x4097", image.from_bytes("P5\n16384 4097\n255\n\0")) -- 2^26 + 16384 pixels
    assert_fails("truncated", image.from_bytes("P5\n16384 4096\n255\n\0")) -- allowed size, short data
    -- PNG whose IHDR claims 60000x60000 over a tiny IDAT
    local hdr = chunk("IHDR", string.pack(">I4I4BBBBB", 60000, 60000, 8, 2, 0, 0, 0))
    local p = "\x89PNG\r\n\x1a\n" .. hdr .. chunk("IDAT", "\x78\x01\x01\0\0\xff\xff\0\0\0\1") .. chunk("IEND", "")
    assert_fails(big, image.from_bytes(p))
    assert_fails(big, image.from_bytes("\x89PNG\r\n\x1a\n" .. hdr))
    -- a PNG chunk claiming a gigabyte
    assert_fails("truncated PNG", image.from_bytes("\x89PNG\r\n\x1a\n" .. chunk("IHDR", string.pack(">I4I4BBBBB", 2, 2, 8, 0, 0, 0, 0))
      .. string.pack(">I4", 0x3fffffff) .. "IDAT\0\0\0\0"))
    -- GIF and BMP headers
    assert_fails(big, image.from_bytes("GIF89a" .. string.pack("<I2I2BBB", 60000, 60000, 0, 0, 0) .. ";"))
    local bmp = bmp24(1, 1, function() return 0, 0, 0 end)
    assert_fails(big, image.from_bytes(bmp:sub(1, 18) .. string.pack("<i4i4", 60000, -60000) .. bmp:sub(27)))
    -- JPEG: a saved sample with the frame header patched
    local jpg = samples["saved jpg"]
    local sof = jpg:find("\xff\xc0", 1, true)
    assert(sof, "no baseline frame header in the saved JPEG")
    local patched = jpg:sub(1, sof + 4) .. string.pack(">I2I2", 60000, 60000) .. jpg:sub(sof + 9)
    assert_fails(big, image.from_bytes(patched))
  end)

  it("names a missing or unreadable file", function()
    local dir = scratch()
    assert_fails("faceid.image.load: cannot open '" .. dir .. "/none.jpg'", image.load(dir .. "/none.jpg"))
    assert_fails("faceid.image.info: cannot open '" .. dir .. "/none.jpg'", image.info(dir .. "/none.jpg"))
    assert_fails(dir, image.load(dir))
    helper.write_file(dir .. "/empty.png", "")
    assert_fails("cannot decode '" .. dir .. "/empty.png': empty file", image.load(dir .. "/empty.png"))
    helper.write_file(dir .. "/cut.png", samples["saved png"]:sub(1, 40))
    assert_fails("truncated PNG", image.load(dir .. "/cut.png"))
    assert_fails("truncated PNG", image.info(dir .. "/cut.png"))
    helper.write_file(dir .. "/a.tga", "\0\0\2\0\0\0\0\0\0\0\0\0\1\0\1\0\24\0\0\0\0")
    assert_fails("not a JPEG, PNG, BMP, GIF or binary PGM/PPM file", image.load(dir .. "/a.tga"))
  end)
end)

-- ---- the shared face data (skipped when absent) -----------------------------

describe("faceid.image on the face data", function()
  it("loads every AT&T s1 face as 3x112x92 grey", function()
    local dir = need_data("att_faces", "s1/1.pgm")
    if not dir then return end
    for i = 1, 10 do
      local path = ("%s/s1/%d.pgm"):format(dir, i)
      local img = assert(image.load(path))
      assert.are.same({ 3, 112, 92 }, img:size())
      assert_same(img:select(1, 1), img:select(1, 3))
      assert(img:min() >= 0 and img:max() <= 1 and img:max() > img:min())
      assert.are.same({ 92, 112, 1, "PGM/PPM" }, { image.info(path) })
    end
  end)

  it("loads a CelebA subset JPEG as 3x109x89 colour", function()
    local dir = need_data("celeba_subset", "img_align_celeba_89x109/000001.jpg")
    if not dir then return end
    local img = assert(image.load(dir .. "/img_align_celeba_89x109/000001.jpg"))
    assert.are.same({ 3, 109, 89 }, img:size())
    assert(img:min() >= 0 and img:max() <= 1)
    assert((img:select(1, 1) - img:select(1, 3)):abs():max() > 0.1, "expected a colour image")
    local grey = assert(image.load(dir .. "/img_align_celeba_89x109/000001.jpg", { channels = 1 }))
    local want = img:select(1, 1):mul(0.299) + img:select(1, 2):mul(0.587) + img:select(1, 3):mul(0.114)
    assert_same(grey:select(1, 1), want, 1e-5)
  end)

  it("loads a Yale GIF without extension as 3x243x320", function()
    local dir = need_data("yalefaces", "subject01.happy")
    if not dir then return end
    local img = assert(image.load(dir .. "/subject01.happy"))
    assert.are.same({ 3, 243, 320 }, img:size())
    assert_same(img:select(1, 1), img:select(1, 2))
    assert(img:max() > img:min())
    local grey = assert(image.load(dir .. "/subject01.happy", { channels = 1 }))
    assert_same(grey:select(1, 1), img:select(1, 1))
  end)
end)
