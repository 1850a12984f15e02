-- bench/soak.lua - `make soak`: thousands of training steps on tiny
-- synthetic data, printing the resident set as it goes. A flat RSS column
-- is the pass; growth per step is a leak.
--   lua5.4 bench/soak.lua [steps=5000] [every=500]
local faceid = require("faceid")

local steps, every = tonumber(arg[1]) or 5000, tonumber(arg[2]) or 500
local net = faceid.DenseNet({ input = 16, growth = 4, blocks = { 2, 2 }, bottleneck = 2, stem = "small",
  embedding = 8, seed = 1 })
local loss = faceid.ContrastiveLoss()
local opt = faceid.Adam(net, { lr = 1e-3 })
local g = faceid.Generator(3)
local y = faceid.tensor({ 0, 1, 0, 1, 1, 0, 1, 0 })
local function mib(b) return b / 2 ^ 20 end

print(("soak: %d steps, batch 8 pairs at 16x16"):format(steps))
print("   step      RSS MiB   peak MiB   loss")
local first, last
local t0 = faceid.clock()
for s = 1, steps do
  local x = faceid.randn(g, 16, 3, 16, 16) -- a fresh batch each step, as a loader makes
  local l = loss:forward(net:forward(x), y)
  net:backward(loss:backward())
  opt:step()
  net:zero_grad()
  x:close() -- freed now, not when the collector gets to it: RSS then shows leaks, not garbage
  if s % every == 0 or s == 1 then
    collectgarbage()
    local peak, rss = faceid.memory()
    if s >= every then first = first or rss end
    last = rss
    print(("%7d  %10.1f %10.1f   %.4f"):format(s, mib(rss), mib(peak), l))
  end
end
local growth = mib(last - (first or last))
print(("RSS growth after warm-up: %.2f MiB over %d steps (%.1f s)"):format(growth, steps - every,
  faceid.clock() - t0))
if growth > 4 then
  print("soak: FAILED (RSS grows)")
  os.exit(1)
end
print("soak: ok")
