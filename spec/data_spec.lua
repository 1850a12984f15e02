-- faceid.data: the readers on small trees built here (one folder per
-- person, the flat Yale layout, CelebA files, LFW pairs files; with a
-- corrupt JPEG, an empty folder, stray files and malformed lines), the
-- data set object (subset, filter, split by identity), and the shared face
-- data when present.
local faceid = require("faceid")
local data = require("faceid.data")
local helper = require("helper")

-- a binary PGM of w x h grey pixels
local function pgm(w, h, v)
  return ("P5\n%d %d\n255\n"):format(w, h) .. string.rep(string.char(v or 128), w * h)
end

local function mkdir(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
end

local function quiet()
  local seen = {}
  return function(path, why)
    seen[#seen + 1] = { path = path, why = why }
  end, seen
end

-- a valid JPEG made by the image module, and a corrupt one (a JPEG
-- signature followed by junk: the structure check refuses it)
local function jpeg_bytes(dir)
  local p = dir .. "/tmp.jpg"
  assert(faceid.image.save(faceid.full({ 3, 6, 5 }, 0.5), p))
  local b = helper.read_file(p)
  os.remove(p)
  return b
end
local CORRUPT_JPEG = "\255\216\255\224" .. string.rep("junk", 20)

describe("faceid.data.folders", function()
  local root, jpg
  setup(function()
    root = helper.tmpdir()
    jpg = jpeg_bytes(root)
    for _, d in ipairs({ "alice", "bob", "carol", "dave", ".git" }) do
      mkdir(root .. "/" .. d)
    end
    for _, n in ipairs({ "1.pgm", "2.pgm", "10.pgm" }) do
      helper.write_file(root .. "/alice/" .. n, pgm(4, 5))
    end
    helper.write_file(root .. "/alice/notes.txt", "not an image")
    helper.write_file(root .. "/alice/.hidden.jpg", jpg)
    mkdir(root .. "/alice/sub")
    helper.write_file(root .. "/bob/a.jpg", jpg)
    helper.write_file(root .. "/bob/B.JPG", jpg)
    helper.write_file(root .. "/dave/good.jpg", jpg)
    helper.write_file(root .. "/dave/bad.jpg", CORRUPT_JPEG)
    helper.write_file(root .. "/.git/x.jpg", jpg)
    helper.write_file(root .. "/README", "a file at the top")
  end)
  teardown(function()
    helper.rmtree(root)
  end)

  it("lists one folder per person in natural order and counts the rest", function()
    local ds = assert(data.folders(root))
    assert.same({ "alice", "bob", "dave" }, ds:people())
    assert.equal(7, #ds)
    local alice = ds:images_of("alice")
    assert.same({ root .. "/alice/1.pgm", root .. "/alice/2.pgm", root .. "/alice/10.pgm" },
      { ds:path(alice[1]), ds:path(alice[2]), ds:path(alice[3]) })
    assert.same({ 1, 2, 3 }, { ds:number(alice[1]), ds:number(alice[2]), ds:number(alice[3]) })
    assert.equal("alice", ds:identity(alice[3]))
    assert.equal(alice[3], ds:find("alice", 3))
    assert.is_nil(ds:find("alice", 4))
    assert.same({}, ds:images_of("nobody"))
    assert.equal(1, ds.info.empty_folders)   -- carol
    assert.equal(3, ds.info.ignored) -- alice's notes.txt, .hidden.jpg and sub/
    local s = tostring(ds)
    assert.truthy(s:find("7 images, 3 people, 0 skipped", 1, true), s)
    assert.truthy(s:find("1 empty folder", 1, true), s)
  end)

  it("skips and reports a corrupt image with verify", function()
    local on_skip, seen = quiet()
    local ds = assert(data.folders(root, { verify = true, on_skip = on_skip }))
    assert.equal(6, #ds)
    assert.equal(1, #ds.skipped)
    assert.equal(root .. "/dave/bad.jpg", ds.skipped[1].path)
    assert.equal(1, #seen)
    assert.equal(root .. "/dave/bad.jpg", seen[1].path)
    assert.truthy(seen[1].why:find("bad.jpg", 1, true), seen[1].why)
    assert.truthy(tostring(ds):find("1 skipped", 1, true))
  end)

  it("takes exclude patterns and extension lists", function()
    local ds = assert(data.folders(root, { exclude = { "^bad", "^B%." } }))
    assert.equal(5, #ds)
    assert.equal(2, ds.info.excluded)
    ds = assert(data.folders(root, { extensions = { "pgm" } }))
    assert.same({ "alice" }, ds:people())
  end)

  it("returns nil and a message for a missing root or a flat folder", function()
    local ds, msg = data.folders(root .. "/nope")
    assert.is_nil(ds)
    assert.truthy(msg:find(root .. "/nope", 1, true), msg)
    ds, msg = data.folders(root .. "/alice") -- only the `sub` folder, which holds no image
    assert.is_nil(ds)
    assert.truthy(msg:find("no images", 1, true), msg)
    ds, msg = data.folders(root .. "/bob")
    assert.is_nil(ds)
    assert.truthy(msg:find("no person folders", 1, true), msg)
    assert.truthy(msg:find("faceid.data.yale", 1, true), msg)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() data.folders(42) end, "faceid.data.folders: root must be a string, got number")
    assert.has_error(function() data.folders(root, { verfy = true }) end,
      "faceid.data.folders: unknown option 'verfy'")
  end)
end)

describe("the data set object", function()
  local root, ds
  -- persons p1..p6 with 5, 3, 1, 2, 1, 4 images (empty files: nothing is decoded)
  local counts = { 5, 3, 1, 2, 1, 4 }
  setup(function()
    root = helper.tmpdir()
    helper.empty_tree(root, counts)
    ds = assert(data.folders(root))
  end)
  teardown(function()
    helper.rmtree(root)
  end)

  it("indexes images and people", function()
    assert.equal(16, #ds)
    assert.equal(6, ds:n_people())
    for p, n in ipairs(counts) do
      assert.equal(n, #ds:images_of("p" .. p))
    end
    assert.has_error(function() ds:path(17) end, "Dataset:path: image index 17 out of range 1..16")
    assert.has_error(function() ds:identity(0.5) end)
  end)

  it("subsets keep numbers and share the record of bad images", function()
    local sub = ds:subset({ 16, 1 })
    assert.equal(2, #sub)
    assert.equal(ds:path(16), sub:path(1))
    assert.equal(ds:number(16), sub:number(1))
    assert.equal(1, sub:find(ds:identity(16), ds:number(16)))
    assert.has_error(function() ds:subset({ 1, 1 }) end)
    local on_skip, seen = quiet()
    ds._registry.on_skip = on_skip
    sub:mark_bad(2, "broken")
    sub:mark_bad(2, "broken again") -- reported once
    assert.equal("broken", ds:bad(1))
    assert.equal(1, #seen)
    assert.equal(1, ds:n_bad())
    ds._registry.bad, ds._registry.count = {}, 0
  end)

  it("filters by image count and persons", function()
    local f = ds:filter({ min_images = 2 })
    assert.same({ "p1", "p2", "p4", "p6" }, f:people())
    assert.equal(14, #f)
    local g = ds:filter({ max_images = 2, people = { "p1", "p3" } })
    assert.same({ "p1", "p3" }, g:people())
    assert.equal(3, #g)
    assert.has_error(function() ds:filter({ min = 2 }) end, "Dataset:filter: unknown option 'min'")
  end)

  it("splits by identity: disjoint, sized, deterministic", function()
    local a, b = ds:split_by_identity({ fractions = { 0.5, 0.5 }, seed = 3 })
    assert.equal(3, a:n_people())
    assert.equal(3, b:n_people())
    assert.equal(16, #a + #b)
    local seen = {}
    for _, p in ipairs(a:people()) do
      seen[p] = true
    end
    for _, p in ipairs(b:people()) do
      assert.is_nil(seen[p])
    end
    local a2 = ds:split_by_identity({ fractions = { 0.5, 0.5 }, seed = 3 })
    assert.same(a:people(), a2:people())
    -- with other seeds the split changes at least once
    local differs = false
    for seed = 4, 20 do
      local x = ds:split_by_identity({ fractions = { 0.5, 0.5 }, seed = seed })
      differs = differs or table.concat(x:people(), ",") ~= table.concat(a:people(), ",")
    end
    assert.is_true(differs)
    local c1, c2, c3 = ds:split_by_identity({ counts = { 1, 2, 2 }, gen = faceid.Generator(1) })
    assert.same({ 1, 2, 2 }, { c1:n_people(), c2:n_people(), c3:n_people() })
    local f1, f2 = ds:split_by_identity({ fractions = { 0.7, 0.3 }, seed = 1 })
    assert.same({ 4, 2 }, { f1:n_people(), f2:n_people() }) -- 4.2 -> 4, then the rest
    assert.has_error(function() ds:split_by_identity({ fractions = { 0.8, 0.3 }, seed = 1 }) end)
    assert.has_error(function() ds:split_by_identity({ counts = { 5, 5 }, seed = 1 }) end)
    assert.has_error(function() ds:split_by_identity({ counts = { 1 } }) end)
    assert.has_error(function() ds:split_by_identity({ counts = { 1 }, fractions = { 1 }, seed = 1 }) end)
  end)
end)

describe("faceid.data.yale", function()
  it("reads subjectNN.condition files and ignores the rest", function()
    local root = helper.tmpdir()
    for _, n in ipairs({ "subject01.happy", "subject01.sad", "subject02.normal", "subject10.wink" }) do
      helper.write_file(root .. "/" .. n, pgm(3, 3))
    end
    helper.write_file(root .. "/DATA.md", "x")
    helper.write_file(root .. "/subject03", "no condition")
    local ds = assert(data.yale(root))
    assert.same({ "subject01", "subject02", "subject10" }, ds:people())
    assert.equal(4, #ds)
    assert.equal(2, ds.info.ignored)
    assert.equal(root .. "/subject01.happy", ds:path(1))
    assert.equal("yale", (data.open(root)).kind)
    helper.rmtree(root)
  end)
end)

describe("faceid.data.celeba", function()
  local root
  setup(function()
    root = helper.tmpdir()
    local jpg = jpeg_bytes(root)
    mkdir(root .. "/img_align_celeba_89x109")
    for k = 1, 6 do
      helper.write_file(("%s/img_align_celeba_89x109/%06d.jpg"):format(root, k), jpg)
    end
    helper.write_file(root .. "/img_align_celeba_89x109/000099.jpg", jpg) -- no identity
    helper.write_file(root .. "/identity_CelebA.txt",
      "000001.jpg 7\n000002.jpg 7\n000003.jpg 12\r\n000004.jpg 12\n000005.jpg 3\n000006.jpg 12\n000007.jpg 3\n"
      .. "000008.jpg 9\n\n")
    helper.write_file(root .. "/list_eval_partition.txt",
      "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n000005.jpg 0\n000006.jpg 2\n000007.jpg 0\n000008.jpg 1\n")
  end)
  teardown(function()
    helper.rmtree(root)
  end)

  it("lists the labelled images present on disk", function()
    local ds = assert(data.celeba(root))
    assert.equal(6, #ds)
    assert.same({ "3", "7", "12" }, ds:people())
    assert.same({ 3, 4, 6 }, ds:images_of(12))
    assert.equal(root .. "/img_align_celeba_89x109/000003.jpg", ds:path(3))
    assert.equal(2, ds.info.absent)
    assert.equal(1, ds.info.unlabelled)
    assert.equal("celeba", (data.open(root)).kind)
  end)

  it("selects the official partition and identities", function()
    assert.same({ "3", "7" }, assert(data.celeba(root, { partition = "train" })):people())
    local test = assert(data.celeba(root, { partition = "test" }))
    assert.same({ "12" }, test:people())
    assert.equal(2, #test)
    assert.equal(1, #assert(data.celeba(root, { partition = "val" })))
    local some = assert(data.celeba(root, { identities = { 7, "3" } }))
    assert.equal(3, #some)
    assert.has_error(function() data.celeba(root, { partition = "training" }) end)
  end)

  it("prefers identity_subset.txt when present", function()
    helper.write_file(root .. "/identity_subset.txt", "image identity\n000001.jpg 7\n000002.jpg 7\n")
    local ds = assert(data.celeba(root))
    os.remove(root .. "/identity_subset.txt")
    assert.equal(2, #ds)
  end)

  it("names a malformed line by its number", function()
    helper.write_file(root .. "/bad_ids.txt", "000001.jpg 7\n000002.jpg\n")
    local ds, msg = data.celeba(root, { identity_file = "bad_ids.txt" })
    assert.is_nil(ds)
    assert.truthy(msg:find("bad_ids.txt:2:", 1, true), msg)
    helper.write_file(root .. "/bad_ids.txt", "000001.jpg 7\n000002.jpg 8\n000001.jpg 9\n")
    ds, msg = data.celeba(root, { identity_file = "bad_ids.txt" })
    assert.truthy(msg:find("bad_ids.txt:3:", 1, true) and msg:find("twice", 1, true), msg)
    ds, msg = data.celeba(root .. "/nothing")
    assert.is_nil(ds)
    assert.truthy(msg:find("img_align_celeba", 1, true), msg)
  end)
end)

describe("faceid.data.lfw_pairs", function()
  local root
  setup(function()
    root = helper.tmpdir()
    local jpg = jpeg_bytes(root)
    for name, n in pairs({ Ann_Lee = 3, Bo = 2, Cy_Dee = 1 }) do
      mkdir(root .. "/lfw/" .. name)
      for k = 1, n do
        helper.write_file(("%s/lfw/%s/%s_%04d.jpg"):format(root, name, name, k), jpg)
      end
    end
  end)
  teardown(function()
    helper.rmtree(root)
  end)

  it("reads folds of same and different pairs", function()
    helper.write_file(root .. "/pairs.txt", table.concat({
      "2\t1",
      "Ann_Lee\t1\t3", "Ann_Lee\t1\tCy_Dee\t1",
      "Bo 1 2", "Bo\t2\tAnn_Lee\t2", "",
    }, "\n"))
    local ds, list = data.lfw_pairs(root .. "/pairs.txt", root .. "/lfw")
    assert.truthy(ds, list)
    assert.equal(4, #list)
    assert.equal(2, list.folds)
    local a, b, label, fold = list:get(1)
    assert.same({ root .. "/lfw/Ann_Lee/Ann_Lee_0001.jpg", root .. "/lfw/Ann_Lee/Ann_Lee_0003.jpg", 0, 1 },
      { ds:path(a), ds:path(b), label, fold })
    a, b, label, fold = list:get(4)
    assert.same({ "Bo", 2, "Ann_Lee", 2, 1, 2 },
      { ds:identity(a), ds:number(a), ds:identity(b), ds:number(b), label, fold })
    assert.equal(6, #ds) -- Ann_Lee 1, 2, 3; Bo 1, 2; Cy_Dee 1
  end)

  it("reads the one-count header of pairsDevTrain.txt and drops pairs of missing images", function()
    helper.write_file(root .. "/dev.txt", "1\nBo\t1\t7\nBo\t1\tCy_Dee\t1\n")
    local on_skip, seen = quiet()
    local ds, list = data.lfw_pairs(root .. "/dev.txt", root .. "/lfw", { on_skip = on_skip })
    assert.truthy(ds, list)
    assert.equal(1, #list)
    assert.equal(1, list.dropped)
    assert.equal(1, #seen)
    assert.truthy(seen[1].path:find("Bo_0007.jpg", 1, true))
  end)

  it("reports a malformed line with its number", function()
    helper.write_file(root .. "/bad.txt", "1\t2\nBo\t1\t2\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo\nBo\t1\tCy_Dee\t1\n")
    local ds, msg = data.lfw_pairs(root .. "/bad.txt", root .. "/lfw")
    assert.is_nil(ds)
    assert.truthy(msg:find("bad.txt:4:", 1, true), msg)
    assert.truthy(msg:find("name1 i name2 j", 1, true), msg)
    helper.write_file(root .. "/bad.txt", "1\t1\nBo\t1\tx\nBo\t1\tCy_Dee\t1\n")
    ds, msg = data.lfw_pairs(root .. "/bad.txt", root .. "/lfw")
    assert.truthy(msg:find("bad.txt:2:", 1, true), msg)
    helper.write_file(root .. "/bad.txt", "2\t1\nBo\t1\t2\nBo\t1\tCy_Dee\t1\n")
    ds, msg = data.lfw_pairs(root .. "/bad.txt", root .. "/lfw")
    assert.truthy(msg:find("announces 4 pair lines, the file has 2", 1, true), msg)
    helper.write_file(root .. "/bad.txt", "ten\n")
    ds, msg = data.lfw_pairs(root .. "/bad.txt", root .. "/lfw")
    assert.truthy(msg:find("bad.txt:1:", 1, true), msg)
  end)
end)

describe("the shared face data", function()
  it("AT&T: 40 people x 10 images", function()
    local dir, why = helper.need_data("att_faces")
    if not dir then return pending(why) end
    local ds = assert(data.folders(dir))
    assert.equal(400, #ds)
    assert.equal(40, ds:n_people())
    assert.equal(dir .. "/s1/10.pgm", ds:path(10)) -- natural order
    assert.equal("folders", (data.open(dir)).kind)
  end)

  it("CelebA subset: 10,000 images of 5,429 people, all in the train partition", function()
    local dir, why = helper.need_data("celeba_subset")
    if not dir then return pending(why) end
    local ds = assert(data.celeba(dir, { partition = "train" }))
    assert.equal(10000, #ds)
    assert.equal(5429, ds:n_people())
    assert.equal(7425, #ds:filter({ min_images = 2 }))
    assert.equal("2880", ds:identity(1))
  end)

  it("Yale: 164 images of 15 people", function()
    local dir, why = helper.need_data("yalefaces")
    if not dir then return pending(why) end
    local ds = assert(data.yale(dir))
    assert.equal(164, #ds)
    assert.equal(15, ds:n_people())
    assert.equal(10, #ds:images_of("subject01"))
  end)

  it("Extended Yale B: 38 people, the ambient images left out", function()
    local dir, why = helper.need_data("extended_yaleb_cropped")
    if not dir then return pending(why) end
    local ds = assert(data.extended_yaleb(dir))
    assert.equal(38, ds:n_people())
    assert.equal(2452 - 38, #ds)
    for i = 1, #ds, 97 do
      assert.is_nil(ds:path(i):find("Ambient", 1, true))
    end
    assert.equal(2452, #assert(data.extended_yaleb(dir, { ambient = true })))
    assert.equal("extended_yaleb", (data.open(dir)).kind)
  end)
end)
