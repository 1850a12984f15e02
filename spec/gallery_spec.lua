-- faceid.gallery: enrolment, nearest-person identification with a
-- threshold, and the safetensors round trip. Distances are checked against
-- sums of squares written out by hand.
local faceid = require("faceid")
local gallery = require("faceid.gallery")
local helper = require("helper")

local function dist(a, b)
  local s = 0
  for i = 1, #a do s = s + (a[i] - b[i]) ^ 2 end
  return math.sqrt(s)
end

describe("faceid.gallery", function()
  local ada = { { 0, 0, 1 }, { 0.2, 0, 1 } }
  local bob = { { 3, 1, 0 } }

  local function make()
    local g = gallery.new({ metadata = { model = "m.safetensors" } })
    g:enroll("ada", faceid.tensor(ada))
    g:enroll("bob", faceid.tensor(bob[1])) -- one D vector
    return g
  end

  it("counts people and embeddings", function()
    local g = make()
    assert.are.equal(2, #g)
    assert.are.same({ "ada", "bob" }, g:people())
    assert.are.equal(2, g:count("ada"))
    assert.are.equal(1, g:count("bob"))
    assert.are.equal(0, g:count("eve"))
    assert.are.equal(3, g:count())
    assert.are.equal(3, g.dim)
    g:enroll("bob", faceid.tensor({ { 3, 1, 0.5 } }))
    assert.are.equal(2, g:count("bob"))
    assert.truthy(tostring(g):find("2 people, 4 embeddings, 3-d", 1, true))
  end)

  it("measures each person by their nearest embedding", function()
    local g = make()
    local q = { 0.3, 0.1, 0.9 }
    local d = g:distances(faceid.tensor(q))
    local want_ada = math.min(dist(q, ada[1]), dist(q, ada[2]))
    assert.are.equal("ada", d[1].name)
    assert.is_true(math.abs(d[1].distance - want_ada) < 1e-6)
    assert.are.equal("bob", d[2].name)
    assert.is_true(math.abs(d[2].distance - dist(q, bob[1])) < 1e-6)
  end)

  it("identifies below the threshold and answers nobody above it", function()
    local g = make()
    local q = faceid.tensor({ 0.3, 0.1, 0.9 })
    local want = dist({ 0.3, 0.1, 0.9 }, ada[2])
    local name, d = g:identify(q, 1.0)
    assert.are.equal("ada", name)
    assert.is_true(math.abs(d - want) < 1e-6)
    local none, d2, nearest = g:identify(q, want - 1e-3)
    assert.is_nil(none)
    assert.are.equal("ada", nearest)
    assert.is_true(math.abs(d2 - want) < 1e-6)
    -- the default threshold is 1.0: bob's own embedding plus 0.9 is still bob
    assert.are.equal("bob", (g:identify(faceid.tensor({ 3, 1.9, 0 }))))
    assert.is_nil((g:identify(faceid.tensor({ 3, 2.1, 0 }))))
    assert.is_nil(gallery.new():identify(q, 1.0))
  end)

  it("saves and loads names, embeddings and metadata", function()
    local dir = helper.tmpdir()
    local path = dir .. "/g.safetensors"
    local g = make()
    g:enroll("Zoë O'Brien, jr.", faceid.tensor({ 9, 9, 9 }))
    assert.is_true(g:save(path))
    assert.is_nil(io.open(path .. ".tmp", "rb"))
    local h = assert(gallery.load(path))
    assert.are.same(g:people(), h:people())
    assert.are.equal("m.safetensors", h.metadata.model)
    for _, name in ipairs(g:people()) do
      assert.are.equal(g:count(name), h:count(name))
      for k, r in ipairs(g.rows[name]) do helper.same(r, h.rows[name][k], name) end
    end
    -- the file is plain safetensors: one N x D tensor and the owners
    local t, meta = faceid.load(path)
    assert.are.same({ 4, 3 }, t.embeddings:size())
    assert.are.same({ 1, 1, 2, 3 }, t.person:totable())
    assert.are.equal("faceid.gallery", meta.format)
    -- an empty gallery round-trips too
    assert.is_true(gallery.new():save(dir .. "/empty.safetensors"))
    assert.are.equal(0, #assert(gallery.load(dir .. "/empty.safetensors")))
    helper.rmtree(dir)
  end)

  it("removes people", function()
    local g = make()
    assert.is_true(g:remove("ada"))
    assert.is_false(g:remove("ada"))
    assert.are.same({ "bob" }, g:people())
    assert.are.equal("bob", (g:identify(faceid.tensor({ 0, 0, 1 }), 100)))
  end)

  it("rejects bad names, shapes and files clearly", function()
    local g = make()
    helper.fails_with("name must be a non-empty string", g.enroll, g, "", faceid.tensor({ 1, 2, 3 }))
    helper.fails_with("control character", g.enroll, g, "a\nb", faceid.tensor({ 1, 2, 3 }))
    helper.fails_with("4 values but the gallery holds 3-d", g.enroll, g, "eve", faceid.tensor({ 1, 2, 3, 4 }))
    helper.fails_with("must be a faceid.Tensor", g.enroll, g, "eve", { 1, 2, 3 })
    helper.fails_with("NaN or infinite", g.enroll, g, "eve", faceid.tensor({ 0 / 0, 1, 2 }))
    helper.fails_with("4 values but the gallery holds 3-d", g.identify, g, faceid.tensor({ 1, 2, 3, 4 }))
    helper.fails_with("threshold must be a number", g.identify, g, faceid.tensor({ 1, 2, 3 }), "x")
    helper.fails_with("unknown option 'meta'", gallery.new, { meta = {} })
    local dir = helper.tmpdir()
    local none, msg = gallery.load(dir .. "/missing.safetensors")
    assert.is_nil(none)
    assert.truthy(msg:find("missing.safetensors", 1, true), msg)
    assert(faceid.save(dir .. "/other.safetensors", { x = faceid.ones(2) }))
    none, msg = gallery.load(dir .. "/other.safetensors")
    assert.is_nil(none)
    assert.truthy(msg:find("is not a gallery", 1, true), msg)
    helper.rmtree(dir)
  end)
end)
