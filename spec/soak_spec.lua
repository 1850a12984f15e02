-- Resource use over a run: many training steps on tiny data hold a flat
-- resident set (no growth per step). The long version is `make soak`
-- (bench/soak.lua); this one is bounded to a few seconds.
local faceid = require("faceid")
local helper = require("helper")

describe("a long run", function()
  it("holds a flat RSS: no growth per step", function()
    if not select(2, faceid.memory()) then return pending("faceid.memory() is unavailable here") end
    if helper.sanitize then return pending("RSS is meaningless under ASan's allocator") end
    local net = faceid.DenseNet({ input = 16, growth = 4, blocks = { 1, 1 }, bottleneck = 2, stem = "small",
      embedding = 4, seed = 1 })
    local loss = faceid.ContrastiveLoss()
    local opt = faceid.Adam(net, { lr = 1e-3 })
    local g = faceid.Generator(3)
    local x = faceid.randn(g, 8, 3, 16, 16)
    local y = faceid.tensor({ 0, 1, 0, 1 })
    local function step()
      local emb = net:forward(x)
      loss:forward(emb, y)
      net:backward(loss:backward())
      opt:step()
      net:zero_grad()
    end
    for _ = 1, 50 do step() end -- warm up: arenas, caches, the allocator's pools
    collectgarbage()
    local _, rss0 = faceid.memory()
    for _ = 1, 600 do step() end
    collectgarbage()
    local _, rss1 = faceid.memory()
    -- a leak of one 8x3x16x16 input per step would be 3.5 MiB here
    assert.is_true(rss1 - rss0 < 1.5 * 2 ^ 20,
      ("RSS grew by %.2f MiB over 600 steps"):format((rss1 - rss0) / 2 ^ 20))
  end)
end)
