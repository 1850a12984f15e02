--- bench/compare.lua - faceid against PyTorch, side by side: one table of
-- ratios. Run by `make bench-compare` (never by the tests).
--
--   lua5.4 bench/compare.lua [--inputs "64 96 128 224"] [--batch 32] [--threads 2]
--       [--repeat 3] [--steps 5] [--n 2048] [--python /usr/bin/python3]
--       [--tcmalloc /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4] [--check 1]
--
-- --repeat 0 runs the embeddings check alone (a quick look at whether an
-- environment, e.g. other OpenBLAS kernels, still computes the same network).
--
-- First the embeddings check: faceid builds a densenet121 (32-d), runs two
-- training-mode forwards so that the batch-norm running statistics are not
-- trivial, saves it (torchvision names, safetensors) with a fixed input;
-- bench/torch_densenet.py loads both into torchvision and the two
-- evaluation-mode embeddings are compared. A relative difference
-- max|faceid - torch| / max|torch| above 1e-3 stops the run (exit 1): the
-- numbers of a build that computes something else mean nothing. --check 0
-- skips it.
--
-- Then, for each input size, `repeat` rounds, each configuration in a fresh
-- process (bench/densenet.lua --json, bench/torch_densenet.py --json),
-- alternating frameworks so that a change in the machine's load hits both:
--   sgemm (faceid's cblas_sgemm, n x n: the machine's ceiling),
--   faceid train, PyTorch train, PyTorch train with tcmalloc,
--   faceid eval,  PyTorch eval,  PyTorch eval with tcmalloc,
--   PyTorch train with memory_efficient=True (with tcmalloc when present),
-- and every figure is the median over the rounds. The PyTorch reference of
-- a row is the faster of its two allocators. The children inherit this
-- process's package.path and package.cpath, so they load the same build.
local faceid = require("faceid")
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")

local opts = {
  inputs = "64 96 128 224", batch = 32, threads = 2, ["repeat"] = 3, steps = 5, n = 2048,
  python = "/usr/bin/python3", tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", check = 1,
}
local USAGE = "usage: lua5.4 bench/compare.lua [--inputs \"64 128\"] [--batch N] [--threads N] [--repeat N]"
  .. " [--steps N] [--n N] [--python PATH] [--tcmalloc PATH] [--check 0|1]\n"
bench.options(opts, USAGE)
local inputs = {}
for s in tostring(opts.inputs):gmatch("%S+") do
  local v = math.tointeger(tonumber(s))
  if not v or v < 32 then
    io.stderr:write(("bench/compare.lua: --inputs: '%s' is not an image side >= 32\n"):format(s))
    os.exit(2)
  end
  inputs[#inputs + 1] = v
end
if #inputs == 0 then
  io.stderr:write(USAGE)
  os.exit(2)
end

-- ---- running a child ------------------------------------------------------------

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local lua_bin = arg[-1] or "lua5.4"
local lua_env = ("LUA_PATH=%s LUA_CPATH=%s"):format(q(package.path), q(package.cpath))
local tcmalloc = io.open(opts.tcmalloc, "rb")
if tcmalloc then
  tcmalloc:close()
  tcmalloc = opts.tcmalloc
else
  io.stderr:write(("bench/compare.lua: %s not found (apt-get install libtcmalloc-minimal4):"
    .. " PyTorch runs with its default allocator only\n"):format(opts.tcmalloc))
  tcmalloc = nil
end

-- one flat JSON object (strings, numbers, booleans) -> Lua table
local function parse_json(line)
  local t = {}
  for k, v in line:gmatch('"([%w_]+)":("?[^,"}]*"?)') do
    if v:sub(1, 1) == '"' then t[k] = v:sub(2, -2)
    elseif v == "true" or v == "false" then t[k] = v == "true"
    else t[k] = tonumber(v) end
  end
  return t
end

-- runs a shell command, returns the result of its last JSON line
local function run(cmd, what)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  local line
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then line = l end
  end
  if not ok or not line then
    io.stderr:write(("bench/compare.lua: %s failed (%s %s)\n  command: %s\n%s\n"):format(what, tostring(how),
      tostring(code), cmd, out))
    os.exit(1)
  end
  return parse_json(line)
end

local common = ("--batch %d --threads %d --steps %d"):format(opts.batch, opts.threads, opts.steps)

local function faceid_cmd(mode, input)
  return ("%s %s %s/densenet.lua --mode %s --input %d %s --n %d --json"):format(lua_env, q(lua_bin), q(here),
    mode, input or 128, common, opts.n)
end

local function torch_cmd(mode, input, preload, memeff)
  return ("%s%s %s/torch_densenet.py --mode %s --input %d %s --n %d --json%s"):format(
    preload and ("LD_PRELOAD=" .. q(preload) .. " ") or "", q(opts.python), q(here), mode, input, common, opts.n,
    memeff and " --memory-efficient" or "")
end

-- ---- the embeddings check -------------------------------------------------------

local function check_embeddings(input)
  faceid.set_num_threads(opts.threads)
  local base = os.tmpname()
  local wpath, xpath, opath = base .. "-weights.safetensors", base .. "-x.safetensors", base .. "-emb.safetensors"
  local function cleanup()
    for _, f in ipairs({ base, wpath, xpath, opath }) do os.remove(f) end
  end
  local net = faceid.DenseNet.densenet121({ embedding = 32, input = input, seed = 7 })
  local g = faceid.Generator(11)
  net:train()
  for _ = 1, 2 do net:forward(faceid.randn(g, 8, 3, input, input)) end
  net:evaluate()
  local ok, err = net:save(wpath)
  if not ok then
    cleanup()
    error("bench/compare.lua: cannot write the weights: " .. tostring(err), 0)
  end
  local x = faceid.randn(g, 4, 3, input, input)
  assert(faceid.save(xpath, { x = x }))
  local mine = net:forward(x):clone()
  net:close()
  local cmd = ("%s %s/torch_densenet.py --mode embed --threads %d --weights %s --x %s --out %s"):format(
    q(opts.python), q(here), opts.threads, q(wpath), q(xpath), q(opath))
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local done = p:close()
  local t = done and faceid.load(opath)
  cleanup()
  if not t or not t.embeddings then
    io.stderr:write(("bench/compare.lua: the PyTorch embeddings could not be computed\n  command: %s\n%s\n")
      :format(cmd, out))
    os.exit(1)
  end
  local theirs = t.embeddings
  local diff = (mine - theirs):abs():max()
  local scale = theirs:abs():max()
  local rel = diff / math.max(scale, 1e-30)
  local pass = rel <= 1e-3
  print(("embeddings check (densenet121, input %d, 4 images, evaluation mode): max |faceid - PyTorch| = %.3g,"
    .. " max |PyTorch| = %.3g, relative %.3g: %s"):format(input, diff, scale, rel, pass and "ok" or "FAILED"))
  -- a fingerprint of faceid's own output, to set runs in two environments side by side
  print(("faceid embeddings: sum %.9g, sum of squares %.9g"):format(mine:sum(), (mine * mine):sum()))
  if not pass then
    io.stderr:write(("\n*** bench/compare.lua: faceid's embeddings differ from PyTorch's by %.3g relative"
      .. " (tolerance 1e-3).\n*** This build computes something else: its timings are not comparable."
      .. " Stopping.\n"):format(rel))
    os.exit(1)
  end
end

-- ---- the runs ---------------------------------------------------------------------

local median = bench.median

local function read_loadavg()
  local f = io.open("/proc/loadavg", "r")
  if not f then return "?" end
  local s = f:read("l")
  f:close()
  return s and s:match("^(%S+ %S+ %S+)") or "?"
end

print(("faceid %s vs PyTorch: densenet121, %d-d embedding, batch %d, %d threads, inputs %s,"
  .. " median of %d runs of %d steps"):format(faceid._VERSION or "", 32, opts.batch, opts.threads,
  table.concat(inputs, " "), opts["repeat"], opts.steps))
print(("environment: OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s, tcmalloc %s, load average %s"):format(
  os.getenv("OPENBLAS_CORETYPE") or "(unset)", os.getenv("OPENBLAS_L2_SIZE") or "(unset)",
  tcmalloc or "not found", read_loadavg()))
io.stdout:flush()

if opts.check ~= 0 then check_embeddings(math.min(table.unpack(inputs))) end
io.stdout:flush()
if opts["repeat"] < 1 then return end -- --repeat 0: the check alone

-- results[input][key] = list of JSON results; key: framework/mode/variant
local results, sgemm = {}, {}
local total = #inputs * opts["repeat"] * (1 + 4 + (tcmalloc and 3 or 0))
local count = 0

local function record(input, key, cmd)
  count = count + 1
  local r = run(cmd, key)
  local list = results[input][key] or {}
  list[#list + 1] = r
  results[input][key] = list
  if r.mode == "sgemm" then
    io.stderr:write(("[%d/%d] sgemm %d: %.1f GFLOP/s\n"):format(count, total, r.n, r.gflops))
  else
    io.stderr:write(("[%d/%d] input %d %-28s %7.1f img/s  %7.0f MiB\n"):format(count, total, input, key,
      r.images_per_s, r.peak_rss_mib))
  end
  return r
end

for _, input in ipairs(inputs) do
  results[input] = {}
  for _ = 1, opts["repeat"] do
    local r = record(input, "sgemm", faceid_cmd("sgemm"))
    sgemm[#sgemm + 1] = r.gflops
    for _, mode in ipairs({ "train", "eval" }) do
      record(input, "faceid " .. mode, faceid_cmd(mode, input))
      record(input, "torch " .. mode, torch_cmd(mode, input))
      if tcmalloc then record(input, "torch+tcmalloc " .. mode, torch_cmd(mode, input, tcmalloc)) end
    end
    record(input, "torch memory-efficient train", torch_cmd("train", input, tcmalloc, true))
  end
end

-- ---- the table --------------------------------------------------------------------

local function med(list, field)
  local v = {}
  for k, r in ipairs(list or {}) do v[k] = r[field] end
  return median(v)
end

local ceiling = median(sgemm)
local function pct(g)
  return ("%.0f%%"):format(100 * g / ceiling)
end

print()
print(("sgemm ceiling (cblas_sgemm %dx%d, %d threads, median of %d): %.1f GFLOP/s"):format(opts.n, opts.n,
  opts.threads, #sgemm, ceiling))
local head = ("%5s %5s | %8s %8s %6s | %7s %7s %7s %6s | %7s %6s %6s")
local row = ("%5d %5s | %8.1f %8s %6.2f | %7.0f %7.0f %7s %6.2f | %7.1f %6s %6s")
print(head:format("input", "mode", "faceid", "PyTorch", "ratio", "faceid", "PyTorch", "mem-eff", "ratio",
  "faceid", "faceid", "torch"))
print(head:format("", "", "img/s", "img/s", "", "RSS MiB", "RSS MiB", "RSS MiB", "", "GFLOP/s", "%sgemm",
  "%sgemm"))
print(("-"):rep(104))
for _, input in ipairs(inputs) do
  local res = results[input]
  for _, mode in ipairs({ "train", "eval" }) do
    local f = res["faceid " .. mode]
    local plain, tc = res["torch " .. mode], res["torch+tcmalloc " .. mode]
    local ref, mark = plain, ""
    if tc and med(tc, "images_per_s") > med(plain, "images_per_s") then ref, mark = tc, "t" end
    local f_ips, t_ips = med(f, "images_per_s"), med(ref, "images_per_s")
    local f_rss, t_rss = med(f, "peak_rss_mib"), med(ref, "peak_rss_mib")
    local memeff = mode == "train" and ("%.0f"):format(med(res["torch memory-efficient train"], "peak_rss_mib"))
      or "-"
    print(row:format(input, mode, f_ips, ("%.1f%s"):format(t_ips, mark), f_ips / t_ips, f_rss, t_rss, memeff,
      f_rss / t_rss, med(f, "gflops"), pct(med(f, "gflops")), pct(med(ref, "gflops"))))
  end
end
print(("-"):rep(104))
print("ratio: faceid / PyTorch (img/s: above 1 faceid is faster; RSS: below 1 faceid uses less memory)."
  .. "\nPyTorch: the faster of its default allocator and tcmalloc (marked t); mem-eff: torchvision's"
  .. "\nmemory_efficient=True" .. (tcmalloc and " with tcmalloc" or "") .. ". RSS: peak resident memory (VmHWM)"
  .. " of the process. GFLOP/s: convolution\nand linear FLOPs counted from the layer shapes (same count for both)."
  .. (" load average at the end: %s"):format(read_loadavg()))
