-- The `faceid` command (bin/faceid, faceid.cli) end to end on tiny
-- synthetic data: every subcommand's exit code, output and files, --help,
-- and bad invocations (one clear line on stderr, exit code 2).
local faceid = require("faceid")
local helper = require("helper")
local cli = require("faceid.cli")
local synthetic = require("faceid.synthetic")

local CPATH = package.cpath:match("^[^;]+")

-- run bin/faceid with a shell-quoted argument string: code, stdout, stderr
local function run(args)
  local errfile = os.tmpname()
  local cmd = ("env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s;;' lua5.4 bin/faceid %s 2>'%s'")
    :format(CPATH, args, errfile)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  local err = helper.read_file(errfile)
  os.remove(errfile)
  return code, out, err
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- a usage or input error: exit code 2, nothing on stdout, one line on
-- stderr starting "faceid <sub>: " and containing `want`
local function assert_error(sub, args, want)
  local code, out, err = run(sub .. " " .. args)
  assert.are.equal(2, code, err)
  assert.are.equal("", out)
  local l = lines(err)
  assert.are.equal(1, #l, err)
  assert.are.equal("faceid " .. sub .. ": ", l[1]:sub(1, #sub + 9), err)
  assert.truthy(l[1]:find(want, 1, true), ("%q does not mention %q"):format(l[1], want))
end

local has_plot = pcall(require, "faceid.plot") and faceid.core.Canvas ~= nil

-- PNG files decode with the expected size ({w, h}; nil: any)
local function assert_pngs(dir, sizes)
  if not has_plot then return end
  for name, wh in pairs(sizes) do
    local img = assert(faceid.image.load(dir .. "/" .. name))
    assert.are.equal(3, img:size(1))
    if wh[2] then
      assert.are.same({ wh[2], wh[1] }, { img:size(2), img:size(3) }, name)
    elseif wh[1] then
      assert.are.equal(wh[1], img:size(3), name)
    else
      assert.is_true(img:size(2) > 64 and img:size(3) > 64, name)
    end
  end
end

describe("faceid.cli.parse", function()
  local cmd = { name = "x", options = {
    { name = "size", kind = "int", default = 128 }, { name = "lr", kind = "number" },
    { name = "net", kind = "choice", choices = { "a", "b" } }, { name = "plots", kind = "flag" },
    { name = "blocks", kind = "list" }, { name = "out", required = true, arg = "DIR" } },
    args = { min = 0, name = "files" } }

  it("reads --opt value, --opt=value, flags, lists, defaults and --", function()
    local o, a = cli.parse(cmd, { "--out", "d", "--lr=0.5", "--net", "b", "--plots", "f1", "--blocks=3,4", "--", "--f2" })
    assert.are.same({ out = "d", lr = 0.5, net = "b", plots = true, blocks = { 3, 4 }, size = 128, threads = 2 }, o)
    assert.are.same({ "f1", "--f2" }, a)
  end)

  it("rejects unknown options, missing and bad values", function()
    local function fails(argv, want)
      local ok, e = pcall(cli.parse, cmd, argv)
      assert.is_false(ok)
      assert.truthy(e.msg:find(want, 1, true), e.msg)
    end
    fails({ "--out", "d", "--frob" }, "unknown option --frob")
    fails({ "--out", "d", "-x" }, "unknown option -x")
    fails({ "--out" }, "--out needs a value (DIR)")
    fails({}, "--out DIR is required")
    fails({ "--out", "d", "--size", "1.5" }, "--size must be an integer >= 1, got '1.5'")
    fails({ "--out", "d", "--lr", "-1" }, "--lr must be a positive number")
    fails({ "--out", "d", "--net", "c" }, "--net must be one of a, b, got 'c'")
    fails({ "--out", "d", "--plots=yes" }, "--plots takes no value")
    fails({ "--out", "d", "--blocks", "3,x" }, "--blocks must be positive integers")
  end)
end)

describe("bin/faceid", function()
  local dir, data, run_dir, model

  lazy_setup(function()
    dir = helper.tmpdir()
    data = dir .. "/faces"
    assert(synthetic.write(data, { people = 10, per_person = 5, size = 32, seed = 3 }))
    run_dir = dir .. "/run"
    model = run_dir .. "/model.safetensors"
  end)

  lazy_teardown(function()
    helper.rmtree(dir)
  end)

  it("prints an overview and --help for every command", function()
    local code, out = run("--help")
    assert.are.equal(0, code)
    for _, sub in ipairs(cli.order) do
      assert.truthy(out:find("\n  " .. sub .. " ", 1, true), sub)
      local c, text, err = run(sub .. " --help")
      assert.are.equal(0, c, err)
      assert.are.equal("usage: faceid " .. sub, text:sub(1, 14 + #sub))
      assert.truthy(text:find("--threads N", 1, true))
    end
    local c, _, err = run("")
    assert.are.equal(2, c)
    assert.truthy(err:find("usage: faceid <command>", 1, true))
    c, _, err = run("frobnicate")
    assert.are.equal(2, c)
    assert.truthy(err:find("unknown command 'frobnicate'", 1, true))
  end)

  it("trains, writes model, checkpoints, log and pictures, and resumes", function()
    local code, out, err = run(("train --data '%s' --net tiny --size 32 --embedding 8 --batch 8 --steps 4 "
      .. "--holdout 4 --eval-every 2 --eval-pairs 40 --checkpoint-every 2 --schedule one_cycle --lr 1e-3 "
      .. "--out '%s' --plots --quiet --threads 1"):format(data, run_dir))
    assert.are.equal(0, code, err .. out)
    assert.truthy(out:find("training on 6 people (30 images), evaluating on 4 held-out people", 1, true), out)
    assert.truthy(out:find("AUC: %d%.%d%d%d%d"), out)
    for _, f in ipairs({ "model.safetensors", "last.safetensors", "best.safetensors", "log.csv" }) do
      assert.is_true(helper.exists(run_dir .. "/" .. f), f)
    end
    assert.are.equal(1 + 4, #lines(helper.read_file(run_dir .. "/log.csv")))
    local _, meta = faceid.load(model)
    assert.are.equal("32", meta.input)
    assert.are.equal("x*2-1", meta.normalize)
    assert.is_not_nil(tonumber(meta.threshold))
    assert_pngs(run_dir, { ["training.png"] = { 1000, 700 }, ["roc.png"] = { 700, 660 },
      ["histogram.png"] = { 900, 560 }, ["pairs.png"] = { 960 } })
    -- resume: 2 more steps from the checkpoint, appended to the log
    code, out, err = run(("train --data '%s' --net tiny --size 32 --embedding 8 --batch 8 --steps 6 "
      .. "--holdout 4 --eval-pairs 40 --out '%s' --resume '%s/last.safetensors' --quiet --threads 1")
      :format(data, run_dir, run_dir))
    assert.are.equal(0, code, err .. out)
    assert.are.equal(1 + 6, #lines(helper.read_file(run_dir .. "/log.csv")))
  end)

  it("prepares a cache that training reads to the same losses, and refuses a stale one", function()
    local cache = dir .. "/faces.fidcache"
    local code, out, err = run(("prepare --data '%s' --size 32 --out '%s' --quiet"):format(data, cache))
    assert.are.equal(0, code, err .. out)
    assert.truthy(out:find("wrote " .. cache .. ": 50 images", 1, true), out)
    local function losses(extra, out_dir)
      local c, o, e = run(("train --data '%s' --net tiny --size 32 --embedding 8 --batch 4 --steps 3 --holdout 4 "
        .. "--eval-pairs 20 --out '%s' --quiet --threads 1 %s"):format(data, out_dir, extra))
      assert.are.equal(0, c, e .. o)
      local l = {}
      for i, row in ipairs(lines(helper.read_file(out_dir .. "/log.csv"))) do
        if i > 1 then l[#l + 1] = row:match("^[^,]*,[^,]*,([^,]*)") end
      end
      return l
    end
    local plain = losses("", dir .. "/plain")
    assert.are.equal(3, #plain)
    assert.are.same(plain, losses(("--cache '%s'"):format(cache), dir .. "/cached"))
    -- a cache whose folder changed is refused, naming the difference
    local extra = data .. "/person01/extra.png"
    assert(faceid.image.save(faceid.rand(faceid.Generator(1), 3, 32, 32), extra))
    code, out, err = run(("train --data '%s' --net tiny --size 32 --batch 4 --steps 1 --holdout 4 --eval-pairs 20 "
      .. "--out '%s' --quiet --cache '%s'"):format(data, dir .. "/stale", cache))
    os.remove(extra)
    assert.are.equal(2, code, err .. out)
    assert.truthy(err:find("extra.png", 1, true), err)
    assert_error("prepare", "--data /nonexistent/faces", "no such folder")
    assert_error("train", ("--data '%s' --cache /nonexistent.fidcache"):format(data), "no such cache file")
  end)

  it("evaluates on held-out people and on a pairs file", function()
    local pairs_file = dir .. "/pairs.txt"
    local code, out, err = run(("eval --model '%s' --data '%s' --n-pairs 40 --save-pairs '%s'")
      :format(model, data, pairs_file))
    assert.are.equal(0, code, err)
    assert.truthy(out:find("the 4 people of .* held out of training"), out)
    assert.truthy(out:find("%d+%-fold accuracy: %d%.%d+ %+%- %d%.%d+"), out)
    for _, k in ipairs({ "AUC: ", "EER: ", "TAR@FAR=0.001: ", "(the model's)" }) do
      assert.truthy(out:find(k, 1, true), k)
    end
    local auc = tonumber(out:match("AUC: ([%d.]+)"))
    code, out, err = run(("eval --model '%s' --pairs '%s' --images '%s' --plots '%s/eval'")
      :format(model, pairs_file, data, dir))
    assert.are.equal(0, code, err)
    -- the same pairs, so the same AUC
    assert.are.equal(auc, tonumber(out:match("AUC: ([%d.]+)")))
    assert_pngs(dir .. "/eval", { ["roc.png"] = { 700, 660 }, ["histogram.png"] = { 900, 560 } })
  end)

  it("embeds photos as CSV, JSON and safetensors, as the network computes them", function()
    local a, b = data .. "/person01/1.png", data .. "/person02/3.png"
    local code, out, err = run(("embed --model '%s' '%s' '%s'"):format(model, a, b))
    assert.are.equal(0, code, err)
    local l = lines(out)
    assert.are.equal(3, #l)
    assert.are.equal("image,e1,e2,e3,e4,e5,e6,e7,e8", l[1])
    -- independently: load, map [0, 1] to [-1, 1] (the photos are already
    -- 32x32, so no resize or crop), forward in evaluation mode
    local net = assert(faceid.DenseNet.load(model))
    net:evaluate()
    local x = faceid.cat({ faceid.image.load(a):reshape(1, 3, 32, 32), faceid.image.load(b):reshape(1, 3, 32, 32) }, 1)
    local want = net:forward(x * 2 - 1)
    for i = 1, 2 do
      local fields = {}
      for f in l[i + 1]:gmatch("[^,]+") do fields[#fields + 1] = f end
      assert.are.equal(i == 1 and a or b, fields[1])
      for j = 1, 8 do
        assert.is_true(math.abs(tonumber(fields[j + 1]) - want:get(i, j)) < 1e-4, ("%d,%d"):format(i, j))
      end
    end
    code, out = run(("embed --model '%s' --format json '%s'"):format(model, a))
    assert.are.equal(0, code)
    assert.truthy(out:find('^%[\n  {"image": ".-person01/1.png", "embedding": %[[-%d.e, ]+%]}\n%]\n$'), out)
    local st = dir .. "/emb.safetensors"
    code = run(("embed --model '%s' --out '%s' '%s' '%s'"):format(model, st, a, b))
    assert.are.equal(0, code)
    local t, meta = faceid.load(st)
    assert.are.same({ 2, 8 }, t.embeddings:size())
    assert.is_true((t.embeddings - want):abs():max() < 1e-5)
    assert.are.equal(a .. "\n" .. b, meta.images)
  end)

  it("compares two photos: exit code 0 for the same person, 1 for different people", function()
    local a, b = data .. "/person01/1.png", data .. "/person02/1.png"
    local code, out = run(("compare --model '%s' '%s' '%s'"):format(model, a, a))
    assert.are.equal(0, code)
    assert.truthy(out:find("^same person %(distance 0%.00 < threshold %d+%.%d%d%)\n$"), out)
    code, out = run(("compare --model '%s' --threshold 1e-6 '%s' '%s'"):format(model, a, b))
    assert.are.equal(1, code)
    assert.truthy(out:find("^different people %(distance %d+%.%d%d >= threshold 0%.00%)\n$"), out)
  end)

  it("enrolls people in a gallery and identifies them, or nobody", function()
    local g = dir .. "/gallery.safetensors"
    local code, out, err = run(("enroll --model '%s' --gallery '%s' ada '%s/person01/1.png' '%s/person01/2.png'")
      :format(model, g, data, data))
    assert.are.equal(0, code, err)
    assert.truthy(out:find("enrolled ada: 2 photos", 1, true), out)
    code = run(("enroll --model '%s' --gallery '%s' bob '%s/person02/1.png'"):format(model, g, data))
    assert.are.equal(0, code)
    local gal = assert(require("faceid.gallery").load(g))
    assert.are.same({ "ada", "bob" }, gal:people())
    assert.are.equal(2, gal:count("ada"))
    -- an enrolled photo is at distance 0 from its person
    code, out = run(("identify --model '%s' --gallery '%s' '%s/person02/1.png'"):format(model, g, data))
    assert.are.equal(0, code)
    assert.truthy(out:find("^bob %(distance 0%.00 < threshold"), out)
    code, out = run(("identify --model '%s' --gallery '%s' --threshold 1e-6 '%s/person03/1.png'"):format(model, g, data))
    assert.are.equal(1, code)
    assert.truthy(out:find("^nobody known %(nearest: %a+, distance"), out)
    assert_error("identify", ("--model '%s' --gallery '%s/none.safetensors' '%s/person03/1.png'"):format(model, dir, data),
      "no such file (create it with faceid enroll)")
  end)

  it("runs the demo on synthetic people and says they are synthetic", function()
    local out_dir = dir .. "/demo"
    local code, out, err = run(("demo --data synthetic --people 8 --holdout 3 --steps 3 --net tiny --size 32 "
      .. "--batch 8 --out '%s' --quiet --threads 1"):format(out_dir))
    assert.are.equal(0, code, err .. out)
    assert.truthy(out:find("SYNTHETIC faces", 1, true), out)
    assert.truthy(out:find("held-out people", 1, true), out)
    assert.truthy(out:find("AUC: %d%.%d+"), out)
    assert.is_true(helper.exists(out_dir .. "/model.safetensors"))
    assert.is_true(helper.exists(out_dir .. "/synthetic-faces/person1/1.png"))
    assert_pngs(out_dir, { ["training.png"] = { 1000, 700 }, ["roc.png"] = { 700, 660 },
      ["histogram.png"] = { 900, 560 }, ["pairs.png"] = { 960 } })
  end)

  it("answers bad invocations with one line and exit code 2", function()
    local a = data .. "/person01/1.png"
    assert_error("compare", ("--model '%s/missing.safetensors' '%s' '%s'"):format(dir, a, a),
      "cannot open model '" .. dir .. "/missing.safetensors': no such file")
    assert_error("compare", ("--model '%s' --frob 1 '%s' '%s'"):format(model, a, a), "unknown option --frob")
    assert_error("compare", ("'%s' '%s'"):format(a, a), "--model M is required")
    assert_error("compare", ("--model '%s' '%s'"):format(model, a), "expected two images")
    helper.write_file(dir .. "/broken.jpg", "not a picture")
    assert_error("compare", ("--model '%s' '%s' '%s/broken.jpg'"):format(model, a, dir),
      "cannot decode '" .. dir .. "/broken.jpg'")
    assert_error("embed", ("--model '%s' '%s/absent.png'"):format(model, dir), "absent.png")
    assert_error("embed", ("--model '%s' --format safetensors '%s'"):format(model, a), "needs --out FILE")
    assert_error("compare", ("--model '%s/broken.jpg' '%s' '%s'"):format(dir, a, a), "cannot load model")
    assert_error("train", "--size 32", "--data DIR is required")
    assert_error("train", ("--data '%s/nowhere'"):format(dir), "no such folder")
    assert_error("train", ("--data '%s' --batch=0"):format(data), "--batch must be an integer >= 1, got '0'")
    assert_error("eval", ("--model '%s'"):format(model), "give --pairs FILE with --images DIR, or --data DIR")
    assert_error("enroll", ("--model '%s' --gallery '%s/g.safetensors' '%s'"):format(model, dir, a),
      "expected NAME and one or more IMAGES")
    assert_error("demo", "--steps 1 --size 16 --net mini --data synthetic --out " .. dir .. "/d2",
      "too small for the mini network")
  end)
end)
