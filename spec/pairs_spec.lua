-- faceid.pairs: per-epoch pairs (ratio, labels, no self-pairs, singletons
-- only as negatives, bad images avoided, determinism under a seed), fixed
-- evaluation lists (distinct pairs, person-disjoint folds) and the LFW
-- pairs format (save, load, malformed lines). The data set is a tree of
-- empty files: nothing here decodes an image.
local faceid = require("faceid")
local data = require("faceid.data")
local P = require("faceid.pairs")
local helper = require("helper")

local COUNTS = { 5, 3, 1, 2, 1, 4 } -- images of persons p1..p6; p3 and p5 are singletons

local root, ds
setup(function()
  root = helper.tmpdir()
  helper.empty_tree(root, COUNTS)
  ds = assert(data.folders(root))
end)
teardown(function()
  helper.rmtree(root)
end)

local function columns(list)
  local out = {}
  for k = 1, #list do
    out[k] = table.concat({ list:get(k) }, ",")
  end
  return table.concat(out, ";")
end

local function check_labels(list)
  for k = 1, #list do
    local a, b, label = list:get(k)
    assert.are_not.equal(a, b)
    local same = list.ds:identity(a) == list.ds:identity(b)
    assert.equal(same and 0 or 1, label)
  end
end

describe("faceid.pairs.epoch", function()
  it("draws one positive and one negative per anchor by default", function()
    local list = P.epoch(ds, faceid.Generator(1))
    local same, diff = list:counts()
    assert.equal(14, same) -- images of persons with 2 or more
    assert.equal(14, diff)
    check_labels(list)
    local anchors = {}
    for k = 1, #list do
      local a, _, label = list:get(k)
      if label == 0 then
        assert.is_nil(anchors[a]) -- each anchor once
        anchors[a] = true
      end
    end
  end)

  it("uses single-image persons only as negatives", function()
    local gen = faceid.Generator(2)
    local as_negative = {}
    for _ = 1, 60 do
      local list = P.epoch(ds, gen)
      for k = 1, #list do
        local a, b, label = list:get(k)
        local ia, ib = ds:identity(a), ds:identity(b)
        assert.is_true(ia ~= "p3" and ia ~= "p5")
        if ib == "p3" or ib == "p5" then
          assert.equal(1, label)
          as_negative[ib] = true
        end
      end
    end
    assert.is_true(as_negative.p3 and as_negative.p5)
  end)

  it("draws positives and negatives uniformly", function()
    -- anchor = image 1 of p1: its positive is one of p1's 4 others; over
    -- many epochs each should come up about a quarter of the time
    local gen, seen, n = faceid.Generator(3), {}, 0
    local anchor = ds:images_of("p1")[1]
    local neg_person, nneg = {}, 0
    for _ = 1, 1500 do
      local list = P.epoch(ds, gen)
      for k = 1, #list do
        local a, b, label = list:get(k)
        if a == anchor and label == 0 then
          seen[b] = (seen[b] or 0) + 1
          n = n + 1
        elseif label == 1 and ds:identity(a) == "p1" then
          neg_person[ds:identity(b)] = (neg_person[ds:identity(b)] or 0) + 1
          nneg = nneg + 1
        end
      end
    end
    assert.equal(1500, n)
    for _, i in ipairs(ds:images_of("p1")) do
      if i ~= anchor then
        assert.is_true(math.abs(seen[i] / n - 0.25) < 0.05, tostring(seen[i]))
      end
    end
    -- negatives of p1 are uniform over the 11 images of the others
    for p, c in ipairs(COUNTS) do
      if p ~= 1 then
        local want = c / 11
        assert.is_true(math.abs(neg_person["p" .. p] / nneg - want) < 0.03, "p" .. p)
      end
    end
  end)

  it("honours ratio and max_pairs", function()
    local gen = faceid.Generator(4)
    local list = P.epoch(ds, gen, { ratio = { 1, 3 } })
    assert.same({ 14, 42 }, { list:counts() })
    check_labels(list)
    list = P.epoch(ds, gen, { ratio = 0.5 })
    assert.same({ 14, 7 }, { list:counts() })
    list = P.epoch(ds, gen, { max_pairs = 10 })
    assert.same({ 5, 5 }, { list:counts() })
    list = P.epoch(ds, gen, { ratio = 2, max_pairs = 10 })
    assert.same({ 3, 6 }, { list:counts() })
    assert.has_error(function() P.epoch(ds, gen, { ratio = -1 }) end)
    assert.has_error(function() P.epoch(ds, gen, { max_pairs = 0 }) end)
    assert.has_error(function() P.epoch(ds, gen, { ratios = 1 }) end, "faceid.pairs.epoch: unknown option 'ratios'")
  end)

  it("is deterministic for a seed and shuffles same and different together", function()
    local l1 = P.epoch(ds, faceid.Generator(5))
    local l2 = P.epoch(ds, faceid.Generator(5))
    assert.equal(columns(l1), columns(l2))
    local gen = faceid.Generator(5)
    P.epoch(ds, gen)
    assert.are_not.equal(columns(l1), columns(P.epoch(ds, gen))) -- the next epoch differs
    local first_half_same = 0
    for k = 1, #l1 // 2 do
      local _, _, label = l1:get(k)
      first_half_same = first_half_same + (label == 0 and 1 or 0)
    end
    assert.is_true(first_half_same > 0 and first_half_same < #l1 // 2)
  end)

  it("never draws an image marked bad", function()
    local all = {}
    for i = 1, #ds do
      all[i] = i
    end
    local sub = ds:subset(all)
    sub._registry = { bad = {}, count = 0, on_skip = function() end } -- a private record
    local bad = sub:images_of("p2")[1]
    sub:mark_bad(bad, "cannot decode")
    local gen = faceid.Generator(6)
    for _ = 1, 30 do
      local list = P.epoch(sub, gen)
      for k = 1, #list do
        local a, b = list:get(k)
        assert.are_not.equal(bad, a)
        assert.are_not.equal(bad, b)
      end
    end
  end)

  it("explains when no pair can be drawn", function()
    local singles = ds:filter({ people = { "p3", "p5" } })
    assert.has_error(function() P.epoch(singles, faceid.Generator(1)) end,
      "faceid.pairs.epoch: no person has two usable images, so there is no same-person pair (2 people)")
    local one = ds:filter({ people = { "p1" } })
    assert.has_error(function() P.epoch(one, faceid.Generator(1)) end,
      "faceid.pairs.epoch: different-person pairs need two people, the data set has 1")
    assert.same({ 5, 0 }, { P.epoch(one, faceid.Generator(1), { ratio = 0 }):counts() })
    assert.has_error(function() P.epoch(ds, 42) end)
  end)
end)

describe("faceid.pairs.same_count", function()
  it("counts the distinct same-person pairs, and refuses what is not a data set", function()
    -- COUNTS 5, 3, 1, 2, 1, 4: 10 + 3 + 0 + 1 + 0 + 6
    assert.are.equal(20, P.same_count(ds))
    assert.has_error(function() P.same_count({}) end, "faceid.pairs.same_count: expected a data set (faceid.data), got table")
  end)
end)

describe("faceid.pairs.fixed", function()
  it("draws distinct pairs with the asked counts, deterministically", function()
    local list = P.fixed(ds, 11, { n_same = 20, n_diff = 30 })
    assert.same({ 20, 30 }, { list:counts() })
    check_labels(list)
    local seen = {}
    for k = 1, #list do
      local a, b = list:get(k)
      local key = math.min(a, b) .. "," .. math.max(a, b)
      assert.is_nil(seen[key])
      seen[key] = true
    end
    assert.equal(columns(list), columns(P.fixed(ds, 11, { n_same = 20, n_diff = 30 })))
    assert.are_not.equal(columns(list), columns(P.fixed(ds, 12, { n_same = 20, n_diff = 30 })))
  end)

  it("can take every possible same pair, and refuses more", function()
    -- 10 + 3 + 1 + 6 = 20 distinct same-person pairs exist
    local list = P.fixed(ds, 1, { n_same = 20, n_diff = 0 })
    assert.equal(20, #list)
    check_labels(list)
    assert.has_error(function() P.fixed(ds, 1, { n_same = 21, n_diff = 0 }) end,
      "faceid.pairs.fixed: has only 20 distinct same-person pairs, 21 asked")
  end)

  it("keeps folds person-disjoint", function()
    local list = P.fixed(ds, 2, { n_same = 4, n_diff = 6, folds = 2 })
    assert.equal(2, list.folds)
    local fold_of = {}
    for k = 1, #list do
      local a, b, _, f = list:get(k)
      for _, i in ipairs({ a, b }) do
        local id = ds:identity(i)
        assert.is_true(fold_of[id] == nil or fold_of[id] == f)
        fold_of[id] = f
      end
    end
    assert.equal(5, #list:fold_indices(1))
    assert.has_error(function() P.fixed(ds, 2, { n_same = 3, n_diff = 6, folds = 2 }) end)
  end)
end)

describe("the LFW pairs format", function()
  it("saves and loads a list unchanged", function()
    local list = P.fixed(ds, 3, { n_same = 4, n_diff = 6, folds = 2 })
    local path = root .. "/eval_pairs.txt"
    assert.is_true(P.save(list, path))
    local text = helper.read_file(path)
    assert.equal("2\t2\t3\n", text:sub(1, 6))
    local a, b = list:get(1)
    assert.equal(("%s\t%d\t%d"):format(ds:identity(a), ds:number(a), ds:number(b)), text:match("\n([^\n]*)"))
    local back = assert(P.load(path, ds))
    assert.equal(columns(list), columns(back))
    assert.equal(2, back.folds)
    -- LFW's own header when the counts are equal
    assert.is_true(P.save(P.fixed(ds, 3, { n_same = 2, n_diff = 2 }), path))
    assert.equal("2\n", helper.read_file(path):sub(1, 2))
  end)

  it("loads against a data set that holds the images, else names the line", function()
    local list = P.fixed(ds, 4, { n_same = 6, n_diff = 6 })
    local path = root .. "/eval_pairs.txt"
    assert(P.save(list, path))
    local sub = ds:filter({ people = { "p1", "p2", "p3", "p4", "p6" } })
    local ok, msg = P.load(path, sub)
    if ok then -- the pairs happen to avoid p5: equal images, other indices
      for k = 1, #ok do
        local a = ok:get(k)
        local a0 = list:get(k)
        assert.equal(ds:path(a0), sub:path(a))
      end
    else
      assert.truthy(msg:find("eval_pairs.txt:%d+: the data set has no image 1 of 'p5'"), msg)
    end
    local only = ds:filter({ people = { "p1" } })
    ok, msg = P.load(path, only)
    assert.is_nil(ok)
    assert.truthy(msg:find("eval_pairs.txt:%d+:"), msg)
  end)

  it("reports malformed lines with their number", function()
    local path = root .. "/bad_pairs.txt"
    helper.write_file(path, "1\np1\t1\t2\np1\t1\n")
    local list, msg = P.load(path, ds)
    assert.is_nil(list)
    assert.truthy(msg:find("bad_pairs.txt:3: expected a different-person line", 1, true), msg)
    helper.write_file(path, "1\np1\t1\t2\np1\t1\tp2\t1\np1 1 3\n")
    list, msg = P.load(path, ds)
    assert.truthy(msg:find("bad_pairs.txt:4: more pair lines", 1, true), msg)
    helper.write_file(path, "1\np1\t0\t2\np1\t1\tp2\t1\n")
    list, msg = P.load(path, ds)
    assert.truthy(msg:find("bad_pairs.txt:2: image number", 1, true), msg)
    list, msg = P.load(root .. "/none.txt", ds)
    assert.truthy(msg:find("none.txt", 1, true), msg)
  end)
end)
