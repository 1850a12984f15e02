--- faceid.synthetic: a seeded set of SYNTHETIC face "identities", for demos
-- and tests on machines without face data. Nothing here is a real face.
--
--   local people = faceid.synthetic.people{people = 20, per_person = 10, seed = 1}
--   local ds = faceid.synthetic.dataset("/tmp/synth", {size = 64})   -- folders layout
--
-- Each person is a face-like layout (head ellipse, eyes, brows, mouth, hair
-- line) with its own geometry and colours; each photo of them shifts and
-- turns it a little, changes the light, the background and the expression,
-- and adds noise.
-- The geometry is drawn in the units of a 23 x 28 reference face and scaled
-- to the requested size, so small and large sets describe the same people.
-- Everything comes from one faceid.Generator(seed): a seed gives the same
-- pictures on every machine.
local core = require("faceid.core")

local M = {}

--- What every listing of these images should say about them.
M.LABEL = "SYNTHETIC faces"

--- Defaults: 40 people x 10 photos, 64 x 64 RGB, seed 2018.
M.DEFAULTS = { people = 40, per_person = 10, height = 64, width = 64, channels = 3, seed = 2018 }

local REF_W, REF_H = 23, 28

local function options(fname, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), 3)
  end
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if k == "size" then
      o.height, o.width = v, v
    elseif M.DEFAULTS[k] == nil then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3)
    else
      o[k] = v
    end
  end
  for _, k in ipairs({ "people", "per_person", "height", "width", "seed" }) do
    local v = o[k]
    if math.type(v) ~= "integer" or (k ~= "seed" and v < 1) then
      error(("%s: %s must be a%s integer, got %s"):format(fname, k, k == "seed" and "n" or " positive",
        tostring(v)), 3)
    end
  end
  if o.height < 8 or o.width < 8 or o.height > 1024 or o.width > 1024 then
    error(("%s: height and width must be 8..1024, got %dx%d"):format(fname, o.height, o.width), 3)
  end
  if o.channels ~= 1 and o.channels ~= 3 then
    error(("%s: channels must be 1 or 3, got %s"):format(fname, tostring(o.channels)), 3)
  end
  return o
end

local function colour(gen, lo, hi)
  return { gen:uniform(lo, hi), gen:uniform(lo, hi), gen:uniform(lo, hi) }
end

-- one person: geometry in reference pixels, colours as {r, g, b}
local function draw_person(gen)
  local skin = gen:uniform(0.45, 0.85)
  local tint = { 1, gen:uniform(0.75, 0.95), gen:uniform(0.6, 0.85) }
  local id = {
    cx = gen:uniform(-1.5, 1.5), cy = gen:uniform(-1, 1),
    rx = gen:uniform(7, 10), ry = gen:uniform(10, 13),
    eye_dx = gen:uniform(3, 5.5), eye_y = gen:uniform(-4.5, -2), eye_r = gen:uniform(1, 2),
    brow = gen:uniform(1.2, 2.6), mouth_y = gen:uniform(4, 7), mouth_w = gen:uniform(2.5, 5.5),
    hair = gen:uniform(-12, -7),
    skin = { skin * tint[1], skin * tint[2], skin * tint[3] },
    hair_c = colour(gen, 0.05, 0.5), eye_c = colour(gen, 0.02, 0.3),
  }
  return id
end

-- one photo of person id: C x H x W in [0, 1]
local function draw_photo(gen, id, o)
  local H, W, C = o.height, o.width, o.channels
  local sx, sy = gen:normal(0, 0.8), gen:normal(0, 0.8)
  local turn = gen:normal(0, 0.06)
  local light, slope = gen:uniform(0.8, 1.2), gen:normal(0, 0.02)
  local smile = gen:uniform(0.8, 1.2)
  local bg = colour(gen, 0.05, 0.35) -- the background changes from photo to photo
  local ca, sa = math.cos(turn), math.sin(turn)
  local kx, ky = REF_W / W, REF_H / H
  local planes = {}
  for c = 1, 3 do planes[c] = {} end
  local eyes = { -id.eye_dx, id.eye_dx }
  for y = 1, H do
    for x = 1, W do
      -- the pixel centre in reference units around the face centre, turned
      local px, py = (x - 0.5) * kx - REF_W / 2 - id.cx - sx, (y - 0.5) * ky - REF_H / 2 - id.cy - sy
      local dx, dy = ca * px + sa * py, -sa * px + ca * py
      local col = bg
      if (dx / id.rx) ^ 2 + (dy / id.ry) ^ 2 <= 1 then
        col = id.skin
        if dy < id.hair then col = id.hair_c end
        for _, ex in ipairs(eyes) do
          if (dx - ex) ^ 2 + (dy - id.eye_y) ^ 2 <= id.eye_r ^ 2 then col = id.eye_c end
          if math.abs(dy - (id.eye_y - id.eye_r - 1)) < 0.5 and math.abs(dx - ex) < id.brow then
            col = id.hair_c
          end
        end
        if math.abs(dy - id.mouth_y) < 0.8 and math.abs(dx) < id.mouth_w * smile then
          col = { 0.55 * id.skin[1], 0.25 * id.skin[2], 0.25 * id.skin[3] }
        end
      end
      local shade = light + slope * dx
      local k = (y - 1) * W + x
      for c = 1, 3 do planes[c][k] = col[c] * shade end
    end
  end
  local img = core.tensor(planes):reshape(3, H, W)
  if C == 1 then
    -- the luma grey of the colour picture
    img = img[1] * 0.299 + img[2] * 0.587 + img[3] * 0.114
    img = img:reshape(1, H, W)
  end
  img:add_(core.randn(gen, C, H, W) * 0.03)
  return img:clamp_(0, 1)
end

--- The people: a list of persons, each a list of `per_person` images
-- (C x H x W tensors in [0, 1]).
-- @param opts optional: `people` (40), `per_person` (10), `height`,
--   `width` or `size` (64), `channels` (3, or 1 for grey), `seed` (2018)
-- @return people, and a line describing them (it says SYNTHETIC)
function M.people(opts)
  local o = options("faceid.synthetic.people", opts)
  local gen = core.Generator(o.seed)
  local people = {}
  for p = 1, o.people do
    local id = draw_person(gen)
    local imgs = {}
    for i = 1, o.per_person do imgs[i] = draw_photo(gen, id, o) end
    people[p] = imgs
  end
  return people, M.describe(o)
end

--- A line describing a set made with these options.
function M.describe(opts)
  local o = options("faceid.synthetic.describe", opts)
  return ("%s (%d generated identities x %d photos, %dx%d, seed %d)"):format(M.LABEL, o.people,
    o.per_person, o.width, o.height, o.seed)
end

--- Write the set in the one-folder-per-person layout:
-- dir/person01/1.png ... (dir is created; existing files are replaced),
-- and dir/SYNTHETIC.txt saying what the pictures are.
-- @return dir, number of images written; or nil, message
function M.write(dir, opts)
  local fname = "faceid.synthetic.write"
  if type(dir) ~= "string" or dir == "" then
    error(("%s: dir must be a non-empty string, got %s"):format(fname, type(dir)), 2)
  end
  local o = options(fname, opts)
  local people, line = M.people(o)
  local width = #tostring(o.people)
  local count = 0
  for p, imgs in ipairs(people) do
    local folder = ("%s/person%0" .. width .. "d"):format(dir, p)
    local ok = os.execute("mkdir -p '" .. folder:gsub("'", "'\\''") .. "'")
    if not ok then return nil, ("%s: cannot create '%s'"):format(fname, folder) end
    for i, img in ipairs(imgs) do
      local saved, msg = core.image_save(img, ("%s/%d.png"):format(folder, i))
      if not saved then return nil, ("%s: %s"):format(fname, msg) end
      count = count + 1
    end
  end
  local f = io.open(dir .. "/SYNTHETIC.txt", "w")
  if f then
    f:write(line, "\nGenerated by faceid.synthetic; these are not photographs of anyone.\n")
    f:close()
  end
  return dir, count
end

--- Write the set (as M.write) and open it as a data set (faceid.data.folders).
-- @return ds, or nil and a message
function M.dataset(dir, opts)
  local ok, msg = M.write(dir, opts)
  if not ok then return nil, msg end
  local ds, err = require("faceid.data").folders(dir)
  if not ds then return nil, err end
  ds.info.synthetic = M.describe(opts)
  return ds
end

return M
