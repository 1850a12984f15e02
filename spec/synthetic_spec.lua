-- faceid.synthetic: the seeded SYNTHETIC identities used by the demo and
-- by specs when no face data is present.
local faceid = require("faceid")
local synthetic = require("faceid.synthetic")
local helper = require("helper")

describe("faceid.synthetic", function()
  it("gives the requested people, photos, sizes and value range", function()
    local people, line = synthetic.people({ people = 3, per_person = 4, height = 20, width = 16, seed = 5 })
    assert.are.equal(3, #people)
    for _, imgs in ipairs(people) do
      assert.are.equal(4, #imgs)
      for _, img in ipairs(imgs) do
        assert.are.same({ 3, 20, 16 }, img:size())
        assert.is_true(img:min() >= 0 and img:max() <= 1)
      end
    end
    assert.truthy(line:find("SYNTHETIC faces", 1, true))
    local grey = synthetic.people({ people = 1, per_person = 1, size = 12, channels = 1 })
    assert.are.same({ 1, 12, 12 }, grey[1][1]:size())
  end)

  it("is a function of the seed", function()
    local a = synthetic.people({ people = 2, per_person = 2, size = 16, seed = 9 })
    local b = synthetic.people({ people = 2, per_person = 2, size = 16, seed = 9 })
    local c = synthetic.people({ people = 2, per_person = 2, size = 16, seed = 10 })
    helper.same(a[2][2], b[2][2], "same seed")
    assert.is_true((a[2][2] - c[2][2]):abs():max() > 0.05)
  end)

  it("makes photos of one person closer than photos of two people", function()
    local people = synthetic.people({ people = 6, per_person = 4, size = 24, seed = 1 })
    local within, between, nw, nb = 0, 0, 0, 0
    for p = 1, #people do
      for q = p, #people do
        for i = 1, 4 do
          for j = 1, 4 do
            if p ~= q or i < j then
              local d = (people[p][i] - people[q][j]):norm()
              if p == q then within, nw = within + d, nw + 1 else between, nb = between + d, nb + 1 end
            end
          end
        end
      end
    end
    assert.is_true(within / nw < 0.9 * between / nb, ("%g vs %g"):format(within / nw, between / nb))
  end)

  it("writes a one-folder-per-person data set of PNG files", function()
    local dir = helper.tmpdir()
    local ds = assert(synthetic.dataset(dir .. "/faces", { people = 3, per_person = 2, size = 20, seed = 2 }))
    assert.are.equal(6, #ds)
    assert.are.equal(3, ds:n_people())
    assert.are.same({ "person1", "person2", "person3" }, ds:people())
    local img = assert(faceid.image.load(dir .. "/faces/person2/1.png"))
    assert.are.same({ 3, 20, 20 }, img:size())
    local people = synthetic.people({ people = 3, per_person = 2, size = 20, seed = 2 })
    -- PNG keeps 8 bits
    assert.is_true((img - people[2][1]):abs():max() <= 0.5 / 255 + 1e-6)
    assert.truthy(helper.read_file(dir .. "/faces/SYNTHETIC.txt"):find("SYNTHETIC", 1, true))
    helper.rmtree(dir)
  end)

  it("rejects bad options", function()
    helper.fails_with("unknown option 'persons'", synthetic.people, { persons = 3 })
    helper.fails_with("people must be a positive integer", synthetic.people, { people = 0 })
    helper.fails_with("channels must be 1 or 3", synthetic.people, { channels = 2 })
    helper.fails_with("height and width must be 8..1024", synthetic.people, { size = 4 })
    helper.fails_with("dir must be a non-empty string", synthetic.write, "")
  end)
end)
