--- faceid.image: load, resize, crop, flip and save face images.
-- An image is a float32 Tensor of shape CxHxW: C = 3 (planes R, G, B) or
-- C = 1 (grey), planar like every image tensor in faceid, values in [0, 1].
-- Decoding and encoding use stb_image / stb_image_write, resizing
-- stb_image_resize (csrc/image.c); this module reads files, checks options
-- and documents the C functions.
--
-- Files that cannot be read or decoded give `nil, message`; a wrong
-- argument (not a CxHxW tensor, a bad size, an unknown option) is an error.
local core = require("faceid.core")

local M = {}

--- Largest width or height accepted when loading or saving (16384).
M.MAX_SIDE = core.image_max_side
--- Largest width * height accepted (2^26): a file claiming more is refused
-- before any pixel memory is allocated.
M.MAX_PIXELS = core.image_max_pixels

-- Largest file read. No image within MAX_PIXELS needs more (the largest,
-- a 16-bit PPM, takes 6 * 2^26 = 384 MiB); stb_image itself stops at 2 GiB.
local MAX_FILE_BYTES = 512 * 1024 * 1024

-- level: as for error(), counted from this function
local function check_opts(fname, opts, allowed, level)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    error(("%s: opts must be a table, got %s"):format(fname, type(opts)), level)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), level)
    end
  end
  return opts
end

local function channels_of(fname, opts)
  local o = check_opts(fname, opts, { channels = true }, 4)
  local c = o.channels
  if c == nil then
    return 3
  end
  if c ~= 1 and c ~= 3 then
    error(("%s: opts.channels must be 1 or 3, got %s"):format(fname, tostring(c)), 3)
  end
  return math.tointeger(c)
end

local function check_path(fname, path)
  if type(path) ~= "string" then
    error(("%s: path must be a string, got %s"):format(fname, type(path)), 3)
  end
  if path:find("\0", 1, true) then
    error(("%s: path contains a zero byte"):format(fname), 3)
  end
end

-- io messages start with the path ("x.jpg: No such file or directory")
local function reason(msg, path)
  msg = tostring(msg)
  if msg:sub(1, #path + 2) == path .. ": " then
    return msg:sub(#path + 3)
  end
  return msg
end

-- the whole file as a string, or nil, message. Read in pieces so that a
-- device or pipe that never ends (/dev/zero) stops at the size limit.
local function read_file(fname, path)
  local f, msg = io.open(path, "rb")
  if not f then
    return nil, ("%s: cannot open '%s': %s"):format(fname, path, reason(msg, path))
  end
  local parts, total = {}, 0
  while true do
    local piece, rmsg = f:read(1 << 20)
    if not piece then
      f:close()
      if rmsg then -- a directory opens, but reading it fails
        return nil, ("%s: cannot read '%s': %s"):format(fname, path, reason(rmsg, path))
      end
      return table.concat(parts)
    end
    total = total + #piece
    if total > MAX_FILE_BYTES then
      f:close()
      return nil, ("%s: cannot decode '%s': file larger than %d bytes"):format(fname, path, MAX_FILE_BYTES)
    end
    parts[#parts + 1] = piece
  end
end

--- Decode an image file.
-- JPEG, PNG, BMP, binary PGM/PPM (P5/P6, 8 or 16 bits, scaled by their
-- maximum value) and GIF (first frame) are recognised by their contents,
-- not by the file name. Alpha is dropped.
-- @param path file name
-- @param opts optional table: `channels` = 3 (default; grey images are
--   copied to all three planes) or 1 (colour becomes grey as
--   0.299 R + 0.587 G + 0.114 B)
-- @return a Tensor CxHxW in [0, 1], or nil and a message naming the file
--   (missing, unreadable, truncated, corrupt, or larger than MAX_SIDE /
--   MAX_PIXELS)
function M.load(path, opts)
  local fname = "faceid.image.load"
  check_path(fname, path)
  local channels = channels_of(fname, opts)
  local bytes, msg = read_file(fname, path)
  if not bytes then
    return nil, msg
  end
  local img, why = core.image_decode(bytes, channels)
  if not img then
    return nil, ("%s: cannot decode '%s': %s"):format(fname, path, why)
  end
  return img
end

--- Decode an image held in a string, as `load` does for a file.
-- @param bytes the encoded image
-- @param opts as for `load`
-- @return a Tensor CxHxW, or nil and a message
function M.from_bytes(bytes, opts)
  local fname = "faceid.image.from_bytes"
  if type(bytes) ~= "string" then
    error(("%s: bytes must be a string, got %s"):format(fname, type(bytes)), 2)
  end
  local channels = channels_of(fname, opts)
  local img, why = core.image_decode(bytes, channels)
  if not img then
    return nil, ("%s: cannot decode the %d-byte string: %s"):format(fname, #bytes, why)
  end
  return img
end

--- Size of an image file without decoding its pixels. The file is read
-- and its structure checked as by `load`, so a truncated file gives nil.
-- @param path file name
-- @return width, height, channels as stored (1 grey, 2 grey + alpha,
--   3 RGB, 4 RGBA; stb reports every GIF as 4), format ("JPEG", "PNG",
--   "BMP", "GIF", "PGM/PPM"); or nil and a message
function M.info(path)
  local fname = "faceid.image.info"
  check_path(fname, path)
  local bytes, msg = read_file(fname, path)
  if not bytes then
    return nil, msg
  end
  local w, h, c, format = core.image_info(bytes)
  if not w then
    return nil, ("%s: cannot decode '%s': %s"):format(fname, path, h)
  end
  return w, h, c, format
end

--- Resize a CxHxW image to C x h x w with stb_image_resize (cubic
-- filters: Mitchell when shrinking, Catmull-Rom when enlarging; edges
-- clamped). Each channel plane is resized on its own. Values may overshoot
-- [0, 1] slightly at sharp edges; the same size returns an exact copy.
-- @function resize
-- @param img Tensor CxHxW, C = 1 or 3, any strides
-- @param h new height, 1..MAX_SIDE
-- @param w new width, 1..MAX_SIDE
-- @return a new Tensor
M.resize = core.image_resize

--- Copy the h x w window whose top-left pixel is (top, left), 1-based.
-- The window must lie inside the image.
-- @function crop
-- @param img Tensor CxHxW
-- @return a new contiguous Tensor C x h x w
M.crop = core.image_crop

--- Copy the central h x w window: it starts floor((H - h) / 2) rows and
-- floor((W - w) / 2) columns in. h and w must not exceed the image.
-- @function center_crop
-- @param img Tensor CxHxW
-- @return a new contiguous Tensor C x h x w
M.center_crop = core.image_center_crop

--- Mirror left-right.
-- @function hflip
-- @param img Tensor CxHxW or NxCxHxW (a batch)
-- @return a new contiguous Tensor of the same shape
M.hflip = core.image_hflip

--- Save a CxHxW image (C = 1 or 3) as PNG, JPEG or BMP, chosen by the
-- extension of path (.png, .jpg / .jpeg, .bmp, any case). Values are
-- clamped to [0, 1] and rounded to 8 bits. The image is written to a
-- temporary file beside path and renamed over it, so path never holds a
-- partial image.
-- @param img Tensor CxHxW
-- @param path file name
-- @param opts optional table: `quality` 1..100 for JPEG (default 95;
--   ignored by PNG and BMP)
-- @return true, or nil and a message (unwritable directory, disk full)
function M.save(img, path, opts)
  local fname = "faceid.image.save"
  check_path(fname, path)
  local o = check_opts(fname, opts, { quality = true }, 3)
  return core.image_save(img, path, o.quality)
end

return M
