-- faceid.core.Canvas and faceid.plot: pixels of rectangles, lines, text and
-- blits against naive expectations (DDA points computed here, glyph rows
-- from the font's design), clipping, PNG round trips, and charts read back
-- from their files: frames found by scanning, values mapped to columns by
-- hand, pair frames coloured by the prediction.
local faceid = require("faceid")
local helper = require("helper")
local plot = require("faceid.plot")

local Canvas = faceid.core.Canvas
local C = plot.colors

local function rgb(cv, x, y)
  return { cv:pixel(x, y) }
end

local function is(col, r, g, b)
  return col[1] == r and col[2] == g and col[3] == b
end

local WHITE = { 255, 255, 255 }

-- pixels of a PNG file: px(x, y) -> {r, g, b} (0-based), and its size
local function read_png(path)
  local img = assert(faceid.image.load(path))
  local t = img:totable()
  local h, w = #t[1], #t[1][1]
  local function px(x, y)
    local out = {}
    for c = 1, 3 do out[c] = math.floor(t[c][y + 1][x + 1] * 255 + 0.5) end
    return out
  end
  return px, w, h
end

local function same(a, b)
  return a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
end

-- the plot area's frame: the first and last pixels of the axis colour along
-- the middle row and the middle column
local function find_frame(px, w, h)
  local x0, x1, y0, y1
  local my, mx = h // 2, w // 2
  for x = 0, w - 1 do
    if same(px(x, my), C.axis) then x0 = x0 or x; x1 = x end
  end
  for y = 0, h - 1 do
    if same(px(mx, y), C.axis) then y0 = y0 or y; y1 = y end
  end
  assert(x0 and y0, "no frame found")
  return x0, x1, y0, y1
end

local tmp
setup(function() tmp = helper.tmpdir() end)
teardown(function() helper.rmtree(tmp) end)

describe("faceid.core.Canvas", function()
  it("starts white or in the colour given, at the size given", function()
    local cv = Canvas(7, 5)
    local w, h = cv:size()
    assert.are.equal(7, w)
    assert.are.equal(5, h)
    assert.are.same(WHITE, rgb(cv, 0, 0))
    assert.are.same(WHITE, rgb(cv, 6, 4))
    assert.are.equal("faceid.Canvas(7x5)", tostring(cv))
    local cv2 = Canvas(3, 2, 10, 20, 30)
    assert.are.same({ 10, 20, 30 }, rgb(cv2, 2, 1))
  end)

  it("refuses bad sizes, colours and coordinates with the function's name", function()
    assert.has_error(function() Canvas(0, 10) end, "faceid.Canvas: width must be an integer 1..8192, got 0")
    assert.has_error(function() Canvas(10, 8193) end, "faceid.Canvas: height must be an integer 1..8192, got 8193")
    assert.has_error(function() Canvas(1.5, 2) end)
    assert.has_error(function() Canvas("a", 2) end)
    assert.has_error(function() Canvas(4, 4, 256, 0, 0) end, "faceid.Canvas: r must be an integer 0..255, got 256")
    local cv = Canvas(10, 10)
    assert.has_error(function() cv:rect(0, 0, 1, 1, 0, 0) end, "faceid.Canvas:rect: b must be an integer 0..255, got nothing")
    assert.has_error(function() cv:line(0, 0 / 0, 1, 1, 0, 0, 0) end)
    assert.has_error(function() cv:line(0, 1e16, 1, 1, 0, 0, 0) end)
    assert.has_error(function() cv:line(0, 0, 1, 1, 0, 0, 0, 0) end, "faceid.Canvas:line: thickness must be an integer 1..64, got 0")
    assert.has_error(function() cv:text(0, 0, {}, 0, 0, 0) end, "faceid.Canvas:text: the text must be a string, got table")
    assert.has_error(function() cv:text(0, 0, "a", 0, 0, 0, 0) end)
    assert.has_error(function() cv:pixel(10, 0) end, "faceid.Canvas:pixel: x must be an integer 0..9, got 10")
    assert.has_error(function() cv:pixel(0, -1) end)
    assert.has_error(function() cv.rect(nil, 0, 0, 1, 1, 0, 0, 0) end, "faceid.Canvas:rect: expected a faceid.Canvas, got nil")
    cv:close()
    cv:close()
    assert.has_error(function() cv:size() end, "faceid.Canvas:size: the canvas has been closed")
    assert.are.equal("faceid.Canvas(closed)", tostring(cv))
  end)

  it("fills a rectangle and nothing around it; outlines only the border", function()
    local cv = Canvas(20, 20)
    cv:rect(3, 4, 5, 6, 200, 10, 20)
    for y = 0, 19 do
      for x = 0, 19 do
        local inside = x >= 3 and x < 8 and y >= 4 and y < 10
        assert.are.same(inside and { 200, 10, 20 } or WHITE, rgb(cv, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
    local ov = Canvas(20, 20)
    ov:rect(2, 2, 6, 5, 0, 0, 255, false)
    assert.are.same({ 0, 0, 255 }, rgb(ov, 2, 2))
    assert.are.same({ 0, 0, 255 }, rgb(ov, 7, 6))
    assert.are.same({ 0, 0, 255 }, rgb(ov, 5, 6))
    assert.are.same(WHITE, rgb(ov, 4, 4))
    assert.are.same(WHITE, rgb(ov, 8, 4))
    assert.are.same(WHITE, rgb(ov, 4, 7))
    ov:rect(0, 0, 0, 5, 1, 2, 3) -- empty
    assert.are.same(WHITE, rgb(ov, 0, 0))
  end)

  it("draws a line on the DDA pixels and not beside them", function()
    local cv = Canvas(50, 30)
    cv:line(3, 5, 40, 17, 255, 0, 0)
    -- one pixel per column: y = round(5 + 12 * i / 37)
    local count = 0
    for x = 0, 49 do
      for y = 0, 29 do
        if is(rgb(cv, x, y), 255, 0, 0) then count = count + 1 end
      end
    end
    assert.are.equal(38, count)
    for i = 0, 37 do
      local y = math.floor(5 + 12 * i / 37 + 0.5)
      assert.are.same({ 255, 0, 0 }, rgb(cv, 3 + i, y))
      assert.are.same(WHITE, rgb(cv, 3 + i, y - 1))
      assert.are.same(WHITE, rgb(cv, 3 + i, y + 1))
    end
    assert.are.same(WHITE, rgb(cv, 2, 5))
    assert.are.same(WHITE, rgb(cv, 41, 17))
  end)

  it("draws thick lines as squares along the line", function()
    local cv = Canvas(30, 30)
    cv:line(10, 2, 10, 20, 0, 128, 0, 3)
    for y = 1, 21 do
      for x = 8, 12 do
        local on = x >= 9 and x <= 11 and y >= 1 and y <= 21
        assert.are.same(on and { 0, 128, 0 } or WHITE, rgb(cv, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
    assert.are.same(WHITE, rgb(cv, 10, 0))
    assert.are.same(WHITE, rgb(cv, 10, 22))
    -- a point
    local p = Canvas(5, 5)
    p:line(2, 2, 2, 2, 9, 9, 9)
    assert.are.same({ 9, 9, 9 }, rgb(p, 2, 2))
    assert.are.same(WHITE, rgb(p, 3, 2))
  end)

  it("clips at the edges and at the clip window without crashing", function()
    local cv = Canvas(50, 40)
    cv:line(-1e6, -1e6, 1e6, 1e6, 0, 0, 0, 2)
    for k = 0, 39 do assert.are.same({ 0, 0, 0 }, rgb(cv, k, k)) end
    assert.are.same(WHITE, rgb(cv, 45, 5))
    cv:line(-1e15, 20, 1e15, 21, 5, 5, 5, 64)
    cv:line(-100, -100, -10, -50, 1, 1, 1, 5)
    cv:rect(-5e14, -5e14, 5e14 + 50, 5e14 + 3, 7, 7, 7)
    assert.are.same({ 7, 7, 7 }, rgb(cv, 49, 2))
    assert.are.same({ 5, 5, 5 }, rgb(cv, 30, 39 - 19))
    cv:rect(45, 35, 100, 100, 8, 8, 8, false)
    cv:text(-3, -4, "clipped text", 0, 0, 0, 3)
    cv:text(48, 38, "x", 0, 0, 0, 2, true)
    cv:text(1e15, -1e15, "far away", 0, 0, 0)
    cv:blit(faceid.ones(3, 8, 8), -4, -4)
    cv:blit(faceid.ones(1, 8, 8), 46, 36, 0, 1, 1000, 1000)

    local k = Canvas(20, 20)
    k:clip(5, 6, 4, 3)
    k:rect(0, 0, 20, 20, 1, 2, 3)
    k:line(0, 7, 19, 7, 9, 9, 9)
    for y = 0, 19 do
      for x = 0, 19 do
        local inside = x >= 5 and x < 9 and y >= 6 and y < 9
        local want = not inside and WHITE or (y == 7 and { 9, 9, 9 } or { 1, 2, 3 })
        assert.are.same(want, rgb(k, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
    k:clip()
    k:rect(0, 0, 1, 1, 4, 4, 4)
    assert.are.same({ 4, 4, 4 }, rgb(k, 0, 0))
    k:clip(30, 30, 5, 5) -- outside: nothing is drawn
    k:rect(0, 0, 20, 20, 6, 6, 6)
    k:line(0, 0, 19, 19, 6, 6, 6)
    assert.are.same({ 4, 4, 4 }, rgb(k, 0, 0))
  end)

  it("draws text inside its box and reports its width", function()
    local cv = Canvas(80, 30)
    local w = cv:text(4, 3, "Ag 0.5", 0, 0, 0)
    assert.are.equal(36, w)
    assert.are.equal(36, cv:text_width("Ag 0.5"))
    assert.are.equal(72, cv:text_width("Ag 0.5", 2))
    assert.are.equal(0, cv:text_width(""))
    assert.are.equal(10, cv:text_height())
    assert.are.equal(30, cv:text_height(3))
    local inside, outside = 0, 0
    for y = 0, 29 do
      for x = 0, 79 do
        if not same(rgb(cv, x, y), WHITE) then
          if x >= 4 and x < 40 and y >= 3 and y < 13 then inside = inside + 1 else outside = outside + 1 end
        end
      end
    end
    assert.is_true(inside > 30)
    assert.are.equal(0, outside)
    assert.are.equal(12, cv:text(0, 0, "  ", 0, 0, 0, 1))
  end)

  it("draws '-' and '.' as the font defines them, scaled and turned", function()
    -- '-': row 3 of the glyph, columns 0..4; the glyph starts one row down
    local cv = Canvas(20, 20)
    cv:text(2, 2, "-", 0, 0, 0)
    for y = 0, 19 do
      for x = 0, 19 do
        local on = y == 2 + 1 + 3 and x >= 2 and x <= 6
        assert.are.same(on and { 0, 0, 0 } or WHITE, rgb(cv, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
    -- '.': rows 5-6, columns 1-2, at scale 2 each a 2x2 square
    local d = Canvas(20, 30)
    d:text(0, 0, ".", 0, 0, 0, 2)
    for y = 0, 29 do
      for x = 0, 19 do
        local on = y >= 12 and y < 16 and x >= 2 and x < 6
        assert.are.same(on and { 0, 0, 0 } or WHITE, rgb(d, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
    -- vertical '-': a column 4 to the right of x, rows y + 1 .. y + 5, read upwards
    local v = Canvas(20, 20)
    assert.are.equal(6, v:text(3, 3, "-", 0, 0, 0, 1, true))
    for y = 0, 19 do
      for x = 0, 19 do
        local on = x == 3 + 4 and y >= 4 and y <= 8
        assert.are.same(on and { 0, 0, 0 } or WHITE, rgb(v, x, y), ("pixel %d,%d"):format(x, y))
      end
    end
  end)

  it("blits tensors mapping [lo, hi] to 0..255", function()
    local img = faceid.tensor({ { { -1, 1, 0 }, { 0.5, 3, 0 / 0 } } }) -- 1x2x3
    local cv = Canvas(5, 4)
    cv:blit(img, 1, 1, -1, 1)
    assert.are.same({ 0, 0, 0 }, rgb(cv, 1, 1))
    assert.are.same({ 255, 255, 255 }, rgb(cv, 2, 1))
    assert.are.same({ 128, 128, 128 }, rgb(cv, 3, 1)) -- 127.5 rounds up
    assert.are.same({ 191, 191, 191 }, rgb(cv, 1, 2)) -- 0.75 * 255 = 191.25
    assert.are.same({ 255, 255, 255 }, rgb(cv, 2, 2)) -- clamped
    assert.are.same({ 0, 0, 0 }, rgb(cv, 3, 2))       -- NaN
    assert.are.same(WHITE, rgb(cv, 0, 1))
    assert.are.same(WHITE, rgb(cv, 4, 1))
    -- colour planes, the default range [0, 1], and scaling by nearest neighbour
    local c3 = faceid.tensor({ { { 1, 0 } }, { { 0, 0.2 } }, { { 0.4, 1 } } }) -- 3x1x2
    local k = Canvas(6, 4)
    k:blit(c3, 1, 1, nil, nil, 4, 2)
    for y = 1, 2 do
      assert.are.same({ 255, 0, 102 }, rgb(k, 1, y))
      assert.are.same({ 255, 0, 102 }, rgb(k, 2, y))
      assert.are.same({ 0, 51, 255 }, rgb(k, 3, y))
      assert.are.same({ 0, 51, 255 }, rgb(k, 4, y))
    end
    assert.are.same(WHITE, rgb(k, 5, 1))
    assert.are.same(WHITE, rgb(k, 1, 3))
    -- clipped at the top left: canvas (0, 0) shows source pixel (1, 1)
    local src = faceid.tensor({ { { 0, 0, 0 }, { 0, 0.6, 0 }, { 0, 0, 0 } } })
    local e = Canvas(3, 3)
    e:blit(src, -1, -1)
    assert.are.same({ 153, 153, 153 }, rgb(e, 0, 0))
    -- a strided view
    local wide = faceid.tensor({ { { 0, 1 }, { 1, 0 } } }):transpose(2, 3)
    local s = Canvas(2, 2)
    s:blit(wide, 0, 0)
    assert.are.same({ 0, 0, 0 }, rgb(s, 0, 0))
    assert.are.same({ 255, 255, 255 }, rgb(s, 1, 0))
  end)

  it("refuses bad blits", function()
    local cv = Canvas(4, 4)
    assert.has_error(function() cv:blit(faceid.zeros(4, 4), 0, 0) end,
      "faceid.Canvas:blit: expected a 1xHxW or 3xHxW image, got 4x4")
    assert.has_error(function() cv:blit(faceid.zeros(2, 4, 4), 0, 0) end)
    assert.has_error(function() cv:blit("img", 0, 0) end, "faceid.Canvas:blit: expected an image tensor, got string")
    assert.has_error(function() cv:blit(faceid.zeros(1, 4, 4), 0, 0, 1, 1) end)
    assert.has_error(function() cv:blit(faceid.zeros(1, 4, 4), 0, 0, 0, 1, 0, 3) end)
  end)

  it("gives its pixels as a 3xHxW tensor and saves a PNG that loads back exactly", function()
    local cv = Canvas(9, 6, 12, 34, 56)
    cv:rect(2, 1, 3, 2, 250, 1, 128)
    local t = cv:tensor()
    assert.are.same({ 3, 6, 9 }, t:size())
    assert.is_true(math.abs(t:get(1, 2, 3) - 250 / 255) < 1e-6)
    assert.is_true(math.abs(t:get(3, 1, 1) - 56 / 255) < 1e-6)
    local path = tmp .. "/canvas.png"
    assert.is_true(cv:save(path))
    local px, w, h = read_png(path)
    assert.are.equal(9, w)
    assert.are.equal(6, h)
    for y = 0, 5 do
      for x = 0, 8 do assert.are.same(rgb(cv, x, y), px(x, y)) end
    end
    local ok, msg = cv:save(tmp .. "/no/such/dir/x.png")
    assert.is_nil(ok)
    assert.matches("^faceid.Canvas:save: cannot write", msg)
    assert.has_error(function() cv:save(tmp .. "/x.tiff") end)
    assert.has_error(function() cv:save(42) end, "faceid.Canvas:save: path must be a string, got number")
  end)
end)

describe("faceid.plot", function()
  local function dists()
    -- same pairs near 0.6, different near 1.5, overlapping a little
    local d, y = {}, {}
    for i = 1, 60 do
      local same_pair = i % 2 == 0
      y[i] = same_pair and 0 or 1
      d[i] = (same_pair and 0.6 or 1.5) + 0.5 * math.sin(i * 1.7)
    end
    return d, y
  end

  it("writes each chart as a PNG of the expected size", function()
    local d, y = dists()
    local history = {}
    for s = 1, 40 do
      history[s] = { step = s, loss = 1 / s, lr = 0.1 * (1 - s / 40), beta1 = 0.9, val_auc = s % 10 == 0 and 0.5 + s / 100 or nil }
    end
    local cases = {
      { "lines", function(p) return plot.lines(p, { series = { { y = { 1, 3, 2 } } } }) end, 900, 560 },
      { "training", function(p) return plot.training(p, history) end, 1000, 700 },
      { "roc", function(p) return plot.roc(p, d, y) end, 700, 660 },
      { "histogram", function(p) return plot.histogram(p, d, y) end, 900, 560 },
      { "small", function(p) return plot.histogram(p, faceid.tensor(d), faceid.tensor(y), { width = 300, height = 200 }) end, 300, 200 },
      { "pairs", function(p)
        return plot.pairs(p, { { a = faceid.zeros(1, 8, 8), b = faceid.zeros(3, 8, 8), distance = 1, label = 1 } },
          { width = 400, height = 300 })
      end, 400, 300 },
    }
    for _, c in ipairs(cases) do
      local path = tmp .. "/" .. c[1] .. ".png"
      assert.is_true(c[2](path), c[1])
      local img = assert(faceid.image.load(path))
      assert.are.same({ 3, c[4], c[3] }, img:size(), c[1])
    end
  end)

  it("lines: maps values to the frame and breaks lines at NaN and infinity", function()
    local path = tmp .. "/mapped.png"
    local red = { 200, 0, 100 }
    assert.is_true(plot.lines(path, {
      title = "mapped", xlabel = "x", ylabel = "y", width = 400, height = 300, xrange = { 0, 4 }, yrange = { 0, 1 },
      legend = false,
      series = { { x = { 0, 1, 2, 3, 4 }, y = { 0.25, 0.25, 0 / 0, 0.25, 1 / 0 }, color = red, thickness = 1 } },
    }))
    local px, w, h = read_png(path)
    local x0, x1, y0, y1 = find_frame(px, w, h)
    assert.is_true(x1 - x0 > 200 and y1 - y0 > 150)
    local row = math.floor(y1 - 0.25 * (y1 - y0) + 0.5)
    local function col(v) return math.floor(x0 + v / 4 * (x1 - x0) + 0.5) end
    assert.are.same(red, px(col(0.5), row))
    assert.are.same(red, px(col(3) + 1, row))
    assert.is_false(same(px(col(0.5), row - 2), red))
    assert.is_false(same(px(col(0.5), row + 2), red))
    -- the gap: nothing between x = 1 and x = 3, and nothing after 3
    assert.is_false(same(px(col(2), row), red))
    assert.is_false(same(px(col(1.5), row), red))
    assert.is_false(same(px(col(3.5), row), red))
  end)

  it("lines: a log axis skips values <= 0", function()
    assert.is_true(plot.lines(tmp .. "/log.png", {
      logy = true, series = { { name = "a", y = { 0, 1, 10, -5, 1000 } }, { name = "b", y = { 1 / 0, 0 / 0 } } },
    }))
    assert.is_true(plot.lines(tmp .. "/empty.png", { series = { { y = { 0 / 0 } } } }))
  end)

  it("training: works without val_auc and beta1, and with sgd-style rows", function()
    local h = {}
    for s = 1, 25 do h[s] = { step = 10 * s, loss = 2 / s, lr = 0.01 } end
    assert.is_true(plot.training(tmp .. "/t1.png", h, { title = "sgd", width = 640, height = 480 }))
    h[25].val_auc = 0.8
    h[3].loss = 0 / 0
    assert.is_true(plot.training(tmp .. "/t2.png", h, { smooth = 5 }))
    assert.is_true(plot.training(tmp .. "/t3.png", { { loss = 1 } }))
  end)

  it("histogram: the threshold line lands on the column of its value", function()
    -- same {0.2, 0.4}, different {1.2, 1.6}: the best threshold is the
    -- midpoint (0.4 + 1.2) / 2 = 0.8 (faceid.metrics' operating points)
    local d, y = { 0.2, 0.4, 1.2, 1.6 }, { 0, 0, 1, 1 }
    for _, c in ipairs({ { nil, 0.8 }, { 1.5, 1.5 } }) do
      local path = tmp .. "/threshold.png"
      assert.is_true(plot.histogram(path, d, y, { range = { 0, 2 }, threshold = c[1], width = 500, height = 320, bins = 10 }))
      local px, w, h = read_png(path)
      local x0, x1 = find_frame(px, w, h)
      local want = math.floor(x0 + c[2] / 2 * (x1 - x0) + 0.5)
      local found
      for x = 0, w - 1 do
        if same(px(x, h // 2), C.threshold) then found = x; break end
      end
      assert.are.equal(want, found)
    end
  end)

  it("roc: the curve passes through the operating points and the EER point is marked", function()
    -- sorted: .1 s, .2 s, .3 d, .35 s, .4 d, .5 d (3 same, 3 different). ROC points
    -- (0,0) (0,1/3) (0,2/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1); FAR - FRR first
    -- reaches 0 at (1/3, 2/3), so EER = 1/3, marked at (EER, 1 - EER)
    local path = tmp .. "/roc.png"
    assert.is_true(plot.roc(path, { 0.1, 0.2, 0.3, 0.35, 0.4, 0.5 }, { 0, 0, 1, 0, 1, 1 }, { width = 420, height = 400 }))
    local px, w, h = read_png(path)
    local x0, x1, y0, y1 = find_frame(px, w, h)
    local function X(v) return math.floor(x0 + v * (x1 - x0) + 0.5) end
    local function Y(v) return math.floor(y1 - v * (y1 - y0) + 0.5) end
    assert.are.same(C.same, px(X(1 / 6), Y(2 / 3)))
    assert.are.same(C.same, px(X(1 / 3), Y(5 / 6)))
    assert.are.same(C.same, px(X(1 / 2), Y(1) + 1))
    assert.is_false(same(px(X(1 / 6), Y(2 / 3) - 3), C.same))
    assert.is_false(same(px(X(1 / 6), Y(2 / 3) + 3), C.same))
    assert.are.same(C.eer, px(X(1 / 3), Y(2 / 3)))
    assert.is_false(same(px(X(1 / 3), Y(1 / 3)), C.eer))
    -- the chance diagonal is dashed: some of its pixels near (0.8, 0.8)
    local seen = false
    for dy = -4, 4 do
      for dx = -4, 4 do
        if same(px(X(0.8) + dx, Y(0.8) + dy), C.chance) then seen = true end
      end
    end
    assert.is_true(seen)
  end)

  it("pairs: green frames for right decisions, red for wrong ones, faces mapped from [-1, 1]", function()
    local grey, black = faceid.zeros(1, 20, 20), faceid.full(3, 20, 20, -1)
    local path = tmp .. "/pairs.png"
    assert.is_true(plot.pairs(path, {
      { a = grey, b = black, distance = 0.5, label = 0 },  -- same, accepted: right
      { a = grey, b = black, distance = 0.5, label = 1 },  -- different, accepted: wrong
    }, { columns = 2 }))
    local px, w, h = read_png(path)
    local row, first, last = h // 2, nil, nil
    for x = 0, w - 1 do
      if not same(px(x, row), C.background) then first = first or x; last = x end
    end
    assert.are.same(C.right, px(first, row))
    assert.are.same(C.wrong, px(last, row))
    local n_grey, n_black = 0, 0
    for x = 0, w - 1 do
      local p = px(x, row)
      if same(p, { 128, 128, 128 }) then n_grey = n_grey + 1 end
      if same(p, { 0, 0, 0 }) then n_black = n_black + 1 end
    end
    assert.is_true(n_grey >= 2 * 96 and n_black >= 2 * 96)
    -- a wrong cell carries more red than a right cell of the same layout has
    -- green (its frame alone): the cross and the caption
    local function count(items)
      assert.is_true(plot.pairs(path, items, { columns = 1, threshold = 1.0, range = { 0, 1 } }))
      local p2, w2, h2 = read_png(path)
      local n = { right = 0, wrong = 0 }
      for yy = 0, h2 - 1 do
        for x = 0, w2 - 1 do
          local q = p2(x, yy)
          if same(q, C.wrong) then n.wrong = n.wrong + 1 end
          if same(q, C.right) then n.right = n.right + 1 end
        end
      end
      return n
    end
    local r = count({ { a = grey, b = grey, distance = 2.0, label = 1 } })
    local wr = count({ { a = grey, b = grey, distance = 2.0, label = 0 } })
    assert.are.equal(0, r.wrong)
    assert.are.equal(0, wr.right)
    assert.is_true(r.right > 0)
    assert.is_true(wr.wrong > r.right + 50)
    -- images of other sizes are fitted
    assert.is_true(plot.pairs(path, {
      { a = faceid.zeros(1, 30, 12), b = faceid.zeros(3, 200, 300), distance = 0.2, label = 0 },
      { a = faceid.zeros(3, 5, 5), b = faceid.zeros(1, 64, 64), distance = 3, label = 1 },
      { a = faceid.zeros(3, 5, 5), b = faceid.zeros(1, 64, 64), distance = 3, label = 1 },
    }, { face = 40, title = "fitted" }))
  end)

  it("raises errors that name the function", function()
    local p = tmp .. "/e.png"
    local d, y = dists()
    local cases = {
      { "lines", function() plot.lines(p, { series = {} }) end, "series must be a non%-empty list" },
      { "lines", function() plot.lines(p, { series = { { y = { 1, "a" } } } }) end, "series%[1%]%.y%[2%] must be a number" },
      { "lines", function() plot.lines(p, { series = { { x = { 1 }, y = { 1, 2 } } } }) end, "1 x values but 2 y values" },
      { "lines", function() plot.lines(p, { bogus = 1, series = { { y = { 1 } } } }) end, "unknown option 'bogus'" },
      { "lines", function() plot.lines(p, { width = 10, series = { { y = { 1 } } } }) end, "opts.width must be 64..8192" },
      { "lines", function() plot.lines(42, { series = { { y = { 1 } } } }) end, "path must be a string" },
      { "lines", function() plot.lines(tmp .. "/a.txt", { series = { { y = { 1 } } } }) end, "cannot tell the format" },
      { "training", function() plot.training(p, {}) end, "history must be a non%-empty list" },
      { "training", function() plot.training(p, { { loss = "x" } }) end, "history%[1%]%.loss must be a number" },
      { "training", function() plot.training(p, { { loss = 1 } }, { smooth = 0 }) end, "opts.smooth" },
      { "roc", function() plot.roc(p, { 1, 2 }, { 0, 2 }) end, "label 2 is 2" },
      { "roc", function() plot.roc(p, { 1, 2 }, { 0, 0 }) end, "needs both same and different pairs" },
      { "roc", function() plot.roc(p, d, y, { color = 1 }) end, "unknown option 'color'" },
      { "histogram", function() plot.histogram(p, d, y, { bins = 0 }) end, "opts.bins must be an integer 1..1000" },
      { "histogram", function() plot.histogram(p, d, { 0 }) end, "60 distances but 1 labels" },
      { "histogram", function() plot.histogram(p, d, y, { range = { 1, 1 } }) end, "opts.range must have lo < hi" },
      { "pairs", function() plot.pairs(p, {}) end, "items must be a non%-empty list" },
      { "pairs", function() plot.pairs(p, { { a = 1, b = faceid.zeros(1, 2, 2), distance = 1, label = 0 } }) end,
        "items%[1%]%.a must be a 1xHxW or 3xHxW image tensor" },
      { "pairs", function()
        plot.pairs(p, { { a = faceid.zeros(1, 2, 2), b = faceid.zeros(1, 2, 2), distance = 1, label = 3 } })
      end, "items%[1%]%.label must be 0 %(same%) or 1" },
      { "pairs", function()
        plot.pairs(p, { { a = faceid.zeros(1, 2, 2), b = faceid.zeros(1, 2, 2), distance = 0 / 0, label = 0 } })
      end, "distance must be a finite number" },
      { "pairs", function()
        local items = {}
        for i = 1, 400 do items[i] = { a = faceid.zeros(1, 2, 2), b = faceid.zeros(1, 2, 2), distance = 1, label = 0 } end
        plot.pairs(p, items, { columns = 1 })
      end, "more than 8192 a side" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[2])
      assert.is_false(ok, c[3])
      assert.matches("^faceid%.plot%." .. c[1] .. ": .*" .. c[3], tostring(err))
    end
  end)

  it("returns nil and a message when the file cannot be written", function()
    local p = tmp .. "/missing/dir/x.png"
    local d, y = dists()
    local calls = {
      lines = function() return plot.lines(p, { series = { { y = { 1, 2 } } } }) end,
      training = function() return plot.training(p, { { step = 1, loss = 1 } }) end,
      roc = function() return plot.roc(p, d, y) end,
      histogram = function() return plot.histogram(p, d, y) end,
      pairs = function()
        return plot.pairs(p, { { a = faceid.zeros(1, 4, 4), b = faceid.zeros(1, 4, 4), distance = 1, label = 0 } })
      end,
    }
    for name, f in pairs(calls) do
      local ok, msg = f()
      assert.is_nil(ok, name)
      assert.matches("^faceid%.plot%." .. name .. ": cannot write '.*missing/dir/x%.png'", msg)
    end
  end)
end)
