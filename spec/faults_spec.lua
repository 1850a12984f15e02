-- Faults during training: a run killed with SIGKILL leaves its last
-- checkpoint intact and resumable (the resumed steps match what the killed
-- run logged), an unwritable output folder is refused before training, a
-- full disk (RLIMIT_FSIZE) fails the save without touching the previous
-- checkpoint, a non-finite loss stops with the step number, and missing or
-- corrupt images are skipped, counted and named while training runs on.
local faceid = require("faceid")
local helper = require("helper")

local NET = { growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small", embedding = 4 }

-- a folder tree of synthetic people (a blob per person, shifted and
-- re-lit per photo), written as 8-bit PGM so nothing here needs the shared
-- data: root/p<i>/<k>.pgm
local function tree(dir, people, photos, size)
  local g = faceid.Generator(5)
  for p = 1, people do
    os.execute(("mkdir -p '%s/p%d'"):format(dir, p))
    local cx, cy = g:uniform(4, size - 4), g:uniform(4, size - 4)
    for k = 1, photos do
      local px = {}
      for y = 1, size do
        for x = 1, size do
          local d2 = (x - cx - g:normal(0, 0.5)) ^ 2 + (y - cy) ^ 2
          px[#px + 1] = string.char(math.floor(255 * math.min(1, math.exp(-d2 / 18) + 0.1 * g:uniform())))
        end
      end
      helper.write_file(("%s/p%d/%d.pgm"):format(dir, p, k), ("P5\n%d %d\n255\n"):format(size, size)
        .. table.concat(px))
    end
  end
end

local function options(extra)
  local o = { input = 16, net = NET, batch = 4, holdout = 0, quiet = true, seed = 4, threads = 1,
    schedule = "constant", lr = 1e-3 }
  for k, v in pairs(extra) do o[k] = v end
  return o
end

-- runs a bash script (written to a file: no quoting through os.execute)
local function sh(dir, script)
  helper.write_file(dir .. "/run.sh", script .. "\n")
  return os.execute("bash '" .. dir .. "/run.sh'")
end

-- runs `body` (Lua source) in a child lua5.4 through `shell_prefix`
-- (e.g. "ulimit -f 8;"); returns exit status, stdout+stderr
local function child(dir, body, shell_prefix, background)
  local script = dir .. "/child.lua"
  helper.write_file(script, body)
  local cpath = package.cpath:match("^[^;]+")
  local cmd = ("cd '%s' && %s LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s;;' exec lua5.4 '%s' > '%s/child.log' 2>&1")
    :format(os.getenv("PWD") or ".", shell_prefix or "", cpath, script, dir)
  if background then return cmd end
  local ok, _, code = sh(dir, cmd)
  return ok and 0 or code, helper.read_file(dir .. "/child.log")
end

local function file_list(dir)
  local p = io.popen(("ls -A '%s'"):format(dir))
  local s = p:read("a")
  p:close()
  return s
end

describe("a run killed with SIGKILL", function()
  it("leaves a loadable checkpoint; resuming repeats the steps it had logged", function()
    local dir = helper.tmpdir()
    tree(dir .. "/faces", 4, 4, 16)
    -- the child stops itself (SIGSTOP) right after its log.csv row for
    -- step 11 is flushed, one step past its checkpoint at step 10, so the
    -- kill always lands mid-run at the same place; the parent then sends
    -- SIGKILL
    local cmd = child(dir, ([[
      local fh = getmetatable(io.stdout).__index
      local write, flush, last = fh.write, fh.flush, ""
      fh.write = function(f, s, ...) last = tostring(s); return write(f, s, ...) end
      fh.flush = function(f)
        local r = flush(f)
        if last:match("^11,") then os.execute("kill -STOP $PPID") end
        return r
      end
      local faceid = require("faceid")
      faceid.train.run({ data = %q, input = 16, batch = 4, holdout = 0, seed = 4, threads = 1,
        schedule = "constant", lr = 1e-3, steps = 1000000, checkpoint_every = 5, quiet = true,
        out = %q, net = { growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small", embedding = 4 } })
    ]]):format(dir .. "/faces", dir .. "/out"), nil, true)
    sh(dir, cmd .. " & pid=$!; for i in $(seq 1200); do "
      .. "read -r _ _ st _ < /proc/$pid/stat; [ \"$st\" = T ] && break; sleep 0.05; done; "
      .. "kill -9 $pid; wait $pid 2>/dev/null; echo $? > '" .. dir .. "/status'")
    assert.are.equal("137\n", helper.read_file(dir .. "/status")) -- 128 + SIGKILL

    local t, meta = faceid.load(dir .. "/out/last.safetensors")
    assert.is_not_nil(t, meta)
    local ck = tonumber(meta.step)
    assert.are.equal(10, ck)
    assert.is_not_nil(faceid.DenseNet.load(dir .. "/out/last.safetensors"))

    -- the killed run's own log: complete lines only (the last may be cut)
    local logged = {}
    for line in helper.read_file(dir .. "/out/log.csv"):gmatch("([^\n]*)\n") do
      local step, loss = line:match("^(%d+),%d+,([^,]+),")
      if step then logged[tonumber(step)] = loss end
    end
    assert.is_not_nil(logged[11], "the killed run logged no step after its checkpoint")
    assert.is_nil(logged[12], "the child ran past step 11")

    local r = faceid.train.run(options({ data = dir .. "/faces", steps = ck + 3,
      resume = dir .. "/out/last.safetensors" }))
    assert.are.equal(ck + 3, r.steps)
    local compared = 0
    for _, row in ipairs(r.history) do
      if logged[row.step] then
        assert.are.equal(logged[row.step], ("%.6g"):format(row.loss), "loss at step " .. row.step)
        compared = compared + 1
      end
    end
    assert.is_true(compared >= 1)
    helper.rmtree(dir)
  end)
end)

describe("an output folder that cannot be written", function()
  it("is refused before the first step, naming the folder", function()
    local dir = helper.tmpdir()
    tree(dir .. "/faces", 3, 3, 16)
    helper.write_file(dir .. "/file", "not a folder")
    local out = dir .. "/file/run"
    local ok, err = pcall(faceid.train.run, options({ data = dir .. "/faces", steps = 2, out = out }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find(out, 1, true), err)
    helper.rmtree(dir)
  end)

  it("says so in a faceid.train message", function()
    local dir = helper.tmpdir()
    tree(dir .. "/faces", 3, 3, 16)
    helper.write_file(dir .. "/file", "not a folder")
    local ok, err = pcall(faceid.train.run, options({ data = dir .. "/faces", steps = 2, out = dir .. "/file/run" }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("^faceid%.train: cannot write to output folder '" .. dir:gsub("%p", "%%%0")
      .. "/file/run': Not a directory$"), err)
    helper.rmtree(dir)
  end)
end)

describe("a full disk (RLIMIT_FSIZE)", function()
  it("fails the checkpoint save and leaves the previous checkpoint as it was", function()
    local dir = helper.tmpdir()
    tree(dir .. "/faces", 3, 3, 16)
    local out = dir .. "/out"
    faceid.train.run(options({ data = dir .. "/faces", steps = 2, out = out }))
    local before = helper.read_file(out .. "/last.safetensors")
    assert.is_true(#before > 8 * 1024)
    -- files may grow to 8 KiB (log.csv does), the checkpoint cannot; with
    -- SIGXFSZ ignored the write fails with EFBIG instead of killing
    local status, log = child(dir, ([[
      local faceid = require("faceid")
      local ok, err = pcall(faceid.train.run, { data = %q, input = 16, batch = 4, holdout = 0, seed = 4,
        threads = 1, schedule = "constant", lr = 1e-3, steps = 4, out = %q, quiet = true,
        resume = %q, net = { growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small", embedding = 4 } })
      print(ok, err)
      os.exit(ok and 0 or 3)
    ]]):format(dir .. "/faces", out, out .. "/last.safetensors"), "ulimit -f 8; trap '' XFSZ;")
    assert.are.equal(3, status, log)
    assert.truthy(log:find("cannot write checkpoint", 1, true), log)
    assert.truthy(log:find("File too large", 1, true), log)
    assert.is_true(before == helper.read_file(out .. "/last.safetensors"), "the checkpoint changed")
    assert.are.equal("last.safetensors\nlog.csv\n", file_list(out)) -- no temporary file left
    helper.rmtree(dir)
  end)
end)

describe("a non-finite loss", function()
  it("stops the run with the step number; the last checkpoint is intact", function()
    local dir = helper.tmpdir()
    tree(dir .. "/faces", 3, 3, 16)
    local out = dir .. "/out"
    -- lr 1e30 blows the weights up within a few steps; a checkpoint after
    -- every step until then
    local ok, err = pcall(faceid.train.run, options({ data = dir .. "/faces", steps = 50, out = out,
      lr = 1e30, optimizer = "sgd", checkpoint_every = 1 }))
    assert.is_false(ok)
    local failed = tonumber(tostring(err):match("^faceid%.train: step (%d+): "))
    assert.is_not_nil(failed, err)
    assert.truthy(tostring(err):find("not finite", 1, true) or tostring(err):find("loss is", 1, true), err)
    local t, meta = faceid.load(out .. "/last.safetensors")
    assert.is_not_nil(t, meta)
    assert.are.equal(failed - 1, tonumber(meta.step))
    for name, v in pairs(t) do
      local m = v:abs():max()
      assert.is_true(m == m and m < math.huge, name .. " holds a non-finite value")
    end
    helper.rmtree(dir)
  end)
end)

describe("missing and corrupt images", function()
  it("are skipped, counted and named; training runs to the end", function()
    local dir = helper.tmpdir()
    local faces = dir .. "/faces"
    tree(faces, 4, 4, 16)
    local reported = {}
    local ds = faceid.data.folders(faces, { on_skip = function(path, why) reported[path] = why end })
    -- after the listing: one image deleted, one truncated, one garbage
    os.remove(faces .. "/p1/2.pgm")
    local pgm = helper.read_file(faces .. "/p2/3.pgm")
    helper.write_file(faces .. "/p2/3.pgm", pgm:sub(1, 40))
    helper.write_file(faces .. "/p3/1.pgm", "\0\1\2 not an image")
    local r = faceid.train.run(options({ data = ds, steps = 12, cache = false }))
    assert.are.equal(12, r.steps)
    assert.are.equal(3, ds:n_bad())
    for _, name in ipairs({ "/p1/2.pgm", "/p2/3.pgm", "/p3/1.pgm" }) do
      assert.is_string(reported[faces .. name], "not reported: " .. name)
    end
    assert.truthy(reported[faces .. "/p2/3.pgm"]:find("truncated", 1, true), reported[faces .. "/p2/3.pgm"])
    helper.rmtree(dir)
  end)
end)
