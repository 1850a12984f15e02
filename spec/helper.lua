-- spec/helper.lua - shared test helpers: the face data folder, temporary
-- paths, and naive references. Specs load it with require("helper").
local M = {}

--- Directory of the shared face data (../shared/data, or $FACEID_DATA).
M.data_root = os.getenv("FACEID_DATA") or "../shared/data"

local function exists(path)
  local f = io.open(path, "rb")
  if f then
    f:close()
    return true
  end
  return false
end
M.exists = exists

--- Path of a data set folder (e.g. "att_faces"), or nil when it is absent.
-- `probe` is a file inside it that must exist.
function M.data_dir(name, probe)
  local dir = M.data_root .. "/" .. name
  if exists(dir .. "/" .. (probe or "DATA.md")) then
    return dir
  end
  return nil
end

--- The folder, or nil and the message a spec passes to `pending` when the
-- shared data is missing (a fresh checkout):
--   local dir, why = helper.need_data("att_faces")
--   if not dir then return pending(why) end
function M.need_data(name, probe)
  local dir = M.data_dir(name, probe)
  if not dir then
    return nil, ("needs the %s face data in %s (absent here)"):format(name, M.data_root)
  end
  return dir
end

--- A fresh temporary directory; removed by M.rmtree.
function M.tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -p '" .. name .. "'"))
  return name
end

function M.rmtree(dir)
  assert(dir:match("^/tmp/"), "refusing to remove " .. dir)
  os.execute("rm -rf '" .. dir .. "'")
end

function M.write_file(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- The numbers of a nested table (as Tensor:totable gives), in order.
function M.flatten(t, out)
  out = out or {}
  if type(t) == "number" then
    out[#out + 1] = t
  else
    for _, v in ipairs(t) do M.flatten(v, out) end
  end
  return out
end

--- True under `make sanitize` (slow specs may shrink their sizes).
M.sanitize = os.getenv("FACEID_SANITIZE") == "1"

return M
