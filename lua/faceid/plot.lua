--- faceid.plot: charts and face-pair grids as PNG files, drawn on
-- faceid.core.Canvas (csrc/draw.c) with no plotting dependency.
--
--   local plot = faceid.plot
--   plot.lines(path, {title=, xlabel=, ylabel=, series = {{name=, x=, y=}, ...}, logy=})
--   plot.training(path, history [, opts])        -- faceid.train.run(...).history
--   plot.roc(path, distances, labels [, opts])   -- curve, chance diagonal, EER point
--   plot.histogram(path, distances, labels [, opts])
--   plot.pairs(path, items [, opts])             -- items: {a=, b=, distance=, label=}
--
-- Every function returns true, or nil and a message when the file cannot be
-- written; a bad argument raises "faceid.plot.<function>: <problem>". The
-- format follows the extension (.png; .jpg, .jpeg and .bmp work too).
-- Labels follow faceid.metrics: 0 = same person, 1 = different people; a
-- pair is predicted "same" when its distance is below the threshold.
--
-- Every chart takes opts.title, opts.width and opts.height. A chart's value
-- v maps to the column x0 + (v - lo) / (hi - lo) * (x1 - x0) (rounded),
-- where x0 and x1 are the columns of the left and right sides of the black
-- frame around the plot area and [lo, hi] the axis range; rows likewise,
-- upwards from the bottom side.
local core = require("faceid.core")

local M = {}

--- The colours used, {r, g, b} with components 0..255.
M.colors = {
  background = { 255, 255, 255 },
  text = { 33, 33, 33 },
  axis = { 0, 0, 0 },          -- the frame around a plot area, and nothing else
  grid = { 228, 228, 228 },
  legend_border = { 170, 170, 170 },
  chance = { 150, 150, 150 },
  same = { 31, 119, 180 },     -- same-person pairs, and the first series
  different = { 255, 127, 14 },
  same_fill = { 160, 200, 232 },
  different_fill = { 255, 200, 150 },
  overlap_fill = { 200, 188, 182 },
  threshold = { 214, 39, 40 },
  eer = { 214, 39, 40 },
  right = { 0, 160, 0 },       -- frame of a pair decided right
  wrong = { 220, 0, 0 },       -- frame and mark of a pair decided wrong
  face_box = { 240, 240, 240 },
  palette = {
    { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 }, { 214, 39, 40 }, { 148, 103, 189 },
    { 140, 86, 75 }, { 227, 119, 194 }, { 127, 127, 127 }, { 188, 189, 34 }, { 23, 190, 207 },
  },
}
local C = M.colors

local FONT_H = 10 -- pixels per line of text at scale 1 (csrc/draw.h)

-- ---- checks ---------------------------------------------------------------

local function fail(fn, msg)
  error(("faceid.plot.%s: %s"):format(fn, msg), 0)
end

local function check_opts(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(fn, "opts must be a table, got " .. type(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then fail(fn, ("unknown option '%s'"):format(tostring(k))) end
  end
  return opts
end

local function check_path(fn, path)
  if type(path) ~= "string" then fail(fn, "path must be a string, got " .. type(path)) end
  if path:find("\0", 1, true) then fail(fn, "path contains a zero byte") end
  local ext = (path:match("%.(%w+)$") or ""):lower()
  if ext ~= "png" and ext ~= "jpg" and ext ~= "jpeg" and ext ~= "bmp" then
    fail(fn, ("cannot tell the format of '%s' (use .png, .jpg, .jpeg or .bmp)"):format(path))
  end
end

local function check_size(fn, o, w, h)
  local function side(key, def)
    local v = o[key]
    if v == nil then return def end
    if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
      fail(fn, ("opts.%s must be an integer, got %s"):format(key, tostring(v)))
    end
    v = math.tointeger(v)
    if v < 64 or v > core.canvas_max_side then
      fail(fn, ("opts.%s must be 64..%d, got %d"):format(key, core.canvas_max_side, v))
    end
    return v
  end
  return side("width", w), side("height", h)
end

local function check_string(fn, o, key)
  local v = o[key]
  if v ~= nil and type(v) ~= "string" then
    fail(fn, ("opts.%s must be a string, got %s"):format(key, type(v)))
  end
  return v
end

local function check_number(fn, v, what)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    fail(fn, ("%s must be a finite number, got %s"):format(what, tostring(v)))
  end
  return v
end

local function check_range(fn, v, what)
  if v == nil then return nil end
  if type(v) ~= "table" or #v ~= 2 then fail(fn, what .. " must be a list {lo, hi}") end
  local lo, hi = check_number(fn, v[1], what .. "[1]"), check_number(fn, v[2], what .. "[2]")
  if not (lo < hi) then fail(fn, ("%s must have lo < hi, got {%s, %s}"):format(what, lo, hi)) end
  return { lo, hi }
end

-- a Lua list of numbers (NaN and infinities allowed) from a list or 1-D tensor
local function numbers(fn, v, what)
  if core.is_tensor(v) then
    if v:dim() ~= 1 then fail(fn, ("%s must be a 1-D tensor, got %d dimensions"):format(what, v:dim())) end
    return v:totable()
  end
  if type(v) ~= "table" then fail(fn, ("%s must be a list of numbers, got %s"):format(what, type(v))) end
  for i = 1, #v do
    if type(v[i]) ~= "number" then
      fail(fn, ("%s[%d] must be a number, got %s"):format(what, i, type(v[i])))
    end
  end
  return v
end

local function check_color(fn, v, what)
  if type(v) ~= "table" or #v ~= 3 then fail(fn, what .. " must be a list {r, g, b}") end
  for i = 1, 3 do
    if math.type(v[i]) ~= "integer" or v[i] < 0 or v[i] > 255 then
      fail(fn, what .. " components must be integers 0..255")
    end
  end
  return v
end

local function finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

-- run a faceid.metrics function, its argument errors renamed to fn
local function metric(fn, f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then
    local msg = tostring(r[2]):gsub("^faceid%.metrics%.[%w_]+: ", "")
    fail(fn, msg)
  end
  return table.unpack(r, 2, r.n)
end

local function save(fn, cv, path)
  local ok, msg = cv:save(path)
  cv:close()
  if not ok then
    return nil, ("faceid.plot.%s: %s"):format(fn, (tostring(msg):gsub("^faceid%.Canvas:save: ", "")))
  end
  return true
end

local function canvas(w, h)
  local b = C.background
  return core.Canvas(w, h, b[1], b[2], b[3])
end

-- ---- drawing helpers ------------------------------------------------------

local function rect(cv, x, y, w, h, col, filled)
  cv:rect(x, y, w, h, col[1], col[2], col[3], filled ~= false)
end

local function line(cv, x0, y0, x1, y1, col, t)
  cv:line(x0, y0, x1, y1, col[1], col[2], col[3], t or 1)
end

local function text(cv, x, y, s, col, scale, vertical)
  return cv:text(x, y, s, (col or C.text)[1], (col or C.text)[2], (col or C.text)[3], scale or 1, vertical)
end

local function text_center(cv, cx, y, s, col, scale)
  return text(cv, math.floor(cx - cv:text_width(s, scale or 1) / 2 + 0.5), y, s, col, scale)
end

-- a title at scale 2 if it fits in width, else at 1, else cut with ".."
local function title_fit(cv, s, scale, width)
  if cv:text_width(s, scale) <= width then return s, scale end
  scale = 1
  local n = math.max(0, width // cv:text_width("x", 1))
  if #s > n then s = s:sub(1, math.max(0, n - 2)) .. ".." end
  return s, scale
end

local function dashed(cv, x0, y0, x1, y1, col, dash)
  local len = math.sqrt((x1 - x0) ^ 2 + (y1 - y0) ^ 2)
  local n = math.max(1, math.floor(len / dash))
  for i = 0, n - 1, 2 do
    local a, b = i / n, math.min(i + 1, n) / n
    line(cv, x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b, col)
  end
end

local function marker(cv, x, y, col, size)
  size = size or 7
  local h = size // 2
  rect(cv, math.floor(x + 0.5) - h, math.floor(y + 0.5) - h, size, size, col)
end

-- "nice" tick values 1, 2 or 5 times a power of ten over [lo, hi], about n of them
local function nice_ticks(lo, hi, n)
  local raw = (hi - lo) / math.max(n, 1)
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local f = raw / mag
  local step = (f < 1.5 and 1 or f < 3 and 2 or f < 7 and 5 or 10) * mag
  local ticks, k = {}, math.ceil(lo / step - 1e-9)
  while k * step <= hi + step * 1e-9 and #ticks < 100 do
    ticks[#ticks + 1] = k * step
    k = k + 1
  end
  return ticks, step
end

local function tick_label(v, step)
  if math.abs(v) < step * 1e-6 then return "0" end
  local d = math.max(0, -math.floor(math.log(step, 10) + 1e-9))
  if math.abs(v) >= 1e6 or d > 5 then return ("%.3g"):format(v) end
  return ("%." .. d .. "f"):format(v)
end

local function decade_label(k)
  if k >= -4 and k <= 5 then return ("%." .. math.max(0, -k) .. "f"):format(10 ^ k) end
  return ("1e%d"):format(k)
end

-- min and max of the finite values of lists (positive ones only when positive)
local function extent(lists, positive)
  local lo, hi = math.huge, -math.huge
  for _, l in ipairs(lists) do
    for i = 1, #l do
      local v = l[i]
      if finite(v) and (not positive or v > 0) then
        if v < lo then lo = v end
        if v > hi then hi = v end
      end
    end
  end
  if lo > hi then return nil end
  return lo, hi
end

local function widen(lo, hi)
  if lo < hi then return lo, hi end
  local pad = lo ~= 0 and math.abs(lo) * 0.05 or 0.5
  return lo - pad, hi + pad
end

-- ---- axes -----------------------------------------------------------------

-- Lay out and draw the axes of a chart in box {x, y, w, h}: title, frame,
-- grid, ticks and labels. a: title, title_scale, xlabel, ylabel, xrange,
-- yrange ({lo, hi}, or the extent of xs / ys: lists of value lists),
-- ypad (fraction of the y span added on both sides), logy. Returns the
-- axes: x0, x1, y0, y1 (frame columns and rows), X(v), Y(v), and
-- ok = false when there was nothing to set the range from.
local function axes(cv, box, a)
  local bx, by, bw, bh = box[1], box[2], box[3], box[4]
  local ax = { ok = true, logy = a.logy }
  local xlo, xhi
  if a.xrange then
    xlo, xhi = a.xrange[1], a.xrange[2]
  else
    xlo, xhi = extent(a.xs or {})
    if not xlo then xlo, xhi, ax.ok = 0, 1, false end
    xlo, xhi = widen(xlo, xhi)
  end
  local ylo, yhi
  if a.yrange then
    ylo, yhi = a.yrange[1], a.yrange[2]
    if a.logy then
      if not (ylo > 0) then ylo = yhi / 10 end
      ylo, yhi = math.log(ylo, 10), math.log(yhi, 10)
    end
  elseif a.logy then
    ylo, yhi = extent(a.ys or {}, true)
    if not ylo then ylo, yhi, ax.ok = 1, 10, false end
    ylo, yhi = math.floor(math.log(ylo, 10) + 1e-9), math.ceil(math.log(yhi, 10) - 1e-9)
    if ylo == yhi then yhi = ylo + 1 end
  else
    ylo, yhi = extent(a.ys or {})
    if not ylo then ylo, yhi, ax.ok = 0, 1, false end
    ylo, yhi = widen(ylo, yhi)
    local pad = (yhi - ylo) * (a.ypad or 0.05)
    ylo, yhi = ylo - pad, yhi + pad
  end

  local ts = a.title_scale or 2
  local title
  if a.title then title, ts = title_fit(cv, a.title, ts, bw - 16) end
  local top = 8 + (a.title and FONT_H * ts + 8 or 0)
  local bottom = 5 + 4 + FONT_H + (a.xlabel and 6 + FONT_H or 0) + 6
  local y0, y1 = by + top, by + bh - 1 - bottom
  -- y ticks: about one per 50 rows
  local yt, ylabels = {}, {}
  if a.logy then
    local every = math.max(1, math.ceil((yhi - ylo + 1) / math.max(2, (y1 - y0) // 40)))
    for k = math.ceil(ylo), math.floor(yhi), every do
      yt[#yt + 1], ylabels[#ylabels + 1] = k, decade_label(k)
    end
  else
    local step
    yt, step = nice_ticks(ylo, yhi, math.max(2, (y1 - y0) // 50))
    for i, v in ipairs(yt) do ylabels[i] = tick_label(v, step) end
  end
  local lw = 0
  for _, s in ipairs(ylabels) do lw = math.max(lw, cv:text_width(s)) end
  local left = 8 + (a.ylabel and FONT_H + 6 or 0) + lw + 4 + 5
  local x0, x1 = bx + left, bx + bw - 1 - 24
  -- x ticks: as many as fit side by side with room to spare
  local xt, xlabels, n = {}, {}, math.max(2, (x1 - x0) // 90)
  while true do
    local step
    xt, step = nice_ticks(xlo, xhi, n)
    local widest = 0
    for i, v in ipairs(xt) do
      xlabels[i] = tick_label(v, step)
      widest = math.max(widest, cv:text_width(xlabels[i]))
    end
    for i = #xt + 1, #xlabels do xlabels[i] = nil end
    if n <= 2 or (widest + 16) * #xt <= x1 - x0 then break end
    n = n - 1
  end

  ax.x0, ax.x1, ax.y0, ax.y1 = x0, x1, y0, y1
  ax.xlo, ax.xhi, ax.ylo, ax.yhi = xlo, xhi, ylo, yhi
  function ax.X(v) return x0 + (v - xlo) / (xhi - xlo) * (x1 - x0) end
  function ax.Y(v)
    if a.logy then v = v > 0 and math.log(v, 10) or -math.huge end
    return y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)
  end
  local function Yt(t) return y1 - (t - ylo) / (yhi - ylo) * (y1 - y0) end

  -- grid, ticks and their labels
  for i, v in ipairs(xt) do
    local px = math.floor(ax.X(v) + 0.5)
    line(cv, px, y0, px, y1, C.grid)
    line(cv, px, y1 + 1, px, y1 + 4, C.text)
    text_center(cv, px, y1 + 6, xlabels[i])
  end
  for i, v in ipairs(yt) do
    local py = math.floor(Yt(v) + 0.5)
    line(cv, x0, py, x1, py, C.grid)
    line(cv, x0 - 4, py, x0 - 1, py, C.text)
    text(cv, x0 - 7 - cv:text_width(ylabels[i]), py - FONT_H // 2, ylabels[i])
  end
  if title then text_center(cv, (x0 + x1) / 2, by + 8, title, C.text, ts) end
  if a.xlabel then text_center(cv, (x0 + x1) / 2, y1 + 6 + FONT_H + 6, a.xlabel) end
  if a.ylabel then
    local len = cv:text_width(a.ylabel)
    text(cv, bx + 8, math.floor((y0 + y1 - len) / 2 + 0.5), a.ylabel, C.text, 1, true)
  end
  if not ax.ok then text_center(cv, (x0 + x1) / 2, (y0 + y1) // 2 - FONT_H // 2, a.empty or "no data") end
  return ax
end

local function frame(cv, ax)
  rect(cv, ax.x0, ax.y0, ax.x1 - ax.x0 + 1, ax.y1 - ax.y0 + 1, C.axis, false)
end

local function clip_to(cv, ax)
  cv:clip(ax.x0, ax.y0, ax.x1 - ax.x0 + 1, ax.y1 - ax.y0 + 1)
end

-- polyline through the finite points of s (x, y, color, thickness,
-- points), broken at NaN and infinities; lone points get a marker
local function draw_series(cv, ax, s)
  local col, t = s.color, s.thickness or 2
  local px, py, run = nil, nil, 0
  local function close_run()
    if run == 1 then marker(cv, px, py, col, 5) end
    run = 0
  end
  for i = 1, #s.y do
    local xv, yv = s.x[i], s.y[i]
    if finite(xv) and finite(yv) and not (ax.logy and yv <= 0) then
      local qx, qy = ax.X(xv), ax.Y(yv)
      if run > 0 then line(cv, px, py, qx, qy, col, t) end
      if s.points then marker(cv, qx, qy, col, 7) end
      px, py, run = qx, qy, run + 1
    else
      close_run()
    end
  end
  close_run()
end

-- entries {name=, color=, thickness=, marker=}; pos "tr", "tl", "br", "bl"
local function legend(cv, ax, entries, pos)
  if #entries == 0 then return end
  local lh, w = FONT_H + 4, 0
  for _, e in ipairs(entries) do w = math.max(w, cv:text_width(e.name)) end
  w = w + 22 + 8 + 10
  local h = #entries * lh + 8
  local x = pos:sub(2, 2) == "l" and ax.x0 + 8 or ax.x1 - 8 - w
  local y = pos:sub(1, 1) == "b" and ax.y1 - 8 - h or ax.y0 + 8
  rect(cv, x, y, w, h, C.background)
  rect(cv, x, y, w, h, C.legend_border, false)
  for i, e in ipairs(entries) do
    local cy = y + 4 + (i - 1) * lh + lh // 2
    if e.marker then
      marker(cv, x + 16, cy, e.color, 7)
    else
      line(cv, x + 6, cy, x + 26, cy, e.color, math.max(2, e.thickness or 2))
    end
    text(cv, x + 32, cy - FONT_H // 2, e.name)
  end
end

-- ---- lines ----------------------------------------------------------------

-- checked copies of spec.series: {name, x, y, color, thickness, points}
local function check_series(fn, list)
  if type(list) ~= "table" or #list == 0 then fail(fn, "series must be a non-empty list of {name=, x=, y=}") end
  local out = {}
  for i, s in ipairs(list) do
    local what = ("series[%d]"):format(i)
    if type(s) ~= "table" then fail(fn, what .. " must be a table {name=, x=, y=}") end
    for k in pairs(s) do
      if k ~= "name" and k ~= "x" and k ~= "y" and k ~= "color" and k ~= "thickness" and k ~= "points" then
        fail(fn, ("%s: unknown field '%s'"):format(what, tostring(k)))
      end
    end
    if s.name ~= nil and type(s.name) ~= "string" then fail(fn, what .. ".name must be a string") end
    if s.y == nil then fail(fn, what .. ".y is missing") end
    local y = numbers(fn, s.y, what .. ".y")
    local x
    if s.x == nil then
      x = {}
      for j = 1, #y do x[j] = j end
    else
      x = numbers(fn, s.x, what .. ".x")
    end
    if #x ~= #y then fail(fn, ("%s: %d x values but %d y values"):format(what, #x, #y)) end
    local t = s.thickness
    if t ~= nil and (math.type(t) ~= "integer" or t < 1 or t > 16) then
      fail(fn, what .. ".thickness must be an integer 1..16")
    end
    out[i] = {
      name = s.name, x = x, y = y, thickness = t, points = s.points and true or false,
      color = s.color and check_color(fn, s.color, what .. ".color") or C.palette[(i - 1) % #C.palette + 1],
    }
  end
  return out
end

local LEGEND_POS = { tr = true, tl = true, br = true, bl = true }

-- one chart of series in box; c: the checked spec
local function chart(cv, box, c)
  local xs, ys = {}, {}
  for i, s in ipairs(c.series) do xs[i], ys[i] = s.x, s.y end
  local ax = axes(cv, box, {
    title = c.title, title_scale = c.title_scale, xlabel = c.xlabel, ylabel = c.ylabel,
    xrange = c.xrange, yrange = c.yrange, logy = c.logy, xs = xs, ys = ys, empty = c.empty,
  })
  clip_to(cv, ax)
  for _, s in ipairs(c.series) do draw_series(cv, ax, s) end
  cv:clip()
  frame(cv, ax)
  if c.legend ~= false then
    local entries = {}
    for _, s in ipairs(c.series) do
      if s.name then entries[#entries + 1] = { name = s.name, color = s.color, thickness = s.thickness } end
    end
    legend(cv, ax, entries, c.legend or "tr")
  end
  return ax
end

local LINES_KEYS = {
  title = true, xlabel = true, ylabel = true, series = true, logy = true, width = true, height = true,
  xrange = true, yrange = true, legend = true,
}

--- lines(path, spec) -> true | nil, message. A line chart: spec.series is
-- a list of {name =, x = {...}, y = {...} [, color = {r, g, b},
-- thickness = 2, points = false]} (x defaults to 1..#y; lists or 1-D
-- tensors); points with a NaN or infinite coordinate are skipped and break
-- the line. spec: title, xlabel, ylabel, logy (log10 y axis; values <= 0
-- skipped), xrange, yrange ({lo, hi}; default: the data, y padded by 5%),
-- legend ("tr" (default), "tl", "br", "bl" or false), width = 900,
-- height = 560.
function M.lines(path, spec)
  local fn = "lines"
  check_path(fn, path)
  if type(spec) ~= "table" then fail(fn, "spec must be a table, got " .. type(spec)) end
  check_opts(fn, spec, LINES_KEYS)
  local w, h = check_size(fn, spec, 900, 560)
  if spec.legend ~= nil and spec.legend ~= false and not LEGEND_POS[spec.legend] then
    fail(fn, "spec.legend must be \"tr\", \"tl\", \"br\", \"bl\" or false")
  end
  local c = {
    title = check_string(fn, spec, "title"), xlabel = check_string(fn, spec, "xlabel"),
    ylabel = check_string(fn, spec, "ylabel"), logy = spec.logy and true or false,
    xrange = check_range(fn, spec.xrange, "spec.xrange"), yrange = check_range(fn, spec.yrange, "spec.yrange"),
    series = check_series(fn, spec.series), legend = spec.legend,
  }
  local cv = canvas(w, h)
  chart(cv, { 0, 0, w, h }, c)
  return save(fn, cv, path)
end

-- ---- training -------------------------------------------------------------

-- exponential moving average with the start-up bias removed (as
-- TensorBoard smooths); non-finite values are skipped and stay NaN
local function smooth(v, alpha)
  local out, s, wsum = {}, 0, 0
  for i = 1, #v do
    if finite(v[i]) then
      s = alpha * s + (1 - alpha) * v[i]
      wsum = alpha * wsum + (1 - alpha)
      out[i] = s / wsum
    else
      out[i] = 0 / 0
    end
  end
  return out
end

--- training(path, history [, opts]) -> true | nil, message. Four panels
-- against step: the loss (raw, and smoothed by an exponential moving
-- average over about opts.smooth steps, default #history / 50), the
-- validation AUC of the rows that have val_auc, the learning rate and
-- Adam's beta1. A panel whose values are all missing says so. history is a
-- list of rows {step=, loss=, lr=, beta1=, val_auc=, ...} (a row without
-- step counts as its index). opts: title, width = 1000, height = 700,
-- smooth.
function M.training(path, history, opts)
  local fn = "training"
  check_path(fn, path)
  local o = check_opts(fn, opts, { title = true, width = true, height = true, smooth = true })
  local w, h = check_size(fn, o, 1000, 700)
  local title = check_string(fn, o, "title") or "Training"
  if type(history) ~= "table" or #history == 0 then fail(fn, "history must be a non-empty list of rows") end
  local cols = { step = {}, loss = {}, lr = {}, beta1 = {} }
  local auc_x, auc_y = {}, {}
  local nan = 0 / 0
  for i, row in ipairs(history) do
    if type(row) ~= "table" then fail(fn, ("history[%d] must be a table, got %s"):format(i, type(row))) end
    for _, k in ipairs({ "step", "loss", "lr", "beta1", "val_auc" }) do
      if row[k] ~= nil and type(row[k]) ~= "number" then
        fail(fn, ("history[%d].%s must be a number, got %s"):format(i, k, type(row[k])))
      end
    end
    local step = row.step or i
    if not finite(step) then fail(fn, ("history[%d].step must be a finite number"):format(i)) end
    cols.step[i], cols.loss[i] = step, row.loss or nan
    cols.lr[i], cols.beta1[i] = row.lr or nan, row.beta1 or nan
    if row.val_auc then auc_x[#auc_x + 1], auc_y[#auc_y + 1] = step, row.val_auc end
  end
  local window = o.smooth or math.max(1, #history / 50)
  if type(window) ~= "number" or not (window >= 1) then fail(fn, "opts.smooth must be a number >= 1") end

  local cv = canvas(w, h)
  local tt, tscale = title_fit(cv, title, 2, w - 16)
  text_center(cv, w / 2, 8, tt, C.text, tscale)
  local top = 8 + 2 * FONT_H + 6
  local pw, ph = w // 2, (h - top) // 2
  -- steps padded by 3% so that points at the ends stay clear of the frame
  local slo, shi = widen(extent({ cols.step }))
  local xrange = { slo - 0.03 * (shi - slo), shi + 0.03 * (shi - slo) }
  local function panel(col, row, c)
    c.title_scale, c.xlabel = 2, "step"
    c.xrange = xrange
    chart(cv, { col * pw, top + row * ph, pw, ph }, c)
  end
  local blue, light = C.palette[1], { 174, 199, 232 }
  local steps = cols.step
  panel(0, 0, {
    title = "loss", series = {
      { name = "loss", x = steps, y = cols.loss, color = light, thickness = 1 },
      { name = "smoothed", x = steps, y = smooth(cols.loss, 1 - 2 / (window + 1)), color = blue, thickness = 2 },
    },
  })
  panel(1, 0, {
    title = "validation AUC", legend = false, empty = "no validation AUC in this history",
    series = { { x = auc_x, y = auc_y, color = C.palette[3], thickness = 2, points = true } },
  })
  panel(0, 1, {
    title = "learning rate", legend = false, empty = "no lr in this history",
    series = { { x = steps, y = cols.lr, color = C.palette[4], thickness = 2 } },
  })
  panel(1, 1, {
    title = "beta1", legend = false, empty = "no beta1 in this history",
    series = { { x = steps, y = cols.beta1, color = C.palette[5], thickness = 2 } },
  })
  return save(fn, cv, path)
end

-- ---- roc ------------------------------------------------------------------

--- roc(path, distances, labels [, opts]) -> true | nil, message. The ROC
-- curve of faceid.metrics.roc (true accept rate against false accept rate
-- as the threshold rises), the chance diagonal, and the equal-error point
-- (FAR = FRR = EER, at (EER, 1 - EER)) marked and labelled; the AUC is in
-- the title. opts: title = "ROC", width = 700, height = 660.
function M.roc(path, distances, labels, opts)
  local fn = "roc"
  check_path(fn, path)
  local o = check_opts(fn, opts, { title = true, width = true, height = true })
  local w, h = check_size(fn, o, 700, 660)
  local title = check_string(fn, o, "title") or "ROC"
  local r, auc = metric(fn, require("faceid.metrics").roc, distances, labels)
  local eer, eer_t = metric(fn, require("faceid.metrics").eer, distances, labels)

  local cv = canvas(w, h)
  local ax = axes(cv, { 0, 0, w, h }, {
    title = ("%s (AUC %.4f)"):format(title, auc), xrange = { 0, 1 }, yrange = { 0, 1 },
    xlabel = "false accept rate (different pairs accepted)", ylabel = "true accept rate (same pairs accepted)",
  })
  clip_to(cv, ax)
  dashed(cv, ax.X(0), ax.Y(0), ax.X(1), ax.Y(1), C.chance, 6)
  dashed(cv, ax.X(0), ax.Y(1), ax.X(1), ax.Y(0), C.grid, 3)
  draw_series(cv, ax, { x = r.fpr, y = r.tpr, color = C.same, thickness = 2 })
  local ex, ey = ax.X(eer), ax.Y(1 - eer)
  marker(cv, ex, ey, C.axis, 11)
  marker(cv, ex, ey, C.eer, 7)
  cv:clip()
  frame(cv, ax)
  local label = ("EER %.4f at distance %.3f"):format(eer, eer_t)
  local lx = ex + 10
  if lx + cv:text_width(label) > ax.x1 - 4 then lx = ex - 10 - cv:text_width(label) end
  text(cv, lx, ey + 6, label, C.eer)
  legend(cv, ax, {
    { name = "ROC", color = C.same }, { name = "chance", color = C.chance },
    { name = "equal error rate", color = C.eer, marker = true },
  }, "br")
  return save(fn, cv, path)
end

-- ---- histogram ------------------------------------------------------------

--- histogram(path, distances, labels [, opts]) -> true | nil, message.
-- Histograms of the distances of same-person pairs (label 0) and of
-- different-person pairs (label 1) over opts.bins (40) equal bins spanning
-- opts.range ({lo, hi}; default: the distances and the threshold), drawn
-- over each other (their overlap in a third colour), and a vertical line
-- at opts.threshold (default faceid.metrics.best_threshold) labelled with
-- its value. The x axis spans exactly the bins. opts: title, width = 900,
-- height = 560.
function M.histogram(path, distances, labels, opts)
  local fn = "histogram"
  check_path(fn, path)
  local o = check_opts(fn, opts, { title = true, width = true, height = true, bins = true, threshold = true, range = true })
  local w, h = check_size(fn, o, 900, 560)
  local title = check_string(fn, o, "title") or "Distances of same and different pairs"
  local bins = o.bins or 40
  if math.type(bins) ~= "integer" or bins < 1 or bins > 1000 then
    fail(fn, ("opts.bins must be an integer 1..1000, got %s"):format(tostring(bins)))
  end
  local range = check_range(fn, o.range, "opts.range")
  local metrics = require("faceid.metrics")
  local best = metric(fn, metrics.best_threshold, distances, labels)
  local t = o.threshold == nil and best or check_number(fn, o.threshold, "opts.threshold")
  local d = core.is_tensor(distances) and distances:totable() or distances
  local y = core.is_tensor(labels) and labels:totable() or labels

  local lo, hi
  if range then
    lo, hi = range[1], range[2]
  else
    local dlo, dhi = extent({ d })
    lo, hi = widen(math.min(t, dlo), math.max(t, dhi))
  end
  local counts, nsame, ndiff = { [0] = {}, [1] = {} }, 0, 0
  for b = 1, bins do counts[0][b], counts[1][b] = 0, 0 end
  for i = 1, #d do
    local v = d[i]
    if v >= lo and v <= hi then
      local b = math.min(bins, math.floor((v - lo) / (hi - lo) * bins) + 1)
      counts[y[i]][b] = counts[y[i]][b] + 1
    end
    if y[i] == 0 then nsame = nsame + 1 else ndiff = ndiff + 1 end
  end
  local top = 1
  for b = 1, bins do top = math.max(top, counts[0][b], counts[1][b]) end

  local cv = canvas(w, h)
  local ax = axes(cv, { 0, 0, w, h }, {
    title = title, xrange = { lo, hi }, yrange = { 0, top * 1.08 },
    xlabel = "distance between the two embeddings", ylabel = "pairs",
  })
  clip_to(cv, ax)
  local base = ax.Y(0)
  local function edge(b) return math.floor(ax.X(lo + (b - 1) * (hi - lo) / bins) + 0.5) end
  for b = 1, bins do
    local x0, x1 = edge(b), edge(b + 1)
    local s, f = counts[0][b], counts[1][b]
    local ys, yf, yo = ax.Y(s), ax.Y(f), ax.Y(math.min(s, f))
    if s > 0 then rect(cv, x0, ys, x1 - x0, base - ys + 1, C.same_fill) end
    if f > 0 then rect(cv, x0, yf, x1 - x0, base - yf + 1, C.different_fill) end
    if s > 0 and f > 0 then rect(cv, x0, yo, x1 - x0, base - yo + 1, C.overlap_fill) end
  end
  -- outlines: each histogram as a step line
  for k, col in pairs({ [0] = C.same, [1] = C.different }) do
    local prev = base
    for b = 1, bins do
      local x0, x1, yv = edge(b), edge(b + 1), ax.Y(counts[k][b])
      line(cv, x0, prev, x0, yv, col, 2)
      line(cv, x0, yv, x1, yv, col, 2)
      prev = yv
    end
    line(cv, edge(bins + 1), prev, edge(bins + 1), base, col, 2)
  end
  local tx = math.floor(ax.X(t) + 0.5)
  line(cv, tx, ax.y0, tx, ax.y1, C.threshold, 2)
  cv:clip()
  frame(cv, ax)
  legend(cv, ax, {
    { name = ("same person (%d)"):format(nsame), color = C.same },
    { name = ("different people (%d)"):format(ndiff), color = C.different },
    { name = "threshold", color = C.threshold },
  }, "tr")
  -- drawn last: over the legend when they meet
  local label = ("threshold %.3f"):format(t)
  if t < lo or t > hi then label = label .. " (off the axis)" end
  local lx = tx + 6
  if lx + cv:text_width(label) > ax.x1 - 4 then lx = tx - 6 - cv:text_width(label) end
  rect(cv, lx - 2, ax.y0 + 6, cv:text_width(label) + 3, FONT_H + 2, C.background)
  text(cv, lx, ax.y0 + 6, label, C.threshold)
  return save(fn, cv, path)
end

-- ---- pairs ----------------------------------------------------------------

local function check_image(fn, v, what)
  if not core.is_tensor(v) or v:dim() ~= 3 or (v:size(1) ~= 1 and v:size(1) ~= 3) then
    local got = core.is_tensor(v) and tostring(v) or type(v)
    fail(fn, ("%s must be a 1xHxW or 3xHxW image tensor, got %s"):format(what, got))
  end
  return v
end

--- pairs(path, items [, opts]) -> true | nil, message. A grid of face
-- pairs, opts.columns (4) to a row: in each cell the two faces side by
-- side, each fitted into a square of opts.face pixels (96) by nearest
-- neighbour, and a caption with the distance and the truth ("0.62 same",
-- "1.84 different"). The cell's frame is green when the prediction
-- (same when distance < opts.threshold, default 1.0) is right, red with a
-- red cross in its corner when it is wrong. items: a list of {a = image,
-- b = image, distance = number, label = 0 | 1}; images are 1xHxW or
-- 3xHxW tensors of any size with values in opts.range ({-1, 1}, the
-- loader's evaluation output; {0, 1} for images as loaded). opts.width
-- and opts.height, when given, fix the picture's size and the faces
-- shrink to fit. opts: title.
function M.pairs(path, items, opts)
  local fn = "pairs"
  check_path(fn, path)
  local o = check_opts(fn, opts, {
    title = true, width = true, height = true, range = true, threshold = true, columns = true, face = true,
  })
  local range = check_range(fn, o.range, "opts.range") or { -1, 1 }
  local t = o.threshold == nil and 1.0 or check_number(fn, o.threshold, "opts.threshold")
  local cols = o.columns or 4
  if math.type(cols) ~= "integer" or cols < 1 or cols > 64 then
    fail(fn, ("opts.columns must be an integer 1..64, got %s"):format(tostring(cols)))
  end
  local face = o.face or 96
  if math.type(face) ~= "integer" or face < 8 or face > 1024 then
    fail(fn, ("opts.face must be an integer 8..1024, got %s"):format(tostring(face)))
  end
  if type(items) ~= "table" or #items == 0 then fail(fn, "items must be a non-empty list of {a=, b=, distance=, label=}") end
  local wrong = 0
  for i, it in ipairs(items) do
    local what = ("items[%d]"):format(i)
    if type(it) ~= "table" then fail(fn, what .. " must be a table {a=, b=, distance=, label=}") end
    check_image(fn, it.a, what .. ".a")
    check_image(fn, it.b, what .. ".b")
    check_number(fn, it.distance, what .. ".distance")
    if it.label ~= 0 and it.label ~= 1 then
      fail(fn, ("%s.label must be 0 (same) or 1 (different), got %s"):format(what, tostring(it.label)))
    end
    if (it.distance < t) ~= (it.label == 0) then wrong = wrong + 1 end
  end
  cols = math.min(cols, #items)
  local rows = (#items + cols - 1) // cols
  local title = check_string(fn, o, "title")
    or ("%d pairs, %d wrong at threshold %.2f"):format(#items, wrong, t)

  -- cell: frame 3, padding 6, two faces 4 apart, caption below
  local PAD, GAP, FR, IN, SEP = 10, 10, 3, 6, 4
  local head = PAD + 2 * FONT_H + 6
  local function caption_h(f) return (f >= 84 and 2 or 1) * FONT_H end
  local function cell_w(f) return 2 * f + SEP + 2 * IN + 2 * FR end
  local function cell_h(f) return f + caption_h(f) + 3 * IN + 2 * FR end
  if o.width ~= nil or o.height ~= nil then
    local w, h = check_size(fn, o, 0, 0)
    if o.width ~= nil then
      face = math.min(face, (((w - 2 * PAD - (cols - 1) * GAP) // cols) - SEP - 2 * IN - 2 * FR) // 2)
    end
    if o.height ~= nil then
      local avail = (h - head - PAD - (rows - 1) * GAP) // rows - 3 * IN - 2 * FR
      while face > 8 and face + caption_h(face) > avail do face = face - 1 end
    end
    if face < 8 then fail(fn, ("%d items in %d columns do not fit in opts.width/height"):format(#items, cols)) end
  end
  local cw, ch = cell_w(face), cell_h(face)
  local W = o.width or (2 * PAD + cols * cw + (cols - 1) * GAP)
  local H = o.height or (head + PAD + rows * ch + (rows - 1) * GAP)
  if W > core.canvas_max_side or H > core.canvas_max_side then
    fail(fn, ("%d items in %d columns need a %dx%d picture, more than %d a side; use fewer items, more columns or a smaller opts.face")
      :format(#items, cols, W, H, core.canvas_max_side))
  end

  local left = (W - cols * cw - (cols - 1) * GAP) // 2
  local cv = canvas(W, H)
  local tt, tscale = title_fit(cv, title, 2, W - 2 * PAD)
  text_center(cv, W / 2, PAD, tt, C.text, tscale)
  local cs = face >= 84 and 2 or 1
  local function put(img, x, y)
    local ih, iw = img:size(2), img:size(3)
    local s = math.min(face / iw, face / ih)
    local dw, dh = math.max(1, math.floor(iw * s + 0.5)), math.max(1, math.floor(ih * s + 0.5))
    rect(cv, x, y, face, face, C.face_box)
    cv:blit(img, x + (face - dw) // 2, y + (face - dh) // 2, range[1], range[2], dw, dh)
  end
  for i, it in ipairs(items) do
    local cx = left + ((i - 1) % cols) * (cw + GAP)
    local cy = head + ((i - 1) // cols) * (ch + GAP)
    local right = (it.distance < t) == (it.label == 0)
    local col = right and C.right or C.wrong
    for k = 0, FR - 1 do rect(cv, cx + k, cy + k, cw - 2 * k, ch - 2 * k, col, false) end
    local fx, fy = cx + FR + IN, cy + FR + IN
    put(it.a, fx, fy)
    put(it.b, fx + face + SEP, fy)
    local cap = ("%.2f %s"):format(it.distance, it.label == 0 and "same" or "different")
    text_center(cv, cx + cw / 2, fy + face + IN - cs, cap, right and C.text or C.wrong, cs)
    if not right then
      -- a cross on a white square in the top right corner
      local m = math.max(10, face // 5)
      local mx, my = cx + cw - FR - m - 2, cy + FR + 2
      rect(cv, mx, my, m, m, C.background)
      line(cv, mx + 2, my + 2, mx + m - 3, my + m - 3, C.wrong, math.max(2, m // 6))
      line(cv, mx + 2, my + m - 3, mx + m - 3, my + 2, C.wrong, math.max(2, m // 6))
    end
  end
  return save(fn, cv, path)
end

return M
