-- spec/helper.lua - shared test helpers: the face data folder, temporary
-- paths, and naive references. Specs load it with require("helper").
local luassert = require("luassert")

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

-- ---- layer checks ---------------------------------------------------------

function M.maxabs(t)
  return t:abs():max()
end

--- a and b agree to rtol of b's largest magnitude
function M.assert_close(a, b, rtol, what)
  luassert.are.same(b:size(), a:size())
  local d, s = M.maxabs(a - b), M.maxabs(b)
  assert(d <= (rtol or 1e-5) * math.max(s, 1e-6),
    ("%s: max difference %.3g against a scale of %.3g"):format(what or "tensors", d, s))
end

--- A one-folder-per-person tree of empty .jpg files under root: person pN
-- holds counts[N] of them (for listing and pairing, never decoded).
function M.empty_tree(root, counts)
  for p, n in ipairs(counts) do
    assert(os.execute(("mkdir -p '%s/p%d'"):format(root, p)))
    for k = 1, n do M.write_file(("%s/p%d/%d.jpg"):format(root, p, k), "") end
  end
end

--- A number comparison for the specs: close(a, b [, tol [, what]]) raises,
-- at its caller, unless |a - b| <= tol * max(1, |b|); tol defaults to
-- default_tol.
function M.close_numbers(default_tol)
  return function(a, b, tol, what)
    tol = tol or default_tol
    if not (math.abs(a - b) <= tol * math.max(1, math.abs(b))) then
      error(("%s: got %.15g, expected %.15g"):format(what or "value", a, b), 2)
    end
  end
end

--- Central differences of loss() with respect to every element of the
-- contiguous tensor t, compared with the analytic gradient g: each element
-- within 1e-2 (of the largest gradient, plus relative), and the error
-- vector's norm within norm_tol of the gradient's.
function M.gradcheck(loss, t, g, eps, what, norm_tol)
  local flat, gflat = t:view(-1), g:contiguous():view(-1)
  local scale = math.max(M.maxabs(g), 1e-3)
  local err2, ref2 = 0, 0
  for i = 1, flat:numel() do
    local v = flat[i]
    flat[i] = v + eps
    local vp, lp = flat[i], loss()
    flat[i] = v - eps
    local vm, lm = flat[i], loss()
    flat[i] = v
    local fd, an = (lp - lm) / (vp - vm), gflat[i]
    assert(math.abs(fd - an) <= 1e-2 * scale + 1e-2 * math.abs(an),
      ("%s[%d]: finite difference %.6g, analytic %.6g"):format(what, i, fd, an))
    err2, ref2 = err2 + (fd - an) ^ 2, ref2 + an ^ 2
  end
  assert(math.sqrt(err2) <= (norm_tol or 2e-3) * math.sqrt(ref2) + 1e-6,
    ("%s: relative error norm %.3g"):format(what, math.sqrt(err2 / math.max(ref2, 1e-30))))
end

--- sum(y * r) in double: the random projection loss of gradient checks
function M.project(y, r)
  return y:contiguous():view(-1):dot(r:view(-1))
end

--- a and b hold the same values (equal as numbers: bitwise but for the
-- sign of a zero)
function M.same(a, b, what)
  luassert.are.same(b:size(), a:size())
  assert(a:equal(b), ("%s: differs by up to %.3g"):format(what, M.maxabs(a - b)))
end

--- The results of f() with faceid.nn on n threads that split every job
-- (grain 0), serial again afterwards.
function M.with_threads(n, f)
  local nn = require("faceid").nn
  require("faceid.core")._nn.set_threads(n, 0)
  luassert.are.equal(n, nn.threads())
  local r = table.pack(pcall(f))
  nn.set_threads(1)
  assert(r[1], r[2])
  return table.unpack(r, 2, r.n)
end

--- f(...) raises an error whose text contains `pattern` (plain)
function M.fails_with(pattern, f, ...)
  local ok, err = pcall(f, ...)
  luassert.is_false(ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), ("error %q does not mention %q"):format(tostring(err), pattern))
end

--- True under `make sanitize` (slow specs may shrink their sizes).
M.sanitize = os.getenv("FACEID_SANITIZE") == "1"

-- a folder tree of synthetic people: each has its own blob pattern, each
-- photo shifts and re-lights it a little (enough to train on, quickly)
function M.synthetic_tree(dir, people, photos, size)
  local faceid = require("faceid")
  local g = faceid.Generator(123)
  for p = 1, people do
    os.execute(("mkdir -p '%s/p%d'"):format(dir, p))
    local cx, cy, r = g:uniform(5, size - 5), g:uniform(5, size - 5), g:uniform(2, 5)
    local tone = { g:uniform(0.2, 1), g:uniform(0.2, 1), g:uniform(0.2, 1) }
    for k = 1, photos do
      local img = faceid.zeros(3, size, size)
      local dx, dy, light = g:normal(0, 0.7), g:normal(0, 0.7), g:uniform(0.8, 1.2)
      for c = 1, 3 do
        for y = 1, size do
          for x = 1, size do
            local d2 = (x - cx - dx) ^ 2 + (y - cy - dy) ^ 2
            img:set(c, y, x, math.min(1, tone[c] * light * math.exp(-d2 / (2 * r * r)) + 0.05 * g:uniform()))
          end
        end
      end
      assert(faceid.image.save(img, ("%s/p%d/%d.png"):format(dir, p, k)))
    end
  end
end

return M
