--- faceid.DenseNet: the DenseNet-BC embedding network.
--
--   local net = faceid.DenseNet{growth = 12, blocks = {2, 2}, stem = "small", input = 32}
--   local net = faceid.DenseNet.densenet121{embedding = 32}
--   local emb = net:forward(x)            -- x: N x channels x input x input
--   net:backward(grad_emb)                -- accumulates into the gradients
--   net:save("model.safetensors"); net = faceid.DenseNet.load("model.safetensors")
--
-- Options (all optional; densenet121 with a 32-d embedding at 128x128 by default):
--   growth       k, channels each dense layer adds                  (32)
--   blocks       dense layers per block                             ({6, 12, 24, 16})
--   bottleneck   bottleneck width as a multiple of k                (4)
--   compression  theta: a transition keeps floor(theta * C) channels (0.5)
--   stem         "imagenet": 7x7/2 conv, BN, ReLU, 3x3/2 max-pool;
--                "small": 3x3/1 conv, BN, ReLU (for small inputs)   ("imagenet")
--   embedding    size of the output embedding                       (32)
--   input        input height = width in pixels                     (128)
--   channels     input channels                                     (3)
--   bn_momentum  batch-norm running-average momentum                (0.1)
--   bn_eps       batch-norm epsilon                                 (1e-5)
--   seed         seed of the weight initialisation                  (0)
--   generator    a faceid.Generator to draw the initial weights from instead of seed
local core = require("faceid.core")

local M = {}

local defaults = {
  growth = 32, blocks = { 6, 12, 24, 16 }, bottleneck = 4, compression = 0.5, stem = "imagenet",
  embedding = 32, input = 128, channels = 3, bn_momentum = 0.1, bn_eps = 1e-5, seed = 0,
}

local function options(opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), 3)
  end
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if defaults[k] == nil and k ~= "generator" then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3)
    end
    o[k] = v
  end
  return o
end

local function build(o)
  local gen = o.generator
  if gen == nil then
    if math.type(o.seed) ~= "integer" then
      error("faceid.DenseNet: option 'seed' must be an integer", 3)
    end
    gen = core.Generator(o.seed)
  end
  return core.densenet_new(o, gen)
end

--- faceid.DenseNet(opts): a new network with freshly initialised weights.
function M.new(opts)
  return build(options(opts, "faceid.DenseNet"))
end

--- faceid.DenseNet.densenet121{embedding = 32, ...}: torchvision's
-- densenet121 features with an embedding head (6,986,656 parameters at 32-d).
function M.densenet121(opts)
  local o = options(opts, "faceid.DenseNet.densenet121")
  o.growth, o.blocks, o.bottleneck, o.compression, o.stem = 32, { 6, 12, 24, 16 }, 4, 0.5, "imagenet"
  for _, k in ipairs({ "growth", "blocks", "bottleneck", "compression", "stem" }) do
    if opts and opts[k] ~= nil then
      error(("faceid.DenseNet.densenet121: '%s' is fixed by the architecture"):format(k), 2)
    end
  end
  return build(o)
end

local methods = core.DenseNet_methods
local mt = core.DenseNet_metatable

local function fmt_count(n)
  local s = tostring(n):reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (s:gsub("^,", ""))
end

mt.__tostring = function(net)
  local ok, c = pcall(methods.config, net)
  if not ok then return "faceid.DenseNet(closed)" end
  local ch = net:channels()
  local lines = {
    ("faceid.DenseNet(%s stem, k=%d, bottleneck=%dk, compression=%g, %dx%dx%d -> %d, %s mode)")
      :format(c.stem, c.growth, c.bottleneck, c.compression, c.channels, c.input, c.input,
        c.embedding, net:is_training() and "training" or "evaluation"),
  }
  for b, layers in ipairs(c.blocks) do
    local cout = ch[b + 1] or ch[#ch]
    lines[#lines + 1] = ("  block %d: %2d layers, %4d -> %4d channels%s"):format(b, layers, ch[b],
      ch[b] + layers * c.growth, b < #c.blocks and (", transition to " .. cout) or "")
  end
  lines[#lines + 1] = ("  head: BN, ReLU, global average pool, linear %d -> %d"):format(ch[#ch], c.embedding)
  lines[#lines + 1] = ("  parameters: %s"):format(fmt_count(net:num_parameters()))
  return table.concat(lines, "\n")
end

--- net:state() -> tensors, dtypes: every parameter and running statistic by
-- torchvision's name (views into the network), plus num_batches_tracked.
function methods.state(net)
  local tensors, dtypes = {}, {}
  for _, p in ipairs(net:parameters()) do tensors[p.name] = p.param end
  local tracked = net:batches_tracked()
  for _, b in ipairs(net:buffers()) do
    tensors[b.name] = b.tensor
    if b.kind == "running_var" then
      local nbt = b.name:gsub("running_var$", "num_batches_tracked")
      tensors[nbt] = core.tensor({ tracked })
      dtypes[nbt] = "I64"
    end
  end
  return tensors, dtypes
end

local config_keys = { "growth", "blocks", "bottleneck", "compression", "stem", "embedding", "input",
  "channels", "bn_momentum", "bn_eps" }

--- net:save(path [, extra]): safetensors with torchvision's names and the
-- config in __metadata__; written atomically. `extra` may add tensors,
-- dtypes and metadata (training checkpoints add the optimizer state and
-- where training stands). Returns true, or nil and a message.
function methods.save(net, path, extra)
  if type(path) ~= "string" then error("DenseNet:save: path must be a string", 2) end
  if extra ~= nil then
    if type(extra) ~= "table" then
      error(("DenseNet:save: extra must be a table {tensors=, dtypes=, metadata=}, got %s"):format(type(extra)), 2)
    end
    for _, k in ipairs({ "tensors", "dtypes", "metadata" }) do
      if extra[k] ~= nil and type(extra[k]) ~= "table" then
        error(("DenseNet:save: extra.%s must be a table, got %s"):format(k, type(extra[k])), 2)
      end
    end
  end
  local tensors, dtypes = net:state()
  local scalars = {}
  for name in pairs(dtypes) do scalars[name] = true end
  local c = net:config()
  local meta = { format = "faceid.densenet", faceid_version = core._VERSION }
  for _, k in ipairs(config_keys) do
    local v = c[k]
    meta[k] = type(v) == "table" and table.concat(v, ",") or tostring(v)
  end
  for k, v in pairs(extra and extra.tensors or {}) do
    if tensors[k] then error(("DenseNet:save: extra tensor '%s' would replace a network tensor"):format(k), 2) end
    tensors[k] = v
  end
  for k, v in pairs(extra and extra.dtypes or {}) do dtypes[k] = v end
  for k, v in pairs(extra and extra.metadata or {}) do meta[k] = tostring(v) end
  return core.save(path, tensors, { metadata = meta, dtypes = dtypes, scalars = scalars })
end

-- the architecture a state dict describes, read from its shapes
local function infer_config(t, fname)
  local function need(name)
    local x = t[name]
    if not x then error(("%s: the file has no tensor '%s'"):format(fname, name), 4) end
    return x:size()
  end
  local conv0 = need("features.conv0.weight")
  local c = { channels = conv0[2], stem = conv0[3] == 7 and "imagenet" or "small" }
  local k = need("features.denseblock1.denselayer1.conv2.weight")[1]
  c.growth = k
  c.bottleneck = need("features.denseblock1.denselayer1.conv1.weight")[1] // k
  c.blocks = {}
  local b = 1
  while t[("features.denseblock%d.denselayer1.conv1.weight"):format(b)] do
    local l = 1
    while t[("features.denseblock%d.denselayer%d.conv1.weight"):format(b, l + 1)] do l = l + 1 end
    c.blocks[b] = l
    b = b + 1
  end
  local cls = need("classifier.weight")
  c.embedding = cls[1]
  local tconv = t["features.transition1.conv.weight"]
  if tconv then
    local s = tconv:size()
    c.compression = s[1] / s[2]
  else
    c.compression = 0.5
  end
  return c
end

--- faceid.DenseNet.load(path [, opts]) -> net, or nil and a message.
-- Reads files written by net:save, training checkpoints (their optimizer.*
-- and train.* tensors are not part of the network and are left out), or a
-- torchvision densenet state dict saved as safetensors. The architecture comes from the tensor shapes (and
-- the config in the metadata when present); opts may set `input` (and the
-- batch-norm options) for files that do not record them. Every tensor must
-- be present with its exact shape; the message names any that is not.
function M.load(path, opts)
  local fname = "faceid.DenseNet.load"
  if type(path) ~= "string" then error(fname .. ": path must be a string", 2) end
  local tensors, meta = core.load(path)
  if not tensors then return nil, meta end
  for name in pairs(tensors) do
    if name:find("^optimizer%.") or name:find("^train%.") then tensors[name] = nil end
  end
  local ok, net = pcall(function()
    local c = infer_config(tensors, fname)
    for _, k in ipairs({ "input", "bn_momentum", "bn_eps" }) do
      if meta[k] then c[k] = tonumber(meta[k]) end
    end
    if meta.compression then c.compression = tonumber(meta.compression) end
    if meta.format == "faceid.densenet" then
      for _, k in ipairs(config_keys) do
        local want = type(c[k]) == "table" and table.concat(c[k], ",") or tostring(c[k])
        if meta[k] and c[k] ~= nil and meta[k] ~= want and tonumber(meta[k]) ~= c[k] then
          error(("%s: '%s': the metadata says %s but the tensors say %s"):format(fname, k, meta[k], want), 0)
        end
      end
    end
    for k, v in pairs(opts or {}) do
      if k ~= "input" and k ~= "bn_momentum" and k ~= "bn_eps" then
        error(("%s: unknown option '%s'"):format(fname, tostring(k)), 0)
      end
      c[k] = v
    end
    local n = M.new(c)
    n:load_state(tensors, fname)
    return n
  end)
  if not ok then return nil, (tostring(net):gsub("^[^:]*:%d+: ", "")) end
  return net
end

--- net:load_state(tensors): copy a state dict (name -> tensor) into the
-- network. Every parameter and running statistic must be there with its
-- exact shape; nothing is changed unless all of them are.
function methods.load_state(net, tensors, fname)
  fname = fname or "DenseNet:load_state"
  if type(tensors) ~= "table" then
    error(("%s: expected a table of tensors (name -> tensor), got %s"):format(fname, type(tensors)), 2)
  end
  local own = net:state()
  for name, t in pairs(own) do
    local src = tensors[name]
    if not src then error(("%s: missing tensor '%s'"):format(fname, name), 2) end
    if not core.is_tensor(src) then
      error(("%s: '%s' must be a tensor, got %s"):format(fname, name, type(src)), 2)
    end
    local a, b = table.concat(t:size(), "x"), table.concat(src:size(), "x")
    if a ~= b then
      error(("%s: tensor '%s' has shape %s but the network expects %s"):format(fname, name, b, a), 2)
    end
  end
  for name in pairs(tensors) do
    if not own[name] then error(("%s: unexpected tensor '%s' for this architecture"):format(fname, name), 2) end
  end
  for name, t in pairs(own) do
    if not name:find("num_batches_tracked$") then t:copy(tensors[name]) end
  end
  local nbt = tensors["features.norm0.num_batches_tracked"]
  if nbt then net:batches_tracked(math.tointeger(nbt:get(1)) or 0) end
  return net
end

return setmetatable(M, {
  __call = function(_, opts) return M.new(opts) end,
})
