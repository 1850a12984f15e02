--- faceid: train your own FaceID ConvNet.
-- The facade over the C core (faceid.core): tensors, generators, safetensors
-- I/O and threads come from C; the submodules (faceid.image, faceid.nn, and later data,
-- pairs, augment, schedule, train, metrics) are loaded on first use.
local core = require("faceid.core")

local M = {}
for k, v in pairs(core) do
  M[k] = v
end
M._VERSION = core._VERSION
M.core = core

-- field -> module, loaded on first use
local submodules = {
  image = "faceid.image",
  nn = "faceid.nn",
  DenseNet = "faceid.densenet",
  train = "faceid.train",
  data = "faceid.data",
  pairs = "faceid.pairs",
  augment = "faceid.augment",
  schedule = "faceid.schedule",
  metrics = "faceid.metrics",
  plot = "faceid.plot",
  gallery = "faceid.gallery",
  synthetic = "faceid.synthetic",
  cache = "faceid.cache",
  dist = "faceid.dist",
}

return setmetatable(M, {
  __index = function(t, k)
    if submodules[k] then
      local mod = require(submodules[k])
      rawset(t, k, mod)
      return mod
    end
    return nil
  end,
})
