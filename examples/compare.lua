--- examples/compare.lua - "is this the same person?" with the Lua API, step
-- by step (what `faceid compare` does).
--
--   lua5.4 examples/compare.lua run/model.safetensors a.jpg b.jpg
--
-- The model file says how its inputs were prepared (metadata written by
-- `faceid train`): the shorter side resized to `resize`, the central
-- `input` x `input` crop, pixels mapped from [0, 1] to [-1, 1]; and the
-- distance `threshold` chosen on held-out people (else the article's 1.0).
local faceid = require("faceid")

local model_path, a, b = arg[1], arg[2], arg[3]
if not (model_path and a and b) then
  io.stderr:write("usage: lua5.4 examples/compare.lua MODEL A.jpg B.jpg\n")
  os.exit(2)
end

local net = assert(faceid.DenseNet.load(model_path))
net:evaluate() -- running batch-norm statistics, no batch dependence
local _, meta = faceid.load(model_path)
local input = net:config().input
local resize = tonumber(meta.resize) or input
local threshold = tonumber(meta.threshold) or 1.0

-- one photo -> 1 x 3 x input x input in [-1, 1]
local function prepare(path)
  local img = assert(faceid.image.load(path, { channels = 3 }))
  local h, w = img:size(2), img:size(3)
  local s = resize / math.min(h, w)
  img = faceid.image.resize(img, math.max(resize, math.floor(h * s + 0.5)), math.max(resize, math.floor(w * s + 0.5)))
  img = faceid.image.center_crop(img, input, input)
  return (img * 2 - 1):reshape(1, 3, input, input)
end

local emb = net:forward(faceid.cat({ prepare(a), prepare(b) }, 1))
local d = (emb[1] - emb[2]):norm()
if d < threshold then
  print(("same person (distance %.2f < threshold %.2f)"):format(d, threshold))
  os.exit(0)
end
print(("different people (distance %.2f >= threshold %.2f)"):format(d, threshold))
os.exit(1)
